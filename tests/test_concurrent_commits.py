"""Overlapping runs of one job on one output: every video committed exactly once, whole.

The commit functions are called directly (no Ray): a committer is paused or killed after
each step of a commit (staging each file, the claim, publishing each file) while another
run recovers, commits or reads; real processes are stopped and killed in two tests.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest

from vis_core import masks
from vis_core.inference.instances import VideoInstances
from vis_core.tables.claims import COMMITS, STAGING
from vis_core.tables.commit import Replace, TableCommitter
from vis_core.tables.read import CommittedTables, TablesNotFoundError, read_table
from vis_core.tables.rows import VideoRecord, VideoRows, failed_rows, ok_rows
from vis_core.tables.schema import TRACKLET_FRAMES, TRACKLETS, VIDEOS

RUN = "run-1"
VIDEO = "clips/a.mp4"
T, H, W = 3, 6, 8
# Every step of a commit, in order: a committer is paused or killed after each.
POINTS = (
    "staged:tracklets",
    "staged:tracklet_frames",
    "staged:videos",
    "claimed",
    "published:tracklets",
    "published:tracklet_frames",
    "published:videos",
)
BEFORE_CLAIM = POINTS[:3]
REPO = Path(__file__).resolve().parents[1]


class Killed(BaseException):
    """A kill at a step: no handler of the commit code runs (it catches Exceptions only)."""


def rows(tracks: int, video_id: str = VIDEO) -> VideoRows:
    """A video with `tracks` tracklets, each shown in all T frames."""
    dense = np.zeros((tracks, T, H, W), dtype=bool)
    for track in range(tracks):
        dense[track, :, track % H, : 1 + track % W] = True
    instances = VideoInstances(
        num_frames=T,
        height=H,
        width=W,
        scores=np.linspace(0.9, 0.1, tracks).astype(np.float32),
        labels=np.zeros(tracks, dtype=np.int64),
        masks=tuple(tuple(masks.encode(track)) for track in dense),
    )
    record = VideoRecord(
        video_id, f"/corpus/{video_id}", "tiny", RUN, num_frames=T, fps=10.0, width=W, height=H
    )
    return ok_rows(record, instances, ["cat"], np.arange(T) / 10.0)


def hook(committer: TableCommitter, action: Callable[[str], None]) -> TableCommitter:
    """Call `action(point)` after each step of `committer`'s commits (see POINTS)."""
    write, claim, publish = committer._write_staged, committer._claim, committer._publish_file

    def write_then(table, name, data):
        write(table, name, data)
        action(f"staged:{table}")

    def claim_then(new_claim):
        won = claim(new_claim)
        if won:
            action("claimed")
        return won

    def publish_then(table, name):
        done = publish(table, name)
        action(f"published:{table}")
        return done

    committer._write_staged = write_then
    committer._claim = claim_then
    committer._publish_file = publish_then
    return committer


def kill_at(point: str) -> Callable[[str], None]:
    def action(reached: str) -> None:
        if reached == point:
            raise Killed(point)

    return action


class Pause:
    """An action that stops the committer's thread at `point` until `resume()`."""

    def __init__(self, point: str):
        self.point = point
        self.reached = threading.Event()
        self._go = threading.Event()

    def __call__(self, reached: str) -> None:
        if reached == self.point:
            self.reached.set()
            assert self._go.wait(30), "never resumed"

    def resume(self) -> None:
        self._go.set()


def in_thread(function: Callable[[], object]) -> tuple[threading.Thread, list]:
    results: list = []

    def run() -> None:
        with contextlib.suppress(Killed):  # a killed commit returns nothing
            results.append(function())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, results


def state(out: Path, video_id: str = VIDEO) -> tuple[int, int, int] | None:
    """(the videos row's num_tracklets, tracklet rows, frame rows) of the video in one
    reader's view, checked whole; None when it is not committed."""
    try:
        view = CommittedTables(str(out), video_ids=[video_id])
    except TablesNotFoundError:
        return None
    videos = view.read(VIDEOS).to_pylist()
    if not videos:
        assert view.read(TRACKLETS).num_rows == 0 and view.read(TRACKLET_FRAMES).num_rows == 0
        return None
    assert len(videos) == 1, videos
    tracks = set(view.read(TRACKLETS)["track_id"].to_pylist())
    frames = view.read(TRACKLET_FRAMES)
    assert set(frames["track_id"].to_pylist()) == tracks  # no frame of a missing tracklet
    assert videos[0]["num_tracklets"] == len(tracks)
    return videos[0]["num_tracklets"], len(tracks), frames.num_rows


