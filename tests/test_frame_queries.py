"""The `frame_queries` table: `vis process --frame-queries` writes each frame's detector
outputs, and `--from-frame-queries URI --method M` re-associates the corpus from them, with
the tracklets of a direct run (bit for bit from float32 rows on the CPU; within float16's
rounding from the default float16 rows)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from tests.test_corpus_job import OK_VIDEOS, job, make_corpus
from vis_core import masks
from vis_core.corpus.frame_queries import StoredFrames
from vis_core.corpus.reassociate import list_stored_videos
from vis_core.modeling.model_file import load_model, save_model
from vis_core.modeling.vita_model import VitaModel
from vis_core.storage import open_fs
from vis_core.tables.read import read_table
from vis_core.tables.schema import FRAME_QUERIES, FRAME_QUERIES_SCHEMA
from workflows.corpus_job import CorpusJobSummary, run_corpus_job

VOLATILE = {"run_id", "uri", "decode_s", "inference_s", "total_s", "processed_at", "error"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus") / "bucket")


@pytest.fixture(scope="module")
def model_file(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny model with a (random) QueryTrack head on the same detector, whose rule
    starts and keeps tracks of a random detector's low-confidence queries."""
    from vis_core.modeling.head_config import AssociationConfig, QueryTrackConfig

    tiny = load_model(tiny_model)
    rule = AssociationConfig(
        candidate_nms_iou=None, birth_score=0.15, match_threshold=0.5, min_matched_frames=1
    )
    config = dataclasses.replace(tiny.config, querytrack=QueryTrackConfig(association=rule))
    torch.manual_seed(1)
    model = VitaModel(config)
    missing = model.load_state_dict(tiny.state_dict(), strict=False).missing_keys
    assert missing and all(key.startswith("querytrack.") for key in missing)
    path = tmp_path_factory.mktemp("model") / "tiny-querytrack.vis.pt"
    save_model(str(path), model)
    return str(path)


@pytest.fixture(scope="module")
def ray_local():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


class Runs:
    """Corpus jobs of the module, each run once, on demand: name -> (output, summary)."""

    def __init__(self, corpus: Path, model_file: str, root: Path):
        self.corpus, self.model_file, self.root = corpus, model_file, root
        self.done: dict[str, tuple[str, CorpusJobSummary]] = {}

    def get(self, name: str, **changes) -> tuple[str, CorpusJobSummary]:
        if name not in self.done:
            output = changes.pop("output", None) or str(self.root / name)
            corpus = "" if "from_frame_queries" in changes else str(self.corpus)
            config = job(corpus, output, self.model_file, **changes)
            self.done[name] = (output, run_corpus_job(config))
        return self.done[name]

    def direct(self, method: str = "vita") -> tuple[str, CorpusJobSummary]:
        return self.get(f"direct-{method}", method=method)

    def recorded(self, dtype: str) -> tuple[str, CorpusJobSummary]:
        return self.get(f"frame-queries-{dtype}", frame_queries=dtype)

    def reassociated(self, dtype: str, method: str) -> tuple[str, CorpusJobSummary]:
        source, _ = self.recorded(dtype)
        return self.get(f"from-{dtype}-{method}", from_frame_queries=source, method=method)


@pytest.fixture(scope="module")
def runs(corpus: Path, model_file: str, ray_local, tmp_path_factory) -> Runs:
    return Runs(corpus, model_file, tmp_path_factory.mktemp("outputs"))


def rows(run: tuple[str, CorpusJobSummary], table: str) -> list[dict]:
    """The run's rows of `table`, without what differs between runs, sorted."""
    output, summary = run
    found = read_table(output, table, run_id=summary.run_id).to_pylist()
    found = [{k: v for k, v in row.items() if k not in VOLATILE} for row in found]
    return sorted(
        found, key=lambda r: (r["video_id"], r.get("track_id", 0), r.get("frame_index", 0))
    )


def without_scores(found: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "score"} for row in found]


