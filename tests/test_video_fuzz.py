"""Hostile and odd videos (tests/fuzz_corpus.py) through the decoding path and the corpus
path: each file gets a correct result or a `failed` row with a clear, typed error; nothing
crashes, hangs, is lost or duplicated; memory and time per video stay bounded.

The default run keeps a fast version: every clip and hostile file and a dozen seeded
mutations. The long loops are slow-marked; the README (Reliability) says how to run them.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import av
import pyarrow.dataset as pads
import pytest

from tests.fuzz_corpus import CLIPS, missing_encoders
from tests.fuzz_run import (
    TYPED_ERRORS,
    FileResult,
    ReliabilityRow,
    describe,
    fuzz_corpus,
    run_cases,
    tiny_segmenter,
)
from vis_core.corpus.time_limit import TimeLimit
from vis_core.tables.read import read_table

DATA = Path(__file__).parent / "data"
FAST_MUTATIONS = 12
# Bounds for one of these small files (the process holds torch and a model: ~0.4 GiB).
MAX_MEMORY_BYTES = 256 * 2**20
MAX_SECONDS = 20.0
# The decoders the corpus must cover, by FFmpeg name (AV1 is decoded by libdav1d here).
WANTED_DECODERS = {
    "H.264": ("h264",),
    "HEVC": ("hevc",),
    "VP9": ("vp9", "libvpx-vp9"),
    "AV1": ("libdav1d", "libaom-av1", "av1"),
    "MPEG-4": ("mpeg4",),
    "MJPEG": ("mjpeg",),
}


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[FileResult], ReliabilityRow]:
    root = tmp_path_factory.mktemp("fuzz")
    cases = fuzz_corpus(root / "corpus", FAST_MUTATIONS, seed=0)
    return run_cases(cases, tiny_segmenter(), root / "tables")


def by_kind(results: list[FileResult], *kinds: str) -> list[FileResult]:
    return [result for result in results if result.kind in kinds]


def test_every_wanted_codec_is_decodable_and_in_the_corpus() -> None:
    available = set(av.codecs_available)
    for codec, names in WANTED_DECODERS.items():
        assert available & set(names), f"this PyAV build cannot decode {codec}"
    missing = missing_encoders()
    if missing:
        pytest.skip("; ".join(missing.values()))
    assert {clip.codec for clip in CLIPS if clip.kind == "codec"} == {
        "libx264", "libx265", "libvpx-vp9", "libsvtav1", "mpeg4", "mjpeg"
    }  # fmt: skip


def test_clips_decode_to_their_frames_as_displayed(fast_run) -> None:
    results, _ = fast_run
    kinds = ("codec", "pixel format", "odd size", "single frame", "variable frame rate", "rotation")
    clips = by_kind(results, *kinds)
    assert len(clips) == len(CLIPS) - sum(clip.codec in missing_encoders() for clip in CLIPS)
    for result in clips:
        assert result.correct, (result.name, result.error, result.problems)


def test_hostile_files_fail_with_their_typed_error(fast_run) -> None:
    results, _ = fast_run
    hostile = {
        result.name: result for result in by_kind(results, "zero frames", "audio only", "bomb")
    }
    assert set(hostile) == {
        "zero_frames.mkv",
        "audio_only.mp4",
        "bomb_h264_16000x16000.mp4",
        "bomb_mjpeg_16000x16000.avi",
        "bomb_duration.mkv",
    }
    for result in hostile.values():
        assert result.failed_clearly, (result.name, result.error, result.problems)
    assert "holds no frame at all" in hostile["zero_frames.mkv"].error
    assert "has no video stream" in hostile["audio_only.mp4"].error
    assert "video is 16000x16000" in hostile["bomb_h264_16000x16000.mp4"].error
    assert "estimated 10000000000 frames" in hostile["bomb_duration.mkv"].error


def test_mutations_decode_consistently_or_fail_with_a_clear_error(fast_run) -> None:
    results, summary = fast_run
    mutated = by_kind(results, "truncate", "header_flips", "payload_flips")
    assert len(mutated) == FAST_MUTATIONS
    assert Counter(result.kind for result in mutated) == {
        "truncate": 4, "header_flips": 4, "payload_flips": 4
    }  # fmt: skip
    for result in mutated:
        assert result.correct or result.failed_clearly, (result.name, result.problems)
        if result.error:
            assert result.error.split(":")[0] in TYPED_ERRORS
    assert summary.problems == 0, describe(results, summary)


def test_nothing_lost_or_duplicated_and_bounded(fast_run) -> None:
    results, summary = fast_run
    assert summary.files == len(results)
    assert summary.correct + summary.failed_with_error == summary.files
    assert (summary.lost, summary.duplicated) == (0, 0)
    assert summary.worst_memory_bytes < MAX_MEMORY_BYTES, describe(results, summary)
    assert summary.worst_seconds < MAX_SECONDS, describe(results, summary)


@pytest.mark.slow
def test_long_fuzz_loop(tmp_path: Path) -> None:
    """1,000 seeded mutations of the clips and of a real 1080p MPEG-4 video."""
    cases = fuzz_corpus(tmp_path / "corpus", 1000, seed=1, extra_bases=(DATA / "mmtrack_demo.mp4",))
    results, summary = run_cases(cases, tiny_segmenter(), tmp_path / "tables")
    print(describe(results, summary))
    assert (summary.problems, summary.lost, summary.duplicated) == (0, 0, 0)
    assert summary.correct + summary.failed_with_error == summary.files
    assert summary.worst_memory_bytes < MAX_MEMORY_BYTES
    assert summary.worst_seconds < MAX_SECONDS


@pytest.mark.slow
def test_corpus_job_over_the_fuzz_corpus(tmp_path: Path, tiny_model: str) -> None:
    """The Ray corpus job on 300 fuzz files: one row each, typed errors, and a rerun adds
    nothing."""
    import ray

    from workflows.corpus_job import CorpusJobConfig, VideoOutcome, run_corpus_job

    cases = fuzz_corpus(tmp_path / "corpus", 300, seed=2)
    names = {f"{path.parent.name}/{case.name}" for case, path in cases}
    output = tmp_path / "tables"
    config = CorpusJobConfig(
        input_uri=str(tmp_path / "corpus"),
        output_uri=str(output),
        model_uri=tiny_model,
        workers=1,
        cpus_per_worker=1,
        time_limit=TimeLimit(base_s=60.0, per_frame_s=5.0),
        track=False,
        progress=False,
    )
    outcomes: list[VideoOutcome] = []
    try:
        summary = run_corpus_job(config, on_outcome=outcomes.append)
        again = run_corpus_job(config)
    finally:
        ray.shutdown()
    print(summary.describe())
    worst = max(outcomes, key=lambda outcome: outcome.seconds)
    peak = max(outcome.worker_peak_memory_bytes for outcome in outcomes)
    print(
        f"Ray job: {len(outcomes)} videos in {summary.seconds:.1f} s; worst {worst.seconds:.2f} s "
        f"({worst.video_id}); worker peak resident memory {peak / 2**20:.0f} MiB"
    )
    assert summary.videos == len(names) and summary.ok + summary.failed == len(names)
    assert (again.skipped, again.ok, again.failed) == (len(names), 0, 0)
    committed = read_table(str(output), "videos").to_pylist()
    assert Counter(row["video_id"] for row in committed) == Counter(names)
    plain = pads.dataset(str(output / "videos"), format="parquet").to_table(columns=["video_id"])
    assert sorted(plain.column("video_id").to_pylist()) == sorted(names)
    for row in committed:
        if row["status"] == "failed":
            assert row["error"].split(":")[0] in TYPED_ERRORS, row["error"]
            assert "worker failed" not in row["error"]
