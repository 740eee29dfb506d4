"""Small media files for tests: smooth synthetic frames, H.264 in any container, audio only."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def smooth_frames(num_frames: int, height: int, width: int) -> np.ndarray:
    """Gradients with a moving square `[T, H, W, 3]` uint8: content H.264 keeps well."""
    ys, xs = np.mgrid[0:height, 0:width]
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        frames[t, ..., 0] = (xs * 255 // max(width - 1, 1)).astype(np.uint8)
        frames[t, ..., 1] = (ys * 255 // max(height - 1, 1)).astype(np.uint8)
        frames[t, ..., 2] = 60
        x0 = (4 * t) % max(width - 16, 1)
        frames[t, 8:24, x0 : x0 + 16] = (230, 40, 200)
    return frames


def write_with_pyav(
    path: Path, frames: np.ndarray, fps: float, container_format: str, **options: str
) -> None:
    """H.264 video in any container PyAV muxes, with muxer options (e.g. faststart)."""
    with av.open(str(path), mode="w", format=container_format, options=options) as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))


def write_audio_only(path: Path) -> None:
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        for index in range(20):
            samples = np.zeros((1, 1024), dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, index * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
