"""The per-frame detector: ResNet backbone, pixel decoder, masked-attention frame decoder.

Dimension letters: N frames, Q frame queries, C channels, K classes, L frame-decoder
layers whose queries are kept, H x W the padded input, h x w = H/4 x W/4.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vis_core.modeling.backbone import ResNet
from vis_core.modeling.config import ModelConfig, PixelDecoderConfig
from vis_core.modeling.fpn_pixel_decoder import FPNPixelDecoder
from vis_core.modeling.frame_decoder import FrameDecoder, FramePrediction
from vis_core.modeling.mask_pilot import MaskPilot
from vis_core.modeling.pixel_decoder import MSDeformAttnPixelDecoder, PixelDecoderOutput

PIXEL_DECODERS = {"msdeform": MSDeformAttnPixelDecoder, "fpn": FPNPixelDecoder}
# The pixel-decoder maps by stride; 4 is the clip mask features (the FPN's finest output).
_MAP_STRIDES = (32, 16, 8, 4)


@dataclass(frozen=True)
class FrameDetections:
    """What the detector gives for a batch of frames.

    pred_logits `[N, Q, K+1]` and pred_masks `[N, Q, h, w]`: the last layer's prediction.
    aux_outputs: the earlier predictions (the first from the learnable queries).
    frame_queries `[L, N, Q, C]`: the decoder-normed query states VITA consumes (the last
    `vita_last_layers` layers in training, the last one in eval).
    clip_mask_features `[N, C, h, w]`: the stride-4 pixel-decoder map VITA's masks use.
    pilot_predictions: the pilot queries' predictions in mask-piloted training, else empty.
    attended_maps: the three maps `[N, C, h_l, w_l]` the frame decoder attends (coarse
    first) and decoder_mask_features `[N, D, h, w]` its mask features: what a head that
    runs the frame decoder itself reads (`l2g.py`); empty and None where not given (ONNX).
    """

    pred_logits: Tensor
    pred_masks: Tensor
    aux_outputs: tuple[FramePrediction, ...]
    frame_queries: Tensor
    clip_mask_features: Tensor
    pilot_predictions: tuple[FramePrediction, ...] = ()
    attended_maps: tuple[Tensor, ...] = ()
    decoder_mask_features: Tensor | None = None


class FrameDetector(nn.Module):
    """Mask2Former on single frames; submodule names follow the checkpoint converter."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.size_divisibility = config.input.size_divisibility
        self.backbone = ResNet(config.backbone)
        self.pixel_decoder = build_pixel_decoder(config.pixel_decoder, self.backbone.out_channels)
        strides = config.frame_decoder.attention_strides
        if len(strides) != 3 or any(stride not in _MAP_STRIDES for stride in strides):
            raise ValueError(f"attention_strides must be 3 of {_MAP_STRIDES}, got {strides}")
        self.attended_maps = tuple(_MAP_STRIDES.index(stride) for stride in strides)
        self.frame_decoder = FrameDecoder(
            config.frame_decoder,
            num_classes=config.num_classes,
            in_channels=config.pixel_decoder.conv_dim,
            mask_dim=config.pixel_decoder.mask_dim,
        )
        # Not in checkpoints (official: non-persistent buffers).
        mean = torch.tensor(config.input.pixel_mean).view(1, 3, 1, 1)
        std = torch.tensor(config.input.pixel_std).view(1, 3, 1, 1)
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

    def preprocess(self, frames: Tensor) -> Tensor:
        """RGB frames `[N, H, W, 3]` uint8 -> normalised `[N, 3, H', W']` float, zero-padded
        at the bottom and right to a multiple of `size_divisibility`."""
        images = frames.permute(0, 3, 1, 2).to(self.pixel_mean.dtype)
        images = (images - self.pixel_mean) / self.pixel_std
        height, width = images.shape[-2:]
        pad_h = -height % self.size_divisibility
        pad_w = -width % self.size_divisibility
        return F.pad(images, (0, pad_w, 0, pad_h)) if pad_h or pad_w else images

    def mask_features(self, images: Tensor) -> Tensor:
        """clip_mask_features `[N, C, h, w]` alone: backbone and pixel decoder, no frame
        decoder (video inference recomputes VITA's mask features this way on long videos).

        images: normalised, padded `[N, 3, H, W]` (see `preprocess`).
        """
        return self.pixel_decoder(self.backbone(images)).clip_mask_features

    def mask_logits(self, frame_queries: Tensor, clip_mask_features: Tensor) -> Tensor:
        """The last layer's mask logits `[N, Q, h, w]` again, from what VITA keeps of a
        frame: its frame queries `[N, Q, C]` and clip_mask_features `[N, C, h, w]` (the
        pixel decoder's `mask_features` conv, then the frame decoder's mask head)."""
        decoder_features = self.pixel_decoder.mask_features(clip_mask_features)
        return self.frame_decoder.predict_normed(frame_queries, decoder_features).pred_masks

    def forward(self, images: Tensor, pilot: MaskPilot | None = None) -> FrameDetections:
        """images: normalised, padded `[N, 3, H, W]` (see `preprocess`); pilot: ground truth
        for mask-piloted training (`mask_pilot.py`)."""
        features = self.backbone(images)
        pixels = self.pixel_decoder(features)
        attended = self._attended(pixels)
        decoded = self.frame_decoder(attended, pixels.mask_features, pilot)
        return FrameDetections(
            pred_logits=decoded.pred_logits,
            pred_masks=decoded.pred_masks,
            aux_outputs=decoded.aux_outputs,
            frame_queries=decoded.frame_queries,
            clip_mask_features=pixels.clip_mask_features,
            pilot_predictions=decoded.pilot_predictions,
            attended_maps=attended,
            decoder_mask_features=pixels.mask_features,
        )

    def _attended(self, pixels: PixelDecoderOutput) -> tuple[Tensor, Tensor, Tensor]:
        """The three maps the frame decoder attends, coarse first (`attention_strides`)."""
        maps = (*pixels.multi_scale_features, pixels.clip_mask_features)
        first, second, third = (maps[index] for index in self.attended_maps)
        return first, second, third


def build_pixel_decoder(config: PixelDecoderConfig, in_channels: tuple[int, ...]) -> nn.Module:
    """The pixel decoder of `config.kind` over backbone maps of `in_channels` (res2..res5)."""
    try:
        decoder = PIXEL_DECODERS[config.kind]
    except KeyError:
        raise ValueError(
            f"unknown pixel decoder {config.kind!r}; choose from {sorted(PIXEL_DECODERS)}"
        ) from None
    return decoder(config, in_channels)
