"""Exactly-once commits of one video's rows to the three table folders.

Each video of a run owns one Parquet file per table, named from the run and a hash of
its `video_id` (`<run_id>-<key>.parquet`), so the name never depends on the path's
characters and a video id cannot point outside the output. A commit writes the
`tracklets` and `tracklet_frames` files, then the `videos` file: the `videos` file is the
commit record. Each file is written under a hidden name (`.tmp-…`, which pyarrow and
DuckDB readers skip) and then renamed, so no reader ever sees half a file.

- A rerun skips videos whose `videos` file exists for the run (`committed`).
- A commit of the same video replaces its files: rows are never duplicated.
- A crash between the files of one commit leaves instance files without a `videos` file;
  `recover` deletes them when the run starts again, and readers (`vis_core.tables.read`)
  only return rows of committed videos.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vis_core.storage import join, open_fs
from vis_core.tables.rows import VideoRows
from vis_core.tables.schema import TABLE_NAMES, TRACKLET_FRAMES, TRACKLETS, VIDEOS

PARQUET_SUFFIX = ".parquet"
_INSTANCE_TABLES = (TRACKLETS, TRACKLET_FRAMES)  # written before the commit record


def video_key(video_id: str) -> str:
    """A file-name-safe key of a video id (20 hex digits of its SHA-256)."""
    return hashlib.sha256(video_id.encode("utf-8")).hexdigest()[:20]


@dataclass(frozen=True)
class CommitStatus:
    """A committed video of the run: its id and status (`ok` or `failed`)."""

    video_id: str
    status: str


class TableCommitter:
    """Commits videos of one run (`run_id`) to the tables under `output_uri`."""

    def __init__(self, output_uri: str, run_id: str, **storage_options: Any):
        if not run_id or not run_id.replace("-", "").isalnum():
            raise ValueError(f"run_id must be alphanumeric (dashes allowed), got {run_id!r}")
        self.output_uri = output_uri
        self.run_id = run_id
        self.fs, self.root = open_fs(output_uri, **storage_options)

    def file_path(self, table: str, video_id: str) -> str:
        return join(self.root, table, f"{self.run_id}-{video_key(video_id)}{PARQUET_SUFFIX}")

    def commit(self, rows: VideoRows) -> None:
        """Write one video's rows; the `videos` row last (see the module docstring)."""
        video_id = rows.tables[VIDEOS]["video_id"][0].as_py()
        for table in (*_INSTANCE_TABLES, VIDEOS):
            path = self.file_path(table, video_id)
            if table != VIDEOS and rows.tables[table].num_rows == 0:
                # A failed video, or one without instances, may replace an earlier commit.
                if self.fs.exists(path):
                    self.fs.rm(path)
                continue
            self._write_atomically(path, rows.tables[table])

    def committed(self) -> dict[str, CommitStatus]:
        """The run's committed videos, by video id."""
        paths = self._run_files(VIDEOS)
        if not paths:
            return {}
        table = _read_files(self.fs, paths, columns=["video_id", "status"])
        return {
            video_id: CommitStatus(video_id, status)
            for video_id, status in zip(
                table["video_id"].to_pylist(), table["status"].to_pylist(), strict=True
            )
        }

    def recover(self) -> int:
        """Delete the run's instance files (and stale temporaries) that have no commit
        record: what a crash in the middle of a commit leaves. Returns files deleted."""
        committed = {path.rsplit("/", 1)[-1] for path in self._run_files(VIDEOS)}
        deleted = 0
        for table in TABLE_NAMES:
            folder = join(self.root, table)
            if not self.fs.exists(folder):
                continue
            for path in self.fs.ls(folder, detail=False):
                name = path.rsplit("/", 1)[-1]
                stale_temporary = name.startswith(f".tmp-{self.run_id}-")
                orphan = (
                    table != VIDEOS and name.startswith(f"{self.run_id}-") and name not in committed
                )
                if stale_temporary or orphan:
                    self.fs.rm(path)
                    deleted += 1
        return deleted

    def _run_files(self, table: str) -> list[str]:
        folder = join(self.root, table)
        if not self.fs.exists(folder):
            return []
        return sorted(
            path
            for path in self.fs.ls(folder, detail=False)
            if path.rsplit("/", 1)[-1].startswith(f"{self.run_id}-")
            and path.endswith(PARQUET_SUFFIX)
        )

    def _write_atomically(self, path: str, table: pa.Table) -> None:
        folder, name = path.rsplit("/", 1)
        temporary = join(folder, f".tmp-{name}-{uuid.uuid4().hex[:8]}")
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        self.fs.makedirs(folder, exist_ok=True)
        self.fs.pipe_file(temporary, buffer.getvalue())
        self.fs.mv(temporary, path)


def _read_files(fs: Any, paths: list[str], columns: list[str]) -> pa.Table:
    tables = []
    for path in paths:
        with fs.open(path, "rb") as file:
            tables.append(pq.read_table(file, columns=columns))
    return pa.concat_tables(tables)
