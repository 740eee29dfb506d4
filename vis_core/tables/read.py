"""Reading the output tables back: committed rows only, one run at a time.

The folders are plain Parquet datasets (`pyarrow.dataset.dataset(folder)`, DuckDB's
`read_parquet('folder/*.parquet')`); these helpers add what a raw reader does not know:
which files hold committed videos (the commit log, see `vis_core.tables.claims`), which
run is the latest, and a view that stays consistent while other runs commit: a video's
rows come from the files its claim names, all of them or none, never a replaced commit's
or a racing writer's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from pyarrow.fs import FSSpecHandler, PyFileSystem

from vis_core.storage import join, open_fs
from vis_core.tables.claims import COMMITS, Commit, committed
from vis_core.tables.schema import SCHEMAS, STATUS_FAILED, TABLE_NAMES, VIDEOS


class TablesNotFoundError(FileNotFoundError):
    """The output prefix holds no committed video."""


class VideoRowError(ValueError):
    """A video is not in a run, or failed in it (the message says which, with examples)."""


_NAMES_SHOWN = 5  # video ids or runs quoted when the one asked for is not there
_READ_TRIES = 5  # a file renamed or replaced by a commit during a read: list again


def read_table(
    output_uri: str,
    table: str,
    *,
    run_id: str | None = None,
    video_ids: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
    **storage_options: Any,
) -> pa.Table:
    """The committed rows of `table` (`videos`, `tracklets` or `tracklet_frames`).

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
            paths = [
                commit.paths[table]
                for commit in self.commits
                if table in commit.paths and (chosen is None or commit.video_id in chosen)
            ]
            if not paths:
                return SCHEMAS[table].empty_table().select(wanted)
            try:
                return _dataset(self.fs, paths, table).to_table(columns=wanted)
            except FileNotFoundError:
                # Published (renamed) or replaced since the listing: list again.
                if attempt == _READ_TRIES - 1:
                    raise
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


def _dataset(fs: Any, paths: list[str], table: str) -> pads.Dataset:
    return pads.dataset(
        paths,
        schema=SCHEMAS[table],
        format="parquet",
        filesystem=PyFileSystem(FSSpecHandler(fs)),
    )