def test_frame_queries_rows_and_dtypes(runs: Runs) -> None:
    output, summary = runs.recorded("float16")
    assert (summary.ok, summary.failed) == (5, 5)
    table = read_table(output, FRAME_QUERIES, run_id=summary.run_id)
    assert table.schema == FRAME_QUERIES_SCHEMA
    videos = {row["video_id"]: row for row in rows(runs.recorded("float16"), "videos")}
    by_video: dict[str, list[dict]] = {}
    for row in table.to_pylist():
        by_video.setdefault(row["video_id"], []).append(row)
    assert set(by_video) == OK_VIDEOS  # failed videos have none
    model = load_model(runs.model_file)
    queries, channels = (
        model.config.frame_decoder.num_queries,
        model.config.frame_decoder.hidden_dim,
    )
    for video_id, frames in by_video.items():
        frames.sort(key=lambda row: row["frame_index"])
        assert [row["frame_index"] for row in frames] == list(range(videos[video_id]["num_frames"]))
        for row in frames:
            assert row["dtype"] == "float16" and row["run_id"] == summary.run_id
            assert (row["num_queries"], row["query_dim"]) == (queries, channels)
            assert row["num_logits"] == model.config.num_classes + 1
            assert (row["height"], row["width"]) == (
                videos[video_id]["height"],
                videos[video_id]["width"],
            )
            assert (
                row["padded_height"] == 4 * row["mask_height"]
                and row["padded_width"] == 4 * row["mask_width"]
            )
            assert (
                row["resized_height"] <= row["padded_height"]
                and min(row["resized_height"], row["resized_width"]) == 64
            )
            assert len(row["queries"]) == 2 * queries * channels
            assert len(row["class_logits"]) == 2 * queries * row["num_logits"]
            grid = row["mask_channels"] * row["mask_height"] * row["mask_width"]
            assert len(row["mask_features"]) == 2 * grid
    # The float16 rows are the float32 rows' values, rounded.
    exact_output, exact = runs.recorded("float32")
    fs, _ = open_fs(output)
    halves = sorted(list_stored_videos(output, summary.run_id), key=lambda v: v.video_id)
    fulls = sorted(list_stored_videos(exact_output, exact.run_id), key=lambda v: v.video_id)
    for half, full in zip(halves, fulls, strict=True):
        assert half.video_id == full.video_id
        read = [
            StoredFrames(
                fs, video.paths[FRAME_QUERIES], video.video_id, model.detector, torch.device("cpu")
            )
            for video in (half, full)
        ]
        assert read[0].summary().dtype == "float16" and read[1].summary().dtype == "float32"
        np.testing.assert_array_equal(read[0].summary().timestamps, read[1].summary().timestamps)
        for (a, _), (b, _) in zip(read[0].chunks(4), read[1].chunks(4), strict=True):
            for name in ("frame_queries", "class_logits", "mask_features"):
                x, y = getattr(a, name), getattr(b, name)
                assert torch.equal(x, y.half().float()), name


def test_a_run_with_frame_queries_writes_the_direct_runs_tables(runs: Runs) -> None:
    for dtype in ("float16", "float32"):
        assert runs.recorded(dtype)[1].run_id != runs.direct()[1].run_id  # another run
        for table in ("videos", "tracklets", "tracklet_frames"):
            assert rows(runs.recorded(dtype), table) == rows(runs.direct(), table), (dtype, table)


def test_from_frame_queries_vita_equals_a_direct_run(runs: Runs) -> None:
    direct = runs.direct()
    again = runs.reassociated("float32", "vita")
    output, summary = again
    assert (summary.videos, summary.ok, summary.failed) == (5, 5, 0)  # the ok videos only
    assert summary.run_id not in {direct[1].run_id, runs.recorded("float32")[1].run_id}
    assert rows(again, "tracklets")  # something to compare
    # Bit for bit but the scores: a float32 reduction in a Ray actor may split its work
    # differently from one run to another (seen once, 1e-8 relative, on a loaded machine).
    assert without_scores(rows(again, "tracklets")) == without_scores(rows(direct, "tracklets"))
    scores = [[row["score"] for row in rows(run, "tracklets")] for run in (again, direct)]
    assert scores[0] == pytest.approx(scores[1], rel=1e-6)
    assert rows(again, "tracklet_frames") == rows(direct, "tracklet_frames")
    ok_direct = [row for row in rows(direct, "videos") if row["status"] == "ok"]
    assert rows(again, "videos") == ok_direct  # same frames, fps, size, tracklet counts
    uris = read_table(output, "videos", run_id=summary.run_id, columns=["video_id", "uri"])
    assert all(
        uri.endswith(video_id) for video_id, uri in zip(*uris.to_pydict().values(), strict=True)
    )

    rerun = runs.get("rerun", from_frame_queries=runs.recorded("float32")[0], output=output)
    assert rerun[1].run_id == summary.run_id
    assert (rerun[1].skipped, rerun[1].ok, rerun[1].failed) == (5, 0, 0)  # exactly once


def border(mask: np.ndarray) -> np.ndarray:
    """The pixels within one pixel (8-neighbourhood) of the mask's edge, on either side."""
    ring = np.ones((3, 3), dtype=bool)
    return ndimage.binary_dilation(mask, ring) & ~ndimage.binary_erosion(mask, ring)


