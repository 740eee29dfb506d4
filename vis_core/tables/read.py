"""Reading the output tables back: committed rows only, one run at a time.

The folders are plain Parquet datasets (`pyarrow.dataset.dataset(folder)`, DuckDB's
`read_parquet('folder/*.parquet')`); these helpers add what a raw reader does not know:
which files hold committed videos (the commit log, see `vis_core.tables.view`), which
run is the latest, and a view that stays consistent while other runs commit and while a
compaction rewrites the tables: a video's rows come from the files its claim names, or
from the one pack that holds them (`vis_core.tables.packs`), all of them or none, never a
replaced commit's, a stale pack member's or a racing writer's.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from pyarrow.fs import FSSpecHandler, PyFileSystem

from vis_core.storage import join, open_fs
from vis_core.tables.claims import COMMITS
from vis_core.tables.schema import SCHEMAS, STATUS_FAILED, TABLE_NAMES, VIDEOS
from vis_core.tables.view import Commit, committed


class TablesNotFoundError(FileNotFoundError):
    """The output prefix holds no committed video."""


class VideoRowError(ValueError):
    """A video is not in a run, or failed in it (the message says which, with examples)."""


_NAMES_SHOWN = 5  # video ids or runs quoted when the one asked for is not there
# A file renamed or replaced by a commit during a read: list again, after a pause that
# grows, so that a reader racing a writer that replaces commits back to back (seen under
# heavy load: five immediate tries all lost) still gets its turn.
_READ_TRIES = 10
_READ_BACKOFF_S = 0.01  # doubled at each try, at most 1 s


def read_table(
    output_uri: str,
    table: str,
    *,
    run_id: str | None = None,
    video_ids: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
    **storage_options: Any,
) -> pa.Table:
    """The committed rows of `table` (`videos`, `tracklets`, `tracklet_frames` or
    `frame_queries`).

    run_id: one run's rows (None: every run's); video_ids: only these videos.
    """
    view = CommittedTables(output_uri, run_id=run_id, video_ids=video_ids, **storage_options)
    return view.read(table, columns=columns)


class CommittedTables:
    """The committed videos under `output_uri` (of run `run_id`, of `video_ids`), listed
    once, and their rows: many per-video reads cost one listing."""

    def __init__(
        self,
        output_uri: str,
        *,
        run_id: str | None = None,
        video_ids: Sequence[str] | None = None,
        **storage_options: Any,
    ):
        self.output_uri = output_uri
        self.fs, self.root = open_fs(output_uri, **storage_options)
        self._run_id = run_id
        self._video_ids = None if video_ids is None else list(video_ids)
        self.commits: list[Commit] = []
        self.refresh()

    def refresh(self) -> None:
        """List the committed videos again."""
        self.fs.invalidate_cache(self.root)  # an object store's listing may be stale
        if not any(self.fs.exists(join(self.root, name)) for name in (COMMITS, VIDEOS)):
            raise TablesNotFoundError(f"no committed video under {self.output_uri}")
        self.commits = committed(self.fs, self.root, run_id=self._run_id, video_ids=self._video_ids)

    def read(
        self,
        table: str,
        *,
        video_ids: Sequence[str] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        """The rows of `table` of the listed videos (only `video_ids` of them)."""
        if table not in TABLE_NAMES:
            raise ValueError(f"unknown table {table!r}; the tables are {TABLE_NAMES}")
        wanted = list(columns) if columns is not None else SCHEMAS[table].names
        chosen = None if video_ids is None else set(video_ids)
        for attempt in range(_READ_TRIES):
            whole: list[str] = []  # a video's own files
            packed: dict[str, list[str]] = defaultdict(list)  # a pack's file -> its videos
            for commit in self.commits:
                if table in commit.paths and (chosen is None or commit.video_id in chosen):
                    if commit.pack is None:
                        whole.append(commit.paths[table])
                    else:
                        packed[commit.paths[table]].append(commit.video_id)
            try:
                return _read(self.fs, table, wanted, whole, packed)
            except FileNotFoundError:
                # Published (renamed), replaced or packed since the listing: list again.
                if attempt == _READ_TRIES - 1:
                    raise
                time.sleep(min(1.0, _READ_BACKOFF_S * 2**attempt))
                self.refresh()
        raise AssertionError("unreachable")


def latest_run_id(output_uri: str, **storage_options: Any) -> str:
    """The run that committed a video most recently."""
    videos = read_table(output_uri, VIDEOS, columns=["run_id", "processed_at"], **storage_options)
    if videos.num_rows == 0:
        raise TablesNotFoundError(f"no committed video under {output_uri}")
    latest = pc.index(videos["processed_at"], pc.max(videos["processed_at"])).as_py()
    return videos["run_id"][latest].as_py()


def ok_video_row(
    output_uri: str, video_id: str, run_id: str, **storage_options: Any
) -> dict[str, Any]:
    """The `videos` row of `video_id` in run `run_id`, which must be `ok`; otherwise a
    `VideoRowError` naming some of the run's videos (or the runs there are)."""
    found = read_table(output_uri, VIDEOS, run_id=run_id, video_ids=[video_id], **storage_options)
    if found.num_rows == 0:
        known = read_table(
            output_uri, VIDEOS, run_id=run_id, columns=["video_id"], **storage_options
        )
        if known.num_rows == 0:
            runs = read_table(output_uri, VIDEOS, columns=["run_id"], **storage_options)
            raise VideoRowError(
                f"run {run_id!r} has no committed video under {output_uri}; its runs are "
                f"{_some(runs['run_id'].unique().to_pylist())}"
            )
        raise VideoRowError(
            f"video {video_id!r} is not in run {run_id!r} under {output_uri}; its videos "
            f"include {_some(known['video_id'].to_pylist())}"
        )
    row = found.slice(0, 1).to_pylist()[0]
    if row["status"] == STATUS_FAILED:
        raise VideoRowError(f"video {video_id!r} failed in run {run_id!r}: {row['error']}")
    return row


def _some(names: list[str]) -> str:
    """A few of `names`, sorted and quoted, and how many more there are."""
    names = sorted(names)
    listed = ", ".join(repr(name) for name in names[:_NAMES_SHOWN])
    more = len(names) - _NAMES_SHOWN
    return f"{listed} (and {more} more)" if more > 0 else listed


def _read(
    fs: Any, table: str, columns: list[str], whole: list[str], packed: dict[str, list[str]]
) -> pa.Table:
    """The rows of the `whole` files, and of each pack file only its listed videos' (a
    pack may hold stale rows of a video committed again since, or be read for a few
    videos)."""
    parts = [table_dataset(fs, whole, table).to_table(columns=columns)] if whole else []
    for path, video_ids in packed.items():
        mine = pc.field("video_id").isin(video_ids)
        parts.append(table_dataset(fs, [path], table).to_table(columns=columns, filter=mine))
    if not parts:
        return SCHEMAS[table].empty_table().select(columns)
    return pa.concat_tables(parts) if len(parts) > 1 else parts[0]


def table_dataset(fs: Any, paths: list[str], table: str) -> pads.Dataset:
    """The Parquet files `paths` of `table` as one dataset with the table's schema (a
    column that older files lack reads as nulls)."""
    return pads.dataset(
        paths,
        schema=SCHEMAS[table],
        format="parquet",
        filesystem=PyFileSystem(FSSpecHandler(fs)),
    )
