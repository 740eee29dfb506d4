"""CPU seconds a video costs in each stage of the staged corpus job, for the job's stage
timings (and the feed benchmark's CPU-milliseconds per frame)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class StageSeconds:
    """CPU seconds (`time.process_time` of the process doing the stage's work).

    decode: demuxing and decoding (the decoder's threads included); resize: to the
    network's input size; detect: the detector actor's CPU time for the video's frames
    besides its device (receiving and batching chunks, copies; the model itself when the
    device is the CPU); head: the device program's work after the last frame (VITA, the
    selection, the mask logits, on the actor); masks: masks at the original size and their
    RLE; commit: assembling the rows and committing them.
    """

    decode: float = 0.0
    resize: float = 0.0
    detect: float = 0.0
    head: float = 0.0
    masks: float = 0.0
    commit: float = 0.0

    def __add__(self, other: StageSeconds) -> StageSeconds:
        return StageSeconds(
            **{
                name.name: getattr(self, name.name) + getattr(other, name.name)
                for name in dataclasses.fields(self)
            }
        )

    @property
    def total(self) -> float:
        return sum(getattr(self, name.name) for name in dataclasses.fields(self))
