"""YouTube-VIS video mask AP/AR, reproducing the official `YTVOSeval` figures exactly.

The steps and their official counterparts (youtubevos/cocoapi `ytvoseval.py`):

1. Results whose category is not a GT category are dropped. Per (video, category) the
   results are sorted by score (stable mergesort) and cut to the largest detection cap
   (100) before the video IoU (`computeIoU`).
2. Per area range, GT is ignored when crowd or when its average area is out of the range
   (ends inclusive); greedy matching per IoU threshold; unmatched results out of the range
   are ignored (`evaluateVid`).
3. Per category, area range and detection cap, results of all videos are pooled in video
   id order and sorted by score (stable, so ties follow video id, then file order);
   precision is made monotone and read at 101 recall points (`accumulate`).
4. Means over the entries that are not -1 (`summarize`).

Differences from the official code, all on inputs it mishandles: bad inputs raise
`EvaluationInputError` (see `ytvis_inputs`), and an empty result list scores zero instead of
crashing.
"""

from __future__ import annotations

import gc
import os
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vis_core.evaluation.matching import greedy_match
from vis_core.evaluation.metrics import UNDEFINED, CategoryAP, YtvisMetrics
from vis_core.evaluation.video_iou import video_iou_matrix
from vis_core.evaluation.ytvis_inputs import (
    GroundTruth,
    GroundTruthTrack,
    Results,
    ResultTrack,
    load_ground_truth,
    load_results,
)


def _default_iou_thresholds() -> np.ndarray:
    return np.linspace(0.5, 0.95, 10)


def _default_recall_thresholds() -> np.ndarray:
    return np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True, eq=False)
class YtvisParams:
    """The official defaults; area ranges are on the mean per-frame area of a track."""

    iou_thresholds: np.ndarray = field(default_factory=_default_iou_thresholds)  # [T]
    recall_thresholds: np.ndarray = field(default_factory=_default_recall_thresholds)  # [R]
    max_detections: tuple[int, ...] = (1, 10, 100)  # [M], ascending
    area_ranges: tuple[tuple[str, float, float], ...] = (  # [A], "all" first
        ("all", 0.0, 1e10),
        ("small", 0.0, 128.0**2),
        ("medium", 128.0**2, 256.0**2),
        ("large", 256.0**2, 1e10),
    )


@dataclass(frozen=True, eq=False)
class PrecisionRecall:
    """Accumulated curves, -1 where a category has no GT to measure against.

    precision: `[T, R, K, A, M]` at IoU threshold, recall point, category (sorted ids),
        area range and detection cap.
    recall: `[T, K, A, M]` final recall.
    """

    precision: np.ndarray
    recall: np.ndarray
    category_ids: tuple[int, ...]
    params: YtvisParams


@dataclass(frozen=True, eq=False)
class _VideoCategoryEval:
    """One video and category under one area range; results sorted by score.

    scores: `[D]`; matched, ignored: `[T, D]` bool; counted_gt: GT not ignored.
    """

    scores: np.ndarray
    matched: np.ndarray
    ignored: np.ndarray
    counted_gt: int


def evaluate_ytvis(
    ground_truth: GroundTruth | Mapping[str, Any] | str | os.PathLike,
    results: Results | Sequence[Mapping[str, Any]] | str | os.PathLike,
    params: YtvisParams | None = None,
) -> YtvisMetrics:
    """Video mask AP/AR of `results` against `ground_truth` (dicts, loaded, or JSON URIs)."""
    params = params or YtvisParams()
    with _garbage_collection_paused():
        ground_truth = load_ground_truth(ground_truth)
        curves = precision_recall(ground_truth, load_results(results, ground_truth), params)
        return summarize(curves, ground_truth)


