"""Reading the output tables back: committed rows only, one run at a time.

The folders are plain Parquet datasets (`pyarrow.dataset.dataset(folder)`, DuckDB's
`read_parquet('folder/*.parquet')`); these helpers add what a raw reader does not know:
which rows belong to committed videos (see `vis_core.tables.commit`) and which run is the
latest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from pyarrow.fs import FSSpecHandler, PyFileSystem

from vis_core.storage import join, open_fs
from vis_core.tables.schema import SCHEMAS, STATUS_FAILED, TABLE_NAMES, VIDEOS


class TablesNotFoundError(FileNotFoundError):
    """The output prefix holds no committed video."""


class VideoRowError(ValueError):
    """A video is not in a run, or failed in it (the message says which, with examples)."""


_NAMES_SHOWN = 5  # video ids or runs quoted when the one asked for is not there


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
    if table not in TABLE_NAMES:
        raise ValueError(f"unknown table {table!r}; the tables are {TABLE_NAMES}")
    fs, root = open_fs(output_uri, **storage_options)
    videos = _dataset(fs, join(root, VIDEOS), VIDEOS)
    if videos is None:
        raise TablesNotFoundError(f"no committed video under {output_uri}")
    keep = None
    if run_id is not None:
        keep = pc.field("run_id") == run_id
    if video_ids is not None:
        chosen = pc.field("video_id").isin(pa.array(list(video_ids), pa.string()))
        keep = chosen if keep is None else keep & chosen
    committed = videos.to_table(filter=keep)
    if table == VIDEOS:
        return committed.select(list(columns)) if columns is not None else committed
    data = _dataset(fs, join(root, table), table)
    if data is None:
        return SCHEMAS[table].empty_table().select(list(columns or SCHEMAS[table].names))
    wanted = list(columns) if columns is not None else SCHEMAS[table].names
    return data.to_table(columns=wanted, filter=_committed_filter(committed))


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


def _committed_filter(videos: pa.Table) -> pc.Expression:
    """Rows of committed videos only: rows of a video without a commit record are from an
    interrupted commit (see `vis_core.tables.commit`)."""
    by_run: dict[str, list[str]] = {}
    for video_id, run in zip(
        videos["video_id"].to_pylist(), videos["run_id"].to_pylist(), strict=True
    ):
        by_run.setdefault(run, []).append(video_id)
    keep = pc.scalar(False)
    for run, video_ids in by_run.items():
        chosen = pc.field("video_id").isin(pa.array(video_ids, pa.string()))
        keep = keep | ((pc.field("run_id") == run) & chosen)
    return keep


def _dataset(fs: Any, folder: str, table: str) -> pads.Dataset | None:
    if not fs.exists(folder):
        return None
    return pads.dataset(
        folder,
        schema=SCHEMAS[table],
        format="parquet",
        filesystem=PyFileSystem(FSSpecHandler(fs)),
    )
