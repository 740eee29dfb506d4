"""One corpus video -> its table rows: decode, segment, build rows; failures become rows.

Decoding runs in a background thread a few chunks ahead of the model (PyAV releases the
GIL), so reading and decoding overlap inference. A long video is read twice (the
segmenter's two-pass path), each pass a fresh sequential decode. Every FFmpeg call of a
video (opening and probing it too) runs in that thread, so the video's time limit
(vis_core/corpus/time_limit.py) holds even when FFmpeg never returns: the video gets a
`failed` row and the job goes on (the stuck thread is left behind, a daemon).

With `ProcessOptions.frame_queries`, the detector's outputs of every frame are recorded as
the segmenter reads them (`vis_core.corpus.frame_queries`) and committed with the video.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from vis_core.corpus.frame_queries import FrameQueryRecorder
from vis_core.corpus.listing import CorpusVideo
from vis_core.corpus.time_limit import Deadline, TimeLimit, VideoTimeLimitError
from vis_core.inference.dataset import Segmenter
from vis_core.inference.detector_source import RecordingSource
from vis_core.inference.frames import FrameSourceError
from vis_core.tables.rows import VideoRecord, VideoRows, failed_rows, ok_rows
from vis_core.video.decode import DecodeLimits, open_video
from vis_core.video.errors import VideoDecodeError
from vis_core.video.probe import VideoInfo

logger = logging.getLogger(__name__)

# How long a stopped decoding thread may take to notice (it polls every 0.1 s).
_STOP_WAIT_S = 2.0


@dataclass(frozen=True)
class ProcessOptions:
    """model: the name recorded in `videos.model`; run_id: the job's identity; method:
    the temporal method (`vis_core.methods`), recorded in `videos.method`;
    limits: what a video may be (bigger ones fail with `VideoTooLargeError`);
    time_limit: how long a video may take (slower ones fail with `VideoTimeLimitError`);
    decode_threads: decoder threads (0: FFmpeg's choice); prefetch_frames: how far the
    decoding thread may run ahead of the model; frame_queries: the dtype in which each
    frame's detector outputs go to the `frame_queries` table (None: not written);
    detector: the digest of the model's detector (`detector_digest`), in those rows."""

    model: str
    run_id: str
    method: str = "vita"
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    time_limit: TimeLimit = field(default_factory=TimeLimit)
    decode_threads: int = 0
    prefetch_frames: int = 32
    frame_queries: str | None = None
    detector: str = ""

    def record(self, video_id: str, uri: str) -> VideoRecord:
        """The `videos` record of a video processed with these options (before its results)."""
        return VideoRecord(video_id, uri, self.model, self.run_id, method=self.method)


def process_video(
    video: CorpusVideo, segmenter: Segmenter, options: ProcessOptions, class_names: Sequence[str]
) -> VideoRows:
    """The rows of `video`: `ok` with its tracklets (category names from `class_names`,
    the model's), or `failed` with a clear error for a video that cannot be decoded or
    segmented, or runs over its time limit (nothing of it is kept then)."""
    started = time.perf_counter()
    record = options.record(video.video_id, video.uri)
    decoded = _DecodeLog(video.uri, options, options.time_limit.start())
    recorder = None
    try:
        video.check_readable()
        if options.frame_queries is None:
            instances = segmenter.segment(decoded.frames)
        else:  # the detector's outputs go to the frame_queries table as they are made
            recorder = FrameQueryRecorder(options.frame_queries)
            source = RecordingSource(segmenter.live_source(decoded.frames), recorder)
            instances = segmenter.segment_source(source)
        total_s = time.perf_counter() - started
        record = dataclasses.replace(
            decoded.describe(record),
            num_frames=instances.num_frames,
            decode_s=decoded.seconds,
            inference_s=total_s - decoded.seconds,
            total_s=total_s,
        )
        timestamps = decoded.first_pass_timestamps
        frame_queries = None
        if recorder is not None:
            frame_queries = recorder.table(
                video.video_id, options.run_id, options.detector, timestamps
            )
        return ok_rows(record, instances, class_names, timestamps, frame_queries)
    except (VideoDecodeError, FrameSourceError, VideoTimeLimitError) as error:
        message = f"{type(error).__name__}: {error}"
    except Exception as error:  # a failed row, never a crashed job (see the module doc)
        message = f"{type(error).__name__} while processing: {error}"
    record = dataclasses.replace(decoded.describe(record), total_s=time.perf_counter() - started)
    return failed_rows(record, message)


class _DecodeLog:
    """Decodes passes over a video through a prefetching thread; keeps the video's info,
    the first pass's timestamps and the time spent waiting for frames."""

    def __init__(self, uri: str, options: ProcessOptions, deadline: Deadline) -> None:
        self.info: VideoInfo | None = None
        self.first_pass_timestamps: list[float] = []
        self.seconds = 0.0
        self._uri = uri
        self._options = options
        self._deadline = deadline
        self._passes = 0

    def describe(self, record: VideoRecord) -> VideoRecord:
        """`record` with the video's frame rate and displayed size, once known."""
        if self.info is None:
            return record
        info = self.info
        return dataclasses.replace(record, fps=info.fps, width=info.width, height=info.height)

    def frames(self) -> Iterator[np.ndarray]:
        first = self._passes == 0
        self._passes += 1
        decoded = _prefetched(self._uri, self._options, self._deadline)
        while True:
            waited = time.perf_counter()
            item = next(decoded, None)
            self.seconds += time.perf_counter() - waited
            if item is None:
                return
            if isinstance(item, VideoInfo):
                self.info = item
                continue
            self._deadline.advance()
            if first:
                self.first_pass_timestamps.append(item.timestamp_s)
            yield item.image


_END = object()


def _prefetched(uri: str, options: ProcessOptions, deadline: Deadline) -> Iterator:
    """The video's `VideoInfo`, then its `DecodedFrame`s, opened and decoded by a background
    thread up to `prefetch_frames` ahead; decoding errors are raised here, in order, and
    `VideoTimeLimitError` once the deadline passes (while waiting or between frames)."""
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
                if not put(reader.info):
                    return
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
            item = _next_item(frames, deadline, uri)
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(_STOP_WAIT_S)
        if thread.is_alive():
            logger.warning("%s: the decoding thread is stuck in FFmpeg; left behind", uri)


def _next_item(frames: queue.Queue, deadline: Deadline, uri: str) -> object:
    """The next item from the decoding thread (info, frame, error or the end), waiting no
    longer than the deadline."""
    while True:
        remaining = deadline.remaining()
        if remaining <= 0:
            raise VideoTimeLimitError(f"{uri}: {deadline.describe()}")
        try:
            return frames.get(timeout=min(remaining, 1.0))
        except queue.Empty:
            continue
