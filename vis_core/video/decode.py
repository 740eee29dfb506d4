"""Sequential video decoding with PyAV: RGB frames and chunks, within limits.

`open_video` opens a path, URI or file object (vis_core/video/source.py) and probes it into
a `VideoInfo` checked against `DecodeLimits` (vis_core/video/probe.py) before any frame is
decoded; the reader then decodes sequentially (exact random access costs tens of
milliseconds a frame) with FFmpeg's AUTO threading (frame and slice threads; about 1.3x
SLICE, the default, on 2 cores).

Frames become RGB through `RgbConverter` (vis_core/video/convert.py: swscale contexts
kept for the whole pass; resizing with the AREA filter in the decoder's pixel format, then
converting the small frame). Chunks are filled into one preallocated `[T, H, W, 3]` array
and each converted frame is released before the next is converted, so swscale reuses its
output memory instead of faulting in fresh pages every frame (np.stack of held frames cost
about 1.5 ms more per 720p frame on 2 cores).

Frames come out as players display them: opening decodes the first frame to read the
display matrix (vis_core/video/orientation.py: PyAV exposes it on frames only), `info`
gives the displayed size, and `RgbConverter` turns (and mirrors) each frame. That
first frame is kept for the first pass, so a file object that cannot seek still decodes.

FFmpeg's decoders get `max_pixels` from the limits (`DecodeLimits.decoder_max_pixels`,
here and in `VideoInput`'s stream probing), so a small file whose bitstream declares a
huge frame is refused before any frame buffer is allocated: a 1.4 KB mp4 declaring
16000x16000 H.264 (a decompression bomb) took 0.7 GB and 6 s to open, 1.1 GB to decode;
now it fails in the probe, its peak 80 MB up (the decoder's per-macroblock tables).

Every failure is a `vis_core.video.errors.VideoDecodeError` subclass.
"""

from __future__ import annotations

import dataclasses
import itertools
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

import av
import av.error
import numpy as np

from vis_core.video.convert import RgbConverter
from vis_core.video.errors import CorruptVideoError, VideoReadError, VideoTooLargeError
from vis_core.video.orientation import Orientation, frame_orientation
from vis_core.video.probe import DecodeLimits, VideoInfo, probe_video
from vis_core.video.source import OpenedContainer, VideoInput, VideoSource

# What FFmpeg's error log says when a frame is over the decoder's `max_pixels`.
_MAX_PIXELS_REFUSAL = "exceeds specified max pixel count"


@dataclass(frozen=True)
class DecodedFrame:
    """One RGB frame.

    Attributes:
        image: `[H, W, 3]` uint8 RGB.
        index: position of the frame in the video, 0-based, counting skipped frames.
        timestamp_s: presentation time in seconds from the start of the stream.
    """

    image: np.ndarray
    index: int
    timestamp_s: float


@dataclass(frozen=True)
class FrameChunk:
    """Consecutive decoded frames of one video.

    Attributes:
        frames: `[T, H, W, 3]` uint8 RGB.
        frame_indices: `[T]` int64 positions of the frames in the video.
        timestamps_s: `[T]` float64 presentation times in seconds.
    """

    frames: np.ndarray
    frame_indices: np.ndarray
    timestamps_s: np.ndarray

    def __len__(self) -> int:
        return int(self.frame_indices.shape[0])


