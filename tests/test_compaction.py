"""Compaction: few files per table, the same rows, and every video exactly once while it
runs, when it is killed at any step, beside jobs' commits and beside another compaction.

The compaction is called directly (no Ray), and paused or killed after each of its steps
(staging each file, the pack claim, publishing each file, deleting a replaced file or
claim), as `test_concurrent_commits` does with commits.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from tests.test_concurrent_commits import (
    POINTS as COMMIT_POINTS,
)
from tests.test_concurrent_commits import (
    RUN,
    Killed,
    Pause,
    hook,
    in_thread,
    kill_at,
    leftovers,
    rows,
)
from vis_core.tables.claims import COMMITS
from vis_core.tables.commit import Replace, TableCommitter
from vis_core.tables.compact import CompactionOptions, TableCompactor, compact_tables
from vis_core.tables.packs import PACKS
from vis_core.tables.read import CommittedTables, read_table
from vis_core.tables.rows import VideoRecord, VideoRows, failed_rows
from vis_core.tables.schema import TRACKLET_FRAMES, TRACKLETS, VIDEOS

# The tables the videos here have rows in (no frame_queries: tests/test_frame_queries.py).
TABLE_NAMES = (VIDEOS, TRACKLETS, TRACKLET_FRAMES)

# Every step of a compaction, in order: it is paused or killed after each.
POINTS = (
    "staged:tracklets",
    "staged:tracklet_frames",
    "staged:videos",
    "claimed",
    "published:tracklets",
    "published:tracklet_frames",
    "published:videos",
    "deleted:own",  # packed videos' own files
    "deleted:pack",  # the files of a pack it rewrote
    "deleted:claim",  # the claim of a pack it rewrote
)
BEFORE_CLAIM = POINTS[:3]

_ROWS: dict[str, VideoRows] = {}  # one VideoRows per video: a re-commit writes equal rows


@pytest.fixture(autouse=True)
def fresh_rows():
    _ROWS.clear()  # a test may change a video's rows (a retry that succeeds)


def video(index: int) -> str:
    return f"clips/{index:04d}.mp4"


def video_rows(index: int) -> VideoRows:
    """Rows of video `index`: failed every fifth, else 1 to 3 tracklets."""
    video_id = video(index)
    if video_id not in _ROWS:
        if index % 5 == 4:
            record = VideoRecord(video_id, f"/corpus/{video_id}", "tiny", RUN)
            _ROWS[video_id] = failed_rows(record, "CorruptVideoError: broken")
        else:
            _ROWS[video_id] = rows(1 + index % 3, video_id)
    return _ROWS[video_id]


def commit_videos(out: Path, indices: range) -> None:
    committer = TableCommitter(str(out), RUN)
    for index in indices:
        assert committer.commit(video_rows(index), replace=Replace.NEVER).won


def view(out: Path) -> dict[str, list[str]]:
    """Every table's rows in the reader's view (`read_table`), sorted."""
    return {table: _sorted(read_table(str(out), table).to_pylist()) for table in TABLE_NAMES}


def raw(out: Path) -> dict[str, list[str]]:
    """Every table's rows as a plain Parquet reader of the folders sees them."""
    found = {}
    for table in TABLE_NAMES:
        folder = out / table
        present = folder.exists() and any(folder.glob("*.parquet"))
        found[table] = _sorted(pads.dataset(str(folder)).to_table().to_pylist()) if present else []
    return found


def _sorted(rows: list[dict]) -> list[str]:
    return sorted(repr(sorted(row.items())) for row in rows)


def expected(indices: range) -> dict[str, list[str]]:
    tables = {table: [] for table in TABLE_NAMES}
    for index in indices:
        for table in TABLE_NAMES:
            tables[table] += video_rows(index).tables[table].to_pylist()
    return {table: _sorted(found) for table, found in tables.items()}


def files(out: Path) -> dict[str, int]:
    return {table: len(list((out / table).glob("*.parquet"))) for table in TABLE_NAMES}


def pack_claims(out: Path) -> list[str]:
    folder = out / PACKS
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def compactor(out: Path, **options) -> TableCompactor:
    return TableCompactor(str(out), RUN, options=CompactionOptions(**options))


