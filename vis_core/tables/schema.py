"""Schemas of the output tables (Parquet, one folder per table under the output).

- `videos`: one row per input video and run, `ok` or `failed` (with its error).
- `tracklets`: one row per video-level instance.
- `tracklet_frames`: one row per instance and frame where its mask is non-empty; the mask
  is COCO compressed RLE (`counts` bytes, with `height` x `width`), bbox is (x, y, w, h).
- `frame_queries` (optional, `vis process --frame-queries`): one row per frame of an `ok`
  video, the detector outputs a temporal head reads, so that another head can re-associate
  the video without the detector (`vis_core.corpus.frame_queries`): the last decoder
  layer's queries `[Q, C]`, their class logits `[Q, K+1]` and the stride-4 pixel-decoder
  map `[C_m, h, w]` (`clip_mask_features`), as raw little-endian `dtype` bytes (float16
  by default), with their shapes and the input geometry (original, resized and padded
  sizes) that takes masks back to the original frame size.

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
FRAME_QUERIES = "frame_queries"
TABLE_NAMES = (VIDEOS, TRACKLETS, TRACKLET_FRAMES, FRAME_QUERIES)

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

FRAME_QUERIES_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("frame_index", pa.int32(), nullable=False),
        pa.field("timestamp_s", pa.float64(), nullable=False),
        pa.field("dtype", pa.string(), nullable=False),  # of the three tensors: float16, float32
        pa.field("queries", pa.large_binary(), nullable=False),  # [num_queries, query_dim]
        pa.field("class_logits", pa.large_binary(), nullable=False),  # [num_queries, num_logits]
        pa.field("mask_features", pa.large_binary(), nullable=False),  # [mask_channels, h, w]
        pa.field("num_queries", pa.int32(), nullable=False),
        pa.field("query_dim", pa.int32(), nullable=False),
        pa.field("num_logits", pa.int32(), nullable=False),  # classes + 1 (no-object last)
        pa.field("mask_channels", pa.int32(), nullable=False),
        pa.field("mask_height", pa.int32(), nullable=False),  # padded_height / 4
        pa.field("mask_width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),  # the original frame
        pa.field("width", pa.int32(), nullable=False),
        pa.field("resized_height", pa.int32(), nullable=False),  # what the network saw
        pa.field("resized_width", pa.int32(), nullable=False),
        pa.field("padded_height", pa.int32(), nullable=False),  # the resized size, padded
        pa.field("padded_width", pa.int32(), nullable=False),
        pa.field("detector", pa.string(), nullable=False),  # digest of the detector's weights
        pa.field("run_id", pa.string(), nullable=False),
    ]
)
# Rows per Parquet row group, where not the writer's default: a reader of `frame_queries`
# (about 0.6 MB a row for the shipped model at 240p) holds one group at a time.
ROW_GROUP_ROWS: dict[str, int] = {FRAME_QUERIES: 16}

SCHEMAS: dict[str, pa.Schema] = {
    VIDEOS: VIDEOS_SCHEMA,
    TRACKLETS: TRACKLETS_SCHEMA,
    TRACKLET_FRAMES: TRACKLET_FRAMES_SCHEMA,
    FRAME_QUERIES: FRAME_QUERIES_SCHEMA,
}
