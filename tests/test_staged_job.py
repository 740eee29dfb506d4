"""The staged corpus job on local Ray: the single-actor path's tables on the small corpus of
`test_corpus_job.py` (bit for bit; with frames batched across videos, up to rounding),
exactly once on reruns, a device stand-in as a run of its own, and the switch between the
two paths. (Interruptions, a killed worker and unreadable objects: `test_corpus_job.py`,
on both paths.)"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from tests.test_corpus_job import OK_VIDEOS, comparable, job, make_corpus
from vis_core import masks
from vis_core.corpus.listing import list_corpus
from vis_core.corpus.time_limit import TimeLimit
from workflows.corpus_job import CorpusJobConfig, CorpusJobSummary, VideoOutcome, run_corpus_job
from workflows.staged_options import DeviceStandIn, StagedOptions

TABLES = ("videos", "tracklets", "tracklet_frames")
# Few stage processes at once: each imports torch, and this machine has 2 cores.
SMALL = StagedOptions(videos_per_detector=2, commit_tasks=1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus") / "bucket")


@pytest.fixture(scope="module")
def ray_address():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    context = ray.init(num_cpus=2, include_dashboard=False)
    try:
        yield context.address_info["address"]
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def single(
    corpus: Path, tiny_model: str, ray_address: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, CorpusJobSummary]:
    """The single-actor path's tables, with one torch thread (reductions split over threads
    round differently, so the staged actor's one thread is matched)."""
    output = str(tmp_path_factory.mktemp("single"))
    config = job(str(corpus), output, tiny_model, pipeline="single", cpus_per_worker=1)
    return output, run_corpus_job(config)


def test_staged_job_writes_the_single_actor_paths_tables(
    corpus: Path, tiny_model: str, single: tuple[str, CorpusJobSummary], tmp_path: Path
) -> None:
    """Bit for bit with detector calls of one chunk (the tiny model's chunks are 16
    frames: one a video here); reruns add nothing, `retry_failed` replaces the same rows."""
    staged = str(tmp_path / "staged")
    options = dataclasses.replace(SMALL, batch_frames=16)
    outcomes: list[VideoOutcome] = []
    summary = run_corpus_job(
        job(str(corpus), staged, tiny_model, pipeline="staged", staged=options),
        on_outcome=outcomes.append,
    )
    assert (summary.videos, summary.ok, summary.failed) == (10, 5, 5)
    assert summary.run_id == single[1].run_id
    for table in TABLES:
        assert comparable(staged, table) == comparable(single[0], table), table
    ok = [o for o in outcomes if o.status == "ok"]
    assert {o.video_id for o in ok} == OK_VIDEOS and all(o.worker_pid > 0 for o in ok)
    assert all(o.stages.decode > 0 and o.stages.masks > 0 and o.stages.commit > 0 for o in ok)

    files = sorted(str(p) for p in Path(staged).rglob("*"))
    again = run_corpus_job(job(str(corpus), staged, tiny_model, pipeline="staged"))
    assert (again.skipped, again.ok, again.failed) == (10, 0, 0)
    assert sorted(str(p) for p in Path(staged).rglob("*")) == files
    retried = run_corpus_job(
        job(str(corpus), staged, tiny_model, retry_failed=True, pipeline="staged", staged=SMALL)
    )
    assert (retried.skipped, retried.ok, retried.failed) == (5, 0, 5)
    for table in TABLES:
        assert comparable(staged, table) == comparable(single[0], table), table


def test_videos_over_their_time_limit_get_failed_rows_and_come_back_with_retry_failed(
    corpus: Path, tiny_model: str, single: tuple[str, CorpusJobSummary], tmp_path: Path
) -> None:
    """The driver gives up a video whose reading runs past its limit (here at once: 1 ms,
    no allowance per frame), as the single path does; a rerun with a usable limit and
    `retry_failed` replaces those rows with the single path's."""
    staged = str(tmp_path / "staged")
    at_once = TimeLimit(base_s=1e-3, per_frame_s=0.0)
    summary = run_corpus_job(
        job(str(corpus), staged, tiny_model, pipeline="staged", staged=SMALL, time_limit=at_once)
    )
    assert (summary.videos, summary.ok, summary.failed) == (10, 0, 10)
    errors = {r["video_id"]: r["error"] for r in comparable(staged, "videos")}
    assert {v for v, e in errors.items() if e == "VideoTimeLimitError"} >= OK_VIDEOS
    assert comparable(staged, "tracklets") == []
    retried = run_corpus_job(
        job(str(corpus), staged, tiny_model, retry_failed=True, pipeline="staged", staged=SMALL)
    )
    assert retried.ok == len(OK_VIDEOS)
    assert comparable(staged, "videos") == comparable(single[0], "videos")