def whole(tracks: int) -> tuple[int, int, int]:
    return tracks, tracks, tracks * T


def raw_rows(out: Path, table: str) -> int:
    """Rows a plain Parquet reader of the table folder sees: DuckDB's glob, which matches
    hidden names too (pyarrow's dataset where DuckDB is missing)."""
    folder = out / table
    if not any(folder.glob("*.parquet")):
        return 0
    try:
        import duckdb
    except ImportError:
        return pads.dataset(str(folder)).count_rows()
    return duckdb.sql(f"select count(*) from read_parquet('{folder}/*.parquet')").fetchall()[0][0]


def leftovers(out: Path) -> list[str]:
    """Staged files and temporaries: what a finished commit leaves none of."""
    staged = [p for p in (out / STAGING).rglob("*") if p.is_file()]
    return sorted(str(p.relative_to(out)) for p in [*staged, *out.rglob(".*")])


def staged(out: Path, pattern: str = "*") -> set[Path]:
    return {p for p in (out / STAGING).rglob(pattern) if p.is_file()}


def test_the_reported_scenario_a_paused_commit_survives_a_second_runs_recovery(tmp_path):
    """Run A pauses after writing its `tracklets` file; run B starts (recovery), is killed;
    A goes on. Before, B deleted A's file and A then committed 0 tracklets for good."""
    out = tmp_path / "out"
    pause = Pause("staged:tracklets")
    a = hook(TableCommitter(str(out), RUN), pause)
    thread, results = in_thread(lambda: a.commit(rows(9), replace=Replace.NEVER))
    assert pause.reached.wait(10)

    b = TableCommitter(str(out), RUN)
    assert b.recover() == 0
    assert b.committed() == {}  # B would process the video too; it is killed first
    assert state(out) is None

    pause.resume()
    thread.join(10)
    assert results[0].won
    assert state(out) == whole(9)
    later = TableCommitter(str(out), RUN)
    assert later.recover() == 0 and VIDEO in later.committed()


@pytest.mark.parametrize("point", POINTS)
def test_recovery_while_a_commit_is_paused_at_any_step_deletes_nothing(tmp_path, point):
    out = tmp_path / "out"
    pause = Pause(point)
    a = hook(TableCommitter(str(out), RUN), pause)
    thread, results = in_thread(lambda: a.commit(rows(9), replace=Replace.NEVER))
    assert pause.reached.wait(10)
    before = state(out)
    assert before in (None, whole(9))  # readers: nothing, or everything once claimed
    if point in BEFORE_CLAIM:
        assert raw_rows(out, TRACKLETS) == 0  # not even a plain glob sees staged files
    assert TableCommitter(str(out), RUN).recover() == 0
    assert state(out) == before
    pause.resume()
    thread.join(10)
    assert results[0].won and state(out) == whole(9)
    assert leftovers(out) == [] and raw_rows(out, TRACKLETS) == 9


@pytest.mark.parametrize("point", BEFORE_CLAIM)
def test_a_commit_paused_past_the_orphan_age_commits_again_when_it_resumes(tmp_path, point):
    """A recovery deletes the paused run's staged files as a dead run's; the paused run
    finds them gone, withdraws, and commits its rows again: whole."""
    out = tmp_path / "out"
    pause = Pause(point)
    a = hook(TableCommitter(str(out), RUN), pause)
    thread, results = in_thread(lambda: a.commit(rows(9), replace=Replace.NEVER))
    assert pause.reached.wait(10)
    assert TableCommitter(str(out), RUN, orphan_age_s=0).recover() > 0
    pause.resume()
    thread.join(10)
    assert results[0].won and state(out) == whole(9)