def hook_compactor(compactor: TableCompactor, action: Callable[[str], None]) -> TableCompactor:
    """Call `action(point)` after each step of `compactor` (see POINTS)."""
    close, claim = compactor._close_staged, compactor._claim
    publish, delete, delete_claim = (
        compactor._publish_file,
        compactor._delete_files,
        compactor._delete_claim,
    )

    def close_then(staged, table):
        done = close(staged, table)
        action(f"staged:{table}")
        return done

    def claim_then(pack):
        won = claim(pack)
        action("claimed")
        return won

    def publish_then(table, name):
        done = publish(table, name)
        action(f"published:{table}")
        return done

    def delete_then(paths):
        deleted = delete(paths)
        if deleted:
            action("deleted:pack" if any("-pack-" in path for path in paths) else "deleted:own")
        return deleted

    def delete_claim_then(pack):
        delete_claim(pack)
        action("deleted:claim")

    compactor._close_staged = close_then
    compactor._claim = claim_then
    compactor._publish_file = publish_then
    compactor._delete_files = delete_then
    compactor._delete_claim = delete_claim_then
    return compactor


def prepared(out: Path) -> range:
    """12 videos compacted into one small pack, then 6 more committed: a compaction then
    repacks the pack with the 6, deletes their own files and retires the pack."""
    commit_videos(out, range(12))
    assert compactor(out).compact().packs == 1
    commit_videos(out, range(12, 18))
    return range(18)


def assert_finished(out: Path, indices: range) -> None:
    """One pack holds every video: one file per table, nothing else left behind."""
    assert view(out) == raw(out) == expected(indices)
    assert files(out) == dict.fromkeys(TABLE_NAMES, 1)
    assert len(pack_claims(out)) == 1
    assert leftovers(out) == []
    assert TableCommitter(str(out), RUN).recover() == 0


def test_a_compacted_table_has_few_files_and_the_same_rows(tmp_path):
    out = tmp_path / "out"
    count = 150
    commit_videos(out, range(count))
    before = view(out)
    assert before == raw(out) == expected(range(count))
    assert files(out)[VIDEOS] == count
    statuses = TableCommitter(str(out), RUN).committed()

    summary = compactor(out).compact()
    assert (summary.videos, summary.packed, summary.packs) == (count, count, 1)
    assert summary.files_before[VIDEOS] == count and {
        t: summary.files_after[t] for t in TABLE_NAMES
    } == files(out)
    for table, found in files(out).items():
        assert found <= max(3, count / 100), table
    assert view(out) == raw(out) == before  # plain readers too: no duplicate, nothing lost
    assert TableCommitter(str(out), RUN).committed() == statuses
    assert leftovers(out) == []
    assert TableCommitter(str(out), RUN).recover() == 0  # a job's recovery keeps the packs
    again = compactor(out).compact()
    assert (again.packed, again.packs, again.deleted) == (0, 0, 0)


def test_jobs_and_compactions_in_turn_keep_the_file_bound(tmp_path):
    """Small packs (videos_per_file=10) so that the rounds repack: files stay within
    2 N / videos_per_file + 1 per table (the N / 100 bound at 1,000 videos a pack)."""
    out = tmp_path / "out"
    done = 0
    for batch in (7, 7, 13, 1, 25):
        commit_videos(out, range(done, done + batch))
        done += batch
        compactor(out, videos_per_file=10).compact()
        assert view(out) == raw(out) == expected(range(done))
        for table, found in files(out).items():
            assert found <= 2 * math.ceil(done / 10) + 1, (table, found, done)
    assert compactor(out).compact().packs == 1  # the default size packs all 53 in one
    assert_finished(out, range(done))


def test_a_video_committed_again_after_compaction_is_read_once_then_repacked(tmp_path):
    """A retried failed video and a replaced one: readers read their new commits only;
    the pack's stale rows are visible to a plain glob until the next compaction."""
    out = tmp_path / "out"
    commit_videos(out, range(10))
    compactor(out).compact()
    committer = TableCommitter(str(out), RUN)
    failed, replaced = video(4), video(1)
    _ROWS[failed] = rows(2, failed)  # the retry succeeds
    _ROWS[replaced] = rows(3, replaced)
    assert committer.commit(_ROWS[failed], replace=Replace.FAILED).won
    assert committer.commit(_ROWS[replaced], replace=Replace.ALWAYS).won
    assert not committer.commit(rows(1, video(0)), replace=Replace.NEVER).won  # packed: stays
    assert view(out) == expected(range(10))
    assert raw(out)[VIDEOS] != view(out)[VIDEOS]  # the stale rows, until compacted again
    summary = compactor(out).compact()
    assert (summary.packed, summary.packs) == (10, 1)
    assert_finished(out, range(10))


