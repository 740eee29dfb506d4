"""Video IoU between result tracks and GT tracks, as the official YouTube-VIS evaluator has it.

For a result track d and a GT track g over the same T frames:

    IoU(d, g) = sum_t |d_t ∩ g_t| / sum_t |d_t ∪ g_t|

over the frames where either is present (a frame with only one of them adds that mask's
area to the union), and 0 when the union is empty.

That is the plain IoU of the two tracks' volumes (`track_volume`), so one pycocotools
`iou` call computes all (d, g) pairs exactly: C divides the same two integers the official
code divides. Volumes of 2**32 pixels or more overflow pycocotools' counters; those go
frame by frame, one `iou` call per frame for all pairs present in it. The C code returns
`i / u` with u = a + b - i for the two areas a and b, so the integer intersection comes
back as `round(iou * (a + b) / (1 + iou))` (the float error is below 1e-6 pixel even at
2**32 pixels), and summed integers are exact in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vis_core import masks
from vis_core.evaluation.track_masks import TrackMasks


def video_iou_matrix(dets: Sequence[TrackMasks], gts: Sequence[TrackMasks]) -> np.ndarray:
    """Video IoU `[D, G]` float64 of D result tracks against G GT tracks of one video."""
    if not dets or not gts:
        return np.zeros((len(dets), len(gts)))
    det_volumes = [det.volume for det in dets]
    gt_volumes = [gt.volume for gt in gts]
    if all(volume is not None for volume in det_volumes + gt_volumes):
        return masks.iou_matrix(det_volumes, gt_volumes)
    return _iou_from_intersections(video_intersections(dets, gts), dets, gts)


def video_intersections(dets: Sequence[TrackMasks], gts: Sequence[TrackMasks]) -> np.ndarray:
    """Summed per-frame intersections `[D, G]` int64, computed frame by frame."""
    intersection = np.zeros((len(dets), len(gts)), dtype=np.int64)
    if not dets or not gts:
        return intersection
    det_present = np.stack([det.present for det in dets])  # [D, T]
    gt_present = np.stack([gt.present for gt in gts])  # [G, T]
    det_areas = np.stack([det.areas for det in dets]).astype(np.float64)  # [D, T]
    gt_areas = np.stack([gt.areas for gt in gts]).astype(np.float64)  # [G, T]
    det_rles = [det.rles for det in dets]
    gt_rles = [gt.rles for gt in gts]
    for frame in np.flatnonzero(det_present.any(axis=0) & gt_present.any(axis=0)):
        det_rows = np.flatnonzero(det_present[:, frame])
        gt_rows = np.flatnonzero(gt_present[:, frame])
        iou = masks.iou_matrix(
            [det_rles[i][frame] for i in det_rows], [gt_rles[j][frame] for j in gt_rows]
        )  # [Df, Gf]
        area_sum = det_areas[det_rows, frame][:, None] + gt_areas[gt_rows, frame][None, :]
        overlap = np.rint(iou * area_sum / (1.0 + iou)).astype(np.int64)
        intersection[np.ix_(det_rows, gt_rows)] += overlap
    return intersection


def _iou_from_intersections(
    intersection: np.ndarray, dets: Sequence[TrackMasks], gts: Sequence[TrackMasks]
) -> np.ndarray:
    det_total = np.array([det.areas.sum() for det in dets], dtype=np.int64)  # [D]
    gt_total = np.array([gt.areas.sum() for gt in gts], dtype=np.int64)  # [G]
    union = det_total[:, None] + gt_total[None, :] - intersection
    iou = np.zeros(intersection.shape, dtype=np.float64)
    np.divide(intersection, union, out=iou, where=union > 0)
    return iou


def video_iou_reference(det: TrackMasks, gt: TrackMasks) -> float:
    """The official per-pair loop with pycocotools merges (slow): a check for the above."""
    from pycocotools import mask as mask_utils

    intersection = union = 0.0
    for det_rle, gt_rle in zip(det.rles, gt.rles, strict=True):
        if det_rle is not None and gt_rle is not None:
            intersection += float(mask_utils.area(mask_utils.merge([det_rle, gt_rle], True)))
            union += float(mask_utils.area(mask_utils.merge([det_rle, gt_rle], False)))
        elif gt_rle is not None:
            union += float(mask_utils.area(gt_rle))
        elif det_rle is not None:
            union += float(mask_utils.area(det_rle))
    return intersection / union if union > 0 else 0.0
