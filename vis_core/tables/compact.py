"""Compaction: a run's committed videos rewritten into packs of many videos per file.

A job commits one file per video in each table (`vis_core.tables.commit`), so a table of
100,000 videos is 100,000 small files, slow to list and to read. A compaction rewrites
them into packs (`vis_core.tables.packs`) of up to `videos_per_file` videos (default
1,000): a table of N videos then has at most max(3, N / 100) files, and keeps to it as
later jobs add videos, since each compaction also repacks the packs that are small (under
half full) or hold stale rows (of videos committed again since), and leaves the others.

Per run, `TableCompactor.compact`:

0. recovers: publishes the files of packs claimed by a compaction that died, deletes what
   is left of dead packs (a file gone) and unclaimed pack files older than
   `orphan_age_s`, then runs the run's commit recovery, which deletes the per-video files
   of videos a pack holds;
1. reads the run's packs, then its commits (`vis_core.tables.view`), and takes as inputs
   the videos in their own (published) files and the current members of small or stale
   packs;
2. for each group of inputs in video id order (up to `videos_per_file` videos, fewer when
   a table's rows reach `max_pack_bytes`):
   a. stage: writes the group's rows, one file per table, to `_staging/<table>/`;
   b. claim: creates the pack claim, the commit point: from here on readers read the
      group's videos from the pack;
   c. publish: moves the pack's files to the table folders, `videos` last;
   d. deletes the group's per-video files;
3. retires the packs it repacked (their files, then their claims).

Killed at any instant it loses nothing: before (b) its staged files are orphans that no
reader sees; from (b) on, each video of the group is read from the pack (staged or
published) and the files it replaces are copies no reader uses, deleted by the next
compaction. A rerun finishes the work. Readers see each video once throughout: its rows
come from one place, its claim's files or one pack (`vis_core.tables.view`).

Concurrent work on the output is safe. Jobs commit new videos (and replace failed ones)
during a compaction; a video committed again makes its pack member stale, never a
duplicate. A second compaction of the same run at the same time is safe too, only
wasted work: a group whose source the other deletes is abandoned, left to the next one.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vis_core.storage import join, open_fs
from vis_core.tables.claims import (
    COMMITS,
    PUBLISH_ORDER,
    new_attempt,
    now_iso,
    parse_claim_name,
    parse_data_name,
    staged_folder,
)
from vis_core.tables.commit import ORPHAN_AGE_S, TableCommitter, modified_s
from vis_core.tables.names import iter_names
from vis_core.tables.packs import (
    PACKS,
    Pack,
    PackMember,
    create_pack_claim,
    delete_pack_claim,
    list_packs,
    new_pack_id,
    pack_file_name,
    parse_pack_claim_name,
    parse_pack_file_name,
    read_packs,
)
from vis_core.tables.read import TablesNotFoundError, table_dataset
from vis_core.tables.schema import ROW_GROUP_ROWS as TABLE_ROW_GROUP_ROWS
from vis_core.tables.schema import SCHEMAS, TABLE_NAMES
from vis_core.tables.view import DATA_FOLDERS, Commit, iter_commits, resolve_files

ROW_GROUP_ROWS = 65_536  # rows of a pack file's row group (readers skip groups by video_id)
_FETCH_SOURCES = 64  # videos whose own files are fetched in one call


class _SourceChanged(Exception):
    """A file a group is copied from vanished (replaced or repacked meanwhile)."""


@dataclass(frozen=True)
class CompactionOptions:
    """videos_per_file: videos per pack (100 or more keeps a table of N videos within
    N / 100 files); max_pack_bytes: a pack closes early when one table's rows reach this
    many bytes in memory (Arrow); orphan_age_s: the age from which an unclaimed pack file
    is a dead compaction's."""

    videos_per_file: int = 1000
    max_pack_bytes: int = 1 << 30
    orphan_age_s: float = ORPHAN_AGE_S