def test_a_job_after_compaction_skips_packed_videos_and_commits_new_ones(tmp_path):
    out = tmp_path / "out"
    commit_videos(out, range(8))
    compactor(out).compact()
    committer = TableCommitter(str(out), RUN)
    known = committer.committed_set()
    assert len(known) == 8 and known.status(video(4)) == "failed"
    assert known.status(video(0)) == "ok" and video(8) not in known
    result = committer.commit(rows(5, video(3)), replace=Replace.NEVER)
    assert not result.won and result.claim.version == 1  # the packed commit stays
    commit_videos(out, range(8, 11))
    assert len(committer.committed_set()) == 11
    assert view(out) == raw(out) == expected(range(11))
    compactor(out).compact()
    assert_finished(out, range(11))


@pytest.mark.parametrize("point", POINTS)
def test_readers_see_every_video_once_while_a_compaction_is_paused_at_any_step(tmp_path, point):
    out = tmp_path / "out"
    indices = prepared(out)
    pause = Pause(point)
    running = hook_compactor(compactor(out), pause)
    thread, results = in_thread(running.compact)
    assert pause.reached.wait(20)
    assert view(out) == expected(indices)
    assert len(TableCommitter(str(out), RUN).committed_set()) == len(indices)
    tables = CommittedTables(str(out))  # a view listed now, read after the compaction
    pause.resume()
    thread.join(20)
    assert results and results[0].packed == len(indices)
    assert {table: _sorted(tables.read(table).to_pylist()) for table in TABLE_NAMES} == (
        expected(indices)
    )
    assert_finished(out, indices)


@pytest.mark.parametrize("point", POINTS)
def test_a_compaction_killed_at_any_step_loses_nothing_and_a_rerun_finishes(tmp_path, point):
    out = tmp_path / "out"
    indices = prepared(out)
    with pytest.raises(Killed):
        hook_compactor(compactor(out), kill_at(point)).compact()
    assert view(out) == expected(indices)
    if point in BEFORE_CLAIM:
        assert raw(out) == expected(indices)  # staged files: not even a glob sees them
    committer = TableCommitter(str(out), RUN)
    assert len(committer.committed_set()) == len(indices)
    commit_videos(out, range(18, 20))  # a job goes on meanwhile
    assert view(out) == expected(range(20))
    # The rerun: a compaction that takes the killed one's staged files for a dead run's.
    rerun = compactor(out, orphan_age_s=0).compact()
    assert rerun.abandoned == 0
    assert_finished(out, range(20))


def test_a_compaction_paused_past_the_orphan_age_gives_up_its_pack_and_loses_nothing(tmp_path):
    """Another compaction deletes the paused one's staged files as a dead one's; the
    paused one claims, finds its files gone, retires its pack and deletes no source."""
    out = tmp_path / "out"
    indices = prepared(out)
    pause = Pause("staged:videos")
    running = hook_compactor(compactor(out), pause)
    thread, results = in_thread(running.compact)
    assert pause.reached.wait(20)
    assert compactor(out, orphan_age_s=0).recover() == 3  # the paused one's staged files
    pause.resume()
    thread.join(20)
    assert results[0].abandoned == 1 and results[0].packs == 0
    assert view(out) == raw(out) == expected(indices)
    compactor(out).compact()
    assert_finished(out, indices)