@contextmanager
def _garbage_collection_paused() -> Iterator[None]:
    """Pause Python's cycle collector, which would rescan the (large, acyclic) inputs.

    Loading creates ~10^5 small objects; each collection pass walks every object alive,
    including the caller's parsed JSON, which cost a third of the run time. Nothing here
    creates reference cycles, so reference counting frees everything.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def precision_recall(
    ground_truth: GroundTruth, results: Results, params: YtvisParams | None = None
) -> PrecisionRecall:
    """Match every (video, category) and accumulate the precision/recall curves."""
    params = params or YtvisParams()
    category_ids = tuple(category.category_id for category in ground_truth.categories)
    gts: dict[tuple[int, int], list[GroundTruthTrack]] = defaultdict(list)
    for gt in ground_truth.tracks:
        gts[gt.video_id, gt.category_id].append(gt)
    dets: dict[tuple[int, int], list[ResultTrack]] = defaultdict(list)
    known = set(category_ids)
    for det in results.tracks:
        if det.category_id in known:
            dets[det.video_id, det.category_id].append(det)

    # evals[category][area] lists the (video, category) evaluations in video id order.
    evals: dict[int, list[list[_VideoCategoryEval]]] = {
        category_id: [[] for _ in params.area_ranges] for category_id in category_ids
    }
    for video_id, category_id in sorted(gts.keys() | dets.keys()):
        per_area = _evaluate_video_category(
            gts.get((video_id, category_id), []), dets.get((video_id, category_id), []), params
        )
        for area_index, entry in enumerate(per_area):
            evals[category_id][area_index].append(entry)
    return _accumulate(evals, category_ids, params)


def summarize(curves: PrecisionRecall, ground_truth: GroundTruth) -> YtvisMetrics:
    """The official `summarize` figures plus AP per category."""
    params = curves.params
    last = len(params.max_detections) - 1
    area_index = {name: index for index, (name, _, _) in enumerate(params.area_ranges)}

    def mean_precision(iou: float | None = None, area: str = "all") -> float:
        selected = curves.precision
        if iou is not None:
            selected = selected[np.where(iou == params.iou_thresholds)[0]]
        return _mean_defined(selected[:, :, :, [area_index[area]], [last]])

    def mean_recall(cap_index: int) -> float:
        return _mean_defined(curves.recall[:, :, [area_index["all"]], [cap_index]])

    names = {category.category_id: category.name for category in ground_truth.categories}
    per_category = curves.precision[:, :, :, area_index["all"], last]  # [T, R, K]
    return YtvisMetrics(
        ap=mean_precision(),
        ap50=mean_precision(iou=0.5),
        ap75=mean_precision(iou=0.75),
        ap_small=mean_precision(area="small"),
        ap_medium=mean_precision(area="medium"),
        ap_large=mean_precision(area="large"),
        ar1=mean_recall(0),
        ar10=mean_recall(min(1, last)),
        ar100=mean_recall(last),
        per_category=tuple(
            CategoryAP(category_id, names[category_id], _mean_defined(per_category[:, :, k]))
            for k, category_id in enumerate(curves.category_ids)
        ),
    )


def _evaluate_video_category(
    gts: list[GroundTruthTrack], dets: list[ResultTrack], params: YtvisParams
) -> list[_VideoCategoryEval]:
    """Match one (video, category) under every area range `[A]`."""
    order = np.argsort([-det.score for det in dets], kind="mergesort")
    dets = [dets[i] for i in order[: params.max_detections[-1]]]
    ious = video_iou_matrix([det.masks for det in dets], [gt.masks for gt in gts])  # [D, G]
    scores = np.array([det.score for det in dets], dtype=np.float64)
    det_area = np.array([det.avg_area for det in dets], dtype=np.float64)
    gt_area = np.array([gt.avg_area for gt in gts], dtype=np.float64)
    crowd = np.array([gt.is_crowd for gt in gts], dtype=bool)
    by_ignored_pattern = {}  # area ranges that ignore the same GT match the same way
    out = []
    for _, low, high in params.area_ranges:
        gt_ignored = crowd | (gt_area < low) | (gt_area > high)
        key = gt_ignored.tobytes()
        if key not in by_ignored_pattern:
            by_ignored_pattern[key] = greedy_match(ious, gt_ignored, crowd, params.iou_thresholds)
        matches = by_ignored_pattern[key]
        det_outside = (det_area < low) | (det_area > high)  # [D]
        ignored = matches.matched_ignored | (~matches.matched & det_outside[None, :])
        out.append(
            _VideoCategoryEval(
                scores=scores,
                matched=matches.matched,
                ignored=ignored,
                counted_gt=int(np.count_nonzero(~gt_ignored)),
            )
        )
    return out


def _accumulate(
    evals: dict[int, list[list[_VideoCategoryEval]]],
    category_ids: tuple[int, ...],
    params: YtvisParams,
) -> PrecisionRecall:
    num_t, num_r = len(params.iou_thresholds), len(params.recall_thresholds)
    num_k, num_a, num_m = len(category_ids), len(params.area_ranges), len(params.max_detections)
    precision = -np.ones((num_t, num_r, num_k, num_a, num_m))
    recall = -np.ones((num_t, num_k, num_a, num_m))
    for k, category_id in enumerate(category_ids):
        for a, entries in enumerate(evals[category_id]):
            counted_gt = sum(entry.counted_gt for entry in entries)
            if not entries or counted_gt == 0:
                continue  # stays -1: nothing to measure recall against
            scores = np.concatenate([entry.scores for entry in entries])
            rank = np.concatenate([np.arange(entry.scores.size) for entry in entries])
            matched = np.concatenate([entry.matched for entry in entries], axis=1)
            ignored = np.concatenate([entry.ignored for entry in entries], axis=1)
            for m, cap in enumerate(params.max_detections):
                kept = rank < cap  # the first `cap` results of each video
                order = np.argsort(-scores[kept], kind="mergesort")
                curve_p, curve_r = _curves(
                    matched[:, kept][:, order], ignored[:, kept][:, order], counted_gt, params
                )
                precision[:, :, k, a, m] = curve_p
                recall[:, k, a, m] = curve_r
    return PrecisionRecall(precision, recall, category_ids, params)


def _curves(
    matched: np.ndarray, ignored: np.ndarray, counted_gt: int, params: YtvisParams
) -> tuple[np.ndarray, np.ndarray]:
    """Sampled precision `[T, R]` and final recall `[T]` of results pooled in score order.

    matched, ignored: `[T, N]` bool.
    """
    true_pos = np.cumsum(matched & ~ignored, axis=1).astype(np.float64)
    false_pos = np.cumsum(~matched & ~ignored, axis=1).astype(np.float64)
    num = true_pos.shape[1]
    recall = true_pos / counted_gt
    # The same float operations as the official code, so the values agree bit for bit.
    precision = true_pos / (false_pos + true_pos + np.spacing(1))
    precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # monotone
    sampled = np.zeros((len(params.iou_thresholds), len(params.recall_thresholds)))
    for t in range(len(params.iou_thresholds)):
        points = np.searchsorted(recall[t], params.recall_thresholds, side="left")
        reached = points < num  # recall points past the last result stay 0
        sampled[t, reached] = precision[t, points[reached]]
    final_recall = recall[:, -1] if num else np.zeros(len(params.iou_thresholds))
    return sampled, final_recall


def _mean_defined(values: np.ndarray) -> float:
    defined = values[values > -1]
    return float(np.mean(defined)) if defined.size else UNDEFINED