def test_a_claim_whose_files_were_deleted_is_no_commit_and_is_redone(tmp_path):
    """Paused after staging (files then deleted as orphans), killed right after its claim:
    the claim names missing files, so no reader sees the video and the next run redoes it."""
    out = tmp_path / "out"
    pause = Pause("staged:videos")
    a = TableCommitter(str(out), RUN)

    def action(point: str) -> None:
        pause(point)
        kill_at("claimed")(point)

    hook(a, action)
    thread, results = in_thread(lambda: a.commit(rows(9), replace=Replace.NEVER))
    assert pause.reached.wait(10)
    assert TableCommitter(str(out), RUN, orphan_age_s=0).recover() == 3
    pause.resume()
    thread.join(10)
    assert not results  # killed
    assert state(out) is None
    later = TableCommitter(str(out), RUN)
    assert later.committed() == {}
    assert later.commit(rows(9), replace=Replace.NEVER).won
    assert state(out) == whole(9)


@pytest.mark.parametrize("point", POINTS)
def test_a_commit_killed_at_any_step_is_whole_or_absent_and_the_next_run_completes_it(
    tmp_path, point
):
    out = tmp_path / "out"
    a = hook(TableCommitter(str(out), RUN), kill_at(point))
    with pytest.raises(Killed):
        a.commit(rows(9), replace=Replace.NEVER)
    after_kill = state(out)
    assert after_kill == (None if point in BEFORE_CLAIM else whole(9))

    later = TableCommitter(str(out), RUN, orphan_age_s=0)
    later.recover()  # publishes a claimed commit's files; deletes a dead run's orphans
    if VIDEO not in later.committed():
        assert later.commit(rows(9), replace=Replace.NEVER).won
    assert state(out) == whole(9)
    assert leftovers(out) == []
    assert [raw_rows(out, t) for t in (VIDEOS, TRACKLETS, TRACKLET_FRAMES)] == [1, 9, 27]


@pytest.mark.parametrize("replace", [Replace.NEVER, Replace.ALWAYS])
def test_two_committers_of_one_video_racing_leave_one_commit(tmp_path, replace):
    """Both stage their files, then claim at once: one wins; with NEVER the other backs
    off, with ALWAYS it replaces the first whole. Never a mix, nothing duplicated."""
    out = tmp_path / "out"
    barrier = threading.Barrier(2)
    met: set[str] = set()

    def meet(point: str) -> None:
        if point == "staged:videos" and threading.current_thread().name not in met:
            met.add(threading.current_thread().name)  # once: a retry does not wait
            barrier.wait(10)

    first = hook(TableCommitter(str(out), RUN), meet)
    second = hook(TableCommitter(str(out), RUN), meet)
    one, got_one = in_thread(lambda: first.commit(rows(9), replace=replace))
    two, got_two = in_thread(lambda: second.commit(rows(4), replace=replace))
    one.join(10)
    two.join(10)
    results = [got_one[0], got_two[0]]
    if replace is Replace.NEVER:
        assert sorted(result.won for result in results) == [False, True]
        winner = next(result for result in results if result.won)
        loser = next(result for result in results if not result.won)
        assert loser.claim == winner.claim  # the loser is told which commit stays
    else:
        assert all(result.won for result in results)  # one after the other
        winner = max(results, key=lambda result: result.claim.version)
    tracks = 9 if winner.claim.job == first.job_id else 4
    assert state(out) == whole(tracks)
    assert leftovers(out) == []
    assert [raw_rows(out, t) for t in (VIDEOS, TRACKLETS)] == [1, tracks]


def test_many_committers_racing_without_pauses_leave_exactly_one_commit(tmp_path):
    out = tmp_path / "out"
    start = threading.Barrier(6)

    def commit(tracks: int):
        committer = TableCommitter(str(out), RUN)
        start.wait(10)
        return committer.commit(rows(tracks), replace=Replace.NEVER)

    threads = [in_thread(lambda tracks=tracks: commit(tracks)) for tracks in range(2, 8)]
    for thread, _ in threads:
        thread.join(20)
    results = [got[0] for _, got in threads]
    assert sum(result.won for result in results) == 1
    winner = next(result for result in results if result.won)
    assert all(result.claim == winner.claim for result in results)
    tracks = state(out)[0]
    assert raw_rows(out, TRACKLETS) == tracks and raw_rows(out, VIDEOS) == 1
    assert leftovers(out) == []


