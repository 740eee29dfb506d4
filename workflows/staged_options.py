"""Options of the corpus job's staged pipeline (`workflows/staged_pool.py`) and of the
device stand-in that measures it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PIPELINES = ("auto", "single", "staged")


@dataclass(frozen=True)
class StagedOptions:
    """The staged pipeline's bounds: what may wait between its stages.

    videos_per_detector: videos a detector actor holds at once, each with its own decoder
        (a short one keeps up to `long_video_frames` frames of mask features on the device
        until its last frame is in);
    batch_frames: most frames in one detector call (chunks of several videos fill it;
        None: twice the model's `detector_chunk_frames`);
    calls_per_detector: calls queued on a detector actor (one runs, the next waits, so
        the device never waits for the driver);
    chunks_per_video: decoded chunks of a video waiting for the detector at most;
    finishers: actors making masks and committing, one chunk or video at a time each
        (None: the cluster's CPUs less the detector actors', at least one per detector
        actor); mask_backlog: chunks of mask logits waiting for them past which no video
        is started and second passes pause (None: twice `finishers`);
    commit_tasks: commits running at once;
    decode_threads: FFmpeg threads of each decoder.
    """

    videos_per_detector: int = 3
    batch_frames: int | None = None
    calls_per_detector: int = 2
    chunks_per_video: int = 2
    finishers: int | None = None
    mask_backlog: int | None = None
    commit_tasks: int = 2
    decode_threads: int = 1

    def __post_init__(self) -> None:
        for name in (
            "videos_per_detector",
            "calls_per_detector",
            "chunks_per_video",
            "commit_tasks",
            "decode_threads",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("batch_frames", "finishers", "mask_backlog"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")


@dataclass(frozen=True)
class DeviceStandIn:
    """The model on each detector's device replaced by `vis_core.inference.standin`:
    `frame_ms` device milliseconds per frame, no CPU. For measuring whether the job would
    feed a device of that speed (benchmarks/bench_feed.py); its frame time is part of the
    run's identity, so its rows never pass for the model's. log_dir: a folder where each
    stand-in logs its device time (`standin-PID.log`)."""

    frame_ms: float
    log_dir: str | None = None

    def __post_init__(self) -> None:
        if self.frame_ms < 0:
            raise ValueError(f"frame_ms must be >= 0, got {self.frame_ms}")

    def program(self, real: Any) -> Any:
        """The stand-in for `real` (a `VitaProgram`) in this process."""
        import os

        from vis_core.inference.standin import StandInProgram

        log = (
            None
            if self.log_dir is None
            else os.path.join(self.log_dir, f"standin-{os.getpid()}.log")
        )
        return StandInProgram(real, self.frame_ms / 1000, log)
