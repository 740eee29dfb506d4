"""Where a segmenter reads the detector's per-frame outputs: the live detector, or a store.

Every method turns the detector's outputs on a video's frames into `VideoInstances`; it
reads them from a `DetectorSource`, chunk by chunk, in frame order:

- `chunks(chunk_frames)`: the first (or only) pass, a `DetectorChunk` per chunk with the
  video's `InputGeometry`;
- `clip_mask_features(chunk_frames)`: a second pass over the stride-4 pixel-decoder map
  alone, for VITA's masks on long videos (recomputed by the detector, or read again).

`LiveDetector` runs the detector on frames (what `segment(frames)` does); the stored
source reads the `frame_queries` table (`vis_core.corpus.frame_queries`), so another
temporal head re-associates a video without the detector, through the same code.
`RecordingSource` hands a live source's first pass to a callback as it goes (that is how
`vis process --frame-queries` writes the table).

Dimension letters: t frames of a chunk, Q frame queries, C channels, K classes, h x w the
stride-4 grid of the padded input.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from vis_core.inference.frames import FramePreparer, FrameSource, InputGeometry
from vis_core.inference.instances import VideoInstances
from vis_core.modeling.frame_detector import FrameDetections, FrameDetector


@dataclass(frozen=True)
class DetectorChunk:
    """The detector's outputs on t consecutive frames of one video, as heads read them.

    first_frame: the video index of the chunk's first frame. class_logits `[t, Q, K+1]`
    (no-object last); mask_logits `[t, Q, h, w]`; frame_queries `[t, Q, C]`: the last
    decoder layer's decoder-normed queries; mask_features `[t, C, h, w]` (stride 4). For a
    head that runs the frame decoder itself: attended_maps, the three maps it attends
    (coarse first), and decoder_mask_features `[t, D, h, w]` (`FrameDetections`; empty and
    None where the detector does not give them, as the ONNX one and a stored source).
    """

    first_frame: int
    class_logits: Tensor
    mask_logits: Tensor
    frame_queries: Tensor
    mask_features: Tensor
    attended_maps: tuple[Tensor, ...] = ()
    decoder_mask_features: Tensor | None = None

    @classmethod
    def from_detections(cls, first_frame: int, detections: FrameDetections) -> DetectorChunk:
        """From the detector's output in eval mode (one layer of frame queries)."""
        return cls(
            first_frame=first_frame,
            class_logits=detections.pred_logits,
            mask_logits=detections.pred_masks,
            frame_queries=detections.frame_queries[-1],
            mask_features=detections.clip_mask_features,
            attended_maps=detections.attended_maps,
            decoder_mask_features=detections.decoder_mask_features,
        )

    @property
    def num_frames(self) -> int:
        return self.class_logits.shape[0]


class DetectorSource(Protocol):
    """The detector's outputs on one video's frames (module docstring)."""

    def chunks(self, chunk_frames: int) -> Iterator[tuple[DetectorChunk, InputGeometry]]:
        """Every frame's outputs, `chunk_frames` frames at a time (the last chunk may be
        shorter), in frame order; a `FrameSourceError` when there are none."""
        ...

    def clip_mask_features(self, chunk_frames: int, geometry: InputGeometry) -> Iterator[Tensor]:
        """The stride-4 map `[t, C, h, w]` alone, chunk by chunk as `chunks` gives them."""
        ...


class LiveDetector:
    """The detector run on `frames` (a `FrameSource`), on the preparer's device; callers
    hold inference mode and autocast."""

    def __init__(self, detector: FrameDetector, preparer: FramePreparer, frames: FrameSource):
        self.detector = detector
        self.preparer = preparer
        self.frames = frames

    def chunks(self, chunk_frames: int) -> Iterator[tuple[DetectorChunk, InputGeometry]]:
        first_frame = 0
        for images, geometry in self.preparer.chunks(self.frames, chunk_frames):
            detections = self.detector(images)
            del images
            chunk = DetectorChunk.from_detections(first_frame, detections)
            del detections
            first_frame += chunk.num_frames
            yield chunk, geometry
            del chunk  # before the next chunk's detector call

    def clip_mask_features(self, chunk_frames: int, geometry: InputGeometry) -> Iterator[Tensor]:
        for images, _ in self.preparer.chunks(self.frames, chunk_frames, geometry):
            features = self.detector.mask_features(images)
            del images
            yield features


class RecordingSource:
    """`source`, whose first pass also goes to `record(chunk, geometry)` as it is read
    (chunks read again are not recorded twice: only the first `chunks` call is)."""

    def __init__(
        self, source: DetectorSource, record: Callable[[DetectorChunk, InputGeometry], None]
    ):
        self.source = source
        self.record = record
        self._recorded = False

    def chunks(self, chunk_frames: int) -> Iterator[tuple[DetectorChunk, InputGeometry]]:
        recording, self._recorded = not self._recorded, True
        for chunk, geometry in self.source.chunks(chunk_frames):
            if recording:
                self.record(chunk, geometry)
            yield chunk, geometry

    def clip_mask_features(self, chunk_frames: int, geometry: InputGeometry) -> Iterator[Tensor]:
        return self.source.clip_mask_features(chunk_frames, geometry)


def detector_digest(detector: torch.nn.Module) -> str:
    """16 hex digits of SHA-256 over the detector's state (names, dtypes, shapes, values):
    what the `frame_queries` rows were made by, checked before another head reads them."""
    digest = hashlib.sha256()
    for name, tensor in sorted(detector.state_dict().items()):
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


class SourceSegmenter(Protocol):
    """A segmenter that reads its detector outputs from any `DetectorSource`."""

    def live_source(self, frames: FrameSource) -> DetectorSource:
        """The detector on `frames`."""
        ...

    def segment_source(self, source: DetectorSource) -> VideoInstances:
        """The video's instances from its detector outputs."""
        ...