def test_retrying_a_failed_video_replaces_it_once_and_never_an_ok_one(tmp_path):
    out = tmp_path / "out"
    record = VideoRecord(VIDEO, f"/corpus/{VIDEO}", "tiny", RUN)
    committer = TableCommitter(str(out), RUN)
    assert committer.commit(failed_rows(record, "CorruptVideoError")).won
    barrier = threading.Barrier(2)

    def retry():
        retrying = TableCommitter(str(out), RUN)
        barrier.wait(10)
        return retrying.commit(rows(5), replace=Replace.FAILED)

    threads = [in_thread(retry) for _ in range(2)]
    for thread, _ in threads:
        thread.join(10)
    assert sorted(got[0].won for _, got in threads) == [False, True]
    assert state(out) == whole(5)
    # A failed commit never replaces an ok one, even when retrying failed videos.
    assert not committer.commit(failed_rows(record, "late"), replace=Replace.FAILED).won
    assert state(out) == whole(5)
    assert raw_rows(out, VIDEOS) == 1


def test_readers_see_one_whole_commit_while_another_replaces_it(tmp_path):
    out = tmp_path / "out"
    writer = TableCommitter(str(out), RUN)
    writer.commit(rows(9))
    stop = threading.Event()

    def replace_repeatedly() -> int:
        count = 0
        while not stop.is_set():
            writer.commit(rows(4 if count % 2 == 0 else 9))
            count += 1
        return count

    thread, done = in_thread(replace_repeatedly)
    seen = set()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        # Each read holds one whole commit's rows: 4 or 9 tracklets, never a mix of both.
        tracks = read_table(str(out), TRACKLETS, columns=["track_id"])["track_id"].to_pylist()
        frames = read_table(str(out), TRACKLET_FRAMES, columns=["track_id"])["track_id"]
        assert sorted(tracks) in (list(range(4)), list(range(9)))
        assert sorted(set(frames.to_pylist())) in (list(range(4)), list(range(9)))
        assert len(frames) in (4 * T, 9 * T)
        seen.add(len(tracks))
    stop.set()
    thread.join(10)
    assert done[0] > 0 and seen


def test_recovery_keeps_live_and_other_runs_files_and_deletes_a_dead_runs_orphans(tmp_path):
    out = tmp_path / "out"
    # A dead run's commit, killed after staging two files: orphans once old enough.
    with pytest.raises(Killed):
        hook(TableCommitter(str(out), RUN), kill_at("staged:tracklet_frames")).commit(rows(3))
    # Another run's orphan of the same kind.
    with pytest.raises(Killed):
        hook(TableCommitter(str(out), "run-2"), kill_at("staged:tracklets")).commit(rows(3))
    # A live commit of this run, paused after staging.
    pause = Pause("staged:videos")
    live = hook(TableCommitter(str(out), RUN), pause)
    thread, results = in_thread(lambda: live.commit(rows(5, "clips/b.mp4")))
    assert pause.reached.wait(10)
    before = staged(out)
    assert len(before) == 6  # 2 dead, 1 other run's, 3 live

    assert TableCommitter(str(out), RUN).recover() == 0  # all young: could be live
    assert staged(out) == before
    old = time.time() - 2 * 24 * 3600
    live_key = TableCommitter(str(out), RUN).file_path(TRACKLETS, "clips/b.mp4", "x")
    live_prefix = Path(live_key).name.rsplit("-", 1)[0]
    dead = [p for p in staged(out, f"{RUN}-*") if not p.name.startswith(live_prefix)]
    assert len(dead) == 2
    for path in dead:
        os.utime(path, (old, old))
    assert TableCommitter(str(out), RUN).recover() == 2  # the dead run's, provably old
    assert not any(path.exists() for path in dead)
    assert len(staged(out, "run-2-*")) == 1  # not this run's to clean

    pause.resume()
    thread.join(10)
    assert results[0].won and state(out, "clips/b.mp4") == whole(5)


