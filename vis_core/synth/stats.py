"""Difficulty statistics of a generated split.

Definitions (over the annotated instances, i.e. those visible in at least one frame):
- instances per video: the number of annotated instances of a video;
- repeated category: a video where two or more annotated instances share a category;
- occluded fraction of an instance in a frame: `1 - visible / full`, where `full` is the
  number of pixels its whole shape covers inside the frame (as if nothing were in front of
  it) and `visible` the pixels labelled with it. It is defined for the instance-frames
  with `full > 0`, so leaving the frame is truncation, not occlusion, and a fully hidden
  object inside the frame counts as occluded 1.0. An instance-frame is "occluded" when
  this fraction is above 0.3;
- entering or leaving: a track not visible in the video's first frame or not in its last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

OCCLUSION_THRESHOLD = 0.3


@dataclass(frozen=True)
class VideoStats:
    """Counts of one video that the split statistics are built from."""

    num_frames: int
    num_instances: int
    repeated_category: bool
    instance_frames: int
    occluded_instance_frames: int
    tracks_entering_or_leaving: int


def video_stats(
    full_areas: np.ndarray, visible_areas: np.ndarray, category_ids: Sequence[int]
) -> VideoStats:
    """Statistics of one video from per-frame pixel counts `[T, K]` and categories `[K]`."""
    full = np.asarray(full_areas, dtype=np.int64)
    visible = np.asarray(visible_areas, dtype=np.int64)
    if full.shape != visible.shape or full.ndim != 2 or full.shape[1] != len(category_ids):
        raise ValueError(
            f"expected full and visible areas [T, K] with K={len(category_ids)}, "
            f"got {full.shape} and {visible.shape}"
        )
    annotated = (visible > 0).any(axis=0)  # [K]
    full, visible = full[:, annotated], visible[:, annotated]
    categories = np.asarray(category_ids, dtype=np.int64)[annotated]
    in_frame = full > 0
    occluded = np.zeros_like(in_frame)
    occluded[in_frame] = 1.0 - visible[in_frame] / full[in_frame] > OCCLUSION_THRESHOLD
    shown = visible > 0
    entering_or_leaving = ~shown[0] | ~shown[-1]  # [K]
    return VideoStats(
        num_frames=int(full.shape[0]),
        num_instances=int(annotated.sum()),
        repeated_category=len(np.unique(categories)) < len(categories),
        instance_frames=int(in_frame.sum()),
        occluded_instance_frames=int(occluded.sum()),
        tracks_entering_or_leaving=int(np.sum(entering_or_leaving)),
    )


@dataclass(frozen=True)
class SplitStats:
    """Difficulty of a split; shares are fractions in [0, 1] (0 when undefined)."""

    num_videos: int
    num_frames: int
    num_instances: int
    mean_instances_per_video: float
    share_videos_repeated_category: float
    share_instance_frames_occluded: float
    share_tracks_entering_or_leaving: float

    @classmethod
    def from_videos(cls, videos: Sequence[VideoStats]) -> SplitStats:
        num_videos = len(videos)
        num_instances = sum(v.num_instances for v in videos)
        instance_frames = sum(v.instance_frames for v in videos)
        return cls(
            num_videos=num_videos,
            num_frames=sum(v.num_frames for v in videos),
            num_instances=num_instances,
            mean_instances_per_video=_ratio(num_instances, num_videos),
            share_videos_repeated_category=_ratio(
                sum(v.repeated_category for v in videos), num_videos
            ),
            share_instance_frames_occluded=_ratio(
                sum(v.occluded_instance_frames for v in videos), instance_frames
            ),
            share_tracks_entering_or_leaving=_ratio(
                sum(v.tracks_entering_or_leaving for v in videos), num_instances
            ),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "num_videos": self.num_videos,
            "num_frames": self.num_frames,
            "num_instances": self.num_instances,
            "mean_instances_per_video": round(self.mean_instances_per_video, 6),
            "share_videos_repeated_category": round(self.share_videos_repeated_category, 6),
            "share_instance_frames_occluded_over_30pct": round(
                self.share_instance_frames_occluded, 6
            ),
            "share_tracks_entering_or_leaving": round(self.share_tracks_entering_or_leaving, 6),
        }

    def table(self) -> str:
        """An aligned two-column text table."""
        rows = [
            ("videos", f"{self.num_videos}"),
            ("frames", f"{self.num_frames}"),
            ("instances", f"{self.num_instances}"),
            ("instances per video", f"{self.mean_instances_per_video:.2f}"),
            ("videos with a repeated category", f"{self.share_videos_repeated_category:.1%}"),
            ("instance-frames > 30% occluded", f"{self.share_instance_frames_occluded:.1%}"),
            ("tracks entering or leaving", f"{self.share_tracks_entering_or_leaving:.1%}"),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value:>8}" for name, value in rows)


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / denominator if denominator else 0.0
