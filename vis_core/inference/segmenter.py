"""VITA video inference: the frames of one video -> `VideoInstances` (reference section 3).

1. Each frame is resized so its shorter side is `min_size_test` (the longer at most
   `max_size_test`), normalised and zero-padded by `FrameDetector.preprocess`.
2. First pass: the detector runs in chunks of `detector_chunk_frames`; only the last
   layer's frame queries `[t, Q, C]` are kept and, while the video has at most
   `long_video_frames` frames, VITA's projected mask features `[t, C, h, w]` too (on the
   device). Past that count the stored features are dropped and the second pass
   recomputes them chunk by chunk (backbone and pixel decoder only), so memory does not
   grow with mask features x length: only the frame queries and the RLE strings do.
3. VITA runs once over all frame queries `[1, 1, T, Q, C]`.
4. The top-k (video query, class) pairs by class probability are kept.
5. Masks are made `mask_chunk_frames` frames at a time: mask logits, upsampled to the
   padded input, cropped to the resized frame, scored by their mean foreground
   probability, resized to the original size, thresholded at 0 and RLE-encoded. The last
   three steps compute only the pixels near the masks' borders
   (`vis_core.inference.mask_upsampling`, the same RLE as doing them on every pixel), and
   the masks' areas and boxes are kept from there.

Steps 2-5 read the detector's outputs from a `DetectorSource`
(`vis_core.inference.detector_source`): the detector run on the frames (`segment`), or the
outputs stored by an earlier job (`segment_source`, `vis process --from-frame-queries`).

Frames come from a `FrameSource`: a callable returning a fresh iterator of RGB frames
`[H, W, 3]` uint8 at the original size (called twice on long videos), or a re-iterable such
as a list. A one-shot iterator is refused, since the long path must read the frames twice.

Dimension letters: T frames, t a chunk of them, Q frame queries, cQ video queries, C
channels, K classes, k selected instances, H x W the original frame size, H' x W' the padded
input, h x w = H'/4 x W'/4.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from vis_core.inference.detector_source import DetectorSource, LiveDetector
from vis_core.inference.frames import (
    FramePreparer,
    FrameSource,
    FrameSourceError,
    InputGeometry,
)
from vis_core.inference.instances import VideoInstances
from vis_core.inference.mask_upsampling import upsampled_masks
from vis_core.masks import RLE
from vis_core.modeling.config import InferenceConfig
from vis_core.modeling.vita import frame_foreground_probability
from vis_core.modeling.vita_model import VitaModel

INFERENCE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Added to the foreground pixel count when averaging probabilities (official value).
SCORE_EPSILON = 1e-6


@dataclass(frozen=True)
class ScoredLogits:
    """Mask logits of k instances over t frames at the resized input size, scored.

    logits `[k, t, h_r, w_r]` float32: upsampled from stride 4 to the padded input and
    cropped to the resized frame; soft_sum `[k, t]`: sum of sigmoid probabilities over the
    foreground pixels (sigmoid > 0.5) there; hard_count `[k, t]`: the number of those pixels.
    """

    logits: Tensor
    soft_sum: Tensor
    hard_count: Tensor


@dataclass(frozen=True)
class MaskChunk:
    """Masks of k instances over t frames, from their stride-4 logits.

    soft_sum, hard_count `[k, t]` as in `ScoredLogits`; masks `[k, t, H, W]` bool numpy at
    the original size.
    """

    soft_sum: Tensor
    hard_count: Tensor
    masks: np.ndarray


def inference_autocast(
    device: torch.device, dtype: torch.dtype
) -> contextlib.AbstractContextManager:
    """Autocast to `dtype` on `device`, or nothing for float32."""
    if dtype not in INFERENCE_DTYPES:
        raise ValueError(f"dtype must be one of {INFERENCE_DTYPES}, got {dtype}")
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def cropped_logits(logits: Tensor, geometry: InputGeometry) -> Tensor:
    """Stride-4 mask logits `[k, t, h, w]` of the padded input -> `[k, t, h_r, w_r]`
    float32: bilinear (align_corners=False) to the padded input size, cropped to the
    resized frame."""
    padded = F.interpolate(
        logits.float(),
        size=(geometry.padded_height, geometry.padded_width),
        mode="bilinear",
        align_corners=False,
    )
    return padded[:, :, : geometry.resized_height, : geometry.resized_width]


def scored_logits(logits: Tensor, geometry: InputGeometry) -> ScoredLogits:
    """Stride-4 mask logits `[k, t, h, w]` of the padded input -> `ScoredLogits`.

    `cropped_logits`, scored there.
    """
    cropped = cropped_logits(logits, geometry)
    soft = cropped.sigmoid()
    hard = soft > 0.5
    soft_sum = (soft * hard).flatten(2).sum(-1)
    hard_count = hard.flatten(2).sum(-1).float()
    return ScoredLogits(logits=cropped, soft_sum=soft_sum, hard_count=hard_count)


def masks_from_logits(logits: Tensor, geometry: InputGeometry) -> MaskChunk:
    """Stride-4 mask logits `[k, t, h, w]` of the padded input -> dense `MaskChunk`.

    `scored_logits`, then bilinear to the original size and threshold the logits at 0.
    """
    scored = scored_logits(logits, geometry)
    original = F.interpolate(
        scored.logits, size=(geometry.height, geometry.width), mode="bilinear", align_corners=False
    )
    return MaskChunk(
        soft_sum=scored.soft_sum,
        hard_count=scored.hard_count,
        masks=(original > 0).cpu().numpy(),
    )


@dataclass(frozen=True)
class VideoQuerySelection:
    """The top-k (video query, class) pairs of one video.

    class_scores `[k]`: class probability; labels `[k]`: class index (idx % K); queries
    `[k]`: video query (idx // K, a query may appear with several classes); mask_embed
    `[k, C]`: the selected queries' mask embeddings.
    """

    class_scores: Tensor
    labels: Tensor
    queries: Tensor
    mask_embed: Tensor


def select_video_queries(
    pred_logits: Tensor, pred_mask_embed: Tensor, top_k: int
) -> VideoQuerySelection:
    """pred_logits `[cQ, K+1]` (no-object last), pred_mask_embed `[cQ, C]` -> the top-k
    (query, class) pairs by class probability, best first."""
    num_classes = pred_logits.shape[-1] - 1
    scores = pred_logits.float().softmax(-1)[:, :-1]  # [cQ, K]
    class_scores, flat_index = scores.flatten().topk(top_k, sorted=True)
    queries = flat_index // num_classes
    return VideoQuerySelection(
        class_scores=class_scores,
        labels=flat_index % num_classes,
        queries=queries,
        mask_embed=pred_mask_embed[queries],
    )


@dataclass(frozen=True)
class _FirstPass:
    """frame_queries `[T, Q, C]`; foreground `[T, Q]` (only when VITA prunes tokens);
    mask_features: VITA's projected features `[t, C, h, w]` per detector chunk, or None
    on the long path."""

    frame_queries: Tensor
    foreground: Tensor | None
    mask_features: tuple[Tensor, ...] | None
    geometry: InputGeometry


class VideoSegmenter:
    """VITA inference on whole videos of any length (see the module docstring).

    The model is put in eval mode and moved to `device` (default: where its parameters
    are). `dtype` bfloat16 or float16 runs under autocast, as the official evaluation does.
    `config` defaults to `model.config.inference`.
    """

    reads_mask_logits = False  # the frame decoder's masks: VITA makes its own

    def __init__(
        self,
        model: VitaModel,
        config: InferenceConfig | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        self.device = torch.device(device) if device is not None else _model_device(model)
        self.model = model.to(self.device).eval()
        self.config = config or model.config.inference
        self.dtype = dtype
        inference_autocast(self.device, dtype)  # validates dtype
        check_inference_config(self.config, model)
        self.frames = FramePreparer(model.detector, model.config.input, self.device)
        self.prunes_tokens = model.config.vita.token_keep_ratio < 1.0

    def segment(self, frames: FrameSource) -> VideoInstances:
        """Segment one video; `frames` yields RGB `[H, W, 3]` uint8 frames (module docstring).

        Returns `top_k` instances with masks at the original H x W for every frame.
        """
        return self.segment_source(self.live_source(frames))

    def live_source(self, frames: FrameSource) -> DetectorSource:
        """The detector on `frames`: what `segment` reads."""
        return LiveDetector(self.model.detector, self.frames, frames)

    def segment_source(self, source: DetectorSource) -> VideoInstances:
        """Segment one video from its detector outputs, live or stored (steps 2-5)."""
        with torch.inference_mode(), inference_autocast(self.device, self.dtype):
            first = self._first_pass(source)
            frame_queries = first.frame_queries[None, None]  # [1, 1, T, Q, C]
            foreground = None if first.foreground is None else first.foreground[None, None]
            video = self.model.vita(frame_queries, frame_fg_prob=foreground)
            selection = select_video_queries(
                video.pred_logits[0, 0], video.pred_mask_embed[0, 0], self.config.top_k
            )
            num_frames = first.frame_queries.shape[0]
            if first.mask_features is not None:
                features: Iterable[Tensor] = first.mask_features
            else:
                features = self._recomputed_mask_features(source, first.geometry, num_frames)
            return self._decode_masks(selection, features, first.geometry, num_frames)

    def _first_pass(self, source: DetectorSource) -> _FirstPass:
        queries: list[Tensor] = []
        foreground: list[Tensor] = []
        stored: list[Tensor] | None = []
        geometry = None
        count = 0
        for chunk, chunk_geometry in source.chunks(self.config.detector_chunk_frames):
            geometry = chunk_geometry
            queries.append(chunk.frame_queries)  # [t, Q, C]
            if self.prunes_tokens:
                foreground.append(frame_foreground_probability(chunk.class_logits))
            count += chunk.num_frames
            if stored is not None and count <= self.config.long_video_frames:
                stored.append(self.model.vita.project_mask_features(chunk.mask_features))
            else:
                stored = None  # long video: the second pass recomputes them chunk by chunk
            del chunk
        if geometry is None:
            raise FrameSourceError("the video has no frames")
        return _FirstPass(
            frame_queries=torch.cat(queries),
            foreground=torch.cat(foreground) if self.prunes_tokens else None,
            mask_features=None if stored is None else tuple(stored),
            geometry=geometry,
        )

    def _recomputed_mask_features(
        self, source: DetectorSource, geometry: InputGeometry, num_frames: int
    ) -> Iterator[Tensor]:
        """Second pass: VITA's mask features `[t, C, h, w]` per detector chunk."""
        seen = 0
        chunk_frames = self.config.detector_chunk_frames
        for features in source.clip_mask_features(chunk_frames, geometry):
            seen += features.shape[0]
            if seen > num_frames:
                break
            yield self.model.vita.project_mask_features(features)
            del features
        if seen != num_frames:
            raise FrameSourceError(
                f"the frame source gave {num_frames} frames on the first pass and "
                f"{'more' if seen > num_frames else seen} on the second"
            )

    def _decode_masks(
        self,
        selection: VideoQuerySelection,
        feature_chunks: Iterable[Tensor],
        geometry: InputGeometry,
        num_frames: int,
    ) -> VideoInstances:
        count = selection.labels.shape[0]
        soft_sum = torch.zeros(count, device=self.device)
        hard_count = torch.zeros(count, device=self.device)
        tracks: list[list[RLE]] = [[] for _ in range(count)]
        areas: list[np.ndarray] = []  # [k, t] per chunk
        boxes: list[np.ndarray] = []  # [k, t, 4] per chunk
        step = self.config.mask_chunk_frames
        for features in feature_chunks:
            for start in range(0, features.shape[0], step):
                logits = self.model.vita.video_mask_logits(
                    selection.mask_embed, features[start : start + step]
                )  # [k, t, h, w]
                scored = scored_logits(logits, geometry)
                soft_sum += scored.soft_sum.sum(1)
                hard_count += scored.hard_count.sum(1)
                frames = logits.shape[1]
                encoded = upsampled_masks(
                    scored.logits.flatten(0, 1), geometry.height, geometry.width
                )  # k * t masks, instance-major
                rles = encoded.rles()
                for index, track in enumerate(tracks):
                    track.extend(rles[index * frames : (index + 1) * frames])
                areas.append(encoded.areas.reshape(count, frames))
                boxes.append(encoded.boxes.reshape(count, frames, 4))
                del logits, scored
        scores = selection.class_scores * soft_sum / (hard_count + SCORE_EPSILON)
        return VideoInstances(
            num_frames=num_frames,
            height=geometry.height,
            width=geometry.width,
            scores=scores.float().cpu().numpy(),
            labels=selection.labels.cpu().numpy().astype(np.int64),
            masks=tuple(tuple(track) for track in tracks),
            mask_areas=np.concatenate(areas, axis=1),
            mask_boxes=np.concatenate(boxes, axis=1),
        )


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def check_inference_config(config: InferenceConfig, model: VitaModel) -> None:
    """Raise a ValueError for inference options `model` cannot run with."""
    pairs = model.config.vita.num_queries * model.config.num_classes
    if not 1 <= config.top_k <= pairs:
        raise ValueError(
            f"top_k must lie in [1, {pairs}] (video queries x classes), got {config.top_k}"
        )
    for name in ("detector_chunk_frames", "mask_chunk_frames"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.long_video_frames < 0:
        raise ValueError(f"long_video_frames must be >= 0, got {config.long_video_frames}")
