"""Kill anywhere: the corpus job's driver SIGKILLed at a random instant of a run, many
times over, each run then finished: after every kill the tables hold only whole commits,
and once finished they equal an uninterrupted run's.

The default run kills twice; `pytest -m slow tests/test_kill_anywhere.py` runs the long
loop (`KILLS_SLOW` kills at instants spread over the whole run). A killed driver's Ray
processes (and a segmentation actor in the middle of a commit) die with its process
group a moment later, so commits are cut at any step too.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.test_corpus_job import FAILED_VIDEOS, MAX_FRAMES, OK_VIDEOS, comparable, make_corpus
from vis_core.tables.read import read_table

REPOSITORY = Path(__file__).resolve().parent.parent
KILLS_FAST = 2
KILLS_SLOW = 12
TABLES = ("videos", "tracklets", "tracklet_frames")


def start_job(corpus: Path, output: Path, model: str) -> subprocess.Popen:
    """`vis process` as a user starts it: its own driver and local Ray, in a new process
    group so that the whole run can be killed."""
    command = [
        sys.executable, "-m", "jobs.process", "--input", str(corpus), "--output", str(output),
        "--model", model, "--max-frames", str(MAX_FRAMES), "--workers", "1",
        "--cpus-per-worker", "1", "--no-tracking", "--quiet",
    ]  # fmt: skip
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    return subprocess.Popen(
        command,
        cwd=REPOSITORY,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def run_to_completion(corpus: Path, output: Path, model: str) -> str:
    job = start_job(corpus, output, model)
    out, _ = job.communicate(timeout=300)
    assert job.returncode == 0, out[-3000:]
    return out


def kill_after(job: subprocess.Popen, seconds: float, output: Path | None = None) -> None:
    """SIGKILL the driver `seconds` after it starts (after its first commit claim
    appears under `output`, when given: the videos of the tiny corpus are committed in a
    burst of about a second after Ray's start), then, a moment later, what it started."""
    if output is not None:
        deadline = time.monotonic() + 120
        while job.poll() is None and time.monotonic() < deadline:
            if any((output / "_commits").glob("*.json")):
                break
            time.sleep(0.01)
    try:
        job.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        job.send_signal(signal.SIGKILL)
        job.wait()
    time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(job.pid, signal.SIGKILL)


def assert_whole_commits(output: Path) -> set[str]:
    """Every committed video once, with exactly its tracklets and their frames; the ids."""
    if not (output / "videos").exists():
        return set()
    videos = read_table(str(output), "videos").to_pylist()
    counts = Counter(video["video_id"] for video in videos)
    assert max(counts.values(), default=1) == 1, counts
    tracklets = read_table(str(output), "tracklets").to_pylist()
    frames = read_table(str(output), "tracklet_frames").to_pylist()
    per_video = Counter(row["video_id"] for row in tracklets)
    for video in videos:
        assert per_video[video["video_id"]] == (video["num_tracklets"] or 0), video
    tracks = Counter((row["video_id"], row["track_id"]) for row in tracklets)
    assert max(tracks.values(), default=1) == 1
    assert {(row["video_id"], row["track_id"]) for row in frames} <= set(tracks)
    frame_keys = Counter((r["video_id"], r["track_id"], r["frame_index"]) for r in frames)
    assert max(frame_keys.values(), default=1) == 1
    return set(counts)


def kill_loop(kills: int, tmp_path: Path, model: str, seed: int) -> list[int]:
    """Each time a fresh output: a run killed at a random instant, its tables checked,
    then a run to completion equal to an uninterrupted one. The videos committed when
    each kill struck."""
    corpus = make_corpus(tmp_path / "corpus")
    reference = tmp_path / "reference"
    started = time.perf_counter()
    run_to_completion(corpus, reference, model)
    full_run_s = time.perf_counter() - started
    expected = {table: comparable(str(reference), table) for table in TABLES}

    rng = random.Random(seed)
    committed = []
    for kill in range(kills):
        output = tmp_path / f"out{kill}"
        if kill % 2:  # within the commit burst
            kill_after(start_job(corpus, output, model), rng.uniform(0.0, 1.0), output)
        else:  # anywhere in the run, Ray's start included
            kill_after(start_job(corpus, output, model), rng.uniform(0.1, 1.0) * full_run_s)
        videos = assert_whole_commits(output)
        assert videos <= OK_VIDEOS | set(FAILED_VIDEOS)
        committed.append(len(videos))
        run_to_completion(corpus, output, model)
        assert assert_whole_commits(output) == OK_VIDEOS | set(FAILED_VIDEOS)
        assert {table: comparable(str(output), table) for table in TABLES} == expected
    return committed


def test_driver_killed_at_random_instants(tmp_path: Path, tiny_model: str) -> None:
    kill_loop(KILLS_FAST, tmp_path, tiny_model, seed=0)


@pytest.mark.slow
def test_driver_killed_at_random_instants_many_times(tmp_path: Path, tiny_model: str) -> None:
    committed = kill_loop(KILLS_SLOW, tmp_path, tiny_model, seed=1)
    print("videos committed after each kill:", committed)
    assert any(0 < count < 10 for count in committed)  # some kills landed mid-run
