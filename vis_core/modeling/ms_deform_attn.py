"""Multi-scale deformable attention (Deformable DETR), in pure PyTorch.

Each query looks at P points per head and per feature level, placed around its reference
point by learned offsets, and mixes the bilinearly sampled values with learned softmax
weights. Parameter names (`sampling_offsets`, `attention_weights`, `value_proj`,
`output_proj`) and their initialisation follow the official `MSDeformAttn`.

Two formulations of the sampling core give the same sums: `grid_sample` per level (the
reference, and what exports use), and one `embedding_bag` over every level, whose bags
are each (query, head)'s 4 bilinear corners of its L*P points, weighted by the bilinear
and attention weights (default: 3x to 10x faster on the CPU, since nothing of size
queries x points x channels is materialised, but slower to differentiate). `SAMPLING`
picks one for inference; training always samples with `grid_sample`.

Dimension letters: B batch, Q queries, S flattened positions of all levels (sum of H_l*W_l),
M heads, D channels per head, L levels, P points per head and level, C = M*D.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

SAMPLING = "bag"  # or "grid_sample" (module docstring)


def device_constant(
    rows: Sequence[Sequence[float]], dtype: torch.dtype, device: torch.device
) -> Tensor:
    """A small table `[len(rows), len(row)]` made on `device` by fills: `torch.tensor(...,
    device=cuda)` copies from the host and waits for the device's queue to drain, every
    layer of every call."""
    return torch.stack(
        [
            torch.stack([torch.full((), value, dtype=dtype, device=device) for value in row])
            for row in rows
        ]
    )


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
    The formulation is `SAMPLING`'s; exports (ONNX, torch.export) and anything that
    needs gradients take `grid_sample`'s.
    """
    _check_core_inputs(value, spatial_shapes, level_start_index, sampling_locations)
    if attention_weights.shape != sampling_locations.shape[:-1]:
        raise ValueError(
            f"attention weights {tuple(attention_weights.shape)} do not match sampling "
            f"locations {tuple(sampling_locations.shape)}"
        )
    exporting = torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()
    # embedding_bag's backward (a dense gradient of the whole table) is 3x grid_sample's,
    # and training steps of a deformable pixel decoder ran 1.9x slower: bag is for inference.
    differentiating = torch.is_grad_enabled() and any(
        tensor.requires_grad for tensor in (value, sampling_locations, attention_weights)
    )
    if SAMPLING == "grid_sample" or exporting or differentiating:
        return ms_deform_attn_core_grid_sample(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    return ms_deform_attn_core_bag(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )


def _check_core_inputs(
    value: Tensor,
    spatial_shapes: Sequence[tuple[int, int]],
    level_start_index: Sequence[int],
    sampling_locations: Tensor,
) -> None:
    num_levels = sampling_locations.shape[3]
    if len(spatial_shapes) != num_levels or len(level_start_index) != num_levels:
        raise ValueError(
            f"{len(spatial_shapes)} spatial shapes and {len(level_start_index)} level starts "
            f"for {num_levels} sampled levels"
        )
    for level, ((height, width), start) in enumerate(
        zip(spatial_shapes, level_start_index, strict=True)
    ):
        if start + height * width > value.shape[1]:
            raise ValueError(f"level {level} ({height}x{width}) runs past {value.shape[1]} rows")


def ms_deform_attn_core_bag(
    value: Tensor,
    spatial_shapes: Sequence[tuple[int, int]],
    level_start_index: Sequence[int],
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """`ms_deform_attn_core` as one `embedding_bag`: the table is value's rows
    `[B*S*M, D]` (no copy), each (query, head) a bag of its 4 bilinear corners of L*P
    points (a corner outside its map gets weight 0 and a valid row). Sums in float32, as
    `grid_sample` does under autocast.

    Every elementwise step runs on `[B*Q*M, L*P]` tensors against per-point constants
    `[L*P]`, so the loops stay long and contiguous."""
    batch, num_values, heads, head_dim = value.shape
    _, num_queries, _, num_levels, points, _ = sampling_locations.shape
    device = value.device
    bags = batch * num_queries * heads
    locations = sampling_locations.float().reshape(bags, num_levels * points, 2)

    def per_point(values: Sequence[float]) -> Tensor:  # one value per level -> [L*P]
        return torch.cat([torch.full((points,), value, device=device) for value in values])

    widths = per_point([float(w) for _, w in spatial_shapes])
    heights = per_point([float(h) for h, _ in spatial_shapes])
    starts = per_point([float(start) for start in level_start_index])
    # Pixel coordinates with align_corners=False: x * W - 0.5; corners x0 and x0 + 1.
    x = locations[..., 0] * widths - 0.5
    y = locations[..., 1] * heights - 0.5
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    weight = attention_weights.float().reshape(bags, num_levels * points)
    columns, column_weights, rows, row_weights = [], [], [], []
    for step, fraction in ((0.0, 1 - fx), (1.0, fx)):
        corner = x0 + step
        column_weights.append(fraction * ((corner >= 0) & (corner < widths)))
        columns.append(torch.minimum(corner.clamp(min=0), widths - 1))
    for step, fraction in ((0.0, 1 - fy), (1.0, fy)):
        corner = y0 + step
        row_weights.append(fraction * weight * ((corner >= 0) & (corner < heights)))
        rows.append(starts + torch.minimum(corner.clamp(min=0), heights - 1) * widths)
    # Position in the level-stacked map [S] (exact in float32 below 2^24), then the row
    # of value's [B*S*M] table: (b*S + s)*M + m.
    positions = torch.stack([row + column for row in rows for column in columns], 1)
    weights = torch.stack([rw * cw for rw in row_weights for cw in column_weights], 1)
    index_dtype = torch.int32 if batch * num_values * heads < 2**31 else torch.int64
    bag = torch.arange(bags, device=device, dtype=index_dtype)
    head = bag % heads
    image = bag // (num_queries * heads)
    base = image * (num_values * heads) + head  # [B*Q*M]
    table_rows = positions.to(index_dtype) * heads + base[:, None, None]
    table = value.reshape(batch * num_values * heads, head_dim).float()
    output = F.embedding_bag(
        table_rows.reshape(bags, -1),
        table,
        per_sample_weights=weights.reshape(bags, -1),
        mode="sum",
    )  # [B*Q*M, D]
    return output.view(batch, num_queries, heads * head_dim).to(value.dtype)


def ms_deform_attn_core_grid_sample(
    value: Tensor,
    spatial_shapes: Sequence[tuple[int, int]],
    level_start_index: Sequence[int],
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """`ms_deform_attn_core` with one `grid_sample` per level (the reference)."""
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
        level_sizes = device_constant(
            [(width, height) for height, width in spatial_shapes], offsets.dtype, offsets.device
        )  # [L, 2]
        locations = (
            reference_points[:, :, None, :, None, :]
            + offsets / level_sizes[None, None, None, :, None, :]
        )  # [B, Q, M, L, P, 2]
        output = ms_deform_attn_core(value, spatial_shapes, level_start_index, locations, weights)
        return self.output_proj(output)
