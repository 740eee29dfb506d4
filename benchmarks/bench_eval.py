"""YouTube-VIS evaluation speed on a synthetic set of 500 videos at 360x640.

Objects are moving ellipses (2-5 per video, 20-40 frames, 10 categories); results are the
GT tracks with jittered position and size, dropped frames and some wrong categories, plus
false positives. Masks are built as run lengths directly (an ellipse covers one interval
per column) and compressed in one pycocotools call; generation stays out of the timing.

Printed: the end-to-end evaluation time and videos per second, its phases, and the
vectorised video IoU against the official per-pair merge loop on the same tracks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

HEIGHT, WIDTH = 360, 640


@dataclass(frozen=True)
class SyntheticSet:
    ground_truth: dict[str, Any]
    results: list[dict[str, Any]]
    num_frames: int


def ellipse_runs(cx: float, cy: float, rx: float, ry: float, height: int, width: int) -> np.ndarray:
    """Uncompressed RLE counts (uint32) of a filled axis-aligned ellipse (pixel centres)."""
    xs = np.arange(max(0, int(np.ceil(cx - rx))), min(width, int(np.floor(cx + rx)) + 1))
    reach = ry * np.sqrt(np.clip(1.0 - ((xs + 0.5 - cx) / rx) ** 2, 0.0, None))
    top = np.clip(np.ceil(cy - reach - 0.5), 0, height).astype(np.int64)
    bottom = np.clip(np.floor(cy + reach - 0.5) + 1, 0, height).astype(np.int64)
    keep = bottom > top
    starts = xs[keep] * height + top[keep]  # column-major pixel index
    stops = xs[keep] * height + bottom[keep]
    bounds = np.concatenate(([0], np.stack([starts, stops], axis=1).reshape(-1), [height * width]))
    return np.diff(bounds).astype(np.uint32)


class _MaskBatch:
    """Collects uncompressed masks and compresses them all in one pycocotools call."""

    def __init__(self) -> None:
        self.pending: list[dict[str, Any]] = []
        self.slots: list[tuple[list[Any], int]] = []

    def put(self, state: tuple[float, ...] | None, target: list[Any]) -> float | None:
        """Append a placeholder to `target` for the mask of `state`; returns its area."""
        target.append(None)
        if state is None:
            return None
        cx, cy, rx, ry = state
        runs = ellipse_runs(cx, cy, max(rx, 2.0), max(ry, 2.0), HEIGHT, WIDTH)
        self.pending.append({"size": [HEIGHT, WIDTH], "counts": runs})
        self.slots.append((target, len(target) - 1))
        return float(runs[1::2].sum())

    def compress(self) -> None:
        for (target, index), rle in zip(
            self.slots, mask_utils.frPyObjects(self.pending, HEIGHT, WIDTH), strict=True
        ):
            target[index] = {"size": [HEIGHT, WIDTH], "counts": rle["counts"].decode("ascii")}


def make_synthetic_set(
    num_videos: int = 500,
    seed: int = 0,
    num_categories: int = 10,
    false_positives: tuple[int, int] = (1, 4),
) -> SyntheticSet:
    """GT of 2-5 objects per video; results: 90% of them detected, plus false positives."""
    rng = np.random.default_rng(seed)
    batch = _MaskBatch()
    videos, annotations, results = [], [], []
    total_frames = 0
    for video_id in range(1, num_videos + 1):
        length = int(rng.integers(20, 41))
        total_frames += length
        videos.append({"id": video_id, "height": HEIGHT, "width": WIDTH, "length": length})
        for _ in range(int(rng.integers(2, 6))):
            track = _random_track(rng, length)
            category = int(rng.integers(1, num_categories + 1))
            segmentations: list[Any] = []
            areas = [batch.put(state, segmentations) for state in track]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "video_id": video_id,
                    "category_id": category,
                    "segmentations": segmentations,
                    "areas": areas,
                    "iscrowd": 0,
                }
            )
            if rng.random() < 0.9:  # a detection of this object
                results.append(_detection(rng, video_id, category, num_categories, track, batch))
        for _ in range(int(rng.integers(false_positives[0], false_positives[1] + 1))):
            segmentations = []
            for state in _random_track(rng, length):
                batch.put(state, segmentations)
            results.append(
                {
                    "video_id": video_id,
                    "category_id": int(rng.integers(1, num_categories + 1)),
                    "score": float(rng.uniform(0.0, 0.6)),
                    "segmentations": segmentations,
                }
            )
    batch.compress()
    ground_truth = {
        "videos": videos,
        "categories": [{"id": i, "name": f"class_{i}"} for i in range(1, num_categories + 1)],
        "annotations": annotations,
    }
    return SyntheticSet(ground_truth, results, total_frames)


def _detection(
    rng: np.random.Generator,
    video_id: int,
    category: int,
    num_categories: int,
    track: list[tuple[float, ...] | None],
    batch: _MaskBatch,
) -> dict[str, Any]:
    """The GT track shifted and scaled, with jitter, dropped frames, sometimes mislabelled."""
    offset = rng.normal(0.0, [6.0, 6.0, 0.1, 0.1])
    segmentations: list[Any] = []
    for state in track:
        if state is None or rng.random() < 0.05:
            batch.put(None, segmentations)
            continue
        cx, cy, rx, ry = state
        batch.put(
            (
                cx + offset[0] + rng.normal(0, 2),
                cy + offset[1] + rng.normal(0, 2),
                rx * (1 + offset[2]),
                ry * (1 + offset[3]),
            ),
            segmentations,
        )
    wrong = rng.random() < 0.1
    return {
        "video_id": video_id,
        "category_id": int(rng.integers(1, num_categories + 1)) if wrong else category,
        "score": float(rng.uniform(0.3, 1.0)),
        "segmentations": segmentations,
    }


def _random_track(rng: np.random.Generator, length: int) -> list[tuple[float, ...] | None]:
    """Ellipse states (cx, cy, rx, ry) per frame, None outside the visible span."""
    first = int(rng.integers(0, length // 3 + 1))
    last = int(rng.integers(2 * length // 3, length))
    start = rng.uniform([40, 40, 10, 10], [WIDTH - 40, HEIGHT - 40, 90, 70])
    velocity = rng.normal(0.0, [3.0, 2.0, 0.3, 0.3])
    return [
        tuple(start + velocity * (t - first)) if first <= t <= last else None for t in range(length)
    ]


def run(repeats: int = 3) -> None:
    from vis_core.evaluation import evaluate_ytvis, load_ground_truth, load_results
    from vis_core.evaluation.ytvis_eval import precision_recall, summarize

    start = time.perf_counter()
    data = make_synthetic_set()
    dense = make_synthetic_set(num_videos=100, seed=1, num_categories=3, false_positives=(20, 40))
    generation = time.perf_counter() - start

    rows: list[tuple[str, float, str]] = []
    for name, synthetic in (("500 videos", data), ("dense: 100 videos", dense)):
        num_videos = len(synthetic.ground_truth["videos"])
        totals, loads, scores = [], [], []
        for _ in range(repeats):
            start = time.perf_counter()
            metrics = evaluate_ytvis(synthetic.ground_truth, synthetic.results)
            totals.append(time.perf_counter() - start)
            start = time.perf_counter()
            ground_truth = load_ground_truth(synthetic.ground_truth)
            results = load_results(synthetic.results, ground_truth)
            loads.append(time.perf_counter() - start)
            start = time.perf_counter()
            summarize(precision_recall(ground_truth, results), ground_truth)
            scores.append(time.perf_counter() - start)
        print(
            f"{name}: {synthetic.num_frames} frames of {HEIGHT}x{WIDTH}, "
            f"{len(synthetic.ground_truth['annotations'])} GT tracks, "
            f"{len(synthetic.results)} result tracks, AP {metrics.ap:.4f}"
        )
        rows += [
            (f"{name}: evaluate_ytvis", min(totals), f"{num_videos / min(totals):,.0f} videos/s"),
            ("  load + check inputs", min(loads), f"{num_videos / min(loads):,.0f} videos/s"),
            (
                "  IoU + match + accumulate",
                min(scores),
                f"{num_videos / min(scores):,.0f} videos/s",
            ),
        ]
        timings, pairs, identical = _video_iou_three_ways(ground_truth, results, max_video=100)
        base = timings["volumes"]
        rows.append((f"  video IoU, {pairs} pairs: volumes", base, "1.0x"))
        rows += [
            (f"    {way}", seconds, f"{seconds / base:.1f}x slower")
            for way, seconds in timings.items()
            if way != "volumes"
        ]
        rows.append((f"    same values bit for bit: {identical}", 0.0, ""))
    width = max(len(label) for label, _, _ in rows)
    print(f"(sets generated in {generation:.1f} s, not timed; best of {repeats} runs)")
    print(f"{'step':<{width}}  {'seconds':>8}  rate / ratio")
    for label, seconds, rate in rows:
        print(f"{label:<{width}}  {seconds:>8.3f}  {rate}" if rate else label)


def _video_iou_three_ways(
    ground_truth: Any, results: Any, max_video: int
) -> tuple[dict[str, float], int, bool]:
    """Seconds per way, pairs, and agreement, on the groups of videos 1..max_video."""
    from vis_core.evaluation.track_masks import TrackMasks
    from vis_core.evaluation.video_iou import video_iou_matrix, video_iou_reference

    groups: dict[tuple[int, int], tuple[list[TrackMasks], list[TrackMasks]]] = {}
    for gt in ground_truth.tracks:
        if gt.video_id <= max_video:
            groups.setdefault((gt.video_id, gt.category_id), ([], []))[1].append(gt.masks)
    for det in results.tracks:
        if (det.video_id, det.category_id) in groups:
            groups[det.video_id, det.category_id][0].append(det.masks)

    def by_frame(tracks: list[TrackMasks]) -> list[TrackMasks]:
        return [TrackMasks(t.size, t.counts, t.areas, volume=None) for t in tracks]

    def official(dets: list[TrackMasks], gts: list[TrackMasks]) -> np.ndarray:
        values = [[video_iou_reference(d, g) for g in gts] for d in dets]
        return np.array(values, dtype=np.float64).reshape(len(dets), len(gts))

    timings, outputs = {}, {}
    for way, compute in (
        ("volumes", video_iou_matrix),
        ("frame by frame", lambda d, g: video_iou_matrix(by_frame(d), by_frame(g))),
        ("official per-pair merges", official),
    ):
        start = time.perf_counter()
        outputs[way] = [compute(dets, gts) for dets, gts in groups.values()]
        timings[way] = time.perf_counter() - start
    identical = all(
        np.array_equal(a, b) and np.array_equal(a, c)
        for a, b, c in zip(*outputs.values(), strict=True)
    )
    return timings, sum(m.size for m in outputs["volumes"]), identical


if __name__ == "__main__":
    run()