def test_a_replaced_commits_published_files_are_removed_at_once(tmp_path):
    """Killed after claiming a replacement and publishing it, before deleting the commit
    it replaced: those files are named by no claim and go at the next recovery."""
    out = tmp_path / "out"
    TableCommitter(str(out), RUN).commit(rows(9))
    with pytest.raises(Killed):
        hook(TableCommitter(str(out), RUN), kill_at("published:videos")).commit(rows(4))
    assert state(out) == whole(4)
    assert raw_rows(out, TRACKLETS) == 13  # a plain reader sees both until the recovery
    assert TableCommitter(str(out), RUN).recover() == 3
    assert raw_rows(out, TRACKLETS) == 4 and state(out) == whole(4)


def test_an_output_in_the_old_layout_stays_committed(tmp_path):
    """Before the commit log: `<run>-<key>.parquet` in every table, the videos file last."""
    out = tmp_path / "out"
    new = TableCommitter(str(out), RUN)
    new.commit(rows(4))
    for table in (TRACKLETS, TRACKLET_FRAMES, VIDEOS):  # rename into the old layout
        (path,) = (out / table).glob("*.parquet")
        path.rename(path.with_name(path.name.rsplit("-", 1)[0] + ".parquet"))
    for claim in (out / COMMITS).iterdir():
        claim.unlink()
    assert state(out) == whole(4)
    assert new.recover() == 0 and VIDEO in new.committed()
    assert not new.commit(rows(9), replace=Replace.NEVER).won
    assert new.commit(rows(9)).won  # a replacement removes the old layout's files
    assert state(out) == whole(9) and raw_rows(out, TRACKLETS) == 9


def test_commits_on_s3_back_off_replace_and_recover(s3_bucket):
    """Object stores have no create-if-absent: check, put, read back (see the README)."""
    output = f"{s3_bucket}/out"
    with pytest.raises(Killed):
        hook(TableCommitter(output, RUN), kill_at("claimed")).commit(rows(3))
    assert len(read_table(output, TRACKLETS)) == 3  # read from the staged files
    committer = TableCommitter(output, RUN)
    assert committer.recover() == 0
    assert not committer.commit(rows(9), replace=Replace.NEVER).won
    assert committer.commit(rows(9)).won
    assert len(read_table(output, TRACKLETS)) == 9
    assert TableCommitter(output, RUN).recover() == 0
    names = committer.fs.find(committer.root)
    assert sum(f"/{TRACKLETS}/" in name for name in names) == 1


SUBPROCESS = """
import os, signal, sys
from pathlib import Path
from tests.test_concurrent_commits import RUN, hook, rows
from vis_core.tables.commit import Replace, TableCommitter

out, point, how = sys.argv[1:4]

def action(reached):
    if reached == point:
        Path(out + ".reached").write_text(point)
        os.kill(os.getpid(), signal.SIGSTOP if how == "stop" else signal.SIGKILL)

committer = TableCommitter(out, RUN)
committer.recover()  # a run starts with its recovery
result = hook(committer, action).commit(rows(9), replace=Replace.NEVER)
print("won" if result.won else "lost")
"""


def start(out: Path, point: str, how: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", SUBPROCESS, str(out), point, how],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)


def test_processes_stopped_then_continued_and_a_second_run_killed(tmp_path):
    """The reported scenario with processes: A stopped (SIGSTOP) after its tracklets
    file, B started and killed after its recovery and staging its own commit, A
    continued."""
    out = tmp_path / "out"
    a = start(out, "staged:tracklets", "stop")
    wait_for(Path(f"{out}.reached"), a)
    Path(f"{out}.reached").unlink()
    b = start(out, "staged:tracklet_frames", "kill")  # B recovers, stages, dies
    wait_for(Path(f"{out}.reached"), b)
    assert b.wait(30) == -signal.SIGKILL
    os.kill(a.pid, signal.SIGCONT)
    assert a.wait(30) == 0 and a.stdout.read().strip() == "won"
    assert state(out) == whole(9)
    assert len(leftovers(out)) == 2  # B's orphans: young, kept until provably dead
    assert TableCommitter(str(out), RUN, orphan_age_s=0).recover() == 2
    assert leftovers(out) == []
