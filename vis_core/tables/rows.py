"""One video's rows of the tables, from its `VideoInstances` (and, optionally, its
`frame_queries` rows) or its error."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from vis_core import masks
from vis_core.inference.instances import VideoInstances
from vis_core.storage import printable
from vis_core.tables.schema import (
    FRAME_QUERIES,
    SCHEMAS,
    STATUS_FAILED,
    STATUS_OK,
    TRACKLET_FRAMES,
    TRACKLETS,
    VIDEOS,
)


@dataclass(frozen=True)
class VideoRecord:
    """What the `videos` row says about one video besides its instances.

    fps: frames per second of the stream (None when unknown); timings in seconds;
    method: the temporal method that made the instances (`vis_core.methods`).
    """

    video_id: str
    uri: str
    model: str
    run_id: str
    num_frames: int | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    decode_s: float | None = None
    inference_s: float | None = None
    total_s: float | None = None
    method: str = "vita"


@dataclass(frozen=True)
class VideoRows:
    """A video's rows, one `pa.Table` per table name (empty tables for a failed video; a
    table missing from `tables` has no rows)."""

    tables: dict[str, pa.Table]

    def table(self, name: str) -> pa.Table:
        """The rows of table `name` (an empty table when it has none)."""
        rows = self.tables.get(name)
        return rows if rows is not None else SCHEMAS[name].empty_table()

    @property
    def status(self) -> str:
        return self.tables[VIDEOS]["status"][0].as_py()

    @property
    def num_tracklets(self) -> int:
        return self.tables[TRACKLETS].num_rows

    @property
    def num_frames(self) -> int:
        return self.tables[VIDEOS]["num_frames"][0].as_py() or 0


def ok_rows(
    record: VideoRecord,
    instances: VideoInstances,
    class_names: Sequence[str],
    timestamps: Sequence[float] | np.ndarray,
    frame_queries: pa.Table | None = None,
) -> VideoRows:
    """The rows of a processed video. Track ids are 0..K-1 in the instances' order;
    instances whose masks are empty in every frame are dropped (no frame would show them).

    timestamps `[T]`: presentation time of each frame in seconds; frame_queries: the
    video's `frame_queries` rows, when the job keeps them.
    """
    if len(timestamps) != instances.num_frames:
        raise ValueError(f"{len(timestamps)} timestamps for {instances.num_frames} frames")
    areas = instances.areas()  # [K, T]
    boxes = instances.boxes().astype(np.float32)  # [K, T, 4]
    tracks: dict[str, list] = {name: [] for name in TRACKLETS_COLUMNS}
    frames: dict[str, list] = {name: [] for name in FRAMES_COLUMNS}
    for index in range(len(instances)):
        shown = np.flatnonzero(areas[index])
        if shown.size == 0:
            continue
        track_id = len(tracks["track_id"])
        label = int(instances.labels[index])
        tracks["track_id"].append(track_id)
        tracks["category_id"].append(label + 1)
        tracks["category_name"].append(
            class_names[label] if label < len(class_names) else f"class_{label}"
        )
        tracks["score"].append(float(instances.scores[index]))
        tracks["first_frame"].append(int(shown[0]))
        tracks["last_frame"].append(int(shown[-1]))
        tracks["num_frames"].append(int(shown.size))
        for frame in shown.tolist():
            frames["track_id"].append(track_id)
            frames["frame_index"].append(frame)
            frames["timestamp_s"].append(float(timestamps[frame]))
            frames["mask"].append(masks.to_bytes(instances.masks[index][frame]))
            frames["bbox"].append(boxes[index, frame])
            frames["area"].append(int(areas[index, frame]))
    count, frame_rows = len(tracks["track_id"]), len(frames["track_id"])
    tracks.update(video_id=[record.video_id] * count, run_id=[record.run_id] * count)
    frames.update(
        video_id=[record.video_id] * frame_rows,
        run_id=[record.run_id] * frame_rows,
        height=[instances.height] * frame_rows,
        width=[instances.width] * frame_rows,
    )
    return VideoRows(
        {
            VIDEOS: _videos_row(record, STATUS_OK, None, count),
            TRACKLETS: pa.Table.from_pydict(tracks, schema=SCHEMAS[TRACKLETS]),
            TRACKLET_FRAMES: pa.Table.from_pydict(frames, schema=SCHEMAS[TRACKLET_FRAMES]),
            FRAME_QUERIES: (
                frame_queries if frame_queries is not None else SCHEMAS[FRAME_QUERIES].empty_table()
            ),
        }
    )


def failed_rows(record: VideoRecord, error: str) -> VideoRows:
    """The rows of a video that could not be processed: its `videos` row with the error."""
    return VideoRows(
        {
            VIDEOS: _videos_row(record, STATUS_FAILED, error, 0),
            TRACKLETS: SCHEMAS[TRACKLETS].empty_table(),
            TRACKLET_FRAMES: SCHEMAS[TRACKLET_FRAMES].empty_table(),
            FRAME_QUERIES: SCHEMAS[FRAME_QUERIES].empty_table(),
        }
    )


TRACKLETS_COLUMNS = (
    "track_id",
    "category_id",
    "category_name",
    "score",
    "first_frame",
    "last_frame",
    "num_frames",
)
FRAMES_COLUMNS = ("track_id", "frame_index", "timestamp_s", "mask", "bbox", "area")


def _videos_row(record: VideoRecord, status: str, error: str | None, tracklets: int) -> pa.Table:
    row = {
        "video_id": record.video_id,
        "uri": printable(record.uri),  # a local file name need not be valid UTF-8
        "status": status,
        "error": None if error is None else printable(error),
        "num_frames": record.num_frames,
        "fps": record.fps,
        "width": record.width,
        "height": record.height,
        "num_tracklets": tracklets,
        "model": record.model,
        "method": record.method,
        "run_id": record.run_id,
        "decode_s": record.decode_s,
        "inference_s": record.inference_s,
        "total_s": record.total_s,
        "processed_at": datetime.datetime.now(datetime.UTC),
    }
    return pa.Table.from_pylist([row], schema=SCHEMAS[VIDEOS])