def test_frames_batched_across_videos_give_the_same_tables_up_to_rounding(
    corpus: Path, tiny_model: str, single: tuple[str, CorpusJobSummary], tmp_path: Path
) -> None:
    staged = str(tmp_path / "staged")
    options = dataclasses.replace(SMALL, batch_frames=64)  # 4 chunks of 2 videos a call
    run_corpus_job(job(str(corpus), staged, tiny_model, pipeline="staged", staged=options))
    assert comparable(staged, "videos") == comparable(single[0], "videos")
    tracklets = [comparable(output, "tracklets") for output in (staged, single[0])]
    for a, b in zip(*tracklets, strict=True):
        assert a.pop("score") == pytest.approx(b.pop("score"), rel=1e-4)
        assert a == b
    frames = [
        {(r["video_id"], r["track_id"], r["frame_index"]): r for r in comparable(out, TABLES[2])}
        for out in (staged, single[0])
    ]
    differing = total = 0
    for key in frames[0].keys() | frames[1].keys():
        rows = [frames[0].get(key), frames[1].get(key)]
        a, b = _mask(rows[0], rows[1]), _mask(rows[1], rows[0])
        differing += int((a != b).sum())
        total += a.size
    assert differing <= 1e-3 * total


def _mask(row: dict | None, other: dict | None) -> np.ndarray:
    """A row's mask, or an empty one of the other row's size where it has none."""
    if row is None:
        assert other is not None
        return np.zeros((other["height"], other["width"]), dtype=bool)
    return masks.decode([masks.from_bytes(row["mask"], row["height"], row["width"])])[0]


def test_a_stand_in_is_another_run(
    corpus: Path, tiny_model: str, single: tuple[str, CorpusJobSummary], tmp_path: Path
) -> None:
    """A stand-in's rows never pass for the model's: on either path, another run id."""
    output = str(tmp_path / "out")
    standin = DeviceStandIn(1.0)
    runs = {
        pipeline: run_corpus_job(
            job(str(corpus / "sub dir"), output, tiny_model, pipeline=pipeline, standin=standin)
        )
        for pipeline in ("single", "staged")
    }
    assert runs["single"].run_id == runs["staged"].run_id != single[1].run_id
    assert (runs["single"].ok, runs["staged"].skipped) == (1, 1)


@dataclasses.dataclass(frozen=True)
class DyingStandIn(DeviceStandIn):
    """A stand-in whose process dies in its first `finish` (once: `marker` records it)."""

    marker: str = ""

    def program(self, real):
        program = super().program(real)
        finish = program.finish

        def dying_finish(key):
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return finish(key)
            os._exit(1)

        program.finish = dying_finish
        return program


def test_detector_actor_dying_in_finish_starts_its_video_again(
    corpus: Path, tiny_model: str, ray_address: str, tmp_path: Path
) -> None:
    """With one video per actor, the `finish` call that dies is the only call in flight:
    the driver learns of the death from it and must start that video again too (it once
    lost it, and stopped with "nothing in flight")."""
    import sys

    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import it
    standin = DyingStandIn(0.0, marker=str(tmp_path / "died"))
    staged = dataclasses.replace(SMALL, videos_per_detector=1)
    output = str(tmp_path / "out")
    summary = run_corpus_job(job(str(corpus), output, tiny_model, standin=standin, staged=staged))
    assert (tmp_path / "died").exists()
    assert (summary.ok, summary.failed) == (5, 5)
    assert {row["video_id"] for row in comparable(output, "videos")} == set(
        video.video_id for video in list_corpus(str(corpus))
    )


def test_pipeline_switch() -> None:
    base = CorpusJobConfig(input_uri="in", output_uri="out")
    assert not base.staged_pipeline  # CPUs alone: the single-actor path
    assert dataclasses.replace(base, use_gpu=True).staged_pipeline
    assert dataclasses.replace(base, standin=DeviceStandIn(20.0)).staged_pipeline
    assert not dataclasses.replace(base, use_gpu=True, method="per-frame").staged_pipeline
    assert dataclasses.replace(base, pipeline="staged").staged_pipeline
    assert not dataclasses.replace(base, use_gpu=True, pipeline="single").staged_pipeline
    with pytest.raises(ValueError, match="VITA only"):
        CorpusJobConfig(input_uri="in", output_uri="out", pipeline="staged", method="per-frame")
    with pytest.raises(ValueError, match="pipeline must be"):
        CorpusJobConfig(input_uri="in", output_uri="out", pipeline="fast")
    with pytest.raises(ValueError, match="videos_per_detector"):
        StagedOptions(videos_per_detector=0)