class VideoReader:
    """Decodes one video sequentially into RGB frames. Use as a context manager.

    Opening probes the metadata (`info`) and raises before decoding when the video is
    over `limits`. Each call to `frames` or `iter_chunks` is one pass from the first
    frame; a pass that reaches the end checks that every declared frame was decoded.
    Passes over a file object share its position: run them one after the other.

    Example:
        with open_video("s3://bucket/clip.mp4") as video:
            for chunk in video.iter_chunks(16, shortest_edge=360):
                model(chunk.frames)  # [T, 360, W, 3]
    """

    def __init__(self, source: VideoSource, limits: DecodeLimits | None = None, threads: int = 0):
        """Args:
        source: a local path, an fsspec URI (`file://`, `s3://`...) or an open binary
            file object (which stays open: the caller owns it).
        limits: bounds checked before and while decoding.
        threads: decoder and colour-conversion threads; 0 lets FFmpeg use one per
            core. Give the CPUs of a Ray worker here.
        """
        self.limits = limits if limits is not None else DecodeLimits()
        self._threads = threads
        self._input = VideoInput(
            source,
            max_file_bytes=self.limits.max_file_bytes,
            max_pixels=self.limits.decoder_max_pixels,
        )
        self.source = self._input.name
        self._closed = False
        # Passes in progress, so that close() can stop them; finished ones drop out.
        self._active: weakref.WeakSet[Iterator[DecodedFrame]] = weakref.WeakSet()
        # The probe's decoding, its first frame decoded, waiting for the first pass.
        self._primed: _Decoding | None = None
        opened = self._input.open_container()
        try:
            self._stream_index, stored = probe_video(opened.container, self.source, self.limits)
        except BaseException:
            opened.close()
            self.close()
            raise
        self._primed = self._start(opened)
        try:
            self.orientation = self._peek_orientation(self._primed)
        except BaseException:
            self.close()
            raise
        height, width = self.orientation.displayed_size(stored.height, stored.width)
        self.info = dataclasses.replace(
            stored, width=width, height=height, orientation=self.orientation
        )

    def output_size(self, shortest_edge: int | None = None) -> tuple[int, int]:
        """(height, width) of the frames a pass yields: see `resized_size`."""
        return resized_size(self.info.height, self.info.width, shortest_edge)

    def frames(
        self,
        shortest_edge: int | None = None,
        stride: int = 1,
        max_output_frames: int | None = None,
    ) -> Iterator[DecodedFrame]:
        """Decode frames in order, one at a time.

        Args:
            shortest_edge: resize so the shorter side has this many pixels (swscale AREA
                filter: an average over the covered pixels when shrinking, bilinear when
                enlarging).
            stride: yield every `stride`-th frame (indices 0, stride, 2 * stride, ...).
            max_output_frames: stop after yielding this many frames (no end-of-video check).

        Raises:
            CorruptVideoError: the stream breaks, or ends before its declared frame count.
            VideoTooLargeError: a frame or the frame count goes over the limits.
            VideoReadError: the storage fails while reading.
        """
        if not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride must be a positive int, got {stride!r}")
        if max_output_frames is not None and max_output_frames < 1:
            raise ValueError(f"max_output_frames must be positive, got {max_output_frames!r}")
        out_height, out_width = self.output_size(shortest_edge)
        if out_height * out_width > self.limits.max_pixels_per_frame:
            raise VideoTooLargeError(
                self.source,
                f"resizing to {out_width}x{out_height} is above the limit of "
                f"{self.limits.max_pixels_per_frame} pixels per frame",
            )
        if self._closed:
            raise ValueError(f"{self.source}: the reader is closed")
        passes = self._pass(out_height, out_width, stride, max_output_frames)
        self._active.add(passes)
        return passes

    def iter_chunks(
        self,
        chunk_size: int,
        shortest_edge: int | None = None,
        stride: int = 1,
        max_output_frames: int | None = None,
    ) -> Iterator[FrameChunk]:
        """Decode frames in chunks of `chunk_size` (the last may be shorter).

        Only one chunk is held at a time: memory does not grow with the video length.
        Arguments and errors are those of `frames`.
        """
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        frames = self.frames(shortest_edge, stride, max_output_frames)
        return _chunked(frames, chunk_size, self.output_size(shortest_edge))

    def close(self) -> None:
        """Stop the passes in progress and close every container and file this reader opened."""
        self._closed = True
        for passes in list(self._active):
            passes.close()
        if self._primed is not None:
            self._primed.opened.close()
            self._primed = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _start(self, opened: OpenedContainer) -> _Decoding:
        """A decoding pass over a freshly opened container (nothing decoded yet); closes the
        container if it cannot start."""
        try:
            stream = opened.container.streams.video[self._stream_index]
            stream.thread_type = "AUTO"
            stream.thread_count = self._threads
            # The decoder refuses to allocate a frame over the limit (see the module doc).
            stream.codec_context.options = {"max_pixels": str(self.limits.decoder_max_pixels)}
        except BaseException:
            opened.close()
            raise
        counts = _PassCounts()
        return _Decoding(opened, stream, counts, self._decoded(opened.container, stream, counts))

    def _peek_orientation(self, decoding: _Decoding) -> Orientation:
        """The display orientation, from the first frame, which stays first in `decoding`."""
        first = next(decoding.frames, None)
        if first is None:  # no frame at all: the pass says so
            return Orientation()
        decoding.frames = itertools.chain([first], decoding.frames)
        return frame_orientation(first)

    def _take_decoding(self) -> _Decoding:
        # The first pass takes over the probe's decoding; later ones open the input again.
        if self._primed is not None:
            decoding, self._primed = self._primed, None
            return decoding
        return self._start(self._input.open_container())

    def _pass(
        self, out_height: int, out_width: int, stride: int, max_output_frames: int | None
    ) -> Iterator[DecodedFrame]:
        # Runs from the first next(): a pass that never starts holds no container.
        decoding = self._take_decoding()
        try:
            stream, decoded = decoding.stream, decoding.counts
            start_pts, time_base = stream.start_time or 0, stream.time_base
            to_rgb = RgbConverter(out_height, out_width, self._threads, self.orientation)
            yielded = 0
            for frame in decoding.frames:
                index = decoded.frames - 1
                if index % stride:
                    continue
                if frame.pts is not None and time_base is not None:
                    timestamp_s = float((frame.pts - start_pts) * time_base)
                else:
                    timestamp_s = index / self.info.fps
                # No local keeps the array: once the consumer drops it, swscale reuses
                # its memory instead of faulting in fresh pages.
                yield DecodedFrame(to_rgb(frame), index, timestamp_s)
                yielded += 1
                if max_output_frames is not None and yielded >= max_output_frames:
                    return
            self._check_complete(decoded)
        finally:
            decoding.opened.close()

    def _decoded(
        self,
        container: av.container.InputContainer,
        stream: av.video.stream.VideoStream,
        counts: _PassCounts,
    ) -> Iterator[av.VideoFrame]:
        """Demux and decode `stream`, mapping PyAV errors to typed ones and enforcing limits.

        The first packet the decoder rejects fails the pass. With frame threads FFmpeg
        reports fewer such errors (a damaged last packet can go unnoticed), so a damaged
        file may pass with one thread count and fail with another; skipping rejected
        packets instead made the frame counts differ between thread counts too.
        """
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
                frames = packet.decode()
            except StopIteration:
                return
            except OSError as error:
                # Storage failures, from a Python file object or FFmpeg's own I/O (errno).
                raise VideoReadError(
                    self.source, f"reading failed after {counts.frames} frames: {error}"
                ) from error
            except av.error.FFmpegError as error:
                if _MAX_PIXELS_REFUSAL in str(error):
                    raise VideoTooLargeError(
                        self.source,
                        f"the stream declares a frame far above the limit of "
                        f"{self.limits.max_pixels_per_frame} pixels per frame (after "
                        f"{counts.frames} frames); the decoder refused it: {error}",
                    ) from error
                raise CorruptVideoError(
                    self.source, f"decoding failed after {counts.frames} frames: {error}"
                ) from error
            if packet.size:  # not the empty packet that flushes the decoder at the end
                counts.packets += 1
            if packet.is_discard:
                counts.discarded_packets += 1
            for frame in frames:
                self._check_frame(frame, counts.frames)
                counts.frames += 1
                yield frame

    def _check_frame(self, frame: av.VideoFrame, index: int) -> None:
        limits = self.limits
        if index >= limits.max_frames:
            raise VideoTooLargeError(
                self.source, f"video has more than the limit of {limits.max_frames} frames"
            )
        if frame.width * frame.height > limits.max_pixels_per_frame:
            raise VideoTooLargeError(
                self.source,
                f"frame {index} is {frame.width}x{frame.height}, above the limit of "
                f"{limits.max_pixels_per_frame} pixels per frame",
            )

    def _check_complete(self, counts: _PassCounts) -> None:
        info = self.info
        if counts.packets == 0:
            raise CorruptVideoError(self.source, "the video stream holds no frame at all")
        if counts.frames == 0:
            raise CorruptVideoError(self.source, "no frame could be decoded")
        # Samples an edit list cuts away are demuxed flagged as discarded and never output.
        expected = info.num_frames - counts.discarded_packets
        if not info.num_frames_estimated and counts.frames < expected:
            raise CorruptVideoError(
                self.source,
                f"decoded {counts.frames} of the {info.num_frames} frames the container "
                "declares: the file is truncated or its stream is damaged",
            )
        # Without a declared count, a short pass fails only when the file is known to be
        # cut (a damaged payload that the decoder skips still passes: nothing tells).
        if info.num_frames_estimated and counts.frames < info.num_frames:
            truncation = self._input.truncation()
            if truncation is not None:
                raise CorruptVideoError(
                    self.source,
                    f"decoded {counts.frames} of about {info.num_frames} frames, and {truncation}",
                )


