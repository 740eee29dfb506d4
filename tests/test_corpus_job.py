"""The corpus job end to end on local Ray: tables, bad inputs, reruns, interruptions,
a killed worker (these three on both pipelines), and `s3://` through the local S3 server."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest

from tests.media import smooth_frames, write_audio_only, write_with_pyav
from tests.test_concurrent_commits import rows as commit_rows
from vis_core import masks
from vis_core.corpus.listing import CorpusVideo, OutsideInputError, iter_corpus, list_corpus
from vis_core.corpus.plan import CorpusPlan
from vis_core.corpus.time_limit import TimeLimit
from vis_core.tables.commit import TableCommitter
from vis_core.tables.compact import TableCompactor
from vis_core.tables.read import read_table
from vis_core.tables.rows import VideoRecord, failed_rows
from vis_core.video.decode import DecodeLimits
from vis_core.video.encode import write_mp4
from workflows.corpus_job import CorpusJobConfig, VideoOutcome, run_corpus_job

SECRET = "secret-that-must-never-be-written-7f3a"
MAX_FRAMES = 14  # the `long.mp4` video is over this limit
OK_VIDEOS = {"a.mp4", "copy/a.mp4", "sub dir/b é.mp4", "c.mkv", "dot.mp4"}
FAILED_VIDEOS = {
    "zero.mp4": "EmptyVideoError",
    "truncated.mp4": "CorruptVideoError",
    "text.avi": "NotAVideoError",
    "audio.m4v": "NotAVideoError",
    "long.mp4": "VideoTooLargeError",
}


def make_corpus(root: Path) -> Path:
    """Five good videos (one a copy of another, one in a folder with a space and an
    accent, one Matroska, one of a single 6x4 frame), five bad ones and a text file that
    is not part of the corpus."""
    (root / "sub dir").mkdir(parents=True)
    (root / "copy").mkdir()
    write_mp4(str(root / "a.mp4"), smooth_frames(6, 48, 64), fps=10.0)
    shutil.copy(root / "a.mp4", root / "copy" / "a.mp4")
    write_mp4(str(root / "sub dir" / "b é.mp4"), smooth_frames(10, 40, 72), fps=5.0)
    write_with_pyav(root / "c.mkv", smooth_frames(5, 48, 48), 10.0, "matroska")
    write_mp4(str(root / "dot.mp4"), smooth_frames(1, 4, 6), fps=1.0)  # one frame of 6x4
    (root / "zero.mp4").write_bytes(b"")
    noise = np.random.default_rng(0).integers(0, 256, (12, 96, 128, 3), dtype=np.uint8)
    write_with_pyav(root / "whole.mp4", noise, 10.0, "mp4", movflags="faststart")
    data = (root / "whole.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])  # breaks part-way
    (root / "whole.mp4").unlink()
    (root / "text.avi").write_text("not a video\n")
    write_audio_only(root / "audio.m4v")
    write_mp4(str(root / "long.mp4"), smooth_frames(MAX_FRAMES + 2, 32, 32), fps=10.0)
    (root / "notes.txt").write_text("ignored")
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus") / "bucket")


@pytest.fixture(scope="module")
def ray_address(s3_server):
    """Local Ray whose workers see the local S3 server's endpoint and dummy keys."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in s3_server.env().items():
            patch.setenv(name, value)
        patch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)  # the local server takes any key
        context = ray.init(num_cpus=2, include_dashboard=False)
        try:
            yield context.address_info["address"]
        finally:
            ray.shutdown()


def job(corpus_uri: str, output: str, model_file: str | None, **changes) -> CorpusJobConfig:
    changes.setdefault("limits", DecodeLimits(max_frames=MAX_FRAMES))
    return CorpusJobConfig(
        input_uri=corpus_uri,
        output_uri=output,
        model_uri=model_file,
        track=False,
        progress=False,
        **changes,
    )


def comparable(output: str, table: str) -> list[dict]:
    """Rows without what differs between runs (times, where the video was read from)."""
    dropped = {"uri", "decode_s", "inference_s", "total_s", "processed_at"}
    rows = read_table(output, table).to_pylist()
    rows = [{k: v for k, v in row.items() if k not in dropped} for row in rows]
    for row in rows:  # the error names the video's URI
        row["error"] = row.get("error") and row["error"].split(":")[0]
    return sorted(
        rows, key=lambda row: (row["video_id"], row.get("track_id", 0), row.get("frame_index", 0))
    )