@dataclass(frozen=True)
class CompactionSummary:
    """What one run's compaction did. files_before / files_after: the run's files in each
    table folder; abandoned: groups whose sources changed while written (left for the
    next compaction)."""

    run_id: str
    videos: int
    packed: int
    packs: int
    deleted: int
    abandoned: int
    files_before: Mapping[str, int]
    files_after: Mapping[str, int]
    seconds: float

    def describe(self) -> str:
        files = ", ".join(
            f"{table} {self.files_before[table]} -> {self.files_after[table]}"
            for table in TABLE_NAMES
        )
        line = (
            f"run {self.run_id}: {self.videos} videos, {self.packed} rewritten into "
            f"{self.packs} packs in {self.seconds:.1f} s; files: {files}"
        )
        if self.abandoned:
            line += (
                f"\n  {self.abandoned} groups changed while being written (a concurrent "
                "job or compaction): run `vis compact` again to pack them"
            )
        return line


@dataclass(frozen=True)
class _Input:
    """A video to pack, and where its rows are: its own files (`name` in each of
    `tables`), or pack `pack`."""

    video_id: str
    version: int
    status: str
    name: str = ""
    tables: tuple[str, ...] = ()
    pack: str | None = None

    @classmethod
    def of(cls, commit: Commit) -> _Input:
        claim = commit.claim
        if commit.pack is not None:
            return cls(claim.video_id, claim.version, claim.status, pack=commit.pack)
        (name,) = set(claim.files.values())  # one name in every table of a commit
        return cls(claim.video_id, claim.version, claim.status, name, tuple(claim.files))


@dataclass(frozen=True)
class _PackInfo:
    """A listed pack without its member list: what deciding to keep or repack it needs."""

    pack_id: str
    files: Mapping[str, str]
    members: int
    full: bool

    @classmethod
    def of(cls, pack: Pack) -> _PackInfo:
        return cls(pack.pack_id, dict(pack.files), len(pack.members), pack.full)


@dataclass
class _StagedPack:
    """One pack's staged files being written, one per table, side by side; row groups of
    `ROW_GROUP_ROWS` rows."""

    fs: Any
    root: str
    name: str
    writers: dict[str, tuple[Any, pq.ParquetWriter]] = field(default_factory=dict)
    buffers: dict[str, list[pa.Table]] = field(default_factory=lambda: defaultdict(list))
    buffered: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    nbytes: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def path(self, table: str) -> str:
        return join(self.root, staged_folder(table), self.name)

    def add(self, table: str, rows: pa.Table) -> None:
        if rows.num_rows == 0:
            return
        self.buffers[table].append(_conform(rows, table))
        self.buffered[table] += rows.num_rows
        self.nbytes[table] += rows.nbytes
        if self.buffered[table] >= TABLE_ROW_GROUP_ROWS.get(table, ROW_GROUP_ROWS):
            self._flush(table)

    def close(self, table: str) -> bool:
        """Finish `table`'s file; False when the pack has no rows for it (no file)."""
        self._flush(table)
        if table not in self.writers:
            return False
        file, writer = self.writers.pop(table)
        writer.close()
        file.close()
        return True

    def discard(self) -> None:
        """Stop writing and delete what was staged."""
        for table in list(self.writers):
            file, writer = self.writers.pop(table)
            with contextlib.suppress(Exception):
                writer.close()
                file.close()
        for table in TABLE_NAMES:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(self.path(table))

    def _flush(self, table: str) -> None:
        if not self.buffers[table]:
            return
        if table not in self.writers:
            self.fs.makedirs(join(self.root, staged_folder(table)), exist_ok=True)
            file = self.fs.open(self.path(table), "wb")
            writer = pq.ParquetWriter(file, SCHEMAS[table], compression="zstd")
            self.writers[table] = (file, writer)
        rows = pa.concat_tables(self.buffers.pop(table)).combine_chunks()  # one chunk a column
        group_rows = TABLE_ROW_GROUP_ROWS.get(table, ROW_GROUP_ROWS)
        self.writers[table][1].write_table(rows, row_group_size=group_rows)
        self.buffered[table] = 0


