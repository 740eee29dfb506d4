"""Schemas of the three output tables (Parquet, one folder per table under the output).

- `videos`: one row per input video and run, `ok` or `failed` (with its error).
- `tracklets`: one row per video-level instance.
- `tracklet_frames`: one row per instance and frame where its mask is non-empty; the mask
  is COCO compressed RLE (`counts` bytes, with `height` x `width`), bbox is (x, y, w, h).

`video_id` (the video's POSIX path relative to the input root) and `run_id` (the job's
identity: model and inference options, see `workflows.corpus_job`) are in every table.
Category ids are the model's class index + 1 (the YouTube-VIS convention), names its
class names.
"""

from __future__ import annotations

import pyarrow as pa

VIDEOS = "videos"
TRACKLETS = "tracklets"
TRACKLET_FRAMES = "tracklet_frames"
TABLE_NAMES = (VIDEOS, TRACKLETS, TRACKLET_FRAMES)

STATUS_OK = "ok"
STATUS_FAILED = "failed"

VIDEOS_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("num_frames", pa.int32()),
        pa.field("fps", pa.float64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("num_tracklets", pa.int32()),
        pa.field("model", pa.string(), nullable=False),
        pa.field("method", pa.string()),  # null in tables written before it: "vita"
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("decode_s", pa.float64()),
        pa.field("inference_s", pa.float64()),
        pa.field("total_s", pa.float64()),
        pa.field("processed_at", pa.timestamp("ms", tz="UTC"), nullable=False),
    ]
)

TRACKLETS_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("track_id", pa.int32(), nullable=False),
        pa.field("category_id", pa.int32(), nullable=False),
        pa.field("category_name", pa.string(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("first_frame", pa.int32(), nullable=False),
        pa.field("last_frame", pa.int32(), nullable=False),
        pa.field("num_frames", pa.int32(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ]
)

TRACKLET_FRAMES_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("track_id", pa.int32(), nullable=False),
        pa.field("frame_index", pa.int32(), nullable=False),
        pa.field("timestamp_s", pa.float64(), nullable=False),
        pa.field("mask", pa.binary(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("bbox", pa.list_(pa.float32(), 4), nullable=False),
        pa.field("area", pa.int64(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    VIDEOS: VIDEOS_SCHEMA,
    TRACKLETS: TRACKLETS_SCHEMA,
    TRACKLET_FRAMES: TRACKLET_FRAMES_SCHEMA,
}
