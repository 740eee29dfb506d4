"""Online video inference: a temporal head as a state machine over chunks of frames.

An `OnlineHead` turns the detector's per-frame outputs into tracks, one chunk of frames
at a time, holding a state that does not grow with the video:

    state = head.start()
    state, step = head.step(state, chunk)     # for each `DetectorChunk`, in frame order
    summaries = head.finish(state)

Each step gives the chunk's final masks (`TrackMasks`: which track has which mask logits
in which frame) and the tracks that can take no more frames (`TrackSummary`: id, class,
score); `finish` gives the rest. Masks and summaries leave the state as soon as they are
known, so the state holds live tracks only, never past frames or features.

`OnlineSegmenter` runs the detector chunk by chunk (or reads its stored outputs:
`vis_core.inference.detector_source`), feeds the head, turns each chunk's
masks into compressed RLE at the original size at once (the same resize and threshold
as `VideoSegmenter`), and at the end assembles `VideoInstances` from the summaries: the
best-scoring `max_instances` tracks, best first, an empty mask where a track has none.
Memory per video is the head's state plus the RLE strings.

Dimension letters: t frames of a chunk, Q frame queries, C channels, K classes, m masks
of a chunk, h x w the stride-4 mask grid of the padded input, H x W the original size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from torch import Tensor

from vis_core import masks
from vis_core.inference.detector_source import DetectorChunk, DetectorSource, LiveDetector
from vis_core.inference.frames import FramePreparer, FrameSource, FrameSourceError, InputGeometry
from vis_core.inference.instances import VideoInstances
from vis_core.inference.segmenter import inference_autocast, masks_from_logits
from vis_core.masks import RLE
from vis_core.modeling.vita_model import VitaModel

State = TypeVar("State")


@dataclass(frozen=True)
class TrackMasks:
    """Final masks of a chunk: track `track_ids[i]` has mask logits `mask_logits[i]` in
    video frame `frames[i]`. frames, track_ids `[m]` int64; mask_logits `[m, h, w]`."""

    frames: Tensor
    track_ids: Tensor
    mask_logits: Tensor

    def __len__(self) -> int:
        return self.frames.shape[0]


@dataclass(frozen=True)
class TrackSummary:
    """A track that can take no more frames, as an output candidate: its id, class and
    video-level score in [0, 1]."""

    track_id: int
    label: int
    score: float


@dataclass(frozen=True)
class HeadStep:
    """What one chunk settles: its masks, and the tracks that ended in it."""

    masks: TrackMasks
    finished: tuple[TrackSummary, ...] = ()


class OnlineHead(Protocol[State]):
    """A temporal head that reads a video once, chunk by chunk (module docstring)."""

    def start(self) -> State:
        """The state before the first frame of a video."""
        ...

    def step(self, state: State, chunk: DetectorChunk) -> tuple[State, HeadStep]:
        """Take the next chunk of frames; the state's size must not depend on the frames
        seen so far."""
        ...

    def finish(self, state: State) -> tuple[TrackSummary, ...]:
        """The summaries of the tracks still open after the last frame."""
        ...


def state_nbytes(state: Any) -> int:
    """Bytes of every tensor in a head's state (dataclasses, sequences and mappings are
    walked), to check that it stays flat over a video."""
    if isinstance(state, Tensor):
        return state.nbytes
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        values: Any = [getattr(state, field.name) for field in dataclasses.fields(state)]
    elif isinstance(state, Mapping):
        values = state.values()
    elif isinstance(state, (list, tuple)):
        values = state
    else:
        return 0
    return sum(state_nbytes(value) for value in values)


class TrackRles:
    """Compressed RLE masks per (track, frame), made as soon as a chunk's masks are final."""

    def __init__(self) -> None:
        self._by_track: dict[int, dict[int, RLE]] = {}

    def add(self, chunk: TrackMasks, geometry: InputGeometry) -> None:
        if len(chunk) == 0:
            return
        # [m, 1, h, w] -> [m, 1, H, W] bool at the original size, thresholded at logit 0
        dense = masks_from_logits(chunk.mask_logits[:, None], geometry).masks[:, 0]
        rles = masks.encode(dense)
        frames, track_ids = chunk.frames.tolist(), chunk.track_ids.tolist()
        for frame, track_id, rle in zip(frames, track_ids, rles, strict=True):
            self._by_track.setdefault(track_id, {})[frame] = rle

    def instances(
        self,
        summaries: Sequence[TrackSummary],
        num_frames: int,
        height: int,
        width: int,
        max_instances: int,
    ) -> VideoInstances:
        """The `max_instances` best-scoring summaries, best first, with their masks."""
        kept = sorted(summaries, key=lambda summary: -summary.score)[:max_instances]
        if not kept:
            return VideoInstances.empty(num_frames, height, width)
        empty = masks.encode_one(np.zeros((height, width), dtype=bool))
        tracks = []
        for summary in kept:
            by_frame = self._by_track.get(summary.track_id, {})
            tracks.append(tuple(by_frame.get(t, dict(empty)) for t in range(num_frames)))
        return VideoInstances(
            num_frames=num_frames,
            height=height,
            width=width,
            scores=np.array([summary.score for summary in kept], dtype=np.float32),
            labels=np.array([summary.label for summary in kept], dtype=np.int64),
            masks=tuple(tracks),
        )


class OnlineSegmenter:
    """An online head's inference with `VideoSegmenter`'s interface: `segment(frames)`.

    Frames are read once, so any `FrameSource` works. The model is put in eval mode and
    moved to `device` (default: where its parameters are); bfloat16 or float16 `dtype`
    runs under autocast (heads associate in float32).
    """

    def __init__(
        self,
        model: VitaModel,
        head: OnlineHead,
        chunk_frames: int | None = None,
        max_instances: int = 100,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        self.device = (
            torch.device(device) if device is not None else next(model.parameters()).device
        )
        self.model = model.to(self.device).eval()
        self.head = head
        self.chunk_frames = chunk_frames or model.config.inference.detector_chunk_frames
        if self.chunk_frames < 1 or max_instances < 0:
            raise ValueError("chunk_frames must be >= 1 and max_instances >= 0")
        self.max_instances = max_instances
        self.dtype = dtype
        inference_autocast(self.device, dtype)  # validates dtype
        self.frames = FramePreparer(model.detector, model.config.input, self.device)

    def segment(self, frames: FrameSource) -> VideoInstances:
        """Segment one video; `frames` yields RGB `[H, W, 3]` uint8 frames."""
        return self.segment_source(self.live_source(frames))

    def live_source(self, frames: FrameSource) -> DetectorSource:
        """The detector on `frames`: what `segment` reads."""
        return LiveDetector(self.model.detector, self.frames, frames)

    def segment_source(self, source: DetectorSource) -> VideoInstances:
        """Segment one video from its detector outputs (live or stored), read once."""
        state = self.head.start()
        rles = TrackRles()
        summaries: list[TrackSummary] = []
        geometry = None
        num_frames = 0
        with torch.inference_mode(), inference_autocast(self.device, self.dtype):
            for chunk, geometry in source.chunks(self.chunk_frames):
                state, step = self.head.step(state, chunk)
                rles.add(step.masks, geometry)
                summaries.extend(step.finished)
                num_frames += chunk.num_frames
                del chunk
            summaries.extend(self.head.finish(state))
        if geometry is None:
            raise FrameSourceError("the video has no frames")
        return rles.instances(
            summaries, num_frames, geometry.height, geometry.width, self.max_instances
        )
