"""Decoded PyAV frames to RGB uint8 arrays of a fixed size, as cheaply as swscale allows.

Measured on 720p H.264 frames (01_dog.mp4, 2 cores), per frame, resizing to 640x360:
- `frame.to_ndarray(width=, height=, format="rgb24")` builds a new swscale context (and
  its thread pool) for every frame; one `VideoReformatter` kept for the whole video
  reuses its context, which also makes full-size conversion about 1.3x faster.
- Scaling in the decoder's own pixel format (yuv420p: 1.5 bytes a pixel) and converting
  the small frame to RGB took 0.43 ms, against 1.00 ms for one scale-and-convert step,
  ~1.1 ms for FAST_BILINEAR and ~2.1 ms for torch's antialiased bilinear resize after a
  full-size conversion; it is also the closest to the mean of each 2x2 block of the
  full-size RGB frame (mean abs error 0.88, against 1.17 for one step and 2.3 for
  swscale's BILINEAR).

The scale uses swscale's AREA filter: it averages the covered source pixels when
shrinking (no aliasing) and interpolates bilinearly when enlarging.
"""

from __future__ import annotations

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter


class RgbConverter:
    """Converts video frames of any size and pixel format to `[H, W, 3]` uint8 RGB.

    Keep one per decoding pass: its swscale contexts are built for the first frame and
    reused while frames keep their size and format.
    """

    def __init__(self, height: int, width: int, threads: int = 0):
        """Args:
        height, width: size of the output arrays.
        threads: swscale threads; 0 lets FFmpeg use one per core.
        """
        self.height = height
        self.width = width
        self._threads = threads
        self._scaler = VideoReformatter()
        self._to_rgb = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        """The frame as a `[H, W, 3]` uint8 RGB array (it holds the converted frame's memory)."""
        if (frame.height, frame.width) != (self.height, self.width):
            frame = self._scaler.reformat(
                frame,
                width=self.width,
                height=self.height,
                interpolation=Interpolation.AREA,
                threads=self._threads,
            )
        rgb = self._to_rgb.reformat(frame, format="rgb24", threads=self._threads)
        return rgb.to_ndarray()
