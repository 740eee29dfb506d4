"""Ground truth and results of a YouTube-VIS evaluation, checked and typed.

The official evaluator (youtubevos/cocoapi `ytvos.py`, `ytvoseval.py`) reads whatever it is
given and sometimes scores it wrongly without a word: a short segmentation list is cut
short, an RLE of the wrong size or with broken counts gives garbage areas, a duplicate
annotation id silently replaces another annotation. Here those inputs raise
`EvaluationInputError` naming the video, annotation or result index; everything the
official code accepts and scores correctly loads to the same values:

- A frame is present when its segmentation is truthy (so `None`, `[]` and `{}` are
  absent, and an RLE of an empty mask is present with area 0).
- GT segmentations may be polygons, uncompressed or compressed RLE; results must be
  compressed RLE (or a falsy value for an absent frame).
- `avg_area` is the mean of the truthy per-frame areas (0 when there are none): the
  `areas` field for GT, the mask areas for results.
- A GT is a crowd region when `iscrowd` is truthy (the official code overwrites any
  `ignore` field with it).
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from vis_core import masks
from vis_core.evaluation.errors import EvaluationInputError
from vis_core.evaluation.track_masks import TrackMasks, build_track_masks
from vis_core.storage import open_fs


@dataclass(frozen=True)
class EvalVideo:
    video_id: int
    height: int
    width: int
    length: int


@dataclass(frozen=True)
class EvalCategory:
    category_id: int
    name: str


@dataclass(frozen=True, eq=False)
class GroundTruthTrack:
    annotation_id: int
    video_id: int
    category_id: int
    is_crowd: bool
    avg_area: float
    masks: TrackMasks


@dataclass(frozen=True, eq=False)
class ResultTrack:
    result_index: int
    video_id: int
    category_id: int
    score: float
    avg_area: float
    masks: TrackMasks


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """videos and categories sorted by id; tracks in file order."""

    videos: tuple[EvalVideo, ...]
    categories: tuple[EvalCategory, ...]
    tracks: tuple[GroundTruthTrack, ...]

    @cached_property
    def videos_by_id(self) -> dict[int, EvalVideo]:
        return {video.video_id: video for video in self.videos}


@dataclass(frozen=True, eq=False)
class Results:
    """Result tracks in file order (`result_index` is the position in the file)."""

    tracks: tuple[ResultTrack, ...]


def load_ground_truth(source: GroundTruth | Mapping[str, Any] | str | os.PathLike) -> GroundTruth:
    """Check and convert a YouTube-VIS GT: a parsed dict, or a path / fsspec URI to its JSON."""
    if isinstance(source, GroundTruth):
        return source
    data = source if isinstance(source, Mapping) else _read_json(source, "ground truth")
    if not isinstance(data, Mapping):
        raise EvaluationInputError("ground truth must be a JSON object")
    videos = _parse_videos(_list_field(data, "videos", "ground truth"))
    categories = _parse_categories(_list_field(data, "categories", "ground truth"))
    annotations = data.get("annotations") or []
    if not isinstance(annotations, list):
        raise EvaluationInputError("ground truth 'annotations' must be a list")
    tracks = _parse_annotations(annotations, videos, {c.category_id for c in categories})
    return GroundTruth(
        videos=tuple(sorted(videos.values(), key=lambda video: video.video_id)),
        categories=tuple(sorted(categories, key=lambda category: category.category_id)),
        tracks=tracks,
    )


def load_results(
    source: Results | Sequence[Mapping[str, Any]] | str | os.PathLike, ground_truth: GroundTruth
) -> Results:
    """Check and convert results: a list of dicts, or a path / fsspec URI to its JSON.

    Each result is `{video_id, category_id, score, segmentations}` with one compressed RLE
    (or null) per frame of its video. The caller's dicts are not modified.
    """
    if isinstance(source, Results):
        return source
    if isinstance(source, (str, os.PathLike)):
        source = _read_json(source, "results")
    if not isinstance(source, Sequence) or isinstance(source, (str, bytes)):
        raise EvaluationInputError("results must be a JSON list of objects")
    videos = ground_truth.videos_by_id
    headers: list[tuple[int, int, float]] = []
    frame_counts: list[list[bytes | None]] = []
    frame_sizes: list[tuple[int, int]] = []
    labels: list[str] = []
    for index, result in enumerate(source):
        where = f"result {index}"
        if not isinstance(result, Mapping):
            raise EvaluationInputError(f"{where}: must be an object, got {type(result).__name__}")
        video_id = _int_value(result, "video_id", where)
        video = videos.get(video_id)
        if video is None:
            raise EvaluationInputError(f"{where}: video_id {video_id} is not in the ground truth")
        where = f"result {index} (video {video_id})"
        category_id = _int_value(result, "category_id", where)
        score = _score_value(result, where)
        segmentations = _segmentation_list(result, video, where)
        headers.append((video_id, category_id, score))
        frame_counts.append(_frame_counts(segmentations, video, where, ground_truth=False))
        frame_sizes.append((video.height, video.width))
        labels.append(where)
    track_masks = build_track_masks(frame_counts, frame_sizes, labels)
    return Results(
        tracks=tuple(
            ResultTrack(
                result_index=index,
                video_id=video_id,
                category_id=category_id,
                score=score,
                avg_area=_mean_of_truthy(track.areas.tolist()),
                masks=track,
            )
            for index, ((video_id, category_id, score), track) in enumerate(
                zip(headers, track_masks, strict=True)
            )
        )
    )


def _read_json(uri: str | os.PathLike, what: str) -> Any:
    uri = os.fspath(uri)
    fs, path = open_fs(uri)
    try:
        with fs.open(path, "rb", compression="infer") as file:  # also .json.gz
            return json.load(file)
    except FileNotFoundError:
        raise EvaluationInputError(f"{what} file not found: {uri}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise EvaluationInputError(f"{what} file {uri} is not valid JSON: {error}") from None


def _parse_videos(entries: list[Any]) -> dict[int, EvalVideo]:
    videos: dict[int, EvalVideo] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise EvaluationInputError(f"ground truth video {index}: must be an object")
        video_id = _int_value(entry, "id", f"ground truth video {index}")
        where = f"ground truth video {video_id}"
        if video_id in videos:
            raise EvaluationInputError(f"{where}: the video id appears twice")
        file_names = entry.get("file_names")
        if "length" in entry:
            length = _int_value(entry, "length", where)
            if isinstance(file_names, list) and len(file_names) != length:
                raise EvaluationInputError(
                    f"{where}: length {length} but {len(file_names)} file names"
                )
        elif isinstance(file_names, list):
            length = len(file_names)
        else:
            raise EvaluationInputError(f"{where}: needs 'length' or 'file_names'")
        height, width = _int_value(entry, "height", where), _int_value(entry, "width", where)
        if height <= 0 or width <= 0 or length < 0:
            raise EvaluationInputError(f"{where}: bad size {height}x{width}, {length} frames")
        videos[video_id] = EvalVideo(video_id, height, width, length)
    return videos


def _parse_categories(entries: list[Any]) -> list[EvalCategory]:
    categories: list[EvalCategory] = []
    ids: set[int] = set()
    names: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"ground truth category {index}"
        if not isinstance(entry, Mapping):
            raise EvaluationInputError(f"{where}: must be an object")
        category_id = _int_value(entry, "id", where)
        name = entry.get("name", str(category_id))
        if not isinstance(name, str):
            raise EvaluationInputError(f"{where}: 'name' must be a string")
        if category_id in ids or name in names:
            # Per-category AP is reported by name, so names must be unique too.
            raise EvaluationInputError(f"{where}: id {category_id} or name {name!r} repeats")
        ids.add(category_id)
        names.add(name)
        categories.append(EvalCategory(category_id, name))
    return categories


def _parse_annotations(
    annotations: list[Any], videos: Mapping[int, EvalVideo], category_ids: set[int]
) -> tuple[GroundTruthTrack, ...]:
    seen_ids: set[int] = set()
    headers: list[tuple[int, int, int, bool, float]] = []
    frame_counts: list[list[bytes | None]] = []
    frame_sizes: list[tuple[int, int]] = []
    labels: list[str] = []
    for index, annotation in enumerate(annotations):
        where = f"ground truth annotation {index}"
        if not isinstance(annotation, Mapping):
            raise EvaluationInputError(f"{where}: must be an object")
        annotation_id = _int_value(annotation, "id", where)
        video_id = _int_value(annotation, "video_id", where)
        where = f"ground truth annotation {annotation_id} (video {video_id})"
        if annotation_id == 0 or annotation_id in seen_ids:
            # The official code records matches by GT id (0 reads as "unmatched") and
            # indexes annotations by id (a repeated id replaces the earlier annotation).
            raise EvaluationInputError(f"{where}: annotation ids must be unique and non-zero")
        seen_ids.add(annotation_id)
        video = videos.get(video_id)
        if video is None:
            raise EvaluationInputError(f"{where}: video {video_id} is not in 'videos'")
        category_id = _int_value(annotation, "category_id", where)
        if category_id not in category_ids:
            raise EvaluationInputError(f"{where}: category {category_id} is not in 'categories'")
        if "iscrowd" not in annotation:
            raise EvaluationInputError(f"{where}: missing key 'iscrowd'")
        crowd = annotation["iscrowd"]
        if crowd not in (0, 1):  # also admits False/True and 0.0/1.0
            raise EvaluationInputError(f"{where}: 'iscrowd' must be 0 or 1, got {crowd!r}")
        areas = annotation.get("areas")
        if not isinstance(areas, list):
            raise EvaluationInputError(f"{where}: 'areas' must be a list (one per frame)")
        if not all(map(_is_area, areas)):
            raise EvaluationInputError(f"{where}: 'areas' must hold numbers or null")
        segmentations = _segmentation_list(annotation, video, where)
        headers.append((annotation_id, video_id, category_id, bool(crowd), _mean_of_truthy(areas)))
        frame_counts.append(_frame_counts(segmentations, video, where, ground_truth=True))
        frame_sizes.append((video.height, video.width))
        labels.append(where)
    track_masks = build_track_masks(frame_counts, frame_sizes, labels)
    return tuple(
        GroundTruthTrack(
            annotation_id=annotation_id,
            video_id=video_id,
            category_id=category_id,
            is_crowd=crowd,
            avg_area=avg_area,
            masks=track,
        )
        for (annotation_id, video_id, category_id, crowd, avg_area), track in zip(
            headers, track_masks, strict=True
        )
    )


def _segmentation_list(entry: Mapping[str, Any], video: EvalVideo, where: str) -> Sequence[Any]:
    segmentations = entry.get("segmentations")
    if not isinstance(segmentations, (list, tuple)):
        raise EvaluationInputError(f"{where}: 'segmentations' must be a list (one per frame)")
    if len(segmentations) != video.length:
        # The official IoU zips the two lists and silently drops the extra frames.
        raise EvaluationInputError(
            f"{where}: {len(segmentations)} segmentations for a video of {video.length} frames"
        )
    return segmentations


def _frame_counts(
    segmentations: Sequence[Any], video: EvalVideo, where: str, ground_truth: bool
) -> list[bytes | None]:
    """Compressed counts (bytes) or None per frame.

    Ground truth may also hold polygons and uncompressed RLE (converted here, as the
    official `annToRLE` does); results must be compressed RLE, as in the official `loadRes`.
    """
    counts = _plain_compressed_counts(segmentations, video)
    if counts is not None:
        return counts
    counts = []
    for frame, segmentation in enumerate(segmentations):
        if not segmentation:
            counts.append(None)
        elif _is_compressed(segmentation):
            counts.append(_compressed_counts(segmentation, video, f"{where} frame {frame}"))
        elif ground_truth:  # polygons or uncompressed RLE: the shared converter checks them
            try:
                rle = masks.to_compressed(segmentation, video.height, video.width)
            except masks.MaskFormatError as error:
                raise EvaluationInputError(f"{where} frame {frame}: {error}") from None
            counts.append(rle["counts"].encode("ascii"))
        else:
            raise EvaluationInputError(
                f"{where} frame {frame}: result masks must be compressed RLE "
                "({'size': [H, W], 'counts': str}) or null"
            )
    return counts


def _plain_compressed_counts(
    segmentations: Sequence[Any], video: EvalVideo
) -> list[bytes | None] | None:
    """The common case in few operations per frame (10^5 frames per file), else None.

    Handles frames that are falsy or compressed RLE dicts of the video's size with ASCII
    string counts; anything else returns None for the careful frame-by-frame path.
    """
    size = [video.height, video.width]
    counts: list[bytes | None] = []
    for segmentation in segmentations:
        if not segmentation:
            counts.append(None)
            continue
        frame_counts = segmentation.get("counts") if type(segmentation) is dict else None
        if type(frame_counts) is not str or segmentation.get("size") != size:
            return None
        if not frame_counts.isascii():
            return None
        counts.append(frame_counts.encode("ascii"))
    return counts


def _is_compressed(segmentation: Any) -> bool:
    return isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), (str, bytes))


def _compressed_counts(segmentation: dict[str, Any], video: EvalVideo, where: str) -> bytes:
    """The counts as bytes after checking the size; the counts are checked in batch later."""
    size = segmentation.get("size")
    if not (isinstance(size, (list, tuple)) and list(size) == [video.height, video.width]):
        raise EvaluationInputError(
            f"{where}: RLE size {size!r} is not the video's [{video.height}, {video.width}]"
        )
    counts = segmentation["counts"]
    if isinstance(counts, bytes):
        return counts
    try:
        return counts.encode("ascii")
    except UnicodeEncodeError:
        raise EvaluationInputError(f"{where}: RLE counts are not ASCII") from None


def _mean_of_truthy(values: list[Any]) -> float:
    """The official average track area: mean over truthy entries (None and 0 dropped)."""
    kept = [value for value in values if value]
    return float(np.array(kept).mean()) if kept else 0.0


def _list_field(data: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list):
        raise EvaluationInputError(f"{where}: missing list {key!r}")
    return value


def _int_value(entry: Mapping[str, Any], key: str, where: str) -> int:
    if key not in entry:
        raise EvaluationInputError(f"{where}: missing key {key!r}")
    value = entry[key]
    if type(value) is int:
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():  # 3.0 keys the same as 3 officially
        return int(value)
    raise EvaluationInputError(f"{where}: {key!r} must be an integer, got {value!r}")


def _score_value(entry: Mapping[str, Any], where: str) -> float:
    if "score" not in entry:
        raise EvaluationInputError(f"{where}: missing key 'score'")
    score = entry["score"]
    if not _is_real(score) or not math.isfinite(score):
        raise EvaluationInputError(f"{where}: 'score' must be a finite number, got {score!r}")
    return float(score)


def _is_area(value: Any) -> bool:
    if value is None:
        return True
    if type(value) is float or type(value) is int:  # the usual case, without ABC checks
        return math.isfinite(value)
    return _is_real(value) and math.isfinite(value)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