@dataclass
class _PassCounts:
    frames: int = 0
    packets: int = 0
    discarded_packets: int = 0


@dataclass
class _Decoding:
    """One decoding pass: its container and stream, what it decoded so far, and the frames
    still to come."""

    opened: OpenedContainer
    stream: av.video.stream.VideoStream
    counts: _PassCounts
    frames: Iterator[av.VideoFrame]


def _chunked(
    frames: Iterator[DecodedFrame], chunk_size: int, size: tuple[int, int]
) -> Iterator[FrameChunk]:
    """Copy frames into `[chunk_size, H, W, 3]` arrays; `size` is (H, W)."""
    buffer = np.empty((chunk_size, *size, 3), dtype=np.uint8)
    indices: list[int] = []
    timestamps: list[float] = []
    try:
        for frame in frames:
            buffer[len(indices)] = frame.image
            indices.append(frame.index)
            timestamps.append(frame.timestamp_s)
            del frame  # release the converted frame before the next one is converted
            if len(indices) == chunk_size:
                yield _to_chunk(buffer, indices, timestamps)
                buffer = np.empty_like(buffer)
                indices, timestamps = [], []
        if indices:
            # Copied, so that a short last chunk does not hold a whole chunk's memory.
            yield _to_chunk(buffer[: len(indices)].copy(), indices, timestamps)
    finally:
        frames.close()


