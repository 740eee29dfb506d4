"""Class-agnostic track recall: are the objects found at all, whatever their labels?

AP mixes three failures: masks that miss the object, tracks that lose it, and wrong
classes. This diagnostic isolates the first two: the share of ground-truth tracks for
which one of their video's `top` highest-scoring result tracks reaches a video IoU of at
least `iou` (the evaluator's IoU, `video_iou.py`), ignoring categories. Crowd tracks are
not counted.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vis_core.evaluation.video_iou import video_iou_matrix
from vis_core.evaluation.ytvis_inputs import (
    GroundTruth,
    Results,
    ResultTrack,
    load_ground_truth,
    load_results,
)


def track_recall(
    ground_truth: GroundTruth | Mapping[str, Any] | str | os.PathLike,
    results: Results | Sequence[Mapping[str, Any]] | str | os.PathLike,
    iou: float = 0.5,
    top: int = 10,
) -> float:
    """The share of (non-crowd) ground-truth tracks found by a top-`top` result track of
    their video at video IoU >= `iou`, ignoring classes; NaN without ground truth."""
    ground_truth = load_ground_truth(ground_truth)
    loaded = load_results(results, ground_truth)
    by_video: dict[int, list[ResultTrack]] = defaultdict(list)
    for track in loaded.tracks:
        by_video[track.video_id].append(track)
    found = counted = 0
    gts_by_video = defaultdict(list)
    for gt in ground_truth.tracks:
        if not gt.is_crowd:
            gts_by_video[gt.video_id].append(gt)
    for video_id, gts in gts_by_video.items():
        dets = sorted(by_video[video_id], key=lambda det: -det.score)[:top]
        ious = video_iou_matrix([det.masks for det in dets], [gt.masks for gt in gts])  # [D, G]
        counted += len(gts)
        if dets:
            found += int(np.count_nonzero(ious.max(axis=0) >= iou))
    return found / counted if counted else float("nan")
