"""YouTube-VIS evaluation: golden cases of the official evaluator, then each rule on its own."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from vis_core import masks
from vis_core.evaluation import EvaluationInputError, YtvisMetrics, evaluate_ytvis, track_volume

FIXTURES = Path(__file__).parent / "fixtures" / "ytvis_eval"
CASES = sorted(path.name for path in FIXTURES.iterdir() if path.is_dir())
STAT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")
H, W = 40, 60
ONE = pytest.approx(1.0, abs=1e-12)


# --- golden cases --------------------------------------------------------------------------


def test_all_golden_cases_are_present():
    assert CASES == ["case_1", "case_1_many", "case_2", "case_3", "case_4", "case_4_crowd"]


@pytest.mark.parametrize("case", CASES)
def test_golden_case_reproduces_the_official_stats(case):
    expected = json.loads((FIXTURES / case / "expected.json").read_text())["stats"]
    metrics = evaluate_ytvis(FIXTURES / case / "gt.json.gz", FIXTURES / case / "results.json.gz")
    got = metrics.to_json_dict()
    for key in STAT_KEYS:
        assert got[key] == pytest.approx(expected[key], abs=1e-9), key


@pytest.mark.parametrize("case", ["case_1", "case_4_crowd"])
def test_per_category_ap_averages_to_ap(case):
    metrics = evaluate_ytvis(FIXTURES / case / "gt.json.gz", FIXTURES / case / "results.json.gz")
    defined = [entry.ap for entry in metrics.per_category if entry.ap != -1]
    assert defined and len(defined) < len(metrics.per_category)  # one category has no GT
    assert np.mean(defined) == pytest.approx(metrics.ap, abs=1e-12)


def test_dict_inputs_give_the_same_figures_and_stay_untouched():
    gt = _read_gz(FIXTURES / "case_2" / "gt.json.gz")
    results = _read_gz(FIXTURES / "case_2" / "results.json.gz")
    before = copy.deepcopy((gt, results))
    from_files = evaluate_ytvis(
        FIXTURES / "case_2" / "gt.json.gz", FIXTURES / "case_2" / "results.json.gz"
    )
    assert evaluate_ytvis(gt, results) == from_files
    assert (gt, results) == before


def test_frame_by_frame_iou_path_gives_the_same_figures(monkeypatch):
    # Videos of 2**32 pixels or more skip the volume RLEs; force that path on a golden case.
    monkeypatch.setattr(track_volume, "MAX_VOLUME_PIXELS", 0)
    expected = json.loads((FIXTURES / "case_4_crowd" / "expected.json").read_text())["stats"]
    got = evaluate_ytvis(
        FIXTURES / "case_4_crowd" / "gt.json.gz", FIXTURES / "case_4_crowd" / "results.json.gz"
    ).to_json_dict()
    for key in STAT_KEYS:
        assert got[key] == pytest.approx(expected[key], abs=1e-9), key


# --- semantics -----------------------------------------------------------------------------


def test_gt_polygons_and_uncompressed_rle_read_like_compressed_rle():
    polygon = [[10.0, 5.0, 29.0, 5.0, 29.0, 14.0, 10.0, 14.0]]
    compressed = masks.to_compressed(polygon, H, W)
    flat = masks.decode_one(compressed).flatten(order="F").astype(np.int8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    uncompressed = {"size": [H, W], "counts": np.diff(bounds).tolist()}
    result = [_result(1, 1, 0.7, [compressed, _box(3, 17, 8, 32), None])]
    figures = []
    for form in (compressed, polygon, uncompressed):
        track = _track(1, 1, [form, compressed, None])
        track["areas"] = [200.0, 200.0, None]
        figures.append(evaluate_ytvis(_ground_truth([track]), result))
    assert figures[0] == figures[1] == figures[2]
    assert 0 < figures[0].ap < 1  # the second frame's box is a little too large


def test_video_length_comes_from_length_or_file_names():
    gt = _ground_truth([_track(1, 1, [None, None, None])])
    gt["videos"][0].pop("length")
    gt["videos"][0]["file_names"] = ["a/0.jpg", "a/1.jpg", "a/2.jpg"]
    assert evaluate_ytvis(gt, [_result(1, 1, 0.5, [None] * 3)]).ap == 0.0
    gt["videos"][0]["length"] = 4
    with pytest.raises(EvaluationInputError, match="video 1: length 4 but 3 file names"):
        evaluate_ytvis(gt, [])


def test_integral_float_ids_read_as_integers():
    box = _box(0, 10, 0, 10)
    gt = _ground_truth([_track(1, 1, [box, None, None])])
    assert evaluate_ytvis(gt, [_result(1.0, 1.0, 0.5, [box, None, None])]).ap == ONE
    with pytest.raises(EvaluationInputError, match="'category_id' must be an integer"):
        evaluate_ytvis(gt, [_result(1, 1.5, 0.5, [box, None, None])])


def test_a_perfect_result_scores_one():
    gt = _ground_truth(
        [
            _track(1, 1, [_box(2, 20, 3, 30), None, _box(5, 25, 3, 30)]),
            _track(1, 2, [None, _box(0, 9, 0, 9), _box(0, 9, 0, 9)]),
        ]
    )
    results = [
        _result(a["video_id"], a["category_id"], 0.9, a["segmentations"]) for a in gt["annotations"]
    ]
    metrics = evaluate_ytvis(gt, results)
    # Precision is tp / (tp + fp + eps), as in the official code: 1 - 2e-16, not 1.
    for value in (metrics.ap, metrics.ap50, metrics.ap75, metrics.ap_small):
        assert value == ONE
    assert metrics.ar1 == metrics.ar10 == metrics.ar100 == 1.0
    assert metrics.ap_medium == metrics.ap_large == -1.0  # no GT of those sizes


def test_empty_results_score_zero_where_gt_exists():
    gt = _ground_truth([_track(1, 1, [_box(2, 20, 3, 30), None, None])])
    metrics = evaluate_ytvis(gt, [])
    assert (metrics.ap, metrics.ap50, metrics.ap_small, metrics.ar1, metrics.ar100) == (0,) * 5
    assert metrics.ap_medium == metrics.ap_large == -1.0
    assert [entry.ap for entry in metrics.per_category] == [0.0, -1.0]


def test_video_iou_sums_over_frames_where_either_is_present():
    # GT on frames 0-1, result on frames 1-2, same box: I = 200, U = 600, IoU = 1/3.
    box = _box(0, 10, 0, 20)
    gt = _ground_truth([_track(1, 1, [box, box, None])])
    metrics = evaluate_ytvis(gt, [_result(1, 1, 0.5, [None, box, box])])
    assert metrics.ap50 == 0.0  # 1/3 < 0.5
    half = evaluate_ytvis(gt, [_result(1, 1, 0.5, [box, box, None])])
    assert half.ap50 == ONE


def test_an_empty_mask_adds_nothing_to_the_union():
    box, empty = _box(0, 10, 0, 20), masks.encode_one(np.zeros((H, W), bool))
    gt = _ground_truth([_track(1, 1, [box, None, None])])
    # The empty frame adds nothing to the union, so the IoU stays 1.
    metrics = evaluate_ytvis(gt, [_result(1, 1, 0.5, [box, empty, None])])
    assert metrics.ap75 == ONE


def test_more_than_100_results_per_video_and_category_are_cut():
    gt = _ground_truth([_track(1, 1, [_box(0, 10, 0, 10), None, None])])
    decoys = [_result(1, 1, 0.9, [_box(20, 30, 30, 40), None, None]) for _ in range(100)]
    hit = _result(1, 1, 0.1, [_box(0, 10, 0, 10), None, None])
    assert evaluate_ytvis(gt, [*decoys, hit]).ar100 == 0.0  # ranked 101st: dropped
    kept = evaluate_ytvis(gt, [*decoys[:99], hit])
    assert kept.ar100 == 1.0 and kept.ar10 == 0.0
    assert kept.ap50 == pytest.approx(0.01)


def test_score_ties_across_videos_follow_video_id():
    box, other = _box(0, 10, 0, 10), _box(20, 30, 30, 40)
    gt = _ground_truth([_track(2, 1, [box, None, None])])
    true_positive = _result(2, 1, 0.5, [box, None, None])
    false_positive = _result(1, 1, 0.5, [other, None, None])
    # Video 1 comes first at equal scores, whatever the file order.
    assert evaluate_ytvis(gt, [true_positive, false_positive]).ap50 == pytest.approx(0.5)
    assert evaluate_ytvis(gt, [false_positive, true_positive]).ap50 == pytest.approx(0.5)
    gt_first = _ground_truth([_track(1, 1, [box, None, None])])
    swapped = [_result(1, 1, 0.5, [box, None, None]), _result(2, 1, 0.5, [other, None, None])]
    assert evaluate_ytvis(gt_first, swapped[::-1]).ap50 == ONE


def test_score_ties_within_a_video_follow_file_order():
    exact, loose = _box(0, 10, 0, 10), _box(0, 10, 0, 16)  # IoU 1 and 10/16
    gt = _ground_truth([_track(1, 1, [exact, None, None])])
    first_exact = [_result(1, 1, 0.5, [exact, None, None]), _result(1, 1, 0.5, [loose, None, None])]
    assert evaluate_ytvis(gt, first_exact).ap == ONE
    # Loose first: it takes the GT at thresholds 0.5-0.6 (AP 1 there), and is a false
    # positive ahead of the exact one from 0.65 on (AP 0.5 there).
    assert evaluate_ytvis(gt, first_exact[::-1]).ap == pytest.approx((3 * 1.0 + 7 * 0.5) / 10)


def test_crowd_gt_absorbs_several_results():
    crowd, person = _box(0, 30, 0, 30), _box(32, 40, 40, 60)
    gt = _ground_truth(
        [_track(1, 1, [person, None, None]), _track(1, 1, [crowd, None, None], iscrowd=1)]
    )
    hit = _result(1, 1, 0.5, [person, None, None])
    on_crowd = [_result(1, 1, 0.9, [crowd, None, None]) for _ in range(3)]
    with_crowd = evaluate_ytvis(gt, [hit, *on_crowd])
    assert with_crowd.ap == ONE  # matched to the crowd GT, so ignored, all three
    gt["annotations"][1]["iscrowd"] = 0
    without_crowd = evaluate_ytvis(gt, [hit, *on_crowd])
    assert without_crowd.ap < 0.9  # now one regular match and two false positives


def test_area_ranges_use_the_areas_field_ignoring_none_and_zero():
    box = _box(0, 10, 0, 10)
    track = _track(1, 1, [box, box, box])
    track["areas"] = [None, 0, 128.0**2]  # mean of truthy areas: exactly 128², both ranges
    metrics = evaluate_ytvis(_ground_truth([track]), [_result(1, 1, 0.5, [box, box, box])])
    assert metrics.ap_small == ONE and metrics.ap_medium == ONE
    assert metrics.ap_large == -1.0


def test_results_of_categories_absent_from_gt_are_dropped():
    box = _box(0, 10, 0, 10)
    gt = _ground_truth([_track(1, 1, [box, None, None])])
    hit = _result(1, 1, 0.5, [box, None, None])
    stranger = _result(1, 99, 0.9, [_box(20, 30, 30, 40), None, None])
    assert evaluate_ytvis(gt, [hit, stranger]) == evaluate_ytvis(gt, [hit])


def test_json_dict_has_fractions_and_per_category_names():
    box = _box(0, 10, 0, 10)
    out = evaluate_ytvis(
        _ground_truth([_track(1, 1, [box, None, None])]), [_result(1, 1, 1.0, [box, None, None])]
    ).to_json_dict()
    assert list(out) == [*STAT_KEYS, "per_category"]
    assert out["AP"] == ONE and out["APl"] == -1.0
    assert out["per_category"] == {"person": ONE, "dog": -1.0}
    assert isinstance(evaluate_ytvis(_ground_truth([]), []), YtvisMetrics)


# --- clear errors where the official code misbehaves ----------------------------------------


def test_a_short_result_raises_instead_of_being_truncated():
    gt = _ground_truth([_track(1, 1, [_box(0, 10, 0, 10), None, None])])
    with pytest.raises(
        EvaluationInputError, match=r"result 0 \(video 1\): 2 segmentations .* 3 frames"
    ):
        evaluate_ytvis(gt, [_result(1, 1, 0.5, [_box(0, 10, 0, 10), None])])


def test_a_short_gt_track_raises():
    track = _track(1, 1, [_box(0, 10, 0, 10), None, None])
    track["segmentations"].pop()
    with pytest.raises(EvaluationInputError, match=r"annotation \d+ \(video 1\): 2 segmentations"):
        evaluate_ytvis(_ground_truth([track]), [])


def test_an_unknown_video_raises():
    gt = _ground_truth([_track(1, 1, [_box(0, 10, 0, 10), None, None])])
    with pytest.raises(
        EvaluationInputError, match="result 1: video_id 7 is not in the ground truth"
    ):
        evaluate_ytvis(gt, [_result(1, 1, 0.5, [None] * 3), _result(7, 1, 0.5, [None] * 3)])


@pytest.mark.parametrize(
    ("segmentation", "message"),
    [
        ({"size": [H, W + 1], "counts": "0"}, "RLE size"),
        ({"size": [H, W], "counts": "PP0"}, "frame 1: compressed RLE covers"),
        ({"size": [H, W], "counts": "0 0"}, "frame 1: malformed compressed RLE counts.*'0 0'"),
        ({"size": [H, W], "counts": [H * W]}, "frame 1: result masks must be compressed RLE"),
        ({"counts": "0"}, "RLE size None"),
    ],
)
def test_a_malformed_result_mask_raises(segmentation, message):
    gt = _ground_truth([_track(1, 1, [_box(0, 10, 0, 10), None, None])])
    results = [_result(1, 1, 0.5, [None] * 3), _result(1, 1, 0.5, [None, segmentation, None])]
    with pytest.raises(EvaluationInputError, match=rf"result 1 \(video 1\).*{message}"):
        evaluate_ytvis(gt, results)


def test_broken_counts_in_gt_raise_with_the_annotation_named():
    track = _track(1, 1, [_box(0, 10, 0, 10), None, None])
    track["segmentations"][0] = {"size": [H, W], "counts": track["segmentations"][0]["counts"][:-1]}
    with pytest.raises(
        EvaluationInputError, match=r"annotation \d+ \(video 1\) frame 0: malformed compressed RLE"
    ):
        evaluate_ytvis(_ground_truth([track]), [])


@pytest.mark.parametrize(
    ("key", "where"),
    [("score", "result 0"), ("video_id", "result 0"), ("segmentations", "result 0")],
)
def test_a_result_missing_a_key_raises(key, where):
    gt = _ground_truth([_track(1, 1, [_box(0, 10, 0, 10), None, None])])
    result = _result(1, 1, 0.5, [None] * 3)
    del result[key]
    with pytest.raises(EvaluationInputError, match=where):
        evaluate_ytvis(gt, [result])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("iscrowd"), "missing key 'iscrowd'"),
        (lambda a: a.pop("areas"), "'areas' must be a list"),
        (lambda a: a.update(id=0), "unique and non-zero"),
        (lambda a: a.update(category_id=9), "category 9 is not in 'categories'"),
        (lambda a: a.update(video_id=9), "video 9 is not in 'videos'"),
    ],
)
def test_a_bad_gt_annotation_raises(change, message):
    track = _track(1, 1, [_box(0, 10, 0, 10), None, None])
    change(track)
    with pytest.raises(EvaluationInputError, match=message):
        evaluate_ytvis(_ground_truth([track]), [])


def test_duplicate_annotation_ids_raise():
    tracks = [_track(1, 1, [None] * 3), _track(1, 1, [None] * 3)]
    tracks[1]["id"] = tracks[0]["id"]
    with pytest.raises(EvaluationInputError, match="unique"):
        evaluate_ytvis(_ground_truth(tracks), [])


def test_unreadable_files_raise_input_errors(tmp_path):
    with pytest.raises(EvaluationInputError, match="not found"):
        evaluate_ytvis(tmp_path / "missing.json", [])
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(EvaluationInputError, match="not valid JSON"):
        evaluate_ytvis(broken, [])


# --- helpers ---------------------------------------------------------------------------------


def _box(y0: int, y1: int, x0: int, x1: int) -> masks.RLE:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return masks.encode_one(mask)


_NEXT_ID = iter(range(1, 10**6))


def _track(video_id: int, category_id: int, segmentations: list, iscrowd: int = 0) -> dict:
    return {
        "id": next(_NEXT_ID),
        "video_id": video_id,
        "category_id": category_id,
        "segmentations": segmentations,
        "areas": [_area(s) for s in segmentations],
        "iscrowd": iscrowd,
    }


def _area(segmentation) -> float | None:
    if isinstance(segmentation, dict) and isinstance(segmentation["counts"], str):
        return float(masks.area([segmentation])[0])
    return None  # absent, or a form the test sets areas for itself


def _ground_truth(annotations: list[dict]) -> dict:
    return {
        "videos": [{"id": i, "height": H, "width": W, "length": 3} for i in (1, 2)],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}],
        "annotations": annotations,
    }


def _result(video_id: int, category_id: int, score: float, segmentations: list) -> dict:
    return {
        "video_id": video_id,
        "category_id": category_id,
        "score": score,
        "segmentations": segmentations,
    }


def _read_gz(path: Path):
    with gzip.open(path, "rt") as file:
        return json.load(file)


# --- class-agnostic track recall -------------------------------------------------------------


def test_track_recall_ignores_classes_and_counts_only_the_top_tracks():
    from vis_core.evaluation.track_recall import track_recall

    a, b, c = _box(0, 10, 0, 10), _box(20, 30, 20, 30), _box(0, 10, 40, 50)
    gt = _ground_truth(
        [_track(1, 1, [a, a, a]), _track(1, 2, [b, b, None]), _track(2, 1, [c, c, c])]
    )
    results = [
        _result(1, 2, 0.9, [a, a, a]),  # the person found, labelled dog: counts
        _result(1, 1, 0.8, [b, None, None]),  # IoU 1/2 with the dog: counts at 0.5
        _result(2, 1, 0.1, [c, c, c]),  # below the top-1 cut in the second call
        _result(2, 1, 0.7, [a, a, a]),
    ]
    assert track_recall(gt, results) == pytest.approx(1.0)
    assert track_recall(gt, results, iou=0.6) == pytest.approx(2 / 3)
    assert track_recall(gt, results, top=1) == pytest.approx(1 / 3)
    assert track_recall(gt, []) == 0.0
