"""The whole model of a preset: the frame detector, VITA over its frame queries, and the
online temporal heads the config asks for (`ModelConfig.querytrack`).

Dimension letters: B clips, T frames per clip, Q frame queries, cQ video queries,
C channels, K classes, L frame-decoder layers fed to VITA, E track-embedding channels,
h x w = H/4 x W/4.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from vis_core.modeling.config import ModelConfig
from vis_core.modeling.frame_detector import FrameDetections, FrameDetector
from vis_core.modeling.hitf import HitfHead, HitfOutput
from vis_core.modeling.l2g import L2gHead, L2gOutput
from vis_core.modeling.mask_pilot import MaskPilot
from vis_core.modeling.querytrack import QueryTrackHead
from vis_core.modeling.vita import Vita, VitaOutput, frame_foreground_probability

# Submodules built only when the config has that head: a model file without one loads.
OPTIONAL_HEADS = ("querytrack", "hitf", "l2g")


@dataclass(frozen=True)
class ClipPrediction:
    """Model output for B clips of T frames.

    frames: the detector's per-frame output (N = B*T frames, clip-major).
    video: VITA's output over each clip's frame queries.
    mask_features `[B, T, C, h, w]`: VITA's projected mask features, for the mask logits
    (`Vita.clip_mask_logits(video.pred_mask_embed, mask_features)` -> `[L, B, cQ, T, h, w]`).
    track_embed `[B, T, Q, E]`: the QueryTrack head's embeddings of the last layer's frame
    queries, or None when the model has no such head.
    hitf: the HF head's per-frame slot predictions (leading `[B, T]`), or None.
    l2g: the L2G head's propagated predictions over each clip (leading `[B, T]`), or None.
    """

    frames: FrameDetections
    video: VitaOutput
    mask_features: Tensor
    track_embed: Tensor | None = None
    hitf: HitfOutput | None = None
    l2g: L2gOutput | None = None


class VitaModel(nn.Module):
    """`detector` (backbone, pixel decoder, frame decoder), `vita`, and `querytrack` when
    the config has that head (old model files, without it, load unchanged)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.detector = FrameDetector(config)
        self.vita = Vita(
            config.vita,
            num_classes=config.num_classes,
            num_frame_queries=config.frame_decoder.num_queries,
            frame_query_dim=config.frame_decoder.hidden_dim,
            mask_in_channels=config.pixel_decoder.conv_dim,
            mask_dim=config.pixel_decoder.mask_dim,
        )
        self.querytrack: QueryTrackHead | None = None
        if config.querytrack is not None:
            self.querytrack = QueryTrackHead(config.querytrack, config.frame_decoder.hidden_dim)
        self.hitf = HitfHead.for_model(config) if config.hitf is not None else None
        self.l2g = L2gHead.for_model(config) if config.l2g is not None else None

    def forward(self, images: Tensor, pilot: MaskPilot | None = None) -> ClipPrediction:
        """images: normalised, padded clips `[B, T, 3, H, W]`; pilot: the B*T frames'
        ground truth (clip-major) for mask-piloted training of the detector."""
        batch, frames = images.shape[:2]
        detections = self.detector(images.flatten(0, 1), pilot)
        layers = detections.frame_queries.shape[0]
        # [L, B*T, Q, C] -> [L, B, T, Q, C]
        frame_queries = detections.frame_queries.unflatten(1, (batch, frames))
        foreground = None
        if self.config.vita.token_keep_ratio < 1.0:
            # Every fed layer is pruned by the final frame prediction's foreground scores.
            probability = frame_foreground_probability(detections.pred_logits)
            foreground = probability.unflatten(0, (batch, frames)).expand(layers, -1, -1, -1)
        video = self.vita(frame_queries, frame_fg_prob=foreground)
        mask_features = self.vita.project_mask_features(detections.clip_mask_features)
        track_embed = None
        if self.querytrack is not None:
            track_embed = self.querytrack(frame_queries[-1])  # [B, T, Q, E]
        hitf = None
        if self.hitf is not None:
            features = detections.clip_mask_features.unflatten(0, (batch, frames))
            hitf = self.hitf(frame_queries[-1], features)
        l2g = None
        if self.l2g is not None:  # the frame decoder again, from propagated queries
            l2g = self.l2g.over_clips(self.detector.frame_decoder, detections, batch, frames)
        return ClipPrediction(
            frames=detections,
            video=video,
            mask_features=mask_features.unflatten(0, (batch, frames)),
            track_embed=track_embed,
            hitf=hitf,
            l2g=l2g,
        )
