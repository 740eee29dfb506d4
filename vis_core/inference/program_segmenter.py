"""A device program run on one video in one process: the `Segmenter` interface
(`segment(frames)`) over `VitaProgram` or its stand-in.

The staged corpus job spreads a program's calls over Ray: decoding in CPU tasks, the
program on detector actors, the masks in CPU tasks. This runs the same calls in order in
one process: frames resized on the CPU into chunks, the program, the masks of each chunk
as it comes (a long video's second pass streams: memory holds one chunk's logits).
`VitaProgram` run this way gives `VideoSegmenter`'s instances, bit for bit on the CPU;
the single-actor job runs a stand-in this way to compare with the staged one.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from vis_core.inference.frames import (
    FrameSource,
    FrameSourceError,
    InputGeometry,
    PreparedChunk,
    _frame_batches,
    input_geometry,
    open_frames,
    resize_frames,
)
from vis_core.inference.instances import VideoInstances
from vis_core.inference.mask_chunks import assemble_instances, encode_mask_logits
from vis_core.inference.vita_program import DeviceProgram
from vis_core.modeling.config import InputConfig


class ProgramSegmenter:
    """`program` segmenting one video at a time; frames are resized as `FramePreparer`
    does on the CPU and handed over `chunk_frames` at a time."""

    def __init__(self, program: DeviceProgram, input_config: InputConfig, chunk_frames: int):
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        self.program = program
        self.input_config = input_config
        self.chunk_frames = chunk_frames

    def segment(self, frames: FrameSource) -> VideoInstances:
        """Segment one video; `frames` yields RGB `[H, W, 3]` uint8 frames (read twice
        when the video is long)."""
        key = object()
        chunks = self._chunks(frames)
        first = next(chunks, None)
        if first is None:
            raise FrameSourceError("the video has no frames")
        geometry = first.geometry
        self.program.open(key, geometry)
        try:
            num_frames = len(first)
            self.program.detect([(key, first)])
            for chunk in chunks:
                self.program.detect([(key, chunk)])
                num_frames += len(chunk)
            selection, masks = self.program.finish(key)
            if masks is None:  # long: the masks come from a second pass, chunk by chunk
                encoded = [
                    encode_mask_logits(self.program.second_pass(key, chunk))
                    for chunk in self._chunks(frames, geometry)
                ]
                self.program.close(key)
            else:
                encoded = [encode_mask_logits(chunk) for chunk in masks]
        finally:
            self.program.discard(key)
        return assemble_instances(selection, encoded, geometry, num_frames)

    def _chunks(
        self, source: FrameSource, expected: InputGeometry | None = None
    ) -> Iterator[PreparedChunk]:
        geometry = expected
        first = 0
        for batch in _frame_batches(open_frames(source), self.chunk_frames):
            height, width = batch.shape[1:3]
            if geometry is None:
                geometry = input_geometry(height, width, self.input_config)
            elif (height, width) != (geometry.height, geometry.width):
                raise FrameSourceError(
                    f"frame of {height}x{width} in a video of {geometry.height}x{geometry.width}"
                )
            resized = resize_frames(torch.from_numpy(batch), geometry).numpy()
            yield PreparedChunk(
                first_frame=first,
                frames=np.ascontiguousarray(resized),
                timestamps=np.zeros(len(batch)),  # the caller has the frames' times
                geometry=geometry,
            )
            first += len(batch)
