"""YouTube-VIS / OVIS annotation files.

The format (YouTube-VIS 2019/2021, OVIS): `videos` with `file_names` (one
`NAME/FRAME.jpg` per frame), `length`, `height`, `width`; `annotations` with one
segmentation per frame (polygon list, uncompressed or compressed RLE, or null), `areas`,
`bboxes`, `iscrowd`, `category_id`; `categories`. Test-split files have no annotations.

Frames come from an mp4 per video or from the public datasets' JPEG folders (see
`vis_core.data.frames`). The project's synthetic benchmark gives each video a
`video_path`, the mp4 holding its frames, relative to the annotation file's folder.

Segmentations are kept as they are in the file and converted to masks on demand, so
loading the 3,000-video YouTube-VIS train file takes seconds, not minutes.
"""

from __future__ import annotations

import json
import posixpath
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vis_core import masks
from vis_core.storage import open_fs


class AnnotationFormatError(ValueError):
    """The annotation file is not valid YouTube-VIS / OVIS."""


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    supercategory: str = ""


@dataclass(frozen=True)
class VideoEntry:
    """One video of an annotation file; `name` is the folder of its frame file names."""

    id: int
    name: str
    file_names: tuple[str, ...]
    height: int
    width: int
    video_path: str | None = None

    @property
    def length(self) -> int:
        return len(self.file_names)


@dataclass(frozen=True)
class Track:
    """One annotated object over a whole video: a segmentation or None per frame `[T]`."""

    id: int
    video_id: int
    category_id: int
    segmentations: tuple[Any, ...] = field(repr=False)
    height: int
    width: int
    iscrowd: bool = False
    areas: tuple[float | None, ...] | None = field(default=None, repr=False)

    @property
    def length(self) -> int:
        return len(self.segmentations)

    def masks(self, frames: Sequence[int] | None = None) -> np.ndarray:
        """Dense masks `[F, H, W]` bool at `frames` (all T when None); frames without a
        segmentation are empty. Only the asked frames are decoded: a training clip of a
        300-frame video needs 5."""
        wanted = range(self.length) if frames is None else frames
        out = np.zeros((len(wanted), self.height, self.width), dtype=bool)
        present = [i for i, t in enumerate(wanted) if self.segmentations[t] is not None]
        if present:
            out[present] = masks.decode(
                [
                    masks.to_compressed(self.segmentations[wanted[i]], self.height, self.width)
                    for i in present
                ]
            )
        return out


@dataclass(frozen=True)
class YtvisDataset:
    """A loaded annotation file; `root` is its folder, where relative paths start."""

    root: str
    videos: tuple[VideoEntry, ...]
    categories: tuple[Category, ...]
    tracks_by_video: Mapping[int, tuple[Track, ...]] = field(repr=False)

    def __len__(self) -> int:
        return len(self.videos)

    def tracks(self, video_id: int) -> tuple[Track, ...]:
        return self.tracks_by_video.get(video_id, ())

    @property
    def category_names(self) -> dict[int, str]:
        return {category.id: category.name for category in self.categories}

    @classmethod
    def load(cls, uri: str) -> YtvisDataset:
        """Read an annotation file from a local path or fsspec URI."""
        fs, path = open_fs(uri)
        if not fs.exists(path):
            raise FileNotFoundError(f"annotation file not found: {uri}")
        with fs.open(path, "rb") as file:
            try:
                data = json.load(file)
            except json.JSONDecodeError as error:
                raise AnnotationFormatError(f"{uri} is not valid JSON: {error}") from None
        root = uri.rstrip("/").rsplit("/", 1)[0] if "/" in uri.rstrip("/") else "."
        return cls.from_dict(data, root=root)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], root: str = ".") -> YtvisDataset:
        """Build from the parsed JSON; raises AnnotationFormatError with the culprit named."""
        if not isinstance(data, Mapping) or "videos" not in data:
            raise AnnotationFormatError("annotation file has no 'videos' list")
        categories = tuple(
            Category(int(c["id"]), str(c["name"]), str(c.get("supercategory", "")))
            for c in data.get("categories") or ()
        )
        videos = tuple(_parse_video(entry) for entry in data["videos"])
        by_id = {video.id: video for video in videos}
        if len(by_id) != len(videos):
            raise AnnotationFormatError("video ids are not unique")
        tracks: dict[int, list[Track]] = defaultdict(list)
        for index, annotation in enumerate(data.get("annotations") or ()):
            track = _parse_track(annotation, index, by_id)
            tracks[track.video_id].append(track)
        return cls(
            root=root,
            videos=videos,
            categories=categories,
            tracks_by_video={video_id: tuple(items) for video_id, items in tracks.items()},
        )

    def video_uri(self, video: VideoEntry) -> str | None:
        """Where the video's mp4 is, if the file names one."""
        return None if video.video_path is None else posixpath.join(self.root, video.video_path)


def _parse_video(entry: Mapping[str, Any]) -> VideoEntry:
    try:
        file_names = tuple(str(name) for name in entry["file_names"])
        video = VideoEntry(
            id=int(entry["id"]),
            name=file_names[0].split("/")[0] if file_names else str(entry["id"]),
            file_names=file_names,
            height=int(entry["height"]),
            width=int(entry["width"]),
            video_path=entry.get("video_path"),
        )
    except (KeyError, TypeError, ValueError) as error:
        video_id = entry.get("id", "?")
        raise AnnotationFormatError(f"video {video_id}: bad entry ({error!r})") from None
    if "length" in entry and int(entry["length"]) != video.length:
        raise AnnotationFormatError(
            f"video {video.id}: length {entry['length']} but {video.length} file names"
        )
    return video


def _parse_track(
    annotation: Mapping[str, Any], index: int, videos: Mapping[int, VideoEntry]
) -> Track:
    try:
        video = videos[int(annotation["video_id"])]
    except KeyError:
        raise AnnotationFormatError(
            f"annotation {index}: video_id {annotation.get('video_id')!r} is not a video"
        ) from None
    segmentations: Sequence[Any] = annotation.get("segmentations") or ()
    if len(segmentations) != video.length:
        raise AnnotationFormatError(
            f"annotation {annotation.get('id', index)}: {len(segmentations)} segmentations "
            f"for video {video.id} of {video.length} frames"
        )
    areas = annotation.get("areas")
    return Track(
        id=int(annotation.get("id", index + 1)),
        video_id=video.id,
        category_id=int(annotation["category_id"]),
        segmentations=tuple(segmentations),
        height=video.height,
        width=video.width,
        iscrowd=bool(annotation.get("iscrowd", 0)),
        areas=None if areas is None else tuple(areas),
    )
