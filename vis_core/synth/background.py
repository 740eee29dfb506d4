"""A textured, cluttered background seen through a slowly panning camera.

The background is one canvas larger than the frame by a margin on every side; each frame
views a window of it at a fractional offset (bilinear), which gives smooth sub-pixel
camera motion without re-rendering anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vis_core.synth.clutter import draw_clutter
from vis_core.synth.noise import smooth_field


@dataclass(frozen=True, eq=False)
class Background:
    """`canvas` `[H + 2M + 1, W + 2M + 1, 3]` float32 with M = `pan_margin(W, H)`;
    `offsets` `[T, 2]` the (x, y) canvas position of each frame's top-left corner.
    """

    canvas: np.ndarray
    offsets: np.ndarray

    def shift(self, t: int) -> np.ndarray:
        """Camera displacement `[2]` (x, y) at frame `t` since the first frame."""
        return self.offsets[t] - self.offsets[0]

    def view(self, t: int, height: int, width: int) -> np.ndarray:
        """The frame-sized window `[H, W, 3]` float32 seen at frame `t`."""
        x, y = self.offsets[t]
        ix, iy = int(x), int(y)
        fx, fy = float(x - ix), float(y - iy)
        canvas = self.canvas
        top = (1 - fx) * canvas[iy : iy + height, ix : ix + width]
        top += fx * canvas[iy : iy + height, ix + 1 : ix + 1 + width]
        bottom = (1 - fx) * canvas[iy + 1 : iy + 1 + height, ix : ix + width]
        bottom += fx * canvas[iy + 1 : iy + 1 + height, ix + 1 : ix + 1 + width]
        return (1 - fy) * top + fy * bottom


def pan_margin(width: int, height: int) -> int:
    """How far (pixels) the camera may pan from the canvas centre on each axis."""
    return max(4, round(0.06 * min(width, height)))


def sample_background(
    rng: np.random.Generator,
    width: int,
    height: int,
    num_frames: int,
    clutter: int,
    pan: bool,
) -> Background:
    """A random background for `num_frames` frames of `width` x `height` pixels."""
    margin = pan_margin(width, height)
    canvas_h, canvas_w = height + 2 * margin + 1, width + 2 * margin + 1
    size = min(width, height)

    # Large colour blotches around a random base colour, then fine grain and faint waves.
    base = rng.uniform(40.0, 215.0, 3).astype(np.float32)
    blotches = smooth_field(rng, canvas_h, canvas_w, cell=size * rng.uniform(0.3, 0.8), channels=3)
    canvas = base + (blotches - 0.5) * rng.uniform(60.0, 160.0)
    grain = smooth_field(rng, canvas_h, canvas_w, cell=rng.uniform(2.0, 8.0))
    canvas += ((grain - 0.5) * rng.uniform(10.0, 50.0))[..., None]
    if rng.random() < 0.5:
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(0.05, 0.25) * size
        ys, xs = np.mgrid[0:canvas_h, 0:canvas_w].astype(np.float32)
        waves = np.sin(2 * math.pi * (xs * math.cos(angle) + ys * math.sin(angle)) / period)
        canvas += (waves * rng.uniform(5.0, 25.0))[..., None]
    draw_clutter(canvas, rng, clutter)
    canvas = np.clip(canvas, 0.0, 255.0).astype(np.float32)

    offsets = np.full((num_frames, 2), float(margin), dtype=np.float64)
    if pan:
        t = np.arange(num_frames, dtype=np.float64)
        for axis in range(2):
            amplitude = rng.uniform(0.3, 1.0) * (margin - 1)
            period = rng.uniform(60.0, 240.0)
            phase = rng.uniform(0, 2 * math.pi)
            offsets[:, axis] += amplitude * np.sin(2 * math.pi * t / period + phase)
    return Background(canvas=canvas, offsets=offsets)
