"""The output tables of one run as YouTube-VIS results, to evaluate against an annotation file.

Table videos are matched to ground-truth videos by file name: a table `video_id` is a
POSIX path relative to the corpus root (`synth/val/videos/00012.mp4`), a GT video's file
name is the basename of its `video_path` (`00012.mp4`) or, for JPEG-frame videos, the
folder of its frames (`00012`, matched with any extension). A table video matches by its
basename first, then by its basename without extension; a name that matches more than one
video on the other side is an error that lists the names.

Categories map by name to the GT's (by id where the model's classes have no names);
tracklets of categories the GT lacks are dropped and counted. Each exported instance has a
compressed RLE for every GT frame, empty where the table has no `tracklet_frames` row, as
`VideoInstances.to_ytvis_results` writes them. `tracklet_frames` is read one video at a
time, so memory holds the results and one video's rows.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from vis_core import masks
from vis_core.data.ytvis import Category, VideoEntry, YtvisDataset
from vis_core.tables.read import CommittedTables, TablesNotFoundError, latest_run_id
from vis_core.tables.schema import STATUS_OK, TRACKLET_FRAMES, TRACKLETS, VIDEOS

_SHOWN = 5  # names quoted in an error message


class ExportError(ValueError):
    """The tables cannot be exported against this ground truth (the message says why)."""


@dataclass(frozen=True)
class ExportResult:
    """YouTube-VIS result entries of one run and how its videos met the ground truth.

    results: one dict per instance (`video_id`, `score`, `category_id`, `segmentations`),
    ordered by GT video id and track id; matched: GT videos with an `ok` table video;
    unmatched_table_videos: table video ids no GT video is named like;
    gt_videos_without_rows: names of GT videos without an `ok` table video (failed ones
    included); failed_videos: table video ids of the run with status `failed`;
    dropped_tracklets: tracklets of matched videos whose category is not in the GT, whose
    names are dropped_categories.
    """

    results: list[dict[str, Any]]
    matched: int
    unmatched_table_videos: tuple[str, ...]
    gt_videos_without_rows: tuple[str, ...]
    failed_videos: tuple[str, ...]
    dropped_tracklets: int = 0
    dropped_categories: tuple[str, ...] = ()


def export_ytvis_results(
    tables_uri: str, gt_uri: str, *, run_id: str | None = None, **storage_options: Any
) -> ExportResult:
    """The results of run `run_id` (default: the latest) under `tables_uri`, with the video
    and category ids of the annotation file `gt_uri`.

    Raises ExportError on ambiguous video names, or when a table video's frame count or
    frame size differs from its GT video's; TablesNotFoundError when nothing is committed.
    """
    dataset = YtvisDataset.load(gt_uri)
    run_id = run_id or latest_run_id(tables_uri, **storage_options)
    # One listing of the run's commits serves every read below: a consistent view.
    tables = CommittedTables(tables_uri, run_id=run_id, **storage_options)
    videos = tables.read(VIDEOS, columns=["video_id", "status", "num_frames", "height", "width"])
    if videos.num_rows == 0:
        raise TablesNotFoundError(f"no committed video of run {run_id!r} under {tables_uri}")
    rows = videos.to_pylist()
    matches, unmatched = match_videos([row["video_id"] for row in rows], dataset.videos)
    ok = {row["video_id"]: row for row in rows if row["status"] == STATUS_OK}
    failed = tuple(sorted(row["video_id"] for row in rows if row["status"] != STATUS_OK))
    exported = sorted(
        ((gt_video, table_id) for table_id, gt_video in matches.items() if table_id in ok),
        key=lambda pair: pair[0].id,
    )
    _check_frames([(gt_video, ok[table_id]) for gt_video, table_id in exported])

    tracklets = _tracklets_by_video(
        tables.read(
            TRACKLETS,
            video_ids=[table_id for _, table_id in exported],
            columns=["video_id", "track_id", "category_id", "category_name", "score"],
        )
    )
    categories = CategoryMap(dataset.categories)
    results: list[dict[str, Any]] = []
    dropped = 0
    dropped_names: set[str] = set()
    for gt_video, table_id in exported:
        tracks = []
        for track in tracklets.get(table_id, ()):
            category_id = categories.gt_id(track["category_id"], track["category_name"])
            if category_id is None:
                dropped += 1
                dropped_names.add(track["category_name"])
            else:
                tracks.append((track, category_id))
        if tracks:
            results += _video_results(tables, gt_video, table_id, tracks)
    covered = {gt_video.id for gt_video, _ in exported}
    return ExportResult(
        results=results,
        matched=len(exported),
        unmatched_table_videos=tuple(sorted(unmatched)),
        gt_videos_without_rows=tuple(
            _gt_file_name(video) for video in dataset.videos if video.id not in covered
        ),
        failed_videos=failed,
        dropped_tracklets=dropped,
        dropped_categories=tuple(sorted(dropped_names)),
    )


def match_videos(
    table_video_ids: Iterable[str], gt_videos: Sequence[VideoEntry]
) -> tuple[dict[str, VideoEntry], list[str]]:
    """Table video id -> its GT video, and the table video ids that match none.

    Raises ExportError when a name matches several GT videos, or several table videos
    match one GT video.
    """
    by_name: dict[str, list[VideoEntry]] = defaultdict(list)
    for video in gt_videos:
        for name in _gt_names(video):
            by_name[name].append(video)
    matches: dict[str, VideoEntry] = {}
    unmatched: list[str] = []
    ambiguous: list[str] = []
    for table_id in table_video_ids:
        basename = posixpath.basename(table_id)
        candidates = by_name.get(basename) or by_name.get(posixpath.splitext(basename)[0], [])
        if len(candidates) > 1:
            ambiguous.append(
                f"{table_id} (GT videos {', '.join(_gt_file_name(v) for v in candidates)})"
            )
        elif candidates:
            matches[table_id] = candidates[0]
        else:
            unmatched.append(table_id)
    by_gt: dict[int, list[str]] = defaultdict(list)
    for table_id, video in matches.items():
        by_gt[video.id].append(table_id)
    for video_id, table_ids in by_gt.items():
        if len(table_ids) > 1:
            name = _gt_file_name(next(v for v in gt_videos if v.id == video_id))
            ambiguous.append(f"{name} (table videos {', '.join(sorted(table_ids))})")
    if ambiguous:
        raise ExportError(
            f"{len(ambiguous)} ambiguous video names, matching by file name needs them "
            f"unique: {_listed(ambiguous)}"
        )
    return matches, unmatched


class CategoryMap:
    """Table (category_id, category_name) -> GT category id, or None when the GT lacks it.

    By name; by id where the name is absent: empty, or the `class_<label>` that
    `vis_core.tables.rows` writes for a model without class names, or the GT's are empty.
    """

    def __init__(self, categories: Sequence[Category]):
        self._by_name = {category.name: category.id for category in categories if category.name}
        self._ids = {category.id for category in categories}

    def gt_id(self, category_id: int, category_name: str | None) -> int | None:
        if category_name and category_name in self._by_name:
            return self._by_name[category_name]
        unnamed = not category_name or category_name == f"class_{category_id - 1}"
        if (unnamed or not self._by_name) and category_id in self._ids:
            return category_id
        return None


def _video_results(
    tables: CommittedTables,
    video: VideoEntry,
    table_id: str,
    tracks: Sequence[tuple[Mapping[str, Any], int]],
) -> list[dict[str, Any]]:
    """The result entries of one matched video: T = the GT's frame count for every track."""
    frames = _frame_rows(tables, table_id)
    _check_frame_rows(frames, video, table_id)
    by_track: dict[int, dict[int, bytes]] = defaultdict(dict)
    for track_id, frame, counts in zip(
        frames["track_id"].to_pylist(),
        frames["frame_index"].to_pylist(),
        frames["mask"].to_pylist(),
        strict=True,
    ):
        by_track[track_id][frame] = counts
    empty = masks.encode_one(np.zeros((video.height, video.width), dtype=bool))
    results = []
    for track, category_id in tracks:
        shown = by_track.get(track["track_id"], {})
        results.append(
            {
                "video_id": int(video.id),
                "score": float(track["score"]),
                "category_id": int(category_id),
                "segmentations": [
                    masks.from_bytes(shown[frame], video.height, video.width)
                    if frame in shown
                    else dict(empty)
                    for frame in range(video.length)
                ],
            }
        )
    return results


