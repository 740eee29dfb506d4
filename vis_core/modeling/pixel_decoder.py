"""Mask2Former's multi-scale deformable-attention pixel decoder (`MSDeformAttnPixelDecoder`).

res3..res5 are projected to `conv_dim` channels (1x1 conv + GroupNorm, ordered res5 ->
res3), flattened into one sequence and refined by a post-norm deformable-attention
encoder. One FPN step then adds the projected res2 map (`adapter_1`) to the upsampled
finest encoder map and smooths it (`layer_1`); a 1x1 conv (`mask_features`) gives the
stride-4 mask features. Keys below `sem_seg_head.pixel_decoder.` are the official ones:
`input_proj.{i}.{0,1}`, `transformer.level_embed`, `transformer.encoder.layers.{j}.*`,
`adapter_1`, `layer_1`, `mask_features`.

Dimension letters: N images, C channels (`conv_dim`), S flattened positions of the three
encoder levels, L = 3 levels, H, W the input image size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vis_core.modeling.backbone import BackboneFeatures
from vis_core.modeling.config import PixelDecoderConfig
from vis_core.modeling.conv import ConvNormAct, xavier_fill
from vis_core.modeling.layers import PositionEmbeddingSine, with_pos
from vis_core.modeling.ms_deform_attn import MSDeformAttn

ENCODER_LEVELS = 3  # res3, res4, res5: fixed in the official code


@dataclass(frozen=True)
class PixelDecoderOutput:
    """Per-image feature maps for the frame decoder and VITA.

    mask_features `[N, mask_dim, H/4, W/4]`: Mask2Former's per-pixel embeddings.
    clip_mask_features `[N, C, H/4, W/4]`: the stride-4 FPN map before the `mask_features`
    conv, which VITA's own `vita_mask_features` conv consumes.
    transformer_encoder_features `[N, C, H/32, W/32]`: the encoder output at res5.
    multi_scale_features: the encoder outputs at res5, res4, res3 (low resolution first),
    `[N, C, H/32, W/32]`, `[N, C, H/16, W/16]`, `[N, C, H/8, W/8]`.
    """

    mask_features: Tensor
    clip_mask_features: Tensor
    transformer_encoder_features: Tensor
    multi_scale_features: tuple[Tensor, Tensor, Tensor]


class DeformableEncoderLayer(nn.Module):
    """Post-norm deformable self-attention over all levels, then a ReLU FFN: `[N, S, C]`.

    The FFN lives directly in the layer (`linear1`, `linear2`, `norm2`) because that is
    the official key layout; `FFNLayer` would store its norm as `norm`.
    """

    def __init__(
        self, dim: int, ffn_dim: int, heads: int, levels: int, points: int, dropout: float
    ):
        super().__init__()
        self.self_attn = MSDeformAttn(dim, levels, heads, points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)

    def forward(
        self,
        src: Tensor,
        pos: Tensor,
        reference_points: Tensor,
        spatial_shapes: Sequence[tuple[int, int]],
        level_start_index: Sequence[int],
    ) -> Tensor:
        """src, pos `[N, S, C]`; reference_points `[N, S, L, 2]`. Returns `[N, S, C]`."""
        attended = self.self_attn(
            with_pos(src, pos), reference_points, src, spatial_shapes, level_start_index
        )
        src = self.norm1(src + self.dropout1(attended))
        hidden = self.dropout2(F.relu(self.linear1(src)))
        return self.norm2(src + self.dropout3(self.linear2(hidden)))


class DeformableEncoder(nn.Module):
    """A stack of `DeformableEncoderLayer`s sharing the same reference points."""

    def __init__(self, layers: Sequence[DeformableEncoderLayer]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(
        self,
        src: Tensor,
        pos: Tensor,
        spatial_shapes: Sequence[tuple[int, int]],
        level_start_index: Sequence[int],
    ) -> Tensor:
        """src, pos `[N, S, C]` -> `[N, S, C]`."""
        reference_points = pixel_centre_reference_points(
            spatial_shapes, src.shape[0], src.dtype, src.device
        )
        for layer in self.layers:
            src = layer(src, pos, reference_points, spatial_shapes, level_start_index)
        return src


def pixel_centre_reference_points(
    spatial_shapes: Sequence[tuple[int, int]],
    batch: int,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor:
    """Each position's own pixel centre, (x, y) in [0, 1], for every level: `[N, S, L, 2]`.

    Images are never padded inside a batch here (the official valid ratios are all 1), so a
    point's normalised position is the same on every level.
    """
    centres = []
    for height, width in spatial_shapes:
        ys = (torch.arange(height, dtype=dtype, device=device) + 0.5) / height
        xs = (torch.arange(width, dtype=dtype, device=device) + 0.5) / width
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # [H_l, W_l] each
        centres.append(torch.stack((grid_x.flatten(), grid_y.flatten()), dim=-1))
    points = torch.cat(centres)  # [S, 2]
    return points[None, :, None, :].expand(batch, -1, len(spatial_shapes), -1)


class DeformableTransformer(nn.Module):
    """Flattens the levels, adds position and level embeddings, runs the encoder."""

    def __init__(self, config: PixelDecoderConfig, levels: int):
        super().__init__()
        self.level_embed = nn.Parameter(torch.empty(levels, config.conv_dim))
        self.encoder = DeformableEncoder(
            [
                DeformableEncoderLayer(
                    config.conv_dim,
                    config.ffn_dim,
                    config.heads,
                    levels,
                    config.points,
                    config.dropout,
                )
                for _ in range(config.encoder_layers)
            ]
        )
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for parameter in self.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)
        for module in self.modules():
            if isinstance(module, MSDeformAttn):
                module.reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, sources: Sequence[Tensor], positions: Sequence[Tensor]) -> list[Tensor]:
        """sources, positions: L maps `[N, C, H_l, W_l]` -> the L encoded maps, same shapes."""
        if len(sources) != self.level_embed.shape[0]:
            raise ValueError(f"expected {self.level_embed.shape[0]} levels, got {len(sources)}")
        spatial_shapes = [(source.shape[-2], source.shape[-1]) for source in sources]
        level_start_index = [0]
        for height, width in spatial_shapes[:-1]:
            level_start_index.append(level_start_index[-1] + height * width)
        # [N, C, H_l, W_l] -> [N, H_l*W_l, C], concatenated over levels: [N, S, C]
        src = torch.cat([source.flatten(2).transpose(1, 2) for source in sources], dim=1)
        pos = torch.cat(
            [
                position.flatten(2).transpose(1, 2) + self.level_embed[level]
                for level, position in enumerate(positions)
            ],
            dim=1,
        )
        memory = self.encoder(src, pos, spatial_shapes, level_start_index)
        batch, _, channels = memory.shape
        return [
            memory[:, start : start + height * width]
            .transpose(1, 2)
            .reshape(batch, channels, height, width)
            for (height, width), start in zip(spatial_shapes, level_start_index, strict=True)
        ]


class MSDeformAttnPixelDecoder(nn.Module):
    """`forward(BackboneFeatures) -> PixelDecoderOutput`; runs in fp32 even under autocast.

    `in_channels` are the channels of res2, res3, res4, res5.
    """

    def __init__(self, config: PixelDecoderConfig, in_channels: Sequence[int]):
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"expected channels of res2..res5, got {list(in_channels)}")
        if config.conv_dim % 2 or config.conv_dim % config.group_norm_groups:
            raise ValueError(
                f"conv_dim {config.conv_dim} must be even and divisible by "
                f"{config.group_norm_groups} GroupNorm groups"
            )
        self.in_channels = tuple(in_channels)
        dim, groups = config.conv_dim, config.group_norm_groups
        # Low resolution first: res5, res4, res3.
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, dim, kernel_size=1), nn.GroupNorm(groups, dim))
            for channels in reversed(self.in_channels[1:])
        )
        for projection in self.input_proj:
            nn.init.xavier_uniform_(projection[0].weight, gain=1)
            nn.init.zeros_(projection[0].bias)
        self.transformer = DeformableTransformer(config, ENCODER_LEVELS)
        self.pe_layer = PositionEmbeddingSine(dim // 2, normalize=True)
        self.mask_features = nn.Conv2d(dim, config.mask_dim, kernel_size=1)
        xavier_fill(self.mask_features)
        # The one FPN level (stride 8 -> 4); with GroupNorm the convs carry no bias.
        self.adapter_1 = ConvNormAct(
            self.in_channels[0], dim, 1, bias=False, norm=nn.GroupNorm(groups, dim)
        )
        self.layer_1 = ConvNormAct(
            dim, dim, 3, padding=1, bias=False, norm=nn.GroupNorm(groups, dim), activation=F.relu
        )
        xavier_fill(self.adapter_1)
        xavier_fill(self.layer_1)

    def forward(self, features: BackboneFeatures) -> PixelDecoderOutput:
        levels = (features.res2, features.res3, features.res4, features.res5)
        channels = tuple(level.shape[1] for level in levels)
        if channels != self.in_channels:
            raise ValueError(f"expected res2..res5 channels {self.in_channels}, got {channels}")
        with torch.autocast(device_type=features.res5.device.type, enabled=False):
            coarse_first = [level.float() for level in reversed(levels[1:])]  # res5, res4, res3
            sources = [proj(x) for proj, x in zip(self.input_proj, coarse_first, strict=True)]
            positions = [self.pe_layer(x) for x in coarse_first]
            encoded = self.transformer(sources, positions)
            lateral = self.adapter_1(features.res2.float())
            # Upsample to res2's exact size: levels need not be exactly 2x apart.
            upsampled = F.interpolate(
                encoded[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False
            )
            clip_mask_features = self.layer_1(lateral + upsampled)
            mask_features = self.mask_features(clip_mask_features)
        return PixelDecoderOutput(
            mask_features=mask_features,
            clip_mask_features=clip_mask_features,
            transformer_encoder_features=encoded[0],
            multi_scale_features=(encoded[0], encoded[1], encoded[2]),
        )
