"""The decode stage of the staged corpus job: a video -> its header, then its frames in chunks,
decoded and resized for the model.

`decode_items` yields a `VideoHeader` (what the probe says and the input geometry), then one
`PreparedChunk` per `chunk_frames` frames, each resized to the network's input size (the
uint8 antialiased kernel of `vis_core.inference.frames.resize_frames`, what `FramePreparer`
does on the CPU), so that what leaves the stage is the network's input and not the original
frames (a 720p frame is 2.7 MB; at the shipped model's 240p input, 0.3 MB). Normalising and
padding are left to the device.

A video that cannot be decoded yields a `VideoFailure` with the message the single-actor
path writes (`failure_message`) and stops: at the header (nothing else is yielded) or
part-way (after the chunks decoded so far, which the consumer then drops).

Each chunk carries the CPU seconds its decoding and resizing took in this process
(`time.process_time`, decoder threads included), for the stage timings of the job.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from vis_core.corpus.listing import CorpusVideo
from vis_core.inference.frames import (
    FrameSourceError,
    InputGeometry,
    PreparedChunk,
    input_geometry,
    resize_frames,
)
from vis_core.modeling.config import InputConfig
from vis_core.video.decode import DecodeLimits, open_video
from vis_core.video.errors import VideoDecodeError


@dataclass(frozen=True)
class VideoHeader:
    """The first item of a pass: the stream's fps (None when unknown), size, and the
    geometry of its frames through the model's input."""

    fps: float | None
    width: int
    height: int
    geometry: InputGeometry


@dataclass(frozen=True)
class VideoFailure:
    """The video cannot be processed: `message` is its `failed` row's error."""

    message: str


DecodeItem = VideoHeader | PreparedChunk | VideoFailure


def failure_message(error: BaseException) -> str:
    """The `videos.error` of a video that failed with `error` (the single-actor path's)."""
    if isinstance(error, (VideoDecodeError, FrameSourceError)):
        return f"{type(error).__name__}: {error}"
    return f"{type(error).__name__} while processing: {error}"


def decode_items(
    video: CorpusVideo,
    limits: DecodeLimits,
    input_config: InputConfig,
    chunk_frames: int,
    threads: int = 1,
) -> Iterator[DecodeItem]:
    """The items of one pass over `video` (see the module docstring)."""
    try:
        video.check_readable()
        reader = open_video(video.uri, limits, threads)
    except Exception as error:  # a failed row, never a crashed job
        yield VideoFailure(failure_message(error))
        return
    with reader:
        info = reader.info
        geometry = input_geometry(info.height, info.width, input_config)
        yield VideoHeader(fps=info.fps, width=info.width, height=info.height, geometry=geometry)
        try:
            yield from _prepared(reader.iter_chunks(chunk_frames), geometry)
        except Exception as error:
            yield VideoFailure(failure_message(error))


def _prepared(chunks: Iterator, geometry: InputGeometry) -> Iterator[PreparedChunk]:
    first = 0
    while True:
        started, cpu = time.perf_counter(), time.process_time()
        chunk = next(chunks, None)
        if chunk is None:
            return
        decoded_cpu = time.process_time()
        resized = resize_frames(torch.from_numpy(chunk.frames), geometry)
        frames = np.ascontiguousarray(resized.numpy())
        yield PreparedChunk(
            first_frame=first,
            frames=frames,
            timestamps=chunk.timestamps_s,
            geometry=geometry,
            decode_cpu_s=decoded_cpu - cpu,
            resize_cpu_s=time.process_time() - decoded_cpu,
            decode_s=time.perf_counter() - started,
        )
        first += len(chunk)
