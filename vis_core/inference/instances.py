"""Video-level instances: what a video segmenter returns for one video.

Masks are kept as one compressed COCO RLE dict per instance and frame
(`vis_core.masks.encode`), never as a dense `[K, T, H, W]` array: a 2,000-frame 720p video
with 10 instances would need 18 GB dense, and a few MB as RLE.

Dimension letters: K instances, T frames, H x W the original frame size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vis_core import masks
from vis_core.masks import RLE


@dataclass(frozen=True, eq=False)
class VideoInstances:
    """The instances found in one video of `num_frames` frames of `height` x `width`.

    scores `[K]` float32 in [0, 1]; labels `[K]` int64, contiguous class indices in
    [0, num_classes); masks: K tuples of T compressed RLE dicts (an empty mask where the
    instance is absent), each of size `[height, width]`. Instances are in the order the
    segmenter selected them (not necessarily by score).

    mask_areas `[K, T]` int64 and mask_boxes `[K, T, 4]` float64 (x, y, w, h): the masks'
    areas and boxes as measured where the masks were made, or None to measure them from
    the RLEs when asked (`areas`, `boxes`); they must agree with the masks.
    """

    num_frames: int
    height: int
    width: int
    scores: np.ndarray
    labels: np.ndarray
    masks: tuple[tuple[RLE, ...], ...]
    mask_areas: np.ndarray | None = None
    mask_boxes: np.ndarray | None = None

    def __post_init__(self) -> None:
        count = len(self.masks)
        if self.num_frames < 1 or self.height < 1 or self.width < 1:
            raise ValueError(
                f"need at least one frame of at least 1x1 pixels, got num_frames="
                f"{self.num_frames}, height={self.height}, width={self.width}"
            )
        if self.scores.shape != (count,) or self.labels.shape != (count,):
            raise ValueError(
                f"scores {self.scores.shape} and labels {self.labels.shape} must both be "
                f"[K={count}], one per instance mask track"
            )
        if count and int(self.labels.min()) < 0:
            raise ValueError(f"labels must be contiguous class indices >= 0, got {self.labels}")
        size = [self.height, self.width]
        for index, track in enumerate(self.masks):
            if len(track) != self.num_frames:
                raise ValueError(
                    f"instance {index} has {len(track)} frame masks for {self.num_frames} frames"
                )
            if any(list(rle["size"]) != size for rle in track):
                raise ValueError(f"instance {index} has a mask whose size is not {size}")
        for name, shape in (
            ("mask_areas", (count, self.num_frames)),
            ("mask_boxes", (count, self.num_frames, 4)),
        ):
            value = getattr(self, name)
            if value is not None and value.shape != shape:
                raise ValueError(f"{name} is {value.shape}, expected {shape}")

    def __len__(self) -> int:
        return len(self.masks)

    @classmethod
    def empty(cls, num_frames: int, height: int, width: int) -> VideoInstances:
        """No instances (K = 0)."""
        return cls(
            num_frames=num_frames,
            height=height,
            width=width,
            scores=np.zeros(0, dtype=np.float32),
            labels=np.zeros(0, dtype=np.int64),
            masks=(),
        )

    def areas(self) -> np.ndarray:
        """Foreground pixels `[K, T]` int64 of every instance and frame."""
        if self.mask_areas is not None:
            return self.mask_areas.astype(np.int64)  # a copy: the instances stay as made
        if not self.masks:
            return np.zeros((0, self.num_frames), dtype=np.int64)
        flat = masks.area([rle for track in self.masks for rle in track])
        return flat.astype(np.int64).reshape(len(self.masks), self.num_frames)

    def present(self) -> np.ndarray:
        """`[K, T]` bool: the instance's mask is non-empty in that frame."""
        return self.areas() > 0

    def boxes(self) -> np.ndarray:
        """Boxes `[K, T, 4]` float64 as (x, y, w, h); zeros where the mask is empty."""
        if self.mask_boxes is not None:
            return self.mask_boxes.astype(np.float64)
        if not self.masks:
            return np.zeros((0, self.num_frames, 4), dtype=np.float64)
        flat = masks.bbox([rle for track in self.masks for rle in track])
        return flat.reshape(len(self.masks), self.num_frames, 4)

    def instance_masks(self, index: int) -> np.ndarray:
        """Dense masks `[T, H, W]` bool of one instance (one instance at a time fits)."""
        return masks.decode(self.masks[index])

    def frame_masks(self, frame: int) -> np.ndarray:
        """Dense masks `[K, H, W]` bool of every instance in one frame."""
        if not self.masks:
            return np.zeros((0, self.height, self.width), dtype=bool)
        return masks.decode([track[frame] for track in self.masks])

    def to_ytvis_results(self, video_id: int, category_ids: Sequence[int]) -> list[dict[str, Any]]:
        """YouTube-VIS result entries, as the official writer makes them.

        One dict per instance: `{"video_id", "score", "category_id", "segmentations"}`
        with a compressed RLE for every frame (empty masks included). `category_ids[label]`
        is the dataset id of contiguous class `label` (for YouTube-VIS 2019: label + 1).
        """
        if len(self.labels) and int(self.labels.max()) >= len(category_ids):
            raise ValueError(
                f"label {int(self.labels.max())} has no dataset id: category_ids has "
                f"{len(category_ids)} entries"
            )
        return [
            {
                "video_id": int(video_id),
                "score": float(score),
                "category_id": int(category_ids[int(label)]),
                "segmentations": [dict(rle) for rle in track],
            }
            for score, label, track in zip(self.scores, self.labels, self.masks, strict=True)
        ]