def test_listing_takes_video_extensions_and_keeps_exact_relative_paths(corpus: Path) -> None:
    listed = {video.video_id for video in list_corpus(str(corpus))}
    assert listed == OK_VIDEOS | set(FAILED_VIDEOS)
    streamed = iter_corpus(str(corpus))  # a generator: folder by folder, never a full list
    assert next(streamed).video_id == "a.mp4"  # a folder's files before its sub-folders
    assert [v.video_id for v in iter_corpus(str(corpus))] == [
        *sorted(v for v in listed if "/" not in v),
        "copy/a.mp4",
        "sub dir/b é.mp4",
    ]
    with pytest.raises(FileNotFoundError, match="not a folder"):
        list_corpus(str(corpus / "missing"))
    with pytest.raises(FileNotFoundError, match="not a folder"):
        iter_corpus(str(corpus / "missing"))  # at once, not when first iterated


def make_hostile_paths(root: Path) -> Path:
    """An input root with a video whose file name is not UTF-8, a link to it, a link and a
    folder link leading outside the root, and a folder link looping back to the root."""
    outside = root / "outside"
    corpus = root / "in"
    (corpus / "sub").mkdir(parents=True)
    outside.mkdir()
    write_mp4(str(outside / "secret.mp4"), smooth_frames(4, 32, 32), fps=10.0)
    name = os.fsdecode(b"caf\xe9 \xff.mp4")  # Latin-1 bytes: not valid UTF-8
    write_mp4(str(corpus / name), smooth_frames(4, 32, 32), fps=10.0)
    (corpus / "inside.mp4").symlink_to(name)
    (corpus / "out.mp4").symlink_to(outside / "secret.mp4")
    (corpus / "dangling.mp4").symlink_to(outside / "gone.mp4")
    (corpus / "outside_dir").symlink_to(outside, target_is_directory=True)
    (corpus / "sub" / "loop").symlink_to(corpus, target_is_directory=True)
    return corpus


def test_listing_names_ids_in_utf8_and_refuses_links_leading_out(tmp_path: Path) -> None:
    corpus = make_hostile_paths(tmp_path)
    listed = {video.video_id: video for video in list_corpus(str(corpus))}
    assert set(listed) == {"caf\\xe9 \\xff.mp4", "inside.mp4", "out.mp4", "dangling.mp4"}
    assert listed["caf\\xe9 \\xff.mp4"].refusal is None  # read by its real name
    assert Path(listed["caf\\xe9 \\xff.mp4"].uri.removeprefix("file://")).is_file()
    assert listed["inside.mp4"].refusal is None
    for video_id in ("out.mp4", "dangling.mp4"):
        assert "outside the input root" in listed[video_id].refusal
        with pytest.raises(OutsideInputError, match="outside the input root"):
            listed[video_id].check_readable()


@pytest.mark.parametrize("pipeline", ["single", "staged"])
def test_odd_names_and_links_become_rows_and_nothing_outside_is_read(
    tiny_model: str, ray_address: str, tmp_path: Path, pipeline: str
) -> None:
    corpus = make_hostile_paths(tmp_path)
    output = str(tmp_path / "out")
    run_corpus_job(job(str(corpus), output, tiny_model, pipeline=pipeline))
    rows = {row["video_id"]: row for row in read_table(output, "videos").to_pylist()}
    assert set(rows) == {"caf\\xe9 \\xff.mp4", "inside.mp4", "out.mp4", "dangling.mp4"}
    for video_id in ("caf\\xe9 \\xff.mp4", "inside.mp4"):
        assert rows[video_id]["status"] == "ok" and rows[video_id]["num_frames"] == 4
    assert rows["caf\\xe9 \\xff.mp4"]["uri"].endswith("/in/caf\\xe9 \\xff.mp4")
    for video_id in ("out.mp4", "dangling.mp4"):
        assert rows[video_id]["status"] == "failed" and rows[video_id]["num_frames"] is None
        assert rows[video_id]["error"].startswith("OutsideInputError:")


