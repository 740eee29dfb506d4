"""Boxes from masks, and box IoU: the box geometry the temporal heads share.

Boxes are normalised (cx, cy, w, h) in [0, 1] of the mask grid; an empty mask gives the
zero box (reference/temporal_heads.md section 0, [default]).

Dimension letters: M and N boxes, h x w a mask grid.
"""

from __future__ import annotations

import torch
from torch import Tensor


def mask_to_box(masks: Tensor) -> Tensor:
    """Tight boxes around binary masks: `[..., h, w]` bool -> `[..., 4]` (cx, cy, w, h).

    A box covers whole cells: a mask of the single cell (row i, col j) gives
    `((j + 0.5) / w, (i + 0.5) / h, 1 / w, 1 / h)`.
    """
    height, width = masks.shape[-2:]
    rows = masks.any(dim=-1)  # [..., h]
    cols = masks.any(dim=-2)  # [..., w]
    present = rows.any(dim=-1)
    y0, y1 = _extent(rows)
    x0, x1 = _extent(cols)
    box = torch.stack(
        ((x0 + x1) / (2 * width), (y0 + y1) / (2 * height), (x1 - x0) / width, (y1 - y0) / height),
        dim=-1,
    )
    return torch.where(present[..., None], box, torch.zeros_like(box))


def _extent(occupied: Tensor) -> tuple[Tensor, Tensor]:
    """`[..., n]` bool -> the first occupied index and one past the last, as floats."""
    size = occupied.shape[-1]
    index = torch.arange(size, device=occupied.device, dtype=torch.float32)
    first = torch.where(occupied, index, float(size)).amin(dim=-1)
    last = torch.where(occupied, index, -1.0).amax(dim=-1)
    return first, last + 1


def box_iou(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """IoU of every pair: `[M, 4]` x `[N, 4]` (cx, cy, w, h) -> `[M, N]`; 0 where both are
    empty."""
    a, b = _corners(boxes_a.float()), _corners(boxes_b.float())
    low = torch.maximum(a[:, None, :2], b[None, :, :2])
    high = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    overlap = (high - low).clamp_min(0).prod(dim=-1)
    area_a = boxes_a[:, 2].float() * boxes_a[:, 3].float()
    area_b = boxes_b[:, 2].float() * boxes_b[:, 3].float()
    union = area_a[:, None] + area_b[None, :] - overlap
    return torch.where(union > 0, overlap / union.clamp_min(1e-12), torch.zeros_like(union))


def _corners(boxes: Tensor) -> Tensor:
    """`[N, 4]` (cx, cy, w, h) -> `[N, 4]` (x0, y0, x1, y1)."""
    center, size = boxes[:, :2], boxes[:, 2:]
    return torch.cat((center - size / 2, center + size / 2), dim=1)
