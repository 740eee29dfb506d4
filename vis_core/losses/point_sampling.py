"""PointRend-style point sampling: losses and matching costs are computed on a few points.

Point coordinates are normalised to [0, 1] in (x, y) order, (0, 0) being the top-left
corner of the top-left pixel and (1, 1) the bottom-right corner of the bottom-right one
(`align_corners=False`). Because they are normalised, a stride-4 prediction and a
full-resolution target are sampled at the same places without any resizing.

Dimension letters: R maps, C channels, H x W a map, P points.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def point_sample(features: Tensor, point_coords: Tensor) -> Tensor:
    """Bilinear lookup of `features [R, C, H, W]` at `point_coords [R, P, 2]` -> `[R, C, P]`.

    Outside the map (within half a pixel of its border) the map is padded with zeros.
    """
    if features.dim() != 4:
        raise ValueError(f"features must be [R, C, H, W], got {tuple(features.shape)}")
    if point_coords.dim() != 3 or point_coords.shape[-1] != 2:
        raise ValueError(f"point_coords must be [R, P, 2], got {tuple(point_coords.shape)}")
    if point_coords.shape[0] != features.shape[0]:
        raise ValueError(f"{point_coords.shape[0]} point sets for {features.shape[0]} feature maps")
    grid = 2.0 * point_coords.to(features.dtype) - 1.0  # grid_sample wants [-1, 1]
    sampled = F.grid_sample(features, grid[:, :, None], mode="bilinear", align_corners=False)
    return sampled[..., 0]  # [R, C, P, 1] -> [R, C, P]


def mask_uncertainty(mask_logits: Tensor) -> Tensor:
    """Highest where the mask logit is closest to 0 (the decision boundary): `-|logit|`."""
    return -mask_logits.abs()


def uncertain_point_coords_with_randomness(
    mask_logits: Tensor,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Points `[R, P, 2]` that favour the uncertain parts of each of `mask_logits [R, H, W]`.

    `int(P * oversample_ratio)` uniform candidates are drawn per map; the
    `int(P * importance_sample_ratio)` of them with the highest `mask_uncertainty` are
    kept, and uniform points fill the rest. No gradient flows through the choice.
    """
    if mask_logits.dim() != 3:
        raise ValueError(f"mask_logits must be [R, H, W], got {tuple(mask_logits.shape)}")
    if oversample_ratio < 1.0:
        raise ValueError(f"oversample_ratio must be >= 1, got {oversample_ratio}")
    if not 0.0 <= importance_sample_ratio <= 1.0:
        raise ValueError(
            f"importance_sample_ratio must be in [0, 1], got {importance_sample_ratio}"
        )
    maps, device = mask_logits.shape[0], mask_logits.device
    num_candidates = int(num_points * oversample_ratio)
    num_uncertain = int(num_points * importance_sample_ratio)
    with torch.no_grad():
        candidates = torch.rand(maps, num_candidates, 2, device=device, generator=generator)
        logits = point_sample(mask_logits[:, None].detach(), candidates)[:, 0]  # [R, P']
        chosen = mask_uncertainty(logits).topk(num_uncertain, dim=1).indices
        uncertain = candidates.gather(1, chosen[..., None].expand(-1, -1, 2))
        uniform = torch.rand(
            maps, num_points - num_uncertain, 2, device=device, generator=generator
        )
        return torch.cat([uncertain, uniform], dim=1)
