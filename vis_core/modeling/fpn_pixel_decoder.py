"""An FPN pixel decoder (MaskFormer's `BasePixelDecoder`), the light choice for small presets.

Mask2Former's ablations list an FPN in place of the deformable-attention encoder as the
way to cut training time at some cost in accuracy. On a CPU the trade is steeper than on a
GPU: in the small preset the two deformable encoder layers took 68% of the detector's
forward pass (`grid_sample` over three levels), the FPN's convolutions a fraction of that.

res5 is projected to `conv_dim` channels and smoothed; each finer level adds its 1x1
lateral projection to the upsampled coarser output and smooths the sum with a 3x3 conv
(GroupNorm, ReLU). The stride-4 output is the clip mask features; a 1x1 conv gives the
frame decoder's mask features, as in the deformable decoder, so both decoders return the
same `PixelDecoderOutput`.

Dimension letters: N images, C channels (`conv_dim`), H, W the input image size.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn import functional as F

from vis_core.modeling.backbone import BackboneFeatures
from vis_core.modeling.config import PixelDecoderConfig
from vis_core.modeling.conv import ConvNormAct, xavier_fill
from vis_core.modeling.pixel_decoder import PixelDecoderOutput


class FPNPixelDecoder(nn.Module):
    """`forward(BackboneFeatures) -> PixelDecoderOutput`; `in_channels` of res2..res5."""

    def __init__(self, config: PixelDecoderConfig, in_channels: Sequence[int]):
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"expected channels of res2..res5, got {list(in_channels)}")
        if config.conv_dim % config.group_norm_groups:
            raise ValueError(
                f"conv_dim {config.conv_dim} is not divisible by "
                f"{config.group_norm_groups} GroupNorm groups"
            )
        self.in_channels = tuple(in_channels)
        dim, groups = config.conv_dim, config.group_norm_groups
        # Coarse first: res5, res4, res3, res2.
        self.lateral = nn.ModuleList(
            ConvNormAct(channels, dim, 1, bias=False, norm=nn.GroupNorm(groups, dim))
            for channels in reversed(self.in_channels)
        )
        self.output = nn.ModuleList(
            ConvNormAct(
                dim,
                dim,
                3,
                padding=1,
                bias=False,
                norm=nn.GroupNorm(groups, dim),
                activation=F.relu,
            )
            for _ in self.in_channels
        )
        self.mask_features = nn.Conv2d(dim, config.mask_dim, kernel_size=1)
        for conv in (*self.lateral, *self.output, self.mask_features):
            xavier_fill(conv)

    def forward(self, features: BackboneFeatures) -> PixelDecoderOutput:
        levels = (features.res5, features.res4, features.res3, features.res2)
        channels = tuple(level.shape[1] for level in reversed(levels))
        if channels != self.in_channels:
            raise ValueError(f"expected res2..res5 channels {self.in_channels}, got {channels}")
        outputs: list[Tensor] = []
        top_down: Tensor | None = None
        for lateral, output, level in zip(self.lateral, self.output, levels, strict=True):
            merged = lateral(level)
            if top_down is not None:
                # To the finer level's exact size: levels need not be exactly 2x apart.
                merged = merged + F.interpolate(top_down, size=merged.shape[-2:], mode="nearest")
            top_down = F.relu(output(merged))
            outputs.append(top_down)
        res5, res4, res3, res2 = outputs
        return PixelDecoderOutput(
            mask_features=self.mask_features(res2),
            clip_mask_features=res2,
            transformer_encoder_features=res5,
            multi_scale_features=(res5, res4, res3),
        )
