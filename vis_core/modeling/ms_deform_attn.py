"""Multi-scale deformable attention (Deformable DETR), in pure PyTorch with `grid_sample`.

Each query looks at P points per head and per feature level, placed around its reference
point by learned offsets, and mixes the bilinearly sampled values with learned softmax
weights. Parameter names (`sampling_offsets`, `attention_weights`, `value_proj`,
`output_proj`) and their initialisation follow the official `MSDeformAttn`.

Dimension letters: B batch, Q queries, S flattened positions of all levels (sum of H_l*W_l),
M heads, D channels per head, L levels, P points per head and level, C = M*D.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def ms_deform_attn_core(
    value: Tensor,
    spatial_shapes: Sequence[tuple[int, int]],
    level_start_index: Sequence[int],
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Weighted sum of bilinear samples of every level, outside the maps counting as zero.

    value `[B, S, M, D]` holds the levels one after the other, level l at rows
    `level_start_index[l] : level_start_index[l] + H_l*W_l` in row-major (y, x) order;
    `spatial_shapes[l] = (H_l, W_l)`. sampling_locations `[B, Q, M, L, P, 2]` are (x, y)
    in [0, 1] over each map (pixel centres at (i + 0.5) / W_l, as `align_corners=False`);
    attention_weights `[B, Q, M, L, P]`. Returns `[B, Q, M*D]`, head-major channels.
    """
    batch, _, heads, head_dim = value.shape
    _, num_queries, _, num_levels, _, _ = sampling_locations.shape
    if len(spatial_shapes) != num_levels or len(level_start_index) != num_levels:
        raise ValueError(
            f"{len(spatial_shapes)} spatial shapes and {len(level_start_index)} level starts "
            f"for {num_levels} sampled levels"
        )
    if attention_weights.shape != sampling_locations.shape[:-1]:
        raise ValueError(
            f"attention weights {tuple(attention_weights.shape)} do not match sampling "
            f"locations {tuple(sampling_locations.shape)}"
        )
    # grid_sample wants coordinates in [-1, 1]; heads fold into its batch: [B*M, Q, P, 2] per level.
    grids = (2 * sampling_locations - 1).transpose(1, 2).flatten(0, 1)
    weights = attention_weights.transpose(1, 2).flatten(0, 1)  # [B*M, Q, L, P]
    output = value.new_zeros(batch * heads, head_dim, num_queries)
    for level, ((height, width), start) in enumerate(
        zip(spatial_shapes, level_start_index, strict=True)
    ):
        level_value = value[:, start : start + height * width]
        if level_value.shape[1] != height * width:
            raise ValueError(f"level {level} ({height}x{width}) runs past {value.shape[1]} rows")
        # [B, H*W, M, D] -> [B*M, D, H, W]
        level_value = level_value.permute(0, 2, 3, 1).reshape(-1, head_dim, height, width)
        sampled = F.grid_sample(
            level_value,
            grids[:, :, level],
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )  # [B*M, D, Q, P]
        output = output + (sampled * weights[:, None, :, level]).sum(-1)
    # [B*M, D, Q] -> [B, M*D, Q] -> [B, Q, M*D]
    return output.view(batch, heads * head_dim, num_queries).transpose(1, 2)


class MSDeformAttn(nn.Module):
    """Deformable attention of queries `[B, Q, C]` over a flattened multi-level map `[B, S, C]`.

    Offsets are in pixels of each level (divided by (W_l, H_l) before being added to the
    normalised reference points).
    """

    def __init__(self, dim: int, levels: int, heads: int, points: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by {heads} heads")
        self.dim = dim
        self.levels = levels
        self.heads = heads
        self.points = points
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The official initialisation: points start on rays at equal angles per head.

        Head h's points p = 1..P sit at p * (cos, sin)(2*pi*h/M), scaled so the larger of
        the two components is 1 pixel, on every level; attention starts uniform.
        """
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.heads, dtype=torch.float32) * (2.0 * math.pi / self.heads)
        directions = torch.stack((angles.cos(), angles.sin()), dim=-1)  # [M, 2]
        directions = directions / directions.abs().amax(dim=-1, keepdim=True)
        distances = torch.arange(1, self.points + 1, dtype=torch.float32)  # [P]
        # [M, 1, 1, 2] * [1, 1, P, 1] -> [M, L, P, 2]
        offsets = directions[:, None, None, :] * distances[None, None, :, None]
        offsets = offsets.expand(self.heads, self.levels, self.points, 2)
        self.sampling_offsets.bias.copy_(offsets.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        value_input: Tensor,
        spatial_shapes: Sequence[tuple[int, int]],
        level_start_index: Sequence[int],
        padding_mask: Tensor | None = None,
    ) -> Tensor:
        """query `[B, Q, C]` (position embedding already added), reference_points
        `[B, Q, L, 2]` as (x, y) in [0, 1], value_input `[B, S, C]`, padding_mask `[B, S]`
        (True = padded position, its value is zeroed). Returns `[B, Q, C]`.
        """
        batch, num_queries, _ = query.shape
        num_values = value_input.shape[1]
        if sum(height * width for height, width in spatial_shapes) != num_values:
            raise ValueError(
                f"spatial shapes {list(spatial_shapes)} do not cover the {num_values} values"
            )
        if reference_points.shape[-1] != 2:
            raise ValueError("reference points must be (x, y) points, shape [B, Q, L, 2]")
        value = self.value_proj(value_input)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(batch, num_values, self.heads, self.dim // self.heads)
        offsets = self.sampling_offsets(query).view(
            batch, num_queries, self.heads, self.levels, self.points, 2
        )
        weights = self.attention_weights(query).view(
            batch, num_queries, self.heads, self.levels * self.points
        )
        weights = weights.softmax(-1).view(batch, num_queries, self.heads, self.levels, self.points)
        # Pixel offsets to map fractions: divide by (W_l, H_l) of each level.
        level_sizes = torch.tensor(
            [(width, height) for height, width in spatial_shapes],
            dtype=offsets.dtype,
            device=offsets.device,
        )  # [L, 2]
        locations = (
            reference_points[:, :, None, :, None, :]
            + offsets / level_sizes[None, None, None, :, None, :]
        )  # [B, Q, M, L, P, 2]
        output = ms_deform_attn_core(value, spatial_shapes, level_start_index, locations, weights)
        return self.output_proj(output)
