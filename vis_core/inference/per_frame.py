"""Per-frame baseline: Mask2Former frame inference, linked over time by mask IoU.

The same frame detector VITA uses predicts each frame on its own (Mask2Former's instance
inference: the top (query, class) pairs by class probability, scored by class probability
x mean foreground probability of the mask). Detections are then linked frame to frame by
a heuristic, so VITA's learned association can be compared against it:

- a detection may continue a track of the same class last seen at most `max_gap` skipped
  frames earlier, when the IoU of its mask with the track's last mask is at least
  `link_iou_threshold`;
- pairs are taken greedily, highest IoU first, each detection and track at most once;
- unmatched detections start new tracks.

A track's score is the mean of its frame scores, its label the class it was linked on.

Dimension letters: T frames, t a chunk of them, Q frame queries, K classes, q detections
kept per frame, H x W the original frame size, h x w the stride-4 mask size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from vis_core import masks
from vis_core.inference.detector_source import DetectorSource, LiveDetector
from vis_core.inference.frames import FramePreparer, FrameSource, FrameSourceError, InputGeometry
from vis_core.inference.instances import VideoInstances
from vis_core.inference.segmenter import SCORE_EPSILON, inference_autocast, masks_from_logits
from vis_core.masks import RLE
from vis_core.modeling.vita_model import VitaModel


@dataclass(frozen=True)
class PerFrameConfig:
    """Frame inference and linking settings of the baseline."""

    detections_per_frame: int = 10  # top (query, class) pairs per frame, before the threshold
    score_threshold: float = 0.3  # detections scoring below are dropped (0 keeps all)
    link_iou_threshold: float = 0.3
    max_gap: int = 2  # frames a track may miss and still be continued
    max_tracks: int = 100  # the best-scoring tracks kept (the evaluator reads 100 at most)
    detector_chunk_frames: int = 16

    def __post_init__(self) -> None:
        if self.detections_per_frame < 1 or self.detector_chunk_frames < 1:
            raise ValueError("detections_per_frame and detector_chunk_frames must be >= 1")
        if not 0.0 <= self.link_iou_threshold <= 1.0:
            raise ValueError(f"link_iou_threshold must be in [0, 1], got {self.link_iou_threshold}")
        if self.max_gap < 0 or self.max_tracks < 0:
            raise ValueError("max_gap and max_tracks must be >= 0")


@dataclass(frozen=True)
class FrameDetection:
    """One detection in one frame: class index, score in [0, 1], compressed RLE mask."""

    label: int
    score: float
    mask: RLE


@dataclass(frozen=True)
class Track:
    """Linked detections: the frames it was detected in (ascending), one mask and score
    each, and the class it was linked on."""

    label: int
    frames: tuple[int, ...]
    masks: tuple[RLE, ...]
    scores: tuple[float, ...]

    @property
    def score(self) -> float:
        """The mean of its frame scores."""
        return float(np.mean(self.scores))


@dataclass
class _OpenTrack:
    """A track while linking goes on (grows frame by frame)."""

    label: int
    frames: list[int] = field(default_factory=list)
    masks: list[RLE] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    def add(self, frame_index: int, detection: FrameDetection) -> None:
        self.frames.append(frame_index)
        self.masks.append(detection.mask)
        self.scores.append(detection.score)

    def closed(self) -> Track:
        return Track(self.label, tuple(self.frames), tuple(self.masks), tuple(self.scores))


class GreedyIouLinker:
    """Links detections frame by frame (see the module docstring); call `add_frame` in
    frame order, then read `tracks`."""

    def __init__(self, iou_threshold: float = 0.3, max_gap: int = 2):
        self.iou_threshold = iou_threshold
        self.max_gap = max_gap
        self._active: list[_OpenTrack] = []
        self._finished: list[_OpenTrack] = []
        self._last_frame = -1

    def add_frame(self, frame_index: int, detections: Sequence[FrameDetection]) -> None:
        if frame_index <= self._last_frame:
            raise ValueError(f"frame {frame_index} after frame {self._last_frame}: not in order")
        self._last_frame = frame_index
        # Tracks unseen for more than max_gap frames can no longer be continued.
        expired = [t for t in self._active if frame_index - t.frames[-1] - 1 > self.max_gap]
        self._finished.extend(expired)
        self._active = [t for t in self._active if frame_index - t.frames[-1] - 1 <= self.max_gap]

        matched_detections: set[int] = set()
        matched_tracks: set[int] = set()
        for detection_index, track_index in self._greedy_pairs(detections):
            if detection_index in matched_detections or track_index in matched_tracks:
                continue
            matched_detections.add(detection_index)
            matched_tracks.add(track_index)
            self._active[track_index].add(frame_index, detections[detection_index])
        for index, detection in enumerate(detections):
            if index not in matched_detections:
                track = _OpenTrack(label=detection.label)
                track.add(frame_index, detection)
                self._active.append(track)

    def _greedy_pairs(self, detections: Sequence[FrameDetection]) -> list[tuple[int, int]]:
        """(detection, active track) pairs that may link, highest IoU first."""
        if not detections or not self._active:
            return []
        last_masks = [track.masks[-1] for track in self._active]
        iou = masks.iou_matrix([detection.mask for detection in detections], last_masks)  # [D, A]
        labels = np.array([detection.label for detection in detections])
        track_labels = np.array([track.label for track in self._active])
        allowed = (labels[:, None] == track_labels[None, :]) & (iou >= self.iou_threshold)
        rows, cols = np.nonzero(allowed)
        order = np.argsort(-iou[rows, cols], kind="stable")
        return [(int(rows[i]), int(cols[i])) for i in order]

    @property
    def tracks(self) -> list[Track]:
        """Every track so far, in the order they were started."""
        started = sorted(self._finished + self._active, key=lambda track: track.frames[0])
        return [track.closed() for track in started]


def link_detections(
    frames: Iterable[Sequence[FrameDetection]], iou_threshold: float = 0.3, max_gap: int = 2
) -> list[Track]:
    """Link the detections of consecutive frames (frame index = position) into tracks."""
    linker = GreedyIouLinker(iou_threshold, max_gap)
    for frame_index, detections in enumerate(frames):
        linker.add_frame(frame_index, detections)
    return linker.tracks


def tracks_to_instances(
    tracks: Sequence[Track], num_frames: int, height: int, width: int, max_tracks: int = 100
) -> VideoInstances:
    """The `max_tracks` best-scoring tracks, best first, as `VideoInstances` (an empty mask
    in every frame where a track has no detection)."""
    kept = sorted(tracks, key=lambda track: -track.score)[:max_tracks]
    if not kept:
        return VideoInstances.empty(num_frames, height, width)
    empty = masks.encode_one(np.zeros((height, width), dtype=bool))
    per_track: list[tuple[RLE, ...]] = []
    for track in kept:
        by_frame = dict(zip(track.frames, track.masks, strict=True))
        per_track.append(tuple(by_frame.get(t, dict(empty)) for t in range(num_frames)))
    return VideoInstances(
        num_frames=num_frames,
        height=height,
        width=width,
        scores=np.array([track.score for track in kept], dtype=np.float32),
        labels=np.array([track.label for track in kept], dtype=np.int64),
        masks=tuple(per_track),
    )


class PerFrameSegmenter:
    """The per-frame baseline with `VideoSegmenter`'s interface: `segment(frames)`.

    Frames are read once, so any `FrameSource` works; memory holds only the RLE masks.
    """

    def __init__(
        self,
        model: VitaModel,
        config: PerFrameConfig | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        self.device = (
            torch.device(device) if device is not None else next(model.parameters()).device
        )
        self.model = model.to(self.device).eval()
        self.config = config or PerFrameConfig()
        self.dtype = dtype
        inference_autocast(self.device, dtype)  # validates dtype
        pairs = model.config.frame_decoder.num_queries * model.config.num_classes
        if self.config.detections_per_frame > pairs:
            raise ValueError(
                f"detections_per_frame {self.config.detections_per_frame} exceeds the "
                f"{pairs} (frame query, class) pairs"
            )
        self.frames = FramePreparer(model.detector, model.config.input, self.device)

    def segment(self, frames: FrameSource) -> VideoInstances:
        """Segment one video; `frames` yields RGB `[H, W, 3]` uint8 frames."""
        return self.segment_source(self.live_source(frames))

    def live_source(self, frames: FrameSource) -> DetectorSource:
        """The detector on `frames`: what `segment` reads."""
        return LiveDetector(self.model.detector, self.frames, frames)

    def segment_source(self, source: DetectorSource) -> VideoInstances:
        """Segment one video from its detector outputs (live or stored), read once."""
        linker = GreedyIouLinker(self.config.link_iou_threshold, self.config.max_gap)
        geometry = None
        frame_index = 0
        with torch.inference_mode(), inference_autocast(self.device, self.dtype):
            for chunk, geometry in source.chunks(self.config.detector_chunk_frames):
                for frame_detections in self._frame_detections(
                    chunk.class_logits, chunk.mask_logits, geometry
                ):
                    linker.add_frame(frame_index, frame_detections)
                    frame_index += 1
                del chunk
        if geometry is None:
            raise FrameSourceError("the video has no frames")
        return tracks_to_instances(
            linker.tracks, frame_index, geometry.height, geometry.width, self.config.max_tracks
        )

    def _frame_detections(
        self, pred_logits: Tensor, pred_masks: Tensor, geometry: InputGeometry
    ) -> Iterator[list[FrameDetection]]:
        """pred_logits `[t, Q, K+1]`, pred_masks `[t, Q, h, w]` -> each frame's detections."""
        num_classes = pred_logits.shape[-1] - 1
        class_probability = pred_logits.float().softmax(-1)[..., :-1].flatten(1)  # [t, Q*K]
        class_scores, flat_index = class_probability.topk(self.config.detections_per_frame, dim=1)
        queries = flat_index // num_classes  # [t, q]
        labels = (flat_index % num_classes).cpu().numpy()
        height, width = pred_masks.shape[-2:]
        selected = pred_masks.gather(1, queries[..., None, None].expand(-1, -1, height, width))
        chunk = masks_from_logits(selected.transpose(0, 1), geometry)  # instances q, frames t
        mask_scores = chunk.soft_sum / (chunk.hard_count + SCORE_EPSILON)  # [q, t]
        scores = (class_scores * mask_scores.T).cpu().numpy()  # [t, q]
        non_empty = chunk.masks.any(axis=(2, 3))  # [q, t]
        for frame in range(scores.shape[0]):
            keep = np.flatnonzero(
                (scores[frame] >= self.config.score_threshold) & non_empty[:, frame]
            )
            rles = masks.encode(chunk.masks[keep, frame]) if keep.size else []
            yield [
                FrameDetection(label=int(labels[frame, i]), score=float(scores[frame, i]), mask=rle)
                for i, rle in zip(keep, rles, strict=True)
            ]
