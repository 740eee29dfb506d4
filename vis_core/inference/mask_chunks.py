"""A video's masks chunk by chunk, made apart from the device that found them.

The device side of the staged corpus job (`vis_core.inference.vita_program`) gives, for
each chunk of a video's frames, the mask logits of the video's k selected instances
upsampled to the resized frame, as `VideoSegmenter` makes them (`mask_chunk_frames`
frames at a time), with the sums their scores need already taken: the dense upsampling
they need is cheap there. It hands over only a window of them per instance, around its
positive logits (`vis_core.inference.mask_windows`: a few percent of the frame). What is
left needs no device and grows with the original frame size: `encode_mask_logits` makes
the masks at the original size and their RLE; `assemble_instances` puts a video's chunks
together.

The result is `VideoSegmenter`'s: the same operations in the same order, so bit for bit
the same on the CPU.

Dimension letters: k selected instances, t frames of a chunk, n parts of a chunk, h_r x
w_r the resized frame, H x W the original size.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vis_core.inference.frames import InputGeometry
from vis_core.inference.instances import VideoInstances
from vis_core.inference.mask_windows import LogitWindow, logit_window, windowed_masks
from vis_core.inference.segmenter import SCORE_EPSILON, ScoredLogits
from vis_core.masks import RLE


@dataclass(frozen=True)
class VideoSelection:
    """The top-k (video query, class) pairs of a video, as the CPU side needs them:
    class_scores `[k]` float32 (class probability), labels `[k]` int64 (class index)."""

    class_scores: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class MaskLogits:
    """Mask logits of a video's k selected instances over consecutive frames, at the
    resized frame (`ScoredLogits.logits`).

    first_frame: the video index of the first frame; frames: the n parts' frame counts
    t_i; windows: per part, per instance, the window around its positive logits `[t_i,
    ., .]` (None: none is positive); soft_sum, hard_count `[n, k]` float32: per part,
    `ScoredLogits.soft_sum` and `.hard_count` summed over its frames.
    """

    first_frame: int
    frames: tuple[int, ...]
    windows: tuple[tuple[LogitWindow | None, ...], ...]
    soft_sum: Tensor
    hard_count: Tensor
    geometry: InputGeometry

    @property
    def num_frames(self) -> int:
        return sum(self.frames)


def mask_logits(
    first_frame: int, parts: Sequence[ScoredLogits], geometry: InputGeometry
) -> MaskLogits:
    """`MaskLogits` of consecutive parts' scored logits (any device)."""
    return MaskLogits(
        first_frame=first_frame,
        frames=tuple(int(part.logits.shape[1]) for part in parts),
        windows=tuple(tuple(logit_window(maps) for maps in part.logits) for part in parts),
        soft_sum=torch.stack([part.soft_sum.sum(1) for part in parts]).cpu(),
        hard_count=torch.stack([part.hard_count.sum(1) for part in parts]).cpu(),
        geometry=geometry,
    )


@dataclass(frozen=True)
class EncodedMaskChunk:
    """The masks of `MaskLogits` at the original size.

    rles: k tuples of t compressed RLE dicts; areas `[k, t]` int64; boxes `[k, t, 4]`
    float64 (x, y, w, h); soft_sum, hard_count as in `MaskLogits`; cpu_s: CPU seconds
    spent making them.
    """

    first_frame: int
    num_frames: int
    rles: tuple[tuple[RLE, ...], ...]
    areas: np.ndarray
    boxes: np.ndarray
    soft_sum: Tensor
    hard_count: Tensor
    cpu_s: float = 0.0


def encode_mask_logits(chunk: MaskLogits) -> EncodedMaskChunk:
    """The masks of `chunk` at the original size, as RLE with their areas and boxes."""
    started = time.process_time()
    geometry = chunk.geometry
    count = chunk.soft_sum.shape[1]
    tracks: list[list[RLE]] = [[] for _ in range(count)]
    areas: list[np.ndarray] = []  # [k, t_i] per part
    boxes: list[np.ndarray] = []  # [k, t_i, 4] per part
    resized = (geometry.resized_height, geometry.resized_width)
    for frames, windows in zip(chunk.frames, chunk.windows, strict=True):
        encoded = windowed_masks(
            windows, frames, resized, geometry.height, geometry.width
        )  # k * t_i masks, instance-major
        rles = encoded.rles()
        for index, track in enumerate(tracks):
            track.extend(rles[index * frames : (index + 1) * frames])
        areas.append(encoded.areas.reshape(count, frames))
        boxes.append(encoded.boxes.reshape(count, frames, 4))
    return EncodedMaskChunk(
        first_frame=chunk.first_frame,
        num_frames=chunk.num_frames,
        rles=tuple(tuple(track) for track in tracks),
        areas=np.concatenate(areas, axis=1),
        boxes=np.concatenate(boxes, axis=1),
        soft_sum=chunk.soft_sum,
        hard_count=chunk.hard_count,
        cpu_s=time.process_time() - started,
    )


def assemble_instances(
    selection: VideoSelection,
    chunks: Sequence[EncodedMaskChunk],
    geometry: InputGeometry,
    num_frames: int,
) -> VideoInstances:
    """A video's instances from its selection and the encoded chunks of all its frames, in
    frame order; scored as `VideoSegmenter` scores them."""
    count = len(selection)
    soft_sum = torch.zeros(count)
    hard_count = torch.zeros(count)
    tracks: list[list[RLE]] = [[] for _ in range(count)]
    expected = 0
    for chunk in chunks:
        if chunk.first_frame != expected:
            raise ValueError(f"a chunk starts at frame {chunk.first_frame}, expected {expected}")
        expected += chunk.num_frames
        for part in range(chunk.soft_sum.shape[0]):  # in the order VideoSegmenter adds them
            soft_sum += chunk.soft_sum[part]
            hard_count += chunk.hard_count[part]
        for index, track in enumerate(tracks):
            track.extend(chunk.rles[index])
    if expected != num_frames:
        raise ValueError(f"the chunks hold {expected} frames of a video of {num_frames}")
    scores = selection.class_scores * soft_sum / (hard_count + SCORE_EPSILON)
    return VideoInstances(
        num_frames=num_frames,
        height=geometry.height,
        width=geometry.width,
        scores=scores.float().numpy(),
        labels=selection.labels.numpy().astype(np.int64),
        masks=tuple(tuple(track) for track in tracks),
        mask_areas=np.concatenate([chunk.areas for chunk in chunks], axis=1),
        mask_boxes=np.concatenate([chunk.boxes for chunk in chunks], axis=1),
    )