def test_the_plan_streams_the_listing_against_the_committed_set(tmp_path: Path) -> None:
    committer = TableCommitter(str(tmp_path / "out"), "run1")
    committer.commit(commit_rows(1, "a.mp4"))
    committer.commit(failed_rows(VideoRecord("b.mp4", "/in/b.mp4", "tiny", "run1"), "Empty"))
    listing = (CorpusVideo(name, f"/in/{name}", 1) for name in ("a.mp4", "b.mp4", "c.mp4"))
    plan = CorpusPlan(listing, committer.committed_set())
    todo = iter(plan)
    assert next(todo).video_id == "c.mp4" and (plan.listed, plan.skipped) == (3, 2)
    assert next(todo, None) is None and plan.finished and plan.to_process == 1
    again = CorpusPlan(list_of("a.mp4", "b.mp4"), committer.committed_set(), retry_failed=True)
    assert [video.video_id for video in again] == ["b.mp4"]


def list_of(*names: str) -> list[CorpusVideo]:
    return [CorpusVideo(name, f"/in/{name}", 1) for name in names]


def test_job_writes_tables_once_per_video_and_reruns_add_nothing(
    corpus: Path, tiny_model: str, ray_address: str, tmp_path: Path
) -> None:
    output = str(tmp_path / "out")
    summary = run_corpus_job(job(str(corpus), output, tiny_model))
    assert (summary.videos, summary.ok, summary.failed) == (10, 5, 5)

    videos = read_table(output, "videos").to_pylist()
    assert sorted(v["video_id"] for v in videos) == sorted(OK_VIDEOS | set(FAILED_VIDEOS))
    by_id = {v["video_id"]: v for v in videos}
    for video_id, error_type in FAILED_VIDEOS.items():
        assert by_id[video_id]["status"] == "failed"
        assert by_id[video_id]["error"].startswith(error_type), by_id[video_id]["error"]
    for video_id in OK_VIDEOS:
        assert by_id[video_id]["status"] == "ok" and by_id[video_id]["error"] is None
    assert {v["method"] for v in videos} == {"vita"}
    assert by_id["sub dir/b é.mp4"]["num_frames"] == 10
    assert (by_id["c.mkv"]["width"], by_id["c.mkv"]["height"]) == (48, 48)

    # Every table is a plain Parquet folder, with video_id in every row.
    for table in ("videos", "tracklets", "tracklet_frames"):
        names = os.listdir(Path(output) / table)
        assert all(n.endswith(".parquet") and not n.startswith((".", "_")) for n in names)
    frames = pads.dataset(str(Path(output) / "tracklet_frames")).to_table().to_pylist()
    tracklets = read_table(output, "tracklets").to_pylist()
    assert frames and tracklets
    assert {row["video_id"] for row in tracklets} <= OK_VIDEOS
    for row in frames[:50]:
        video = by_id[row["video_id"]]
        mask = masks.decode([masks.from_bytes(row["mask"], row["height"], row["width"])])[0]
        assert mask.shape == (video["height"], video["width"])
        assert int(mask.sum()) == row["area"] > 0
    # The two copies of a.mp4 are two videos with the same rows.
    same = [
        [{k: v for k, v in r.items() if k != "video_id"} for r in tracklets if r["video_id"] == i]
        for i in ("a.mp4", "copy/a.mp4")
    ]
    assert same[0] == same[1]

    duckdb = pytest.importorskip("duckdb")
    counts = duckdb.sql(
        f"select count(*), count(distinct video_id) from read_parquet('{output}/videos/*.parquet')"
    ).fetchall()
    assert counts == [(10, 10)]

    before = {t: comparable(output, t) for t in ("videos", "tracklets", "tracklet_frames")}
    files = sorted(str(p) for p in Path(output).rglob("*"))
    again = run_corpus_job(job(str(corpus), output, tiny_model))
    assert (again.skipped, again.ok, again.failed) == (10, 0, 0)
    assert sorted(str(p) for p in Path(output).rglob("*")) == files

    retried = run_corpus_job(job(str(corpus), output, tiny_model, retry_failed=True))
    assert (retried.skipped, retried.ok, retried.failed) == (5, 0, 5)
    assert {t: comparable(output, t) for t in before} == before

    other_model = run_corpus_job(job(str(corpus), output, None))  # the shipped model
    assert other_model.run_id != summary.run_id and other_model.skipped == 0
    assert len(read_table(output, "videos")) == 20
    assert len(read_table(output, "videos", run_id=summary.run_id)) == 10


