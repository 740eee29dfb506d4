"""Re-association: the `ok` videos of an earlier run with frame queries -> their rows under
another temporal head, without the detector (`vis process --from-frame-queries`).

`list_stored_videos` streams the source run's committed videos that have `frame_queries`
rows (the commit log says which files hold them, `vis_core.tables.view`); each becomes a
`StoredVideo`. `process_stored_video` reads one back as a `DetectorSource`
(`vis_core.corpus.frame_queries.StoredFrames`), runs the segmenter's own code on it and
makes the usual rows: the `videos` row keeps the source's uri, fps and size; a video whose
rows cannot be read (another detector, frames missing) gets a `failed` row.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow.compute as pc

from vis_core.corpus.frame_queries import FrameQueriesError, StoredFrames, StoredVideo
from vis_core.corpus.process import ProcessOptions
from vis_core.inference.frames import FrameSourceError
from vis_core.storage import join, open_fs
from vis_core.tables.claims import parse_data_name, staged_folder
from vis_core.tables.names import iter_names
from vis_core.tables.packs import parse_pack_file_name
from vis_core.tables.read import table_dataset
from vis_core.tables.rows import VideoRecord, VideoRows, failed_rows, ok_rows
from vis_core.tables.schema import FRAME_QUERIES, STATUS_OK, VIDEOS
from vis_core.tables.view import committed, iter_commits


class NoFrameQueriesError(FileNotFoundError):
    """The source output holds no frame queries (of the run asked for)."""


def frame_query_runs(source_uri: str, **storage_options: Any) -> set[str]:
    """The runs with files in the source's `frame_queries` table (published or staged)."""
    fs, root = open_fs(source_uri, **storage_options)
    runs = set()
    for folder in (FRAME_QUERIES, staged_folder(FRAME_QUERIES)):
        for name in iter_names(fs, join(root, folder)):
            parsed = parse_data_name(name) or parse_pack_file_name(name)
            if parsed is not None:
                runs.add(parsed[0])
    return runs


def source_run(source_uri: str, run_id: str | None = None, **storage_options: Any) -> str:
    """The run whose frame queries to read: `run_id`, or the only run that wrote some;
    a `NoFrameQueriesError` (or ValueError when several runs did) otherwise."""
    runs = frame_query_runs(source_uri, **storage_options)
    hint = "write them with `vis process --frame-queries`"
    if run_id is not None:
        if run_id not in runs:
            raise NoFrameQueriesError(
                f"run {run_id!r} has no frame_queries table under {source_uri}: {hint}"
            )
        return run_id
    if not runs:
        raise NoFrameQueriesError(f"no frame_queries table under {source_uri}: {hint}")
    if len(runs) > 1:
        raise ValueError(
            f"several runs wrote frame queries under {source_uri} ({', '.join(sorted(runs))}): "
            "pick one with --source-run"
        )
    return next(iter(runs))


def list_stored_videos(
    source_uri: str, run_id: str, **storage_options: Any
) -> Iterator[StoredVideo]:
    """The `ok` videos of run `run_id` under `source_uri` that have frame queries, streamed."""
    fs, root = open_fs(source_uri, **storage_options)
    for commit in iter_commits(fs, root, run_id=run_id):
        if commit.status == STATUS_OK and FRAME_QUERIES in commit.paths:
            yield StoredVideo(commit.video_id, source_uri, run_id, dict(commit.paths))


def process_stored_video(
    video: StoredVideo, segmenter: Any, options: ProcessOptions, class_names: Sequence[str]
) -> VideoRows:
    """The rows of `video` under `segmenter` (a `SourceSegmenter` holding `model` and
    `device`), `failed` with a clear error when its frame queries cannot be read."""
    started = time.perf_counter()
    record = options.record(video.video_id, video.uri)
    try:
        fs, _ = open_fs(video.source_uri)
        try:
            return _rows(fs, video, segmenter, options, class_names, record, started)
        except FileNotFoundError:  # compacted or replaced since it was listed: look again
            return _rows(fs, _resolved(fs, video), segmenter, options, class_names, record, started)
    except (FrameSourceError, FrameQueriesError) as error:
        message = f"{type(error).__name__}: {error}"
    except Exception as error:  # a failed row, never a crashed job
        message = f"{type(error).__name__} while re-associating: {error}"
    record = dataclasses.replace(record, total_s=time.perf_counter() - started)
    return failed_rows(record, message)


def _rows(
    fs: Any,
    video: StoredVideo,
    segmenter: Any,
    options: ProcessOptions,
    class_names: Sequence[str],
    record: VideoRecord,
    started: float,
) -> VideoRows:
    source = _source_row(fs, video)
    record = dataclasses.replace(
        record, uri=source["uri"], fps=source["fps"], width=source["width"], height=source["height"]
    )
    stored = StoredFrames(
        fs,
        video.paths[FRAME_QUERIES],
        video.video_id,
        segmenter.model.detector,
        segmenter.device,
        mask_logits=getattr(segmenter, "reads_mask_logits", True),
    )
    summary = stored.summary()
    if options.detector and summary.detector != options.detector:
        raise FrameQueriesError(
            f"the frame queries were made by detector {summary.detector}, the model's is "
            f"{options.detector}: re-associate with a model on the same detector"
        )
    read_s = time.perf_counter() - started
    instances = segmenter.segment_source(stored)
    total_s = time.perf_counter() - started
    record = dataclasses.replace(
        record,
        num_frames=instances.num_frames,
        decode_s=read_s,
        inference_s=total_s - read_s,
        total_s=total_s,
    )
    return ok_rows(record, instances, class_names, summary.timestamps)


def _source_row(fs: Any, video: StoredVideo) -> dict[str, Any]:
    """The source run's `videos` row of the video."""
    dataset = table_dataset(fs, [video.paths[VIDEOS]], VIDEOS)
    found = dataset.to_table(
        columns=["uri", "fps", "width", "height"], filter=pc.field("video_id") == video.video_id
    )
    if found.num_rows == 0:
        raise FrameQueriesError(f"no videos row of {video.video_id!r} in {video.paths[VIDEOS]}")
    return found.slice(0, 1).to_pylist()[0]


def _resolved(fs: Any, video: StoredVideo) -> StoredVideo:
    """`video` with the files that hold its rows now."""
    _, root = open_fs(video.source_uri)
    for commit in committed(fs, root, run_id=video.run_id, video_ids=[video.video_id]):
        if FRAME_QUERIES in commit.paths:
            return dataclasses.replace(video, paths=dict(commit.paths))
    raise FrameQueriesError(f"the frame queries of {video.video_id!r} are gone from the source")


# Methods that cannot run on stored frame queries, and why.
NOT_FROM_FRAME_QUERIES = {
    "l2g": "l2g propagates queries by running the frame decoder again on the pixel "
    "decoder's three multi-scale maps (strides 32, 16 and 8 of the shipped model), which the "
    "frame_queries table does not hold (it keeps the last layer's queries and the stride-4 "
    "map): run `vis process --method l2g` on the videos instead",
}


def check_method(method: str) -> None:
    """A ValueError when `method` cannot re-associate stored frame queries."""
    if method in NOT_FROM_FRAME_QUERIES:
        raise ValueError(
            f"--from-frame-queries cannot run --method {method}: {NOT_FROM_FRAME_QUERIES[method]}"
        )