@pytest.mark.parametrize("point", COMMIT_POINTS)
def test_a_compaction_beside_a_commit_paused_at_any_step(tmp_path, point):
    """A job commits a new video and retries a packed failed one, both paused at
    `point`, while a compaction runs whole: each video is committed once, the retry's
    rows replace the packed ones."""
    out = tmp_path / "out"
    indices = prepared(out)
    compactor(out).compact()
    retried = video(4)
    _ROWS[retried] = rows(2, retried)
    pauses = [Pause(point), Pause(point)]
    threads = [
        in_thread(lambda: hook(TableCommitter(str(out), RUN), pauses[0]).commit(video_rows(18))),
        in_thread(
            lambda: hook(TableCommitter(str(out), RUN), pauses[1]).commit(
                _ROWS[retried], replace=Replace.FAILED
            )
        ),
    ]
    for pause in pauses:
        assert pause.reached.wait(20)
    compactor(out).compact()
    videos = read_table(str(out), VIDEOS, columns=["video_id"])["video_id"].to_pylist()
    assert sorted(videos) in ([video(i) for i in indices], [video(i) for i in range(19)])
    for pause, (thread, results) in zip(pauses, threads, strict=True):
        pause.resume()
        thread.join(20)
        assert results[0].won
    assert view(out) == expected(range(19))
    assert {video(18), retried} <= set(TableCommitter(str(out), RUN).committed())
    compactor(out).compact()
    assert_finished(out, range(19))


def test_a_reader_sees_every_video_once_while_commits_and_compactions_churn(tmp_path):
    out = tmp_path / "out"
    indices = prepared(out)
    target = expected(indices)
    stop = threading.Event()

    def churn() -> int:
        rounds = 0
        committer = TableCommitter(str(out), RUN)
        while not stop.is_set():
            # Equal rows again: the view's rows stay the same, the files all change.
            committer.commit(video_rows(rounds % 18), replace=Replace.ALWAYS)
            compactor(out, videos_per_file=4 + rounds % 5).compact()
            rounds += 1
        return rounds

    thread, done = in_thread(churn)
    reads = 0
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        for table in TABLE_NAMES:
            assert _sorted(read_table(str(out), table).to_pylist()) == target[table], table
        reads += 1
    stop.set()
    thread.join(30)
    assert done[0] > 0 and reads > 0
    compactor(out).compact()
    assert_finished(out, indices)


def test_two_compactions_at_once_leave_every_video_once(tmp_path):
    out = tmp_path / "out"
    indices = prepared(out)
    barrier = threading.Barrier(2)
    met: set[str] = set()

    def meet(point: str) -> None:
        if point == "staged:videos" and threading.current_thread().name not in met:
            met.add(threading.current_thread().name)
            barrier.wait(20)

    threads = [in_thread(hook_compactor(compactor(out), meet).compact) for _ in range(2)]
    for thread, _ in threads:
        thread.join(30)
    assert all(results for _, results in threads)
    assert view(out) == expected(indices)
    compactor(out).compact()
    assert_finished(out, indices)


def test_compact_tables_takes_every_run_and_the_cli_reports(tmp_path, capsys):
    from jobs.cli import main

    out = tmp_path / "out"
    commit_videos(out, range(6))
    other = TableCommitter(str(out), "run-2")
    other.commit(rows(2, "clips/other.mp4"))
    assert main(["compact", "--tables", str(out), "--run-id", "nope"]) == 2
    assert "no run nope" in capsys.readouterr().err
    assert main(["compact", "--tables", str(tmp_path / "missing")]) == 2
    assert main(["compact", "--tables", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "run run-1: 6 videos, 6 rewritten into 1 packs" in printed
    assert "run run-2: 1 videos, 1 rewritten into 1 packs" in printed
    assert files(out) == {VIDEOS: 2, TRACKLETS: 2, TRACKLET_FRAMES: 2}
    assert [s.packs for s in compact_tables(str(out))] == [0, 0]
    assert len(read_table(str(out), VIDEOS, run_id="run-2")) == 1
    assert not any((out / COMMITS).glob(".tmp-*"))


def test_compaction_on_s3(s3_bucket):
    output = f"{s3_bucket}/out"
    committer = TableCommitter(output, RUN)
    for index in range(6):
        committer.commit(video_rows(index))
    before = {table: _sorted(read_table(output, table).to_pylist()) for table in TABLE_NAMES}
    summary = TableCompactor(output, RUN).compact()
    assert (summary.packed, summary.files_after[VIDEOS]) == (6, 1)
    after = {table: _sorted(read_table(output, table).to_pylist()) for table in TABLE_NAMES}
    assert after == before == expected(range(6))
    assert len(committer.committed_set()) == 6
    names = committer.fs.find(committer.root)
    assert sum(f"/{TRACKLETS}/" in name for name in names) == 1
    assert not any("/_staging/" in name for name in names)