def test_method_is_the_runs_and_recorded_in_the_videos_table(
    corpus: Path, tiny_model: str, ray_address: str, tmp_path: Path
) -> None:
    one_video = tmp_path / "in"
    one_video.mkdir()
    shutil.copy(corpus / "a.mp4", one_video / "a.mp4")
    output = str(tmp_path / "out")
    runs = {
        method: run_corpus_job(job(str(one_video), output, tiny_model, method=method))
        for method in ("vita", "per-frame")
    }
    assert runs["vita"].run_id != runs["per-frame"].run_id  # one output holds both
    assert all(summary.ok == 1 for summary in runs.values())
    rows = read_table(output, "videos").to_pylist()
    assert sorted((row["run_id"], row["method"]) for row in rows) == sorted(
        (summary.run_id, method) for method, summary in runs.items()
    )
    with pytest.raises(ValueError, match="querytrack"):  # before any video is touched
        run_corpus_job(job(str(one_video), str(tmp_path / "none"), tiny_model, method="querytrack"))
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("pipeline", ["single", "staged"])
def test_interrupted_job_completes_without_duplicates(
    corpus: Path, tiny_model: str, ray_address: str, tmp_path: Path, pipeline: str
) -> None:
    output = str(tmp_path / "out")

    class Interrupted(Exception):
        pass

    seen: list[str] = []
    with_tracklets: list[str] = []

    def interrupt_after_two(outcome: VideoOutcome) -> None:
        """After two videos, one of them with tracklets, whatever the completion order (an
        OK video may have none: the random model's masks of the 6x4 `dot.mp4` can be empty)."""
        seen.append(outcome.video_id)
        if outcome.num_tracklets:
            with_tracklets.append(outcome.video_id)
        if len(seen) >= 2 and with_tracklets:
            raise Interrupted

    with pytest.raises(Interrupted):
        run_corpus_job(
            job(str(corpus), output, tiny_model, pipeline=pipeline),
            on_outcome=interrupt_after_two,
        )
    import ray  # the interrupted job's workers are gone with it; the next job starts new ones

    assert ray.is_initialized()
    done = {v["video_id"] for v in read_table(output, "videos").to_pylist()}
    assert set(seen) <= done < OK_VIDEOS | set(FAILED_VIDEOS)
    # A crash in the middle of a commit leaves instance rows without a `videos` row.
    orphan = Path(output) / "tracklets" / f"{ray_run_id(output)}-00000000000000000000.parquet"
    shutil.copy(next((Path(output) / "tracklets").glob("*.parquet")), orphan)

    summary = run_corpus_job(job(str(corpus), output, tiny_model, pipeline=pipeline))
    assert summary.skipped == len(done)
    assert not orphan.exists()
    videos = [v["video_id"] for v in read_table(output, "videos").to_pylist()]
    assert sorted(videos) == sorted(OK_VIDEOS | set(FAILED_VIDEOS))


@pytest.mark.parametrize("pipeline", ["single", "staged"])
def test_an_object_unreadable_after_listing_is_a_failed_row(
    corpus: Path, tiny_model: str, ray_address: str, tmp_path: Path, monkeypatch, pipeline: str
) -> None:
    import workflows.corpus_job

    listed = list_corpus(str(corpus))[:1]
    ghost = CorpusVideo("ghost.mp4", f"file://{corpus}/ghost.mp4", 1000)  # gone since listed
    monkeypatch.setattr(workflows.corpus_job, "iter_corpus", lambda uri: iter([*listed, ghost]))
    summary = run_corpus_job(job(str(corpus), str(tmp_path / "out"), tiny_model, pipeline=pipeline))
    assert (summary.ok, summary.failed) == (1, 1)
    row = read_table(str(tmp_path / "out"), "videos", video_ids=["ghost.mp4"]).to_pylist()[0]
    assert row["status"] == "failed" and row["error"].startswith("VideoReadError")


