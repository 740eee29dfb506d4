"""VITA on the device for many videos at once: the device side of the staged corpus job.

`VideoSegmenter` segments one video per call. `VitaProgram` holds the state of several
videos and takes their frames chunk by chunk as they come, so one detector call can batch
frames of several videos, and hands out only what is small: the selected instances and
their stride-4 mask logits (`vis_core.inference.mask_chunks` makes the masks):

    program.open(key, geometry)
    program.detect([(key, chunk), ...])      # chunks of open videos, each video's in order
    selection, masks = program.finish(key)   # VITA over the video's frame queries
    # a long video (masks is None): its frames again, then close
    masks = program.second_pass(key, chunk)  # for each chunk, in order
    program.close(key)

Per video the device keeps its frame queries `[T, Q, C]` (and foreground probabilities when
VITA prunes tokens) and, while the video has at most `long_video_frames` frames, VITA's
projected mask features per chunk, as `VideoSegmenter` does; past that count the features
are dropped and `second_pass` recomputes them chunk by chunk (backbone and pixel decoder).
So device memory is bounded by the open videos times `long_video_frames` frames of mask
features. `finish` gives a short video's `MaskLogits` per chunk and drops its state; a
long video keeps its selection until `close`.

Chunks of the same input size run in one detector call, at most `max_batch_frames` frames
(whole chunks; a chunk bigger than that runs alone). With each call holding one chunk of a
video of `detector_chunk_frames`-frame chunks, the results are `VideoSegmenter`'s bit for
bit on the CPU; batching changes them only by the kernels' rounding.

Dimension letters: t frames of a chunk, T of a video, Q frame queries, C channels, k
selected instances, h x w the stride-4 grid of the padded input.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from vis_core.inference.frames import FrameSourceError, InputGeometry, PreparedChunk
from vis_core.inference.mask_chunks import MaskLogits, VideoSelection, mask_logits
from vis_core.inference.segmenter import (
    VideoQuerySelection,
    check_inference_config,
    inference_autocast,
    scored_logits,
    select_video_queries,
)
from vis_core.modeling.config import InferenceConfig
from vis_core.modeling.vita import frame_foreground_probability
from vis_core.modeling.vita_model import VitaModel


class DeviceProgram(Protocol):
    """What runs on a detector actor's device: `VitaProgram`, or a stand-in for it
    (`vis_core.inference.standin`). See the module docstring for the order of calls."""

    max_batch_frames: int

    def open(self, key: Hashable, geometry: InputGeometry) -> None: ...

    def discard(self, key: Hashable) -> None: ...

    def detect(self, chunks: Sequence[tuple[Hashable, PreparedChunk]]) -> None: ...

    def finish(self, key: Hashable) -> tuple[VideoSelection, list[MaskLogits] | None]: ...

    def second_pass(self, key: Hashable, chunk: PreparedChunk) -> MaskLogits: ...

    def close(self, key: Hashable) -> None: ...


@dataclass
class _Video:
    """One open video on the device. features: per chunk `[t, C, h, w]`, None once long."""

    geometry: InputGeometry
    queries: list[Tensor] = field(default_factory=list)
    foreground: list[Tensor] = field(default_factory=list)
    features: list[Tensor] | None = field(default_factory=list)
    first_frames: list[int] = field(default_factory=list)
    frames: int = 0
    selection: VideoQuerySelection | None = None
    second_pass_frames: int = 0


class VitaProgram:
    """VITA inference over chunks of many videos (see the module docstring).

    The model is put in eval mode and moved to `device`; `dtype` bfloat16 or float16 runs
    under autocast, as `VideoSegmenter` does. `config` defaults to `model.config.inference`.
    """

    def __init__(
        self,
        model: VitaModel,
        config: InferenceConfig | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        max_batch_frames: int | None = None,
    ):
        self.device = torch.device(device) if device is not None else _device_of(model)
        self.model = model.to(self.device).eval()
        self.config = config or model.config.inference
        self.dtype = dtype
        inference_autocast(self.device, dtype)  # validates dtype
        check_inference_config(self.config, model)
        self.max_batch_frames = max_batch_frames or self.config.detector_chunk_frames
        self.prunes_tokens = model.config.vita.token_keep_ratio < 1.0
        self._videos: dict[Hashable, _Video] = {}

    @property
    def open_videos(self) -> int:
        return len(self._videos)

    def open(self, key: Hashable, geometry: InputGeometry) -> None:
        if key in self._videos:
            raise ValueError(f"video {key!r} is already open")
        self._videos[key] = _Video(geometry)

    def discard(self, key: Hashable) -> None:
        """Drop a video's state, whatever it holds (a failed video)."""
        self._videos.pop(key, None)

    def detect(self, chunks: Sequence[tuple[Hashable, PreparedChunk]]) -> None:
        """Run the detector on chunks of open videos (each video's in frame order), in
        `detector_batches`; a batch that raises leaves its videos as they were."""
        for batch in detector_batches(chunks, self.max_batch_frames):
            self._detect(batch)

    def finish(self, key: Hashable) -> tuple[VideoSelection, list[MaskLogits] | None]:
        """VITA over the video's frame queries: its selection and, for a short video, the
        mask logits of every chunk (its state is then dropped); None for a long one."""
        video = self._videos[key]
        if video.frames == 0:
            self.discard(key)
            raise FrameSourceError("the video has no frames")
        with torch.inference_mode(), inference_autocast(self.device, self.dtype):
            frame_queries = torch.cat(video.queries)[None, None]  # [1, 1, T, Q, C]
            foreground = torch.cat(video.foreground)[None, None] if self.prunes_tokens else None
            output = self.model.vita(frame_queries, frame_fg_prob=foreground)
            selection = select_video_queries(
                output.pred_logits[0, 0], output.pred_mask_embed[0, 0], self.config.top_k
            )
            video.queries, video.foreground = [], []
            shipped = VideoSelection(
                class_scores=selection.class_scores.float().cpu(),
                labels=selection.labels.cpu(),
            )
            if video.features is None:
                video.selection = selection
                return shipped, None
            masks = [
                self._mask_logits(selection, features, first, video.geometry)
                for features, first in zip(video.features, video.first_frames, strict=True)
            ]
        self.discard(key)
        return shipped, masks

    def second_pass(self, key: Hashable, chunk: PreparedChunk) -> MaskLogits:
        """The mask logits of the next chunk of a long video, read again."""
        video = self._videos[key]
        if video.selection is None:
            raise ValueError(f"video {key!r} has not finished its first pass as a long video")
        video.second_pass_frames += len(chunk)
        if video.second_pass_frames > video.frames or chunk.geometry != video.geometry:
            raise FrameSourceError(
                f"the frame source gave {video.frames} frames on the first pass and more, "
                "or other frames, on the second"
            )
        with torch.inference_mode(), inference_autocast(self.device, self.dtype):
            images = self._images([chunk])
            features = self.model.vita.project_mask_features(
                self.model.detector.mask_features(images)
            )
            return self._mask_logits(video.selection, features, chunk.first_frame, video.geometry)

    def close(self, key: Hashable) -> None:
        """Drop a long video after its second pass, checking it saw every frame again."""
        video = self._videos.pop(key)
        if video.second_pass_frames != video.frames:
            raise FrameSourceError(
                f"the frame source gave {video.frames} frames on the first pass and "
                f"{video.second_pass_frames} on the second"
            )

    def _detect(self, batch: list[tuple[Hashable, PreparedChunk]]) -> None:
        videos = [self._videos[key] for key, _ in batch]
        expected = {id(video): video.frames for video in videos}
        for video, (_, chunk) in zip(videos, batch, strict=True):  # before any change
            if chunk.first_frame != expected[id(video)] or chunk.geometry != video.geometry:
                raise ValueError(
                    f"a chunk of frames from {chunk.first_frame} at {chunk.geometry} does "
                    f"not follow frame {expected[id(video)]} of a video at {video.geometry}"
                )
            expected[id(video)] += len(chunk)
        with torch.inference_mode(), inference_autocast(self.device, self.dtype):
            detections = self.model.detector(self._images([chunk for _, chunk in batch]))
            start = 0
            for video, (_, chunk) in zip(videos, batch, strict=True):
                end = start + len(chunk)
                video.queries.append(detections.frame_queries[-1][start:end])  # [t, Q, C]
                if self.prunes_tokens:
                    logits = detections.pred_logits[start:end]
                    video.foreground.append(frame_foreground_probability(logits))
                video.frames += len(chunk)
                if video.features is not None and video.frames <= self.config.long_video_frames:
                    features = detections.clip_mask_features[start:end]
                    video.features.append(self.model.vita.project_mask_features(features))
                    video.first_frames.append(chunk.first_frame)
                else:
                    video.features = None  # long: the second pass recomputes them
                start = end

    def _images(self, chunks: Sequence[PreparedChunk]) -> Tensor:
        """Normalised, padded `[t, 3, H', W']` on the device from chunks of one size."""
        with warnings.catch_warnings():  # read-only (Ray's shared memory): only read here
            warnings.simplefilter("ignore", UserWarning)
            frames = [torch.from_numpy(chunk.frames) for chunk in chunks]
        batch = frames[0] if len(frames) == 1 else torch.cat(frames)
        return self.model.detector.preprocess(batch.to(self.device))

    def _mask_logits(
        self,
        selection: VideoQuerySelection,
        features: Tensor,
        first_frame: int,
        geometry: InputGeometry,
    ) -> MaskLogits:
        """`[t, C, h, w]` mask features -> `MaskLogits`, `mask_chunk_frames` at a time."""
        step = self.config.mask_chunk_frames
        parts = [
            scored_logits(
                self.model.vita.video_mask_logits(
                    selection.mask_embed, features[start : start + step]
                ),  # [k, t, h, w]
                geometry,
            )
            for start in range(0, features.shape[0], step)
        ]
        return mask_logits(first_frame, parts, geometry)


def detector_batches(
    chunks: Sequence[tuple[Hashable, PreparedChunk]], max_frames: int
) -> list[list[tuple[Hashable, PreparedChunk]]]:
    """Chunks grouped by input size, in order, into batches of at most `max_frames` frames
    (whole chunks: a bigger chunk is a batch of its own)."""
    by_size: dict[tuple[int, int], list[list[tuple[Hashable, PreparedChunk]]]] = {}
    for key, chunk in chunks:
        size = chunk.frames.shape[1:3]
        batches = by_size.setdefault(size, [[]])
        frames = sum(len(c) for _, c in batches[-1])
        if batches[-1] and frames + len(chunk) > max_frames:
            batches.append([])
        batches[-1].append((key, chunk))
    return [batch for batches in by_size.values() for batch in batches]


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device
