"""YouTube-VIS 2019 annotation records for rendered videos.

The file written by the generator:
- `videos`: `id`, `width`, `height`, `length`, `file_names` (`NAME/00000.jpg`, ... one per
  frame), `video_path` (`videos/NAME.mp4`, relative to the annotation file's folder) and
  `fps`;
- `annotations`: one per instance visible in at least one frame: `id`, `video_id`,
  `category_id`, `segmentations` (compressed RLE with str counts, or null where the
  instance is fully hidden or outside the frame), `areas` and `bboxes` ([x, y, w, h]) per
  frame (null likewise), `iscrowd` 0, `height`, `width`, `length`. Within a video,
  annotations follow the instance labels 1..K of the renderer, skipping instances that
  are never visible;
- `categories`: `id`, `name`, `supercategory`; plus `info` with the generation settings.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vis_core import masks
from vis_core.synth.shapes import CATEGORIES

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class TrackMasks:
    """The masks of one instance (label value `instance`) over `T` frames, None where hidden."""

    instance: int
    category_id: int
    segmentations: tuple[masks.RLE | None, ...]
    areas: tuple[int | None, ...]
    bboxes: tuple[Box | None, ...]

    @property
    def visible_frames(self) -> int:
        return sum(rle is not None for rle in self.segmentations)


class TrackCollector:
    """Turns label maps `[H, W]`, frame after frame, into per-instance RLE tracks.

    `category_ids` `[K]` gives the category of instances 1..K.
    """

    def __init__(self, category_ids: Sequence[int]):
        self.category_ids = tuple(int(c) for c in category_ids)
        count = len(self.category_ids)
        self._segmentations: list[list[masks.RLE | None]] = [[] for _ in range(count)]
        self._areas: list[list[int | None]] = [[] for _ in range(count)]
        self._bboxes: list[list[Box | None]] = [[] for _ in range(count)]

    def add(self, labels: np.ndarray) -> np.ndarray:
        """Record one frame's label map; return the visible pixels `[K]` of each instance."""
        count = len(self.category_ids)
        if labels.size and int(labels.max()) > count:
            raise ValueError(f"label {int(labels.max())} in a frame of {count} instances")
        visible = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        present = np.flatnonzero(visible) + 1  # label values present in this frame
        rles = masks.encode(labels[None] == present[:, None, None]) if present.size else []
        encoded = dict(zip(present.tolist(), rles, strict=True))
        boxes = dict(zip(present.tolist(), masks.bbox(rles).tolist(), strict=True))
        for instance in range(1, count + 1):
            rle = encoded.get(instance)
            self._segmentations[instance - 1].append(rle)
            self._areas[instance - 1].append(None if rle is None else int(visible[instance - 1]))
            box = boxes.get(instance)
            self._bboxes[instance - 1].append(None if box is None else tuple(map(float, box)))
        return visible

    def tracks(self) -> list[TrackMasks]:
        """The instances visible in at least one frame, in label order."""
        return [
            TrackMasks(
                instance=index + 1,
                category_id=category_id,
                segmentations=tuple(self._segmentations[index]),
                areas=tuple(self._areas[index]),
                bboxes=tuple(self._bboxes[index]),
            )
            for index, category_id in enumerate(self.category_ids)
            if any(rle is not None for rle in self._segmentations[index])
        ]


def frame_file_names(name: str, length: int) -> list[str]:
    return [f"{name}/{t:05d}.jpg" for t in range(length)]


def video_record(
    video_id: int, name: str, width: int, height: int, length: int, fps: float
) -> dict[str, Any]:
    return {
        "id": video_id,
        "width": width,
        "height": height,
        "length": length,
        "file_names": frame_file_names(name, length),
        "video_path": f"videos/{name}.mp4",
        "fps": fps,
    }


def annotation_record(
    annotation_id: int, video_id: int, track: TrackMasks, width: int, height: int
) -> dict[str, Any]:
    return {
        "id": annotation_id,
        "video_id": video_id,
        "category_id": track.category_id,
        "segmentations": list(track.segmentations),
        "areas": list(track.areas),
        "bboxes": [None if box is None else list(box) for box in track.bboxes],
        "iscrowd": 0,
        "height": height,
        "width": width,
        "length": len(track.segmentations),
    }


def category_records() -> list[dict[str, Any]]:
    return [
        {"id": category.id, "name": category.name, "supercategory": category.supercategory}
        for category in CATEGORIES
    ]


def dump_json(data: Any) -> bytes:
    """Compact, key-order-preserving JSON, so equal data always gives equal bytes."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False).encode("utf-8")
