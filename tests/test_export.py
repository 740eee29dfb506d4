"""`vis export`: tables of a run -> YouTube-VIS results that `vis eval` reads."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pytest

import jobs.eval
import jobs.export
from vis_core import masks
from vis_core.data.ytvis import Category
from vis_core.evaluation import evaluate_ytvis
from vis_core.inference.instances import VideoInstances
from vis_core.tables.commit import TableCommitter
from vis_core.tables.export import CategoryMap, ExportError, export_ytvis_results
from vis_core.tables.rows import VideoRecord, failed_rows, ok_rows

T, H, W = 3, 6, 8
CLASS_NAMES = ("dog", "cat", "bird")  # table ids 1, 2, 3
GT_CATEGORIES = [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}]  # bird is not in the GT
GT_ID = {"dog": 3, "cat": 7}
RUN = "run-a"


def _box(top: int, left: int, frames: tuple[int, ...]) -> np.ndarray:
    """`[T, H, W]` bool: a 2x3 box in the given frames, empty elsewhere."""
    out = np.zeros((T, H, W), dtype=bool)
    for frame in frames:
        out[frame, top + frame % 2 : top + frame % 2 + 2, left : left + 3] = True
    return out


# GT tracks per GT video id: (category name, masks [T, H, W]).
GT_TRACKS = {
    10: [("cat", _box(0, 0, (0, 1))), ("dog", _box(3, 4, (0, 1, 2)))],
    11: [("dog", _box(1, 2, (1, 2)))],
}


def _gt() -> dict:
    videos = [
        {"id": 10, "video_path": "videos/00001.mp4", "length": T},
        {"id": 11, "file_names": [f"00002/{i:05d}.jpg" for i in range(T)]},  # JPEG frames
        {"id": 12, "video_path": "videos/00003.mp4", "length": T},  # failed in the tables
        {"id": 13, "video_path": "videos/00004.mp4", "length": T},  # not in the tables
    ]
    for video in videos:
        video.setdefault("file_names", [f"{video['id']}/{i:05d}.jpg" for i in range(T)])
        video.update(height=H, width=W)
    annotations = []
    for video_id, tracks in GT_TRACKS.items():
        for name, track in tracks:
            rles = [masks.encode_one(mask) if mask.any() else None for mask in track]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "video_id": video_id,
                    "category_id": GT_ID[name],
                    "segmentations": rles,
                    "areas": [int(mask.sum()) or None for mask in track],
                    "bboxes": [None] * T,
                    "iscrowd": 0,
                }
            )
    return {"videos": videos, "categories": GT_CATEGORIES, "annotations": annotations}


def _instances(tracks: list[tuple[str, np.ndarray, float]], frames: int = T) -> VideoInstances:
    return VideoInstances(
        num_frames=frames,
        height=H,
        width=W,
        scores=np.array([score for _, _, score in tracks], dtype=np.float32),
        labels=np.array([CLASS_NAMES.index(name) for name, _, _ in tracks], dtype=np.int64),
        masks=tuple(tuple(masks.encode(track)) for _, track, _ in tracks),
    )


def _commit(out: Path, video_id: str, instances: VideoInstances | None, run: str = RUN) -> None:
    frames = T if instances is None else instances.num_frames
    record = VideoRecord(
        video_id, f"s3://corpus/{video_id}", "vita", run, num_frames=frames, width=W, height=H
    )
    committer = TableCommitter(str(out), run)
    if instances is None:
        committer.commit(failed_rows(record, "cannot decode"))
    else:
        committer.commit(ok_rows(record, instances, CLASS_NAMES, np.arange(frames) / 10.0))


# Predictions: the GT masks with scores, plus a bird (not in the GT) in the first video.
PREDICTED = {
    "synth/val/videos/00001.mp4": [
        ("cat", GT_TRACKS[10][0][1], 0.9),
        ("bird", _box(2, 2, (1,)), 0.8),
        ("dog", GT_TRACKS[10][1][1], 0.7),
    ],
    "synth/val/videos/00002.mp4": [("dog", GT_TRACKS[11][0][1], 0.6)],
}


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    gt = tmp_path / "gt" / "val.json"
    gt.parent.mkdir()
    gt.write_text(json.dumps(_gt()))
    out = tmp_path / "tables"
    for video_id, tracks in PREDICTED.items():
        _commit(out, video_id, _instances(tracks))
    _commit(out, "synth/val/videos/00003.mp4", None)
    _commit(out, "other/clip.mp4", _instances([("dog", _box(0, 0, (0,)), 0.5)]))
    return gt, out


def test_export_gives_the_instances_with_gt_ids_and_empty_masks(files):
    gt, out = files
    export = export_ytvis_results(str(out), str(gt))
    assert export.matched == 2
    assert export.unmatched_table_videos == ("other/clip.mp4",)
    assert export.gt_videos_without_rows == ("00003.mp4", "00004.mp4")
    assert export.failed_videos == ("synth/val/videos/00003.mp4",)
    assert (export.dropped_tracklets, export.dropped_categories) == (1, ("bird",))
    expected = [
        (10, "cat", 0.9, GT_TRACKS[10][0][1]),
        (10, "dog", 0.7, GT_TRACKS[10][1][1]),
        (11, "dog", 0.6, GT_TRACKS[11][0][1]),
    ]
    assert len(export.results) == len(expected)
    for result, (video_id, name, score, track) in zip(export.results, expected, strict=True):
        assert set(result) == {"video_id", "score", "category_id", "segmentations"}
        assert result["video_id"] == video_id and result["category_id"] == GT_ID[name]
        assert result["score"] == pytest.approx(score)
        assert len(result["segmentations"]) == T
        assert all(rle["size"] == [H, W] for rle in result["segmentations"])
        np.testing.assert_array_equal(masks.decode(result["segmentations"]), track)
    # Frame 2 of the cat has no tracklet_frames row: an empty RLE of the frame's size.
    assert masks.area([export.results[0]["segmentations"][2]]).tolist() == [0]


def test_exported_gt_masks_evaluate_to_ap_1(files):
    gt, out = files
    metrics = evaluate_ytvis(str(gt), export_ytvis_results(str(out), str(gt)).results)
    assert metrics.ap == pytest.approx(1.0)
    assert {entry.name: entry.ap for entry in metrics.per_category} == pytest.approx(
        {"cat": 1.0, "dog": 1.0}
    )


def test_latest_run_by_default_and_a_chosen_run(files):
    gt, out = files
    time.sleep(0.01)  # processed_at has millisecond resolution
    _commit(out, "synth/val/videos/00002.mp4", _instances([("cat", _box(0, 0, (0,)), 0.3)]), "b")
    latest = export_ytvis_results(str(out), str(gt))
    assert [(r["video_id"], r["category_id"]) for r in latest.results] == [(11, GT_ID["cat"])]
    assert len(export_ytvis_results(str(out), str(gt), run_id=RUN).results) == 3


def test_frame_count_or_size_mismatch_raises(files):
    gt, out = files
    longer = np.zeros((T + 1, H, W), dtype=bool)
    longer[T, 0, 0] = True
    _commit(out, "synth/val/videos/00002.mp4", _instances([("dog", longer, 0.5)], frames=T + 1))
    with pytest.raises(ExportError, match=r"00002\.mp4: 4 frames of 8x6 in the tables, 3 frames"):
        export_ytvis_results(str(out), str(gt))
    _commit(out, "synth/val/videos/00002.mp4", _instances([("dog", _box(0, 0, (0,)), 0.5)]))
    data = _gt()
    data["videos"][1]["width"] = W + 1
    gt.write_text(json.dumps(data))
    with pytest.raises(ExportError, match=r"3 frames of 8x6 in the tables, 3 frames of 9x6"):
        export_ytvis_results(str(out), str(gt))


def test_ambiguous_names_raise(files):
    gt, out = files
    data = _gt()
    data["videos"][3]["video_path"] = "elsewhere/00001.mp4"
    gt.write_text(json.dumps(data))
    with pytest.raises(ExportError, match=r"ambiguous.*00001\.mp4"):
        export_ytvis_results(str(out), str(gt))


def test_categories_map_by_name_then_by_id_for_unnamed_classes():
    categories = CategoryMap([Category(7, "cat"), Category(3, "dog")])
    assert categories.gt_id(1, "dog") == 3 and categories.gt_id(2, "cat") == 7
    assert categories.gt_id(3, "bird") is None  # id 3 is the GT's dog, not a bird
    assert categories.gt_id(7, "class_6") == 7  # a model without class names
    assert categories.gt_id(5, "class_4") is None


def test_no_matching_video_gives_no_results(files, tmp_path):
    gt, _ = files
    out = tmp_path / "other_tables"
    _commit(out, "a/zzz.mp4", _instances([("dog", _box(0, 0, (0,)), 0.5)]))
    export = export_ytvis_results(str(out), str(gt))
    assert (export.results, export.matched, export.unmatched_table_videos) == (
        [],
        0,
        ("a/zzz.mp4",),
    )
    assert len(export.gt_videos_without_rows) == 4


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vis")
    subparsers = parser.add_subparsers(dest="command", required=True)
    jobs.export.register(subparsers)
    jobs.eval.register(subparsers)
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_writes_results_that_vis_eval_reads(files, tmp_path, capsys):
    gt, out = files
    results, metrics = tmp_path / "results.json", tmp_path / "metrics.json"
    assert _main(["export", "--tables", str(out), "--gt", str(gt), "--out", str(results)]) == 0
    printed = capsys.readouterr().out
    assert "matched videos: 2" in printed and "table videos not in the GT: 1" in printed
    assert len(json.loads(results.read_text())) == 3
    assert _main(["eval", "--gt", str(gt), "--results", str(results), "--out", str(metrics)]) == 0
    assert json.loads(metrics.read_text())["AP"] == pytest.approx(1.0)
    missing = ["export", "--tables", str(tmp_path / "none"), "--gt", str(gt), "--out", "x.json"]
    assert _main(missing) == 2
    assert "vis export: error:" in capsys.readouterr().err
