"""A stand-in for the model on its device: a fixed device time per frame, real-looking outputs.

Whether the CPU side of the corpus job (decoding, resizing, masks at the original size,
RLE, rows, commits, and the traffic between them) would keep a device busy can be measured
on a machine without one: `StandInProgram` has `VitaProgram`'s interface, and each
`detect` (and long videos' `second_pass`) holds "the device", a lock shared by the
process, for `frame_s` seconds per frame, sleeping, so it takes no CPU. Everything a real
device would do (the detector, VITA, the mask logits and their scores) is inside that time.

Its outputs are shaped like the real program's and look like real ones: the real program's
results on the first frame of the first chunk of each input size (one real detector call
per size, made once) are repeated for every frame, so the masks downstream cost what the
model's masks cost. Videos past `long_video_frames` frames take the two-pass path as with
the real program, the second pass costing `frame_s` per frame again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from vis_core.inference.frames import FrameSourceError, InputGeometry, PreparedChunk
from vis_core.inference.mask_chunks import MaskLogits, VideoSelection
from vis_core.inference.mask_windows import LogitWindow
from vis_core.inference.vita_program import VitaProgram

_DEVICE = threading.Lock()  # one device per process, as one GPU per detector actor


@dataclass
class _Video:
    geometry: InputGeometry
    chunks: list[tuple[int, int]] = field(default_factory=list)  # (first frame, frames)
    frames: int = 0
    long: bool = False
    second_pass_frames: int = 0


@dataclass(frozen=True)
class _Outputs:
    """The real program's results on one frame: its selection and `MaskLogits`."""

    selection: VideoSelection
    masks: MaskLogits


class StandInProgram:
    """`VitaProgram`'s interface with a fixed device time per frame (module docstring).

    real: the program whose one-frame results are repeated; frame_s: device seconds per
    frame; log_path: a file to which each hold appends a line "start end frames" (wall
    seconds, `time.time`), for measuring how busy the device was kept. busy_s and frames
    count the device time held and the frames that held it.
    """

    def __init__(self, real: VitaProgram, frame_s: float, log_path: str | None = None):
        if frame_s < 0:
            raise ValueError(f"frame_s must be >= 0, got {frame_s}")
        self.real = real
        self.frame_s = frame_s
        self.log_path = log_path
        self.max_batch_frames = real.max_batch_frames
        self.busy_s = 0.0
        self.frames = 0
        self._long_video_frames = real.config.long_video_frames
        self._step = real.config.mask_chunk_frames
        self._outputs: dict[InputGeometry, _Outputs] = {}
        self._videos: dict[Hashable, _Video] = {}

    def open(self, key: Hashable, geometry: InputGeometry) -> None:
        if key in self._videos:
            raise ValueError(f"video {key!r} is already open")
        self._videos[key] = _Video(geometry)

    def discard(self, key: Hashable) -> None:
        self._videos.pop(key, None)

    def detect(self, chunks: Sequence[tuple[Hashable, PreparedChunk]]) -> None:
        for key, chunk in chunks:
            video = self._videos[key]
            if chunk.first_frame != video.frames:
                raise ValueError(f"a chunk starts at frame {chunk.first_frame}, not {video.frames}")
            self._outputs_for(chunk)
            video.chunks.append((chunk.first_frame, len(chunk)))
            video.frames += len(chunk)
        self._hold(sum(len(chunk) for _, chunk in chunks))

    def finish(self, key: Hashable) -> tuple[VideoSelection, list[MaskLogits] | None]:
        video = self._videos[key]
        if video.frames == 0:
            self.discard(key)
            raise FrameSourceError("the video has no frames")
        outputs = self._outputs[video.geometry]
        if video.frames > self._long_video_frames:
            video.long = True
            return outputs.selection, None
        self.discard(key)
        return outputs.selection, [
            self._masks(outputs.masks, first, frames) for first, frames in video.chunks
        ]

    def second_pass(self, key: Hashable, chunk: PreparedChunk) -> MaskLogits:
        video = self._videos[key]
        if not video.long:
            raise ValueError(f"video {key!r} has not finished its first pass as a long video")
        video.second_pass_frames += len(chunk)
        if video.second_pass_frames > video.frames:
            raise FrameSourceError(
                f"the frame source gave {video.frames} frames on the first pass and more on "
                "the second"
            )
        self._hold(len(chunk))
        outputs = self._outputs[video.geometry]
        return self._masks(outputs.masks, chunk.first_frame, len(chunk))

    def close(self, key: Hashable) -> None:
        video = self._videos.pop(key)
        if video.second_pass_frames != video.frames:
            raise FrameSourceError(
                f"the frame source gave {video.frames} frames on the first pass and "
                f"{video.second_pass_frames} on the second"
            )

    def _hold(self, frames: int) -> None:
        """Hold the device for `frames` frames' time."""
        with _DEVICE:
            started, wall = time.perf_counter(), time.time()
            time.sleep(self.frame_s * frames)
            self.busy_s += time.perf_counter() - started
            self.frames += frames
        if self.log_path is not None:
            with open(self.log_path, "a") as log:
                log.write(f"{wall:.6f} {time.time():.6f} {frames}\n")

    def _outputs_for(self, chunk: PreparedChunk) -> None:
        """The real program's results on the chunk's first frame, once per input size."""
        if chunk.geometry in self._outputs:
            return
        key = ("stand-in", chunk.geometry)
        one = PreparedChunk(0, chunk.frames[:1], chunk.timestamps[:1], chunk.geometry)
        self.real.open(key, chunk.geometry)
        try:
            self.real.detect([(key, one)])
            selection, masks = self.real.finish(key)
        finally:
            self.real.discard(key)
        if masks is None:  # long_video_frames 0: the frame's second pass
            self.real.open(key, chunk.geometry)
            try:
                self.real.detect([(key, one)])
                self.real.finish(key)
                masks = [self.real.second_pass(key, one)]
                self.real.close(key)
            finally:
                self.real.discard(key)
        self._outputs[chunk.geometry] = _Outputs(selection, masks[0])

    def _masks(self, one: MaskLogits, first_frame: int, frames: int) -> MaskLogits:
        """`one` frame's logits repeated over `frames` frames, in parts as the real ones."""
        counts = [min(self._step, frames - start) for start in range(0, frames, self._step)]
        return MaskLogits(
            first_frame=first_frame,
            frames=tuple(counts),
            windows=tuple(
                tuple(_repeated(window, count) for window in one.windows[0]) for count in counts
            ),
            soft_sum=torch.stack([one.soft_sum[0] * count for count in counts]),
            hard_count=torch.stack([one.hard_count[0] * count for count in counts]),
            geometry=one.geometry,
        )


def _repeated(window: LogitWindow | None, count: int) -> LogitWindow | None:
    """A one-frame window over `count` frames (a copy: as many bytes as real ones)."""
    if window is None:
        return None
    return LogitWindow(window.top, window.left, np.repeat(window.values[:1], count, axis=0))
