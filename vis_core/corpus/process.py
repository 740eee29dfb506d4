"""One corpus video -> its table rows: decode, segment, build rows; failures become rows.

Decoding runs in a background thread a few chunks ahead of the model (PyAV releases the
GIL), so reading and decoding overlap inference. A long video is read twice (the
segmenter's two-pass path), each pass a fresh sequential decode.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from vis_core.corpus.listing import CorpusVideo
from vis_core.inference.dataset import Segmenter
from vis_core.inference.frames import FrameSourceError
from vis_core.tables.rows import VideoRecord, VideoRows, failed_rows, ok_rows
from vis_core.video.decode import DecodeLimits, open_video
from vis_core.video.errors import VideoDecodeError


@dataclass(frozen=True)
class ProcessOptions:
    """model: the name recorded in `videos.model`; run_id: the job's identity; method:
    the temporal method (`vis_core.methods`), recorded in `videos.method`;
    limits: what a video may be (bigger ones fail with `VideoTooLargeError`);
    decode_threads: decoder threads (0: FFmpeg's choice); prefetch_frames: how far the
    decoding thread may run ahead of the model."""

    model: str
    run_id: str
    method: str = "vita"
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    decode_threads: int = 0
    prefetch_frames: int = 32


def process_video(
    video: CorpusVideo, segmenter: Segmenter, options: ProcessOptions, class_names: Sequence[str]
) -> VideoRows:
    """The rows of `video`: `ok` with its tracklets (category names from `class_names`,
    the model's), or `failed` with a clear error for a video that cannot be decoded or
    segmented (nothing of it is kept then)."""
    started = time.perf_counter()
    record = VideoRecord(
        video_id=video.video_id,
        uri=video.uri,
        model=options.model,
        run_id=options.run_id,
        method=options.method,
    )
    decoded = _DecodeLog()
    try:
        with open_video(video.uri, options.limits, options.decode_threads) as reader:
            info = reader.info
        record = dataclasses.replace(record, fps=info.fps, width=info.width, height=info.height)

        def frames() -> Iterator[np.ndarray]:
            return decoded.frames(video.uri, options)

        inference_started = time.perf_counter()
        instances = segmenter.segment(frames)
        inference_s = time.perf_counter() - inference_started
        timestamps = decoded.first_pass_timestamps
        record = dataclasses.replace(
            record,
            num_frames=instances.num_frames,
            decode_s=decoded.seconds,
            inference_s=inference_s - decoded.seconds,
            total_s=time.perf_counter() - started,
        )
        return ok_rows(record, instances, class_names, timestamps)
    except (VideoDecodeError, FrameSourceError) as error:
        message = f"{type(error).__name__}: {error}"
    except Exception as error:  # a failed row, never a crashed job (see the module doc)
        message = f"{type(error).__name__} while processing: {error}"
    return failed_rows(dataclasses.replace(record, total_s=time.perf_counter() - started), message)


class _DecodeLog:
    """Decodes passes over a video through a prefetching thread; keeps the first pass's
    timestamps and the time spent waiting for frames."""

    def __init__(self) -> None:
        self.first_pass_timestamps: list[float] = []
        self.seconds = 0.0
        self._passes = 0

    def frames(self, uri: str, options: ProcessOptions) -> Iterator[np.ndarray]:
        first = self._passes == 0
        self._passes += 1
        decoded = _prefetched(uri, options)
        while True:
            waited = time.perf_counter()
            frame = next(decoded, None)
            self.seconds += time.perf_counter() - waited
            if frame is None:
                return
            if first:
                self.first_pass_timestamps.append(frame.timestamp_s)
            yield frame.image


_END = object()


def _prefetched(uri: str, options: ProcessOptions) -> Iterator:
    """The video's `DecodedFrame`s, decoded by a background thread up to
    `prefetch_frames` ahead; decoding errors are raised here, in order."""
    frames: queue.Queue = queue.Queue(maxsize=max(1, options.prefetch_frames))
    stop = threading.Event()

    def put(item: object) -> bool:
        """Hand `item` over unless the consumer has stopped; False once it has."""
        while not stop.is_set():
            try:
                frames.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def decode() -> None:
        try:
            with open_video(uri, options.limits, options.decode_threads) as reader:
                for frame in reader.frames():
                    if not put(frame):
                        return
            put(_END)
        except BaseException as error:  # handed to the consumer, raised there
            put(error)

    thread = threading.Thread(target=decode, name="vis-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = frames.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
