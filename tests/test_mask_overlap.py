"""Pairwise mask IoU and greedy mask NMS on hand-made masks."""

from __future__ import annotations

import torch

from vis_core.inference.mask_overlap import mask_iou, mask_nms


def boxes_mask(*boxes: tuple[int, int, int, int], size: int = 10) -> torch.Tensor:
    """Masks `[M, size, size]` of the boxes (y0, x0, y1, x1), one box each."""
    masks = torch.zeros(len(boxes), size, size, dtype=torch.bool)
    for mask, (y0, x0, y1, x1) in zip(masks, boxes, strict=True):
        mask[y0:y1, x0:x1] = True
    return masks


def test_mask_iou_of_overlapping_disjoint_and_empty_masks() -> None:
    a = boxes_mask((0, 0, 4, 4), (0, 0, 4, 2), (6, 6, 8, 8))
    empty = torch.zeros(1, 10, 10, dtype=torch.bool)
    iou = mask_iou(a, torch.cat((a, empty)))
    assert torch.allclose(iou[0], torch.tensor([1.0, 0.5, 0.0, 0.0]))
    assert iou[2, 2] == 1.0 and iou[1, 2] == 0.0
    assert mask_iou(empty, empty).item() == 0.0


def test_nms_keeps_the_best_of_each_overlapping_group_best_first() -> None:
    masks = boxes_mask(
        (0, 0, 4, 4),  # 0: object A
        (0, 0, 4, 3),  # 1: a duplicate of A (IoU 0.75), better scored
        (5, 5, 9, 9),  # 2: object B
        (5, 5, 9, 7),  # 3: half of B (IoU 0.5: not above the threshold)
        (0, 0, 4, 4),  # 4: A again, same score as 0: the earlier index wins
    )
    scores = torch.tensor([0.8, 0.9, 0.7, 0.6, 0.8])
    assert mask_nms(masks, scores, 0.5).tolist() == [1, 2, 3]
    assert mask_nms(masks, scores, 0.4).tolist() == [1, 2]
    assert mask_nms(masks, scores, 1.0).tolist() == [1, 0, 4, 2, 3]  # nothing is above 1
    assert mask_nms(masks[:0], scores[:0], 0.5).tolist() == []