def test_from_float16_frame_queries_vita_is_within_rounding(runs: Runs) -> None:
    """float16 rows change VITA's scores by float16's rounding of its inputs (relative
    1e-3 here; the test model's scores agree to 1e-5) and masks by at most a border pixel:
    the same tracklets, categories and frames; every pixel that differs lies on either
    mask's border (a per-frame IoU bound fails on masks of a few pixels) and the IoU over all
    frames is >= 0.98."""
    direct, again = (
        rows(runs.direct(), "tracklets"),
        rows(runs.reassociated("float16", "vita"), "tracklets"),
    )
    assert [{**row, "score": 0} for row in again] == [{**row, "score": 0} for row in direct]
    np.testing.assert_allclose(
        [row["score"] for row in again], [row["score"] for row in direct], rtol=1e-3
    )
    direct_frames = rows(runs.direct(), "tracklet_frames")
    again_frames = rows(runs.reassociated("float16", "vita"), "tracklet_frames")
    assert [(r["video_id"], r["track_id"], r["frame_index"]) for r in again_frames] == [
        (r["video_id"], r["track_id"], r["frame_index"]) for r in direct_frames
    ]
    overlap = union = 0
    for a, b in zip(again_frames, direct_frames, strict=True):
        shape = (a["height"], a["width"])
        again_mask = masks.decode_one(masks.from_bytes(a["mask"], *shape)).astype(bool)
        direct_mask = masks.decode_one(masks.from_bytes(b["mask"], *shape)).astype(bool)
        off_border = (again_mask ^ direct_mask) & ~border(again_mask) & ~border(direct_mask)
        assert not off_border.any(), (a["video_id"], a["track_id"], a["frame_index"])
        overlap += int((again_mask & direct_mask).sum())
        union += int((again_mask | direct_mask).sum())
    assert overlap >= 0.98 * union


def test_from_frame_queries_querytrack_equals_a_direct_run(runs: Runs) -> None:
    direct = runs.direct("querytrack")
    again = runs.reassociated("float32", "querytrack")
    assert again[1].run_id != runs.reassociated("float32", "vita")[1].run_id
    assert rows(direct, "tracklets"), "the head made no tracks: nothing compared"
    for table in ("tracklets", "tracklet_frames"):
        assert rows(again, table) == rows(direct, table), table
    assert {row["method"] for row in rows(again, "videos")} == {"querytrack"}


def test_cli_refuses_l2g_a_missing_table_and_bad_combinations(
    corpus: Path, tiny_model: str, tmp_path: Path, capsys
) -> None:
    from jobs.cli import main

    out = ["--output", str(tmp_path / "out"), "--model", tiny_model, "--no-tracking"]
    source = ["--from-frame-queries", str(tmp_path / "source")]
    assert main(["process", *source, "--method", "l2g", *out]) == 2
    error = capsys.readouterr().err
    assert "cannot run --method l2g" in error and "multi-scale maps" in error
    (tmp_path / "source").mkdir()
    assert main(["process", *source, *out]) == 2
    assert "no frame_queries table under" in capsys.readouterr().err
    assert main(["process", *source, "--input", str(corpus), *out]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["process", *out]) == 2
    assert "give --input" in capsys.readouterr().err
    staged = ["--input", str(corpus), "--frame-queries", "--pipeline", "staged"]
    assert main(["process", *staged, *out]) == 2
    assert "single pipeline only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["process", "--input", str(corpus), "--frame-queries", "int8", *out])


def test_compaction_packs_frame_queries_and_they_read_back_the_same(runs: Runs) -> None:
    from vis_core.tables.compact import TableCompactor

    output, summary = runs.recorded("float32")
    before = read_table(output, FRAME_QUERIES, run_id=summary.run_id).sort_by("video_id")
    assert TableCompactor(output, summary.run_id).compact().packs == 1
    after = read_table(output, FRAME_QUERIES, run_id=summary.run_id).sort_by("video_id")
    assert after.equals(before)
    (video,) = [v for v in list_stored_videos(output, summary.run_id) if v.video_id == "a.mp4"]
    assert "-pack-" in video.paths[FRAME_QUERIES]  # read from the pack, the others filtered out
    model = load_model(runs.model_file)
    fs, _ = open_fs(output)
    stored = StoredFrames(
        fs, video.paths[FRAME_QUERIES], "a.mp4", model.detector, torch.device("cpu")
    )
    assert [chunk.num_frames for chunk, _ in stored.chunks(4)] == [4, 2]