class TableCompactor:
    """Compacts run `run_id`'s committed videos under `output_uri` (see the module
    docstring)."""

    def __init__(
        self,
        output_uri: str,
        run_id: str,
        *,
        options: CompactionOptions | None = None,
        **storage_options: Any,
    ):
        self.options = options or CompactionOptions()
        if self.options.videos_per_file < 1:
            raise ValueError(f"videos_per_file must be positive, got {options}")
        self.output_uri = output_uri
        self.run_id = run_id
        self.job_id = new_attempt()  # in the claims of the packs this compaction writes
        self.fs, self.root = open_fs(output_uri, **storage_options)
        self.committer = TableCommitter(
            output_uri, run_id, orphan_age_s=self.options.orphan_age_s, **storage_options
        )

    def compact(self) -> CompactionSummary:
        started = time.perf_counter()
        before = self.count_files()
        deleted = self.recover()
        # The packs before the commits: a pack written after this listing is not one
        # this compaction may retire (its members were not seen in it).
        listed = {
            pack.pack_id: _PackInfo.of(pack)
            for pack in read_packs(self.fs, self.root, list_packs(self.fs, self.root, self.run_id))
        }
        own: list[_Input] = []
        in_packs: dict[str, list[_Input]] = defaultdict(list)
        videos = 0
        for commit in iter_commits(self.fs, self.root, run_id=self.run_id):
            videos += 1
            if commit.pack is not None:
                in_packs[commit.pack].append(_Input.of(commit))
            elif _published(self.root, commit):
                own.append(_Input.of(commit))
            # else its writer is publishing it (a dead one's was published by `recover`)
        repacked = self._to_repack(listed, in_packs, bool(own))
        inputs = sorted(
            [*own, *(member for pack in repacked for member in in_packs[pack.pack_id])],
            key=lambda video: video.video_id,
        )
        packed, packs, abandoned, unfinished = self._write_packs(inputs, listed)
        for pack in repacked:
            if pack.pack_id not in unfinished:
                deleted += self._retire(pack)
        return CompactionSummary(
            run_id=self.run_id,
            videos=videos,
            packed=packed,
            packs=packs,
            deleted=deleted,
            abandoned=abandoned,
            files_before=before,
            files_after=self.count_files(),
            seconds=time.perf_counter() - started,
        )

    def recover(self, now: float | None = None) -> int:
        """Finish or clean up after compactions of the run that died, then the run's
        commits (`TableCommitter.recover`). Returns files deleted. Safe while jobs and
        other compactions run."""
        now = time.time() if now is None else now
        # The files first, then the claims: a pack file staged after this listing is a
        # live compaction's, or belongs to a claim read below.
        pack_files = {
            folder: [
                name
                for name in iter_names(self.fs, join(self.root, folder))
                if self._is_pack_file(name)
            ]
            for folder in DATA_FOLDERS
        }
        deleted = 0
        claimed = set()
        for pack in read_packs(self.fs, self.root, list_packs(self.fs, self.root, self.run_id)):
            paths = resolve_files(self.fs, self.root, pack.files)
            if paths is None:
                deleted += self._retire(_PackInfo.of(pack))  # a file is gone: dead
                continue
            claimed.add(pack.pack_id)
            if any(path != join(self.root, t, pack.files[t]) for t, path in paths.items()):
                self._publish(pack)  # its compaction died after claiming it
        for folder, names in pack_files.items():
            for name in names:
                parsed = parse_pack_file_name(name)
                if parsed[1] not in claimed and self._is_old(join(self.root, folder, name), now):
                    deleted += self._delete_file(join(self.root, folder, name))
        return deleted + self.committer.recover(now)

    def count_files(self) -> dict[str, int]:
        """The run's files in each table folder now (its own and its packs')."""
        counts = {}
        for table in TABLE_NAMES:
            names = iter_names(self.fs, join(self.root, table))
            counts[table] = sum(
                self._is_pack_file(name) or (parse_data_name(name) or ("",))[0] == self.run_id
                for name in names
            )
        return counts

    def _is_pack_file(self, name: str) -> bool:
        return (parse_pack_file_name(name) or ("",))[0] == self.run_id

    def _to_repack(
        self, listed: Mapping[str, _PackInfo], in_packs: Mapping[str, list[_Input]], own: bool
    ) -> list[_PackInfo]:
        """The listed packs to rewrite: stale ones (a member not current, none current
        retires them) and small ones, unless a lone small pack is all there is to pack."""
        stale, small = [], []
        half = max(1, self.options.videos_per_file // 2)
        for pack in listed.values():
            current = len(in_packs.get(pack.pack_id, ()))
            if current < pack.members:
                stale.append(pack)
            elif not pack.full and current < half:
                small.append(pack)
        if not own and not stale and len(small) <= 1:
            small = []  # rewriting one small pack alone gains nothing
        return [*stale, *small]

    def _write_packs(
        self, inputs: Sequence[_Input], listed: Mapping[str, _PackInfo]
    ) -> tuple[int, int, int, set[str]]:
        """Pack `inputs` in order. Returns (videos packed, packs written, groups
        abandoned, ids of the packs with a member in an abandoned group)."""
        packed = packs = abandoned = 0
        unfinished: set[str] = set()
        carried: list[_Input] = []
        start = 0
        while carried or start < len(inputs):
            take = self.options.videos_per_file - len(carried)
            group = [*carried, *inputs[start : start + take]]
            start += take
            done, carried = self._write_pack(group, listed)
            if done:
                packed, packs = packed + len(done), packs + 1
            else:
                abandoned += 1
                unfinished.update(video.pack for video in group if video.pack is not None)
                carried = []
        return packed, packs, abandoned, unfinished

    def _write_pack(
        self, group: Sequence[_Input], listed: Mapping[str, _PackInfo]
    ) -> tuple[list[_Input], list[_Input]]:
        """Write one pack of `group`'s videos (stage, claim, publish, delete what it
        replaces). Returns (videos packed: none when abandoned, videos left over when the
        pack filled up early)."""
        pack_id = new_pack_id()
        staged = _StagedPack(self.fs, self.root, pack_file_name(self.run_id, pack_id))
        done: list[_Input] = []
        left: list[_Input] = []
        try:
            sources = _by_source(group)
            for first in range(0, len(sources), _FETCH_SOURCES):
                chunk = sources[first : first + _FETCH_SOURCES]
                fetched = self._fetch_own(chunk) if not left else {}
                for members in chunk:
                    if (
                        left
                        or max(staged.nbytes.values(), default=0) >= self.options.max_pack_bytes
                    ):
                        left += members
                        continue
                    for table in PUBLISH_ORDER:
                        for rows in self._rows(table, members, listed, fetched):
                            staged.add(table, rows)
                    done += members
            files = {}
            for table in PUBLISH_ORDER:
                if self._close_staged(staged, table):
                    files[table] = staged.name
        except _SourceChanged:
            staged.discard()
            return [], []
        pack = Pack(
            self.run_id,
            pack_id,
            self.job_id,
            files,
            tuple(PackMember(video.video_id, video.version, video.status) for video in done),
            full=bool(left),
            created_at=now_iso(),
        )
        if not self._claim(pack):
            staged.discard()  # a pack id is never reused: not reached
            return [], []
        if not self._publish(pack):
            self._retire(_PackInfo.of(pack))  # a file vanished (an orphan past its age)
            return [], []
        self._delete_files(
            [
                join(self.root, t, video.name)
                for video in done
                if video.pack is None
                for t in video.tables
            ]
        )
        return done, left

    def _rows(
        self,
        table: str,
        members: Sequence[_Input],
        listed: Mapping[str, _PackInfo],
        fetched: Mapping[str, bytes],
    ) -> Iterator[pa.Table]:
        """`table`'s rows of `members` (videos of one source); a video's own files from
        `fetched`."""
        source = members[0]
        if source.pack is None:
            if table in source.tables:
                data = fetched[join(self.root, table, source.name)]
                # ParquetFile, not read_table: a fifth of the cost per small file.
                yield pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)
            return
        name = listed[source.pack].files.get(table)
        if name is None:
            return
        wanted = pc.field("video_id").isin([video.video_id for video in members])
        for path in self._places(table, name):
            try:
                dataset = table_dataset(self.fs, [path], table)
                for batch in dataset.to_batches(filter=wanted):
                    yield pa.Table.from_batches([batch])
                return
            except FileNotFoundError:
                continue  # moved (published) or deleted meanwhile
        raise _SourceChanged(f"{table}/{name}")

    def _fetch_own(self, sources: Sequence[Sequence[_Input]]) -> dict[str, bytes]:
        """The own files of the videos among `sources`, read whole in one call (an object
        store fetches them concurrently). Only published commits are packed, so a file
        that is not there was replaced meanwhile."""
        paths = [
            join(self.root, table, members[0].name)
            for members in sources
            if members[0].pack is None
            for table in members[0].tables
        ]
        if not paths:
            return {}
        found = self.fs.cat(paths, on_error="return")
        if not isinstance(found, dict):  # `cat` of a single path returns its bytes
            found = {paths[0]: found}
        for path in paths:
            if not isinstance(found.get(path), bytes):
                raise _SourceChanged(path)
        return found

    def _places(self, table: str, name: str) -> tuple[str, str]:
        """Where a file of a commit can be, in the order a move leaves it."""
        return join(self.root, staged_folder(table), name), join(self.root, table, name)

    def _close_staged(self, staged: _StagedPack, table: str) -> bool:
        return staged.close(table)

    def _claim(self, pack: Pack) -> bool:
        return create_pack_claim(self.fs, self.root, pack)

    def _publish(self, pack: Pack) -> bool:
        """Move the pack's staged files to their folders, `videos` last; False when one
        is in neither place."""
        for table in PUBLISH_ORDER:
            if table in pack.files and not self._publish_file(table, pack.files[table]):
                return False
        return True

    def _publish_file(self, table: str, name: str) -> bool:
        staged, published = self._places(table, name)
        self.fs.makedirs(join(self.root, table), exist_ok=True)
        self.fs.invalidate_cache(staged)
        try:
            self.fs.mv(staged, published)
            return True
        except FileNotFoundError:  # published meanwhile by a recovery, or gone
            self.fs.invalidate_cache(published)
            return self.fs.exists(published)

    def _retire(self, pack: _PackInfo) -> int:
        """Delete a pack's files, then its claim (a claim without its files is no commit,
        files without a claim would be orphans that a reader of the folder sees)."""
        places = [path for t, name in pack.files.items() for path in self._places(t, name)]
        deleted = self._delete_files(places)
        self._delete_claim(pack)
        return deleted

    def _delete_file(self, path: str) -> int:
        return self._delete_files([path])

    def _delete_files(self, paths: Sequence[str]) -> int:
        """Delete `paths` in one call (an object store deletes them in bulk and ignores
        the missing ones); returns how many were deleted, as far as the store tells."""
        if not paths:
            return 0
        try:
            self.fs.rm(list(paths))
            return len(paths)
        except FileNotFoundError:  # a local disk: one is gone, or is elsewhere
            deleted = 0
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm(path)
                    deleted += 1
            return deleted

    def _delete_claim(self, pack: _PackInfo) -> None:
        delete_pack_claim(self.fs, self.root, self.run_id, pack.pack_id)

    def _is_old(self, path: str, now: float) -> bool:
        try:
            info = self.fs.info(path)
        except FileNotFoundError:
            return False
        modified = modified_s(info)
        return modified is not None and now - modified >= self.options.orphan_age_s


