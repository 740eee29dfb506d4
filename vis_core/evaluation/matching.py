"""Greedy matching of result tracks to GT tracks in one video and category (COCO style).

The official `evaluateVid`, per IoU threshold t: GT are put in file order with ignored GT
last (stable); each result in decreasing score order takes, among the GT still free (a
crowd GT is never used up), the one with the highest IoU >= min(t, 1 - 1e-10), ties going
to the later GT; an ignored GT is only taken when no regular GT qualifies. A result matched
to an ignored GT is ignored itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class GreedyMatches:
    """Outcome per IoU threshold T for D results (in the order given).

    matched: `[T, D]` bool, the result took a GT.
    matched_ignored: `[T, D]` bool, the GT it took is ignored.
    """

    matched: np.ndarray
    matched_ignored: np.ndarray


def greedy_match(
    ious: np.ndarray, gt_ignored: np.ndarray, gt_crowd: np.ndarray, iou_thresholds: np.ndarray
) -> GreedyMatches:
    """Match D results (sorted by decreasing score) to G GT tracks at each threshold.

    ious: `[D, G]` video IoU, GT in file order.
    gt_ignored, gt_crowd: `[G]` bool.
    iou_thresholds: `[T]`.
    """
    num_dets, num_gts = ious.shape
    matched = np.zeros((len(iou_thresholds), num_dets), dtype=bool)
    matched_ignored = np.zeros_like(matched)
    if num_dets == 0 or num_gts == 0:
        return GreedyMatches(matched, matched_ignored)
    order = np.argsort(gt_ignored, kind="mergesort")  # ignored GT last, otherwise file order
    rows = ious[:, order].tolist()
    best_per_det = ious.max(axis=1).tolist()
    ignored = gt_ignored[order].tolist()
    crowd = gt_crowd[order].tolist()
    # Plain Python lists: D and G are small, and numpy's per-call cost would dominate.
    for t_index, threshold in enumerate(iou_thresholds.tolist()):
        floor = min(threshold, 1 - 1e-10)
        taken = [False] * num_gts
        for d_index, row in enumerate(rows):
            if best_per_det[d_index] < floor:
                continue  # no GT reaches the threshold: unmatched
            best, match = floor, -1
            for g_index in range(num_gts):
                if taken[g_index] and not crowd[g_index]:
                    continue
                if match > -1 and not ignored[match] and ignored[g_index]:
                    break  # a regular GT is matched: ignored GT (all later) cannot win
                if row[g_index] < best:
                    continue
                best, match = row[g_index], g_index
            if match > -1:
                taken[match] = True
                matched[t_index, d_index] = True
                matched_ignored[t_index, d_index] = ignored[match]
    return GreedyMatches(matched, matched_ignored)