def test_a_job_after_compaction_skips_packed_videos_and_commits_new_ones(
    corpus: Path, tiny_model: str, ray_address: str, tmp_path: Path
) -> None:
    small = tmp_path / "in"
    small.mkdir()
    for name in ("a.mp4", "dot.mp4", "zero.mp4"):
        shutil.copy(corpus / name, small / name)
    output = str(tmp_path / "out")
    first = run_corpus_job(job(str(small), output, tiny_model))
    assert (first.ok, first.failed) == (2, 1)
    before = {t: comparable(output, t) for t in ("videos", "tracklets", "tracklet_frames")}
    TableCompactor(output, first.run_id).compact()
    assert {t: comparable(output, t) for t in before} == before
    assert all(len(list((Path(output) / t).iterdir())) == 1 for t in before)

    shutil.copy(corpus / "c.mkv", small / "c.mkv")
    again = run_corpus_job(job(str(small), output, tiny_model))
    assert (again.videos, again.skipped, again.ok, again.failed) == (4, 3, 1, 0)
    retried = run_corpus_job(job(str(small), output, tiny_model, retry_failed=True))
    assert (retried.skipped, retried.failed) == (3, 1)  # the packed failed video, again
    TableCompactor(output, first.run_id).compact()
    videos = read_table(output, "videos").to_pylist()
    assert sorted(v["video_id"] for v in videos) == ["a.mp4", "c.mkv", "dot.mp4", "zero.mp4"]
    plain = pads.dataset(str(Path(output) / "videos")).to_table()
    assert plain.num_rows == 4 and len(list((Path(output) / "videos").iterdir())) == 1


def ray_run_id(output: str) -> str:
    return read_table(output, "videos")["run_id"][0].as_py()


@pytest.mark.parametrize("pipeline", ["single", "staged"])
def test_killed_worker_loses_and_duplicates_no_video(
    corpus: Path, tiny_model: str, ray_address: str, tmp_path: Path, pipeline: str
) -> None:
    """On the staged path the worker is the detector actor: its videos start again."""
    output = str(tmp_path / "out")
    killed: list[int] = []

    def kill_first_worker(outcome: VideoOutcome) -> None:
        if not killed and outcome.worker_pid > 0:
            killed.append(outcome.worker_pid)
            os.kill(outcome.worker_pid, signal.SIGKILL)

    summary = run_corpus_job(
        job(str(corpus), output, tiny_model, pipeline=pipeline), on_outcome=kill_first_worker
    )
    assert killed
    assert (summary.ok, summary.failed) == (5, 5)
    videos = read_table(output, "videos").to_pylist()
    assert sorted(v["video_id"] for v in videos) == sorted(OK_VIDEOS | set(FAILED_VIDEOS))
    assert all(v["error"] is None or "worker failed" not in v["error"] for v in videos)


