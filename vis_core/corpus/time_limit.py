"""How long one video may take to process, so that a hostile file cannot hang the job.

The budget grows with the frames handed to the model: `base_s` plus `per_frame_s` for each
frame, so a long video is never cut while a video that stalls (a decoder stuck inside
FFmpeg, a pathological stream that decodes at seconds a frame) fails within `base_s` of its
last progress. At the shipped model's CPU speed (20-25 frames/s on 2 cores) a frame takes
0.04-0.05 s; 0.5 s leaves a tenfold margin for big frames and loaded machines. The corpus
path checks it whenever the model asks for a frame and while it waits for one; the model's
work after the last frame (VITA, the last masks) is not interrupted, it does not stall.

The limit is not part of a run's identity (`workflows.corpus_job.job_run_id`): like the
thread count, it depends on the machine. A video it failed is processed again with
`--retry-failed` (and a larger limit).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


class VideoTimeLimitError(Exception):
    """Processing a video went over its `TimeLimit`."""


@dataclass(frozen=True)
class TimeLimit:
    """base_s: seconds a video may take beyond its frames' allowance (None: no limit);
    per_frame_s: seconds allowed for each frame handed to the model."""

    base_s: float | None = 600.0
    per_frame_s: float = 0.5

    def __post_init__(self) -> None:
        if self.base_s is not None and not (math.isfinite(self.base_s) and self.base_s > 0):
            raise ValueError(f"TimeLimit.base_s must be positive or None, got {self.base_s!r}")
        if not (math.isfinite(self.per_frame_s) and self.per_frame_s >= 0):
            raise ValueError(f"TimeLimit.per_frame_s must be >= 0, got {self.per_frame_s!r}")

    def start(self) -> Deadline:
        """The deadline of a video whose processing starts now."""
        return Deadline(self, time.monotonic())


class Deadline:
    """The running budget of one video: `advance` for each frame, `check` or `remaining`
    wherever the work may wait or loop."""

    def __init__(self, limit: TimeLimit, started: float):
        self.limit = limit
        self.started = started
        self.frames = 0

    def advance(self, frames: int = 1) -> None:
        self.frames += frames

    def remaining(self) -> float:
        """Seconds left (infinite without a limit)."""
        if self.limit.base_s is None:
            return math.inf
        budget = self.limit.base_s + self.limit.per_frame_s * self.frames
        return budget - (time.monotonic() - self.started)

    def check(self) -> None:
        """Raise `VideoTimeLimitError` once the budget is spent."""
        if self.remaining() <= 0:
            raise VideoTimeLimitError(self.describe())

    def describe(self) -> str:
        elapsed = time.monotonic() - self.started
        return (
            f"processing took over {elapsed:.1f} s after {self.frames} frames, above the "
            f"time limit of {self.limit.base_s:g} s + {self.limit.per_frame_s:g} s per frame"
        )