def _frame_rows(tables: CommittedTables, table_id: str) -> pa.Table:
    """One committed video's `tracklet_frames` rows (its one file, see `commit`)."""
    columns = ["track_id", "frame_index", "mask", "height", "width"]
    return tables.read(TRACKLET_FRAMES, video_ids=[table_id], columns=columns)


def _check_frames(pairs: Sequence[tuple[VideoEntry, Mapping[str, Any]]]) -> None:
    """Raise ExportError listing the videos whose `videos` row disagrees with the GT."""
    wrong = []
    for video, row in pairs:
        table = (row["num_frames"], row["height"], row["width"])
        expected = (video.length, video.height, video.width)
        if any(
            value is not None and value != want for value, want in zip(table, expected, strict=True)
        ):
            wrong.append(
                f"{row['video_id']}: {table[0]} frames of {table[2]}x{table[1]} in the tables, "
                f"{video.length} frames of {video.width}x{video.height} in the GT"
            )
    if wrong:
        raise ExportError(
            f"{len(wrong)} videos differ from their GT video (frame count or size): "
            f"{_listed(wrong)}"
        )


def _check_frame_rows(frames: pa.Table, video: VideoEntry, table_id: str) -> None:
    if frames.num_rows == 0:
        return
    sizes = set(zip(frames["height"].to_pylist(), frames["width"].to_pylist(), strict=True))
    if sizes != {(video.height, video.width)}:
        raise ExportError(
            f"{table_id}: masks of size {sorted(sizes)} (height, width) in the tables, "
            f"GT frames are {video.height}x{video.width} pixels (height x width)"
        )
    last = max(frames["frame_index"].to_pylist())
    if last >= video.length:
        raise ExportError(
            f"{table_id}: a mask at frame {last}, the GT video has {video.length} frames"
        )


def _tracklets_by_video(table: pa.Table) -> dict[str, list[dict[str, Any]]]:
    by_video: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in table.to_pylist():
        by_video[row["video_id"]].append(row)
    for rows in by_video.values():
        rows.sort(key=lambda row: row["track_id"])
    return by_video


def _gt_names(video: VideoEntry) -> tuple[str, ...]:
    """The names a table video's basename may match: the file and its stem, or the folder."""
    if video.video_path is None:
        return (video.name,)
    basename = posixpath.basename(video.video_path)
    stem = posixpath.splitext(basename)[0]
    return (basename, stem) if stem and stem != basename else (basename,)


def _gt_file_name(video: VideoEntry) -> str:
    return _gt_names(video)[0]


def _listed(items: Sequence[str]) -> str:
    shown = "; ".join(items[:_SHOWN])
    return shown if len(items) <= _SHOWN else f"{shown}; and {len(items) - _SHOWN} more"
