"""Overlap of low-resolution masks: pairwise IoU and greedy mask NMS.

Shared by the online heads: QueryTrack's candidates go through mask NMS before the
association (a detector that covers one object with several confident queries would
otherwise split the bi-softmax between them and start a track for each), and HF's
identity rule links slots by mask IoU.

Dimension letters: A, B, M masks, h x w the mask grid.
"""

from __future__ import annotations

import torch
from torch import Tensor


def mask_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of every mask of `a` `[A, h, w]` with every mask of `b` `[B, h, w]` (bool) ->
    `[A, B]` float32 (0 where both are empty)."""
    a, b = a.flatten(1).float(), b.flatten(1).float()
    overlap = a @ b.T
    union = a.sum(dim=1)[:, None] + b.sum(dim=1)[None, :] - overlap
    return overlap / union.clamp(min=1.0)


def mask_nms(masks: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression: the indices `[K]` int64 of the masks kept, best
    first. masks `[M, h, w]` bool, scores `[M]`; a mask whose IoU with a kept, better-
    scored one exceeds `iou_threshold` is dropped (ties keep the earlier index)."""
    order = torch.sort(scores, descending=True, stable=True).indices
    iou = mask_iou(masks[order], masks[order]).cpu()
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    kept = []
    for rank in range(len(order)):
        if not suppressed[rank]:
            kept.append(rank)
            suppressed |= iou[rank] > iou_threshold
    return order[torch.tensor(kept, dtype=torch.int64, device=order.device)]