def _to_chunk(frames: np.ndarray, indices: list[int], timestamps: list[float]) -> FrameChunk:
    return FrameChunk(
        frames=frames,
        frame_indices=np.array(indices, dtype=np.int64),
        timestamps_s=np.array(timestamps, dtype=np.float64),
    )


def resized_size(height: int, width: int, shortest_edge: int | None) -> tuple[int, int]:
    """(height, width) scaled, keeping the aspect ratio and rounding to ints, so that the
    shorter side is `shortest_edge`; unchanged when it is None."""
    if shortest_edge is None:
        return height, width
    if not isinstance(shortest_edge, int) or shortest_edge < 1:
        raise ValueError(f"shortest_edge must be a positive int, got {shortest_edge!r}")
    if height <= width:
        return shortest_edge, max(1, round(width * shortest_edge / height))
    return max(1, round(height * shortest_edge / width)), shortest_edge


def open_video(
    source: VideoSource, limits: DecodeLimits | None = None, threads: int = 0
) -> VideoReader:
    """Open and probe a video; see `VideoReader`. Raises a `VideoDecodeError` subclass."""
    return VideoReader(source, limits, threads)


__all__ = [
    "DecodeLimits",
    "DecodedFrame",
    "FrameChunk",
    "VideoInfo",
    "VideoReader",
    "VideoSource",
    "open_video",
]
