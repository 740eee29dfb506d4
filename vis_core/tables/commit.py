"""Exactly-once commits of one video's rows to the three table folders, safe when runs of
the same job overlap on one output.

A video's commit is a claim in the commit log (`vis_core.tables.claims`), made in three
steps:

1. stage: each table's file is written to `_staging/<table>/` (out of the folders readers
   glob) under a name unique to this attempt (`<run_id>-<key>-<attempt>.parquet`), so no
   writer ever overwrites another's;
2. claim: the claim naming those files is created with create-if-absent, the commit point.
   A writer that finds the video committed backs off and deletes its staged files, unless
   told to replace that commit (`Replace`): then it claims the next version;
3. publish: the files are moved to their table folders, the `videos` file last, and the
   files of the commit this one replaces are deleted.

A writer killed at any instant leaves no claim (its staged files are orphans no reader
sees) or a claim whose files all exist, staged or published (readers read the staged ones
until `recover` publishes them). `recover` deletes a run's orphans only when no live writer
can own them: published files that no current commit names (replaced commits, and commits
a compaction has moved into a pack, `vis_core.tables.packs`) at once, staged files once
older than `orphan_age_s`; pack files are never its to delete. A writer paused for longer
than that finds its files gone when it resumes: it withdraws its claim (a version with
status `withdrawn`) and commits again; killed before, it leaves a claim that names a
missing file, which counts as no commit, so the video is processed again. Never a commit
with missing rows.
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import io
import logging
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vis_core.storage import join, open_fs
from vis_core.tables.claims import (
    COMMITS,
    PUBLISH_ORDER,
    TEMP_PREFIX,
    WITHDRAWN,
    Claim,
    create_claim,
    data_name,
    holds_claim,
    is_atomic,
    latest_claim,
    list_files,
    new_attempt,
    now_iso,
    parse_claim_name,
    parse_data_name,
    read_claim,
    staged_folder,
    video_key,
)
from vis_core.tables.committed_set import CommittedSet
from vis_core.tables.names import FolderNames, iter_names
from vis_core.tables.packs import list_packs, read_packs
from vis_core.tables.rows import VideoRows
from vis_core.tables.schema import ROW_GROUP_ROWS, STATUS_FAILED, TABLE_NAMES, VIDEOS
from vis_core.tables.view import Commit, iter_commits, resolve, resolve_files

__all__ = ["CommitError", "CommitResult", "CommitStatus", "Replace", "TableCommitter", "video_key"]

logger = logging.getLogger(__name__)

# A live writer holds an unclaimed staged file for the seconds a commit takes; one this old
# is a dead (or long-paused) writer's. Delta's vacuum keeps a retention period likewise.
ORPHAN_AGE_S = 24 * 3600.0
_COMMIT_TRIES = 5


class CommitError(RuntimeError):
    """A video could not be committed (its files vanished at every try)."""


class Replace(enum.Enum):
    """What a commit does when the run has committed its video already."""

    ALWAYS = "always"  # the new rows replace the old ones (a direct re-commit)
    FAILED = "failed"  # only a `failed` commit is replaced (`--retry-failed`)
    NEVER = "never"  # the first commit stays (the corpus job: another run got there first)


@dataclass(frozen=True)
class CommitStatus:
    """A committed video of the run: its id and status (`ok` or `failed`)."""

    video_id: str
    status: str


@dataclass(frozen=True)
class CommitResult:
    """What `commit` did: `won` when this call's rows are now the video's commit; else
    `claim` is the commit that stays (another writer's, or this job's earlier one)."""

    video_id: str
    won: bool
    claim: Claim


class TableCommitter:
    """Commits videos of one run (`run_id`) to the tables under `output_uri`.

    job_id: who writes (in the claims; default: a new id per committer); orphan_age_s: the
    age from which `recover` deletes a staged file that no claim names.
    """

    def __init__(
        self,
        output_uri: str,
        run_id: str,
        *,
        job_id: str | None = None,
        orphan_age_s: float = ORPHAN_AGE_S,
        **storage_options: Any,
    ):
        if not run_id or not run_id.replace("-", "").isalnum():
            raise ValueError(f"run_id must be alphanumeric (dashes allowed), got {run_id!r}")
        self.output_uri = output_uri
        self.run_id = run_id
        self.job_id = job_id or new_attempt()
        self.orphan_age_s = orphan_age_s
        self.fs, self.root = open_fs(output_uri, **storage_options)

    def file_path(self, table: str, video_id: str, attempt: str) -> str:
        """The published path of one commit attempt's file of `video_id` in `table`."""
        return join(self.root, table, data_name(self.run_id, video_key(video_id), attempt))

    def commit(self, rows: VideoRows, *, replace: Replace = Replace.ALWAYS) -> CommitResult:
        """Commit one video's rows (see the module docstring)."""
        video_id = rows.tables[VIDEOS]["video_id"][0].as_py()
        key = video_key(video_id)
        for _ in range(_COMMIT_TRIES):
            current = latest_claim(self.fs, self.root, self.run_id, key)
            if current is not None and not self._may_replace(current, replace):
                return CommitResult(video_id, False, current)
            attempt = new_attempt()
            files = {}
            for table in PUBLISH_ORDER:
                if table == VIDEOS or rows.table(table).num_rows > 0:
                    files[table] = data_name(self.run_id, key, attempt)
                    self._write_staged(table, files[table], rows.tables[table])
            version = current.version + 1 if current is not None else 1
            claim = Claim(
                self.run_id, video_id, version, rows.status, attempt, self.job_id, files, now_iso()
            )
            if not self._claim(claim):
                self._delete_files(claim)  # another writer claimed this version: look again
                continue
            if not self._publish(claim):
                logger.warning("files of %r vanished before publishing: committing again", video_id)
                self._withdraw(claim)
                continue
            if not is_atomic(self.fs) and not holds_claim(self.fs, self.root, claim):
                # An object store: a racing writer's claim overwrote this one after all.
                self._delete_files(claim)
                stored = read_claim(self.fs, self.root, self.run_id, key, version)
                return CommitResult(video_id, False, stored or claim)
            if current is not None:
                self._delete_files(current)  # replaced
            return CommitResult(video_id, True, claim)
        raise CommitError(f"could not commit {video_id!r} to {self.output_uri}: files vanished")

    def committed(self) -> dict[str, CommitStatus]:
        """The run's committed videos, by video id."""
        return {
            commit.video_id: CommitStatus(commit.video_id, commit.status)
            for commit in iter_commits(self.fs, self.root, run_id=self.run_id)
        }

    def committed_set(self) -> CommittedSet:
        """The run's committed videos as a compact set (what a job's driver holds)."""
        return CommittedSet.of(iter_commits(self.fs, self.root, run_id=self.run_id))

    def recover(self, now: float | None = None) -> int:
        """Finish publishing the run's commits whose writer died, and delete the run's
        orphans that no live writer can own (see the module docstring). Returns files
        deleted. Safe while other runs of the same job commit, and while a compaction
        runs (its packs are never this run's orphans: they have names of their own)."""
        now = time.time() if now is None else now
        # The files first, then the claims: a file published after this listing has a
        # claim that `iter_commits` reads, so no committed file is taken for an orphan.
        # Table folders by name only (they hold a file per video); staging folders with
        # details, for their files' age.
        published = {t: FolderNames.list(self.fs, join(self.root, t)) for t in TABLE_NAMES}
        staged = {
            staged_folder(table): list_files(self.fs, join(self.root, staged_folder(table)))
            for table in TABLE_NAMES
        }
        listings = {**published, **{f: FolderNames(files) for f, files in staged.items()}}
        named: list[str] = []  # the run's commits' file names (one for all its tables)
        for commit in iter_commits(self.fs, self.root, run_id=self.run_id, listings=listings):
            if commit.pack is not None:
                continue  # a pack's files are the compaction's to clean
            if any(path != join(self.root, t, n) for (t, n), path in _pairs(commit)):
                self._publish(commit.claim)  # its writer died before publishing
            named += set(commit.claim.files.values())  # one name, in each of its tables
        live = FolderNames(named)
        del named
        deleted = 0
        for table, names in published.items():
            for name in names:
                parsed = parse_data_name(name)
                # Published yet named by no claim: a replaced (or packed) commit's.
                replaced = parsed is not None and parsed[0] == self.run_id and name not in live
                if replaced or self._is_old_temporary(table, name, now):
                    deleted += self._delete_orphan(join(self.root, table, name))
        for folder, files in staged.items():
            for name, info in files.items():
                if name not in live and self._is_old_orphan(folder, name, info, now):
                    deleted += self._delete_orphan(join(self.root, folder, name))
        for name in iter_names(self.fs, join(self.root, COMMITS)):  # streamed: a claim a video
            if self._is_old_temporary(COMMITS, name, now):
                deleted += self._delete_orphan(join(self.root, COMMITS, name))
        return deleted

    def _may_replace(self, current: Claim, replace: Replace) -> bool:
        if current.status == WITHDRAWN or replace is Replace.ALWAYS:
            return True
        if replace is Replace.FAILED and current.status == STATUS_FAILED:
            return True
        if resolve(self.fs, self.root, current) is not None:
            return False
        return not self._packed(current)  # a file is gone, and no pack holds it: no commit

    def _packed(self, claim: Claim) -> bool:
        """Whether a pack with all its files holds `claim`'s version of its video (a
        compaction moved its rows; rare at commit time: a job skips packed videos)."""
        for pack in read_packs(self.fs, self.root, list_packs(self.fs, self.root, self.run_id)):
            held = any(
                member.video_id == claim.video_id and member.version == claim.version
                for member in pack.members
            )
            if held and resolve_files(self.fs, self.root, pack.files) is not None:
                return True
        return False

    def _write_staged(self, table: str, name: str, data: pa.Table) -> None:
        buffer = io.BytesIO()
        pq.write_table(data, buffer, compression="zstd", row_group_size=ROW_GROUP_ROWS.get(table))
        folder = join(self.root, staged_folder(table))
        self.fs.makedirs(folder, exist_ok=True)
        self.fs.pipe_file(join(folder, name), buffer.getvalue())

    def _claim(self, claim: Claim) -> bool:
        return create_claim(self.fs, self.root, claim)

    def _publish(self, claim: Claim) -> bool:
        """Rename the claim's staged files to their names, `videos` last; False when one is
        in neither place (deleted as an orphan, or replaced)."""
        for table in PUBLISH_ORDER:
            if table in claim.files and not self._publish_file(table, claim.files[table]):
                return False
        return True

    def _publish_file(self, table: str, name: str) -> bool:
        staged, published = self._staged(table, name), join(self.root, table, name)
        self.fs.makedirs(join(self.root, table), exist_ok=True)
        self.fs.invalidate_cache(staged)  # no stale listing
        try:
            self.fs.mv(staged, published)
            return True
        except FileNotFoundError:  # published meanwhile by a recovery, or gone
            self.fs.invalidate_cache(published)
            return self.fs.exists(published)

    def _staged(self, table: str, name: str) -> str:
        return join(self.root, staged_folder(table), name)

    def _withdraw(self, claim: Claim) -> None:
        """Retract `claim` (some file of it is gone) with a `withdrawn` next version."""
        withdrawal = Claim(
            self.run_id, claim.video_id, claim.version + 1, WITHDRAWN, new_attempt(), self.job_id
        )
        create_claim(self.fs, self.root, withdrawal)  # taken already: replaced anyway
        self._delete_files(claim)

    def _delete_files(self, claim: Claim) -> None:
        """Delete a claim's files, staged or published (staged first: a concurrent
        publish then leaves nothing behind)."""
        for table, name in claim.files.items():
            for path in (self._staged(table, name), join(self.root, table, name)):
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm(path)

    def _is_old_orphan(self, folder: str, name: str, info: dict[str, Any], now: float) -> bool:
        """Whether a staged file no claim names is this run's and provably no live
        writer's (old enough)."""
        if name.startswith(TEMP_PREFIX):
            return self._is_old_temporary(folder, name, now, info)
        parsed = parse_data_name(name)
        if parsed is None or parsed[0] != self.run_id:
            return False  # not a file of the protocol, or another run's: it cleans its own
        modified = modified_s(info)
        return modified is not None and now - modified >= self.orphan_age_s

    def _is_old_temporary(
        self, folder: str, name: str, now: float, info: dict[str, Any] | None = None
    ) -> bool:
        """Whether a temporary (`.tmp-<name>-<token>`: a claim before its link, or a file
        being written in the old layout) is this run's and old enough."""
        if not name.startswith(TEMP_PREFIX):
            return False
        base = name.removeprefix(TEMP_PREFIX).rsplit("-", 1)[0]
        parsed = parse_claim_name(base) if folder == COMMITS else parse_data_name(base)
        if parsed is None or parsed[0] != self.run_id:
            return False
        try:
            info = info or self.fs.info(join(self.root, folder, name))
        except FileNotFoundError:
            return False
        modified = modified_s(info)
        return modified is not None and now - modified >= self.orphan_age_s

    def _delete_orphan(self, path: str) -> int:
        try:
            self.fs.rm(path)
            return 1
        except FileNotFoundError:
            return 0  # deleted by another run's recovery meanwhile


def _pairs(commit: Commit) -> list[tuple[tuple[str, str], str]]:
    """((table, file name), where the file is now) of a commit's files."""
    return [((table, commit.claim.files[table]), path) for table, path in commit.paths.items()]


def modified_s(info: dict[str, Any]) -> float | None:
    """A listed file's modification time (seconds since the epoch); None if unknown."""
    value = info.get("mtime", info.get("LastModified", info.get("last_modified")))
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return value.timestamp()
    return float(value) if isinstance(value, (int, float)) else None