def test_s3_input_and_output_give_the_same_tables(
    corpus: Path,
    tiny_model: str,
    ray_address: str,
    s3_bucket: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from vis_core.storage import open_fs

    fs, bucket = open_fs(s3_bucket)
    fs.put(str(corpus) + "/", f"{bucket}/corpus/", recursive=True)
    local = str(tmp_path / "out")
    run_corpus_job(job(str(corpus), local, tiny_model))
    remote = f"{s3_bucket}/tables"
    summary = run_corpus_job(job(f"{s3_bucket}/corpus", remote, tiny_model))
    assert (summary.ok, summary.failed) == (5, 5)
    for table in ("videos", "tracklets", "tracklet_frames"):
        assert comparable(remote, table) == comparable(local, table), table
    uris = read_table(remote, "videos")["uri"].to_pylist()
    assert all(uri.startswith("s3://") for uri in uris)
    # Credentials never reach the tables, the summary or the log.
    assert SECRET not in summary.describe() and SECRET not in caplog.text
    for path in fs.find(f"{bucket}/tables"):
        assert SECRET.encode() not in fs.cat_file(path)


def test_video_ids_cannot_place_files_outside_the_output(tmp_path: Path) -> None:
    committer = TableCommitter(str(tmp_path / "out"), "run1")
    for video_id in ("../../escape.mp4", "/etc/passwd.mp4", "a/../../b.mp4", "x\n\x00.mp4"):
        path = Path(committer.file_path("tracklets", video_id, "0123456789ab"))
        assert path.parent == tmp_path / "out" / "tracklets"
        assert path.name.startswith("run1-") and path.suffix == ".parquet"
    with pytest.raises(ValueError, match="alphanumeric"):
        TableCommitter(str(tmp_path / "out"), "../run")


def moving_box_video(path: Path, frames: int) -> None:
    """A 320x240 video of a box sliding over a gradient, encoded frame by frame."""
    from benchmarks.bench_long_video import moving_box_frames
    from vis_core.video.encode import Mp4Writer

    with Mp4Writer(str(path), fps=10.0) as writer:
        for frame in moving_box_frames(frames, 240, 320):
            writer.write(frame)


@pytest.mark.slow
def test_peak_memory_of_a_2000_frame_video_stays_within_twice_a_250_frame_one(
    ray_address: str, tmp_path: Path
) -> None:
    """The shipped model (two-pass path past 120 frames); each job has a fresh worker."""
    peaks = {}
    for frames in (250, 2000):
        corpus = tmp_path / f"corpus_{frames}"
        corpus.mkdir()
        moving_box_video(corpus / "video.mp4", frames)
        outcomes: list[VideoOutcome] = []
        summary = run_corpus_job(
            job(str(corpus), str(tmp_path / f"out_{frames}"), None, limits=DecodeLimits()),
            on_outcome=outcomes.append,
        )
        assert (summary.ok, summary.frames) == (1, frames)
        peaks[frames] = outcomes[0].worker_peak_memory_bytes
    assert peaks[2000] <= 2 * peaks[250], peaks


def test_cli_exit_status_and_summary(
    corpus: Path, tiny_model: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    from jobs.cli import main

    missing = ["process", "--input", str(tmp_path / "missing"), "--output", str(tmp_path)]
    assert main(missing) == 2
    assert "is not a folder or prefix" in capsys.readouterr().err
    no_model = ["--model", str(tmp_path / "none.vis.pt"), "--no-tracking"]
    assert main(["process", "--input", str(corpus), "--output", str(tmp_path), *no_model]) == 2
    assert "model file not found" in capsys.readouterr().err
    no_head = ["--model", tiny_model, "--method", "querytrack", "--no-tracking"]
    assert main(["process", "--input", str(corpus), "--output", str(tmp_path), *no_head]) == 2
    assert "querytrack" in capsys.readouterr().err

    import workflows.corpus_job

    seen = {}

    def fake_job(config):
        seen["endpoint"] = os.environ.get("AWS_ENDPOINT_URL")
        seen["config"] = config
        return workflows.corpus_job.CorpusJobSummary(
            "r", "m", config.output_uri, 3, 0, 2, 1, 4, 50, 2.0, (("bad.mp4", "EmptyVideoError"),)
        )

    monkeypatch.setattr(workflows.corpus_job, "run_corpus_job", fake_job)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://before")  # restored after the test
    argv = ["process", "--input", "s3://b/v", "--output", "s3://b/t", "--s3-endpoint", "http://x"]
    assert main([*argv, "--retry-failed", "--max-frames", "99", "--quiet"]) == 0  # failures: 0
    assert seen["endpoint"] == "http://x"
    config = seen["config"]
    assert config.retry_failed and config.limits.max_frames == 99 and not config.progress
    out = capsys.readouterr().out
    assert "2 ok, 1 failed" in out and "failed: bad.mp4: EmptyVideoError" in out
    assert config.time_limit == TimeLimit()
    assert main([*argv, "--time-limit", "30"]) == 0
    assert seen["config"].time_limit == TimeLimit(base_s=30.0)
    assert main([*argv, "--time-limit", "0"]) == 0
    assert seen["config"].time_limit == TimeLimit(base_s=None)
    assert main([*argv, "--time-limit", "-1"]) == 2
    assert "base_s must be positive" in capsys.readouterr().err

    def committing_job(config):  # commits two videos, as a job of run "r" would
        committer = TableCommitter(config.output_uri, "r")
        for name in ("x.mp4", "y.mp4"):
            committer.commit(failed_rows(VideoRecord(name, name, "m", "r"), "EmptyVideoError"))
        return fake_job(config)

    monkeypatch.setattr(workflows.corpus_job, "run_corpus_job", committing_job)
    tables = tmp_path / "tables"
    argv = ["process", "--input", str(corpus), "--output", str(tables), "--no-tracking"]
    assert main(argv) == 0 and len(list((tables / "videos").iterdir())) == 2  # default: as is
    assert main([*argv, "--compact"]) == 0
    assert "run r: 2 videos, 2 rewritten into 1 packs" in capsys.readouterr().out
    assert len(list((tables / "videos").iterdir())) == 1
