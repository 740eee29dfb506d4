"""Frames of a video -> detector inputs for inference, chunk by chunk.

A `FrameSource` is a callable returning a fresh iterator of RGB frames `[H, W, 3]` uint8
at the original size (long videos read it twice), or a re-iterable such as a list.
Frames are resized as detectron2's test-time `ResizeShortestEdge`, normalised and
zero-padded by `FrameDetector.preprocess`. A `PreparedChunk` is a chunk already resized
(the staged corpus job resizes on the CPU and pads on the device).

Dimension letters: t frames of a chunk, H x W the original size, H' x W' the padded input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from vis_core.modeling.config import InputConfig
from vis_core.modeling.frame_detector import FrameDetector

FrameSource = Callable[[], Iterable[np.ndarray]] | Iterable[np.ndarray]


class FrameSourceError(ValueError):
    """The frames cannot be segmented: none, not RGB uint8, mixed sizes, or a different
    frame count when read the second time."""


@dataclass(frozen=True)
class InputGeometry:
    """A frame's size through preprocessing: original (height, width), resized (what the
    network sees), padded (the resized size rounded up to the size divisibility)."""

    height: int
    width: int
    resized_height: int
    resized_width: int
    padded_height: int
    padded_width: int


@dataclass(frozen=True)
class PreparedChunk:
    """Consecutive frames of one video, ready for the detector.

    first_frame: the video index of the first; frames `[t, H_r, W_r, 3]` uint8 RGB at the
    resized size of `geometry`; timestamps `[t]` float64 seconds; decode_cpu_s and
    resize_cpu_s: CPU seconds spent making them; decode_s: wall seconds of both.
    """

    first_frame: int
    frames: np.ndarray
    timestamps: np.ndarray
    geometry: InputGeometry
    decode_cpu_s: float = 0.0
    resize_cpu_s: float = 0.0
    decode_s: float = 0.0

    def __len__(self) -> int:
        return int(self.frames.shape[0])


def resized_input_size(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """detectron2's test-time `ResizeShortestEdge`: the shorter side becomes `min_size`
    unless the longer would then exceed `max_size` (then the longer side is `max_size`);
    sides are rounded half up."""
    scale = min_size / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def input_geometry(height: int, width: int, input_config: InputConfig) -> InputGeometry:
    """The geometry of a `height` x `width` frame through the model's test-time input."""
    resized_height, resized_width = resized_input_size(
        height, width, input_config.min_size_test, input_config.max_size_test
    )
    divisor = input_config.size_divisibility
    return InputGeometry(
        height=height,
        width=width,
        resized_height=resized_height,
        resized_width=resized_width,
        padded_height=resized_height + (-resized_height % divisor),
        padded_width=resized_width + (-resized_width % divisor),
    )


def open_frames(source: FrameSource) -> Iterator[np.ndarray]:
    """A fresh iterator over the frames of `source` (see the module docstring)."""
    iterable = source() if callable(source) else source
    iterator = iter(iterable)
    if not callable(source) and iterator is iterable:
        raise TypeError(
            "frames must be a callable returning a fresh iterator (e.g. `lambda: "
            "iter_frames(...)`) or a re-iterable such as a list: a one-shot iterator cannot "
            "be read twice, which long videos need"
        )
    return iterator


class FramePreparer:
    """RGB frames -> detector inputs, chunk by chunk, on the device.

    Frames are resized with antialiased bilinear interpolation, as PIL does (detectron2
    uses it), then normalised and padded by `detector.preprocess`. On the CPU the resize
    is PyTorch's uint8 kernel, PIL's own fixed-point arithmetic (within 1 of PIL on 0.1%
    of a 720p frame's values) at a twentieth of the float kernel's cost, which was 15 ms
    a 720p frame, more than decoding it; elsewhere the float kernel, rounded back to uint8.
    """

    def __init__(self, detector: FrameDetector, input_config: InputConfig, device: torch.device):
        self.detector = detector
        self.input_config = input_config
        self.device = device

    def geometry(self, height: int, width: int) -> InputGeometry:
        return input_geometry(height, width, self.input_config)

    def chunks(
        self, source: FrameSource, chunk_frames: int, expected: InputGeometry | None = None
    ) -> Iterator[tuple[Tensor, InputGeometry]]:
        """Yield `(images [t, 3, H', W'], geometry)` for consecutive chunks of at most
        `chunk_frames` frames. Every frame must have the size of the first (or of
        `expected`)."""
        geometry = expected
        for frames in _frame_batches(open_frames(source), chunk_frames):
            height, width = frames.shape[1:3]
            if geometry is None:
                geometry = self.geometry(height, width)
            elif (height, width) != (geometry.height, geometry.width):
                raise FrameSourceError(
                    f"frame of {height}x{width} in a video of {geometry.height}x{geometry.width}"
                )
            yield self._prepare(frames, geometry), geometry

    def _prepare(self, frames: np.ndarray, geometry: InputGeometry) -> Tensor:
        batch = torch.from_numpy(frames).to(self.device)  # [t, H, W, 3] uint8
        return self.detector.preprocess(resize_frames(batch, geometry))


def resize_frames(batch: Tensor, geometry: InputGeometry) -> Tensor:
    """RGB frames `[t, H, W, 3]` uint8 -> `[t, H_r, W_r, 3]` uint8 at the resized size of
    `geometry`, as `FramePreparer` does (the uint8 kernel on the CPU, the float one
    elsewhere); frames already at that size are returned as they are."""
    resized = (geometry.resized_height, geometry.resized_width)
    if resized == (geometry.height, geometry.width):
        return batch
    images = batch.permute(0, 3, 1, 2)  # [t, 3, H, W], channels last in memory
    if batch.device.type != "cpu":  # no uint8 antialiased kernel there
        images = images.float()
    images = F.interpolate(
        images, size=resized, mode="bilinear", align_corners=False, antialias=True
    )
    if images.dtype != torch.uint8:
        images = images.round_().clamp_(0, 255).to(torch.uint8)
    return images.permute(0, 2, 3, 1)


def _frame_batches(frames: Iterator[np.ndarray], chunk_frames: int) -> Iterator[np.ndarray]:
    """Group frames `[H, W, 3]` uint8 into batches `[t, H, W, 3]`, checking each."""
    batch: list[np.ndarray] = []
    for index, frame in enumerate(frames):
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
            raise FrameSourceError(
                f"frame {index} must be a uint8 numpy array, got "
                f"{getattr(frame, 'dtype', type(frame).__name__)}"
            )
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
            raise FrameSourceError(f"frame {index} must be RGB [H, W, 3], got {frame.shape}")
        if batch and frame.shape != batch[0].shape:
            raise FrameSourceError(
                f"frame {index} is {frame.shape[0]}x{frame.shape[1]}, the video "
                f"{batch[0].shape[0]}x{batch[0].shape[1]}"
            )
        batch.append(frame)
        if len(batch) == chunk_frames:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)
