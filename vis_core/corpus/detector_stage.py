"""The detector stage of the staged corpus job, without Ray: decode items of many videos in,
one report per video out.

A detector actor wraps one `DetectorStage` around its device program (`VitaProgram` or a
stand-in). Items come keyed by video, each video's in order: a pass starts with a
`VideoHeader` (or a `VideoFailure`, and nothing more), then `PreparedChunk`s, possibly a
`VideoFailure` part-way. Where an item could not be had at all (its decoding process died),
the caller hands the exception instead.

- `take(items)`: first-pass items; the chunks of all videos run through the program in
  `detector_batches` (a batch that raises runs again video by video, so one bad video
  fails alone).
- `finish(key, slots)`: the video's `DetectorReport` (`ok`: its `MaskLogits` follow, one
  per chunk, padded with None to `slots`; `long`: a second pass must follow; `failed`: the
  error of its `failed` row; `retry`: its items were lost, process it again).
- `second_pass(key, item)` and `close(key)`: a long video's second pass, and its report.

The program's errors become `failed` reports with the single-actor path's messages
(`failure_message`); timings go to the reports: the actor's CPU time and wall time per
call, shared among the videos of a batch by their frames.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from vis_core.corpus.chunks import (
    DecodeItem,
    VideoFailure,
    VideoHeader,
    failure_message,
)
from vis_core.corpus.stage_seconds import StageSeconds
from vis_core.inference.frames import PreparedChunk
from vis_core.inference.mask_chunks import MaskLogits, VideoSelection
from vis_core.inference.vita_program import DeviceProgram, detector_batches

OK = "ok"
LONG = "long"
FAILED = "failed"
RETRY = "retry"


@dataclass(frozen=True)
class DetectorReport:
    """What the detector stage says of a video after a pass (see the module docstring).

    header: the first pass's (None when the video could not be opened); selection: the
    top-k instances (`ok` and `long`); chunks: the `MaskLogits` that follow an `ok`
    report; timestamps `[T]` of the first pass; seconds: CPU
    seconds by stage (decoding and resizing included, as the chunks report them);
    decode_s, inference_s: wall seconds decoding, and on the actor.
    """

    status: str
    error: str | None = None
    header: VideoHeader | None = None
    selection: VideoSelection | None = None
    chunks: int = 0
    num_frames: int = 0
    timestamps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    seconds: StageSeconds = field(default_factory=StageSeconds)
    decode_s: float = 0.0
    inference_s: float = 0.0
    worker_pid: int = -1
    worker_peak_memory_bytes: int = 0


@dataclass
class _Entry:
    """A video of the stage while a pass goes on."""

    header: VideoHeader | None = None
    failure: str | None = None
    retry: str | None = None
    frames: int = 0
    timestamps: list[np.ndarray] = field(default_factory=list)
    seconds: StageSeconds = field(default_factory=StageSeconds)
    decode_s: float = 0.0
    inference_s: float = 0.0

    @property
    def stopped(self) -> bool:
        return self.failure is not None or self.retry is not None

    def add_chunk(self, chunk: PreparedChunk) -> None:
        self.seconds += StageSeconds(decode=chunk.decode_cpu_s, resize=chunk.resize_cpu_s)
        self.decode_s += chunk.decode_s

    def report(self, status: str, **changes) -> DetectorReport:
        error = self.retry if status == RETRY else self.failure
        return DetectorReport(
            status=status,
            error=error,
            header=self.header,
            num_frames=self.frames,
            timestamps=np.concatenate(self.timestamps) if self.timestamps else np.zeros(0),
            seconds=self.seconds,
            decode_s=self.decode_s,
            inference_s=self.inference_s,
            **changes,
        )


class DetectorStage:
    """A device program fed with decode items of many videos (see the module docstring)."""

    def __init__(self, program: DeviceProgram):
        self.program = program
        self._entries: dict[Hashable, _Entry] = {}

    def take(self, items: Sequence[tuple[Hashable, DecodeItem | BaseException]]) -> None:
        chunks: list[tuple[Hashable, PreparedChunk]] = []
        for key, item in items:
            entry = self._entries.setdefault(key, _Entry())
            if entry.stopped:
                continue
            if isinstance(item, BaseException):
                self._stop(key, retry=f"{type(item).__name__}: {item}")
            elif isinstance(item, VideoHeader):
                entry.header = item
                self.program.open(key, item.geometry)
            elif isinstance(item, VideoFailure):
                self._stop(key, failure=item.message)
            else:
                entry.add_chunk(item)
                entry.timestamps.append(item.timestamps)
                entry.frames += len(item)
                chunks.append((key, item))
        chunks = [(key, chunk) for key, chunk in chunks if not self._entries[key].stopped]
        for batch in detector_batches(chunks, self.program.max_batch_frames):
            self._detect(batch)

    def finish(self, key: Hashable, slots: int) -> tuple[DetectorReport, list[MaskLogits | None]]:
        """The video's report after its first pass and its mask logits, `slots` long."""
        entry = self._entries.get(key) or _Entry(failure="no item of the video arrived")
        if entry.stopped:
            self._entries.pop(key, None)
            return entry.report(RETRY if entry.retry else FAILED), [None] * slots
        cpu, started = time.process_time(), time.perf_counter()
        try:
            selection, masks = self.program.finish(key)
        except Exception as error:
            self._stop(key, failure=failure_message(error))
            self._entries.pop(key, None)
            return entry.report(FAILED), [None] * slots
        entry.seconds += StageSeconds(head=time.process_time() - cpu)
        entry.inference_s += time.perf_counter() - started
        if masks is None:  # the second pass is accounted afresh
            self._entries[key] = _Entry(header=entry.header, frames=entry.frames)
            return entry.report(LONG, selection=selection), [None] * slots
        self._entries.pop(key, None)
        if len(masks) > slots:
            raise ValueError(f"{len(masks)} chunks of mask logits for {slots} slots")
        report = entry.report(OK, selection=selection, chunks=len(masks))
        return report, [*masks, *[None] * (slots - len(masks))]

    def second_pass(self, key: Hashable, item: DecodeItem | BaseException) -> MaskLogits | None:
        """The mask logits of a long video's next second-pass item (None for its header,
        and once the pass has failed: `close` tells)."""
        entry = self._entries[key]
        if entry.stopped:
            return None
        if isinstance(item, BaseException):
            self._stop(key, retry=f"{type(item).__name__}: {item}")
        elif isinstance(item, VideoFailure):
            self._stop(key, failure=item.message)
        elif isinstance(item, PreparedChunk):
            entry.add_chunk(item)
            cpu, started = time.process_time(), time.perf_counter()
            try:
                masks = self.program.second_pass(key, item)
            except Exception as error:
                self._stop(key, failure=failure_message(error))
                return None
            entry.seconds += StageSeconds(head=time.process_time() - cpu)
            entry.inference_s += time.perf_counter() - started
            return masks
        return None

    def close(self, key: Hashable) -> DetectorReport:
        """A long video's report after its second pass (its timings: the second pass's)."""
        entry = self._entries.pop(key)
        if not entry.stopped:
            try:
                self.program.close(key)
            except Exception as error:
                entry.failure = failure_message(error)
        self.program.discard(key)
        if entry.retry:
            return entry.report(RETRY)
        return entry.report(FAILED if entry.failure else OK)

    def abandon(self, key: Hashable) -> None:
        """Drop a video the driver has given up on (its time limit), whatever it holds."""
        self._entries.pop(key, None)
        self.program.discard(key)

    def _detect(self, batch: list[tuple[Hashable, PreparedChunk]]) -> None:
        cpu, started = time.process_time(), time.perf_counter()
        try:
            self.program.detect(batch)
        except Exception as error:
            keys = list(dict.fromkeys(key for key, _ in batch))
            if len(keys) == 1:
                self._stop(keys[0], failure=failure_message(error))
            else:  # which video was it? each alone
                for key in keys:
                    self._detect([(k, chunk) for k, chunk in batch if k == key])
                return
        self._share(batch, time.process_time() - cpu, time.perf_counter() - started)

    def _share(self, batch: list[tuple[Hashable, PreparedChunk]], cpu: float, wall: float) -> None:
        """The batch's CPU and wall seconds, shared among its videos by their frames."""
        frames = sum(len(chunk) for _, chunk in batch)
        for key, chunk in batch:
            entry = self._entries[key]
            share = len(chunk) / frames
            entry.seconds += StageSeconds(detect=cpu * share)
            entry.inference_s += wall * share

    def _stop(self, key: Hashable, failure: str | None = None, retry: str | None = None) -> None:
        entry = self._entries[key]
        entry.failure = entry.failure or failure
        entry.retry = entry.retry or retry
        self.program.discard(key)