def compact_tables(
    output_uri: str,
    *,
    run_ids: Sequence[str] | None = None,
    options: CompactionOptions | None = None,
    **storage_options: Any,
) -> list[CompactionSummary]:
    """Compact runs `run_ids` (default: every run) of the tables under `output_uri`."""
    runs = list(run_ids) if run_ids else output_runs(output_uri, **storage_options)
    return [
        TableCompactor(output_uri, run_id, options=options, **storage_options).compact()
        for run_id in runs
    ]


def output_runs(output_uri: str, **storage_options: Any) -> list[str]:
    """The runs with claims or packs under `output_uri`; TablesNotFoundError when none."""
    fs, root = open_fs(output_uri, **storage_options)
    runs = set()
    for folder, parse in ((COMMITS, parse_claim_name), (PACKS, parse_pack_claim_name)):
        for name in iter_names(fs, join(root, folder)):
            parsed = parse(name)
            if parsed is not None:
                runs.add(parsed[0])
    if not runs:
        raise TablesNotFoundError(f"no committed video under {output_uri}")
    return sorted(runs)


def _published(root: str, commit: Commit) -> bool:
    return all(path == join(root, t, commit.claim.files[t]) for t, path in commit.paths.items())


def _by_source(group: Sequence[_Input]) -> list[list[_Input]]:
    """`group`'s videos by where their rows are (their own files, or one pack), in the
    order each source first appears."""
    sources: dict[str, list[_Input]] = {}
    for video in group:
        sources.setdefault(video.pack or f"own:{video.name}", []).append(video)
    return list(sources.values())


def _conform(rows: pa.Table, table: str) -> pa.Table:
    """`rows` in the table's schema: a column that files written before it lack is
    nulls, and the fields have the schema's nullability."""
    schema = SCHEMAS[table]
    if rows.schema.equals(schema):
        return rows
    for column in schema:
        if column.name not in rows.column_names:
            rows = rows.append_column(column.name, pa.nulls(rows.num_rows, column.type))
    return rows.select(schema.names).cast(schema)
