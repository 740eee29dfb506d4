"""Background clutter: strokes, bars, elongated ellipses and irregular blobs.

Clutter makes the background busy, with edges and colours like the objects', so a model
has to recognise shapes rather than find anything that is not flat. None of the clutter
primitives resembles a category: bars and ellipses are at least 2.5 times longer than
wide, and blobs are thresholded noise, not discs.
"""

from __future__ import annotations

import math

import numpy as np

from vis_core.synth.noise import smooth_field

_KINDS = ("stroke", "bar", "ellipse", "blob")


def draw_clutter(canvas: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Paint `count` random clutter items into `canvas` `[H, W, 3]` float32, in place."""
    height, width = canvas.shape[:2]
    size = min(height, width)
    for _ in range(count):
        kind = _KINDS[int(rng.integers(len(_KINDS)))]
        length = rng.uniform(0.08, 0.4) * size
        aspect = rng.uniform(2.5, 8.0)
        half_long = length / 2
        half_short = max(1.0, half_long / aspect)
        centre_x = rng.uniform(0, width)
        centre_y = rng.uniform(0, height)
        angle = rng.uniform(0, math.pi)
        colour = rng.uniform(0.0, 255.0, 3).astype(np.float32)
        opacity = rng.uniform(0.4, 1.0)
        reach = half_long + 1
        x0, x1 = max(0, int(centre_x - reach)), min(width, int(centre_x + reach) + 1)
        y0, y1 = max(0, int(centre_y - reach)), min(height, int(centre_y + reach) + 1)
        if x1 <= x0 or y1 <= y0:
            continue
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - centre_x
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - centre_y
        along = dx * math.cos(angle) + dy * math.sin(angle)
        across = -dx * math.sin(angle) + dy * math.cos(angle)
        if kind == "stroke":
            thickness = rng.uniform(1.0, 3.0)
            inside = (np.abs(along) <= half_long) & (np.abs(across) <= thickness)
        elif kind == "bar":
            inside = (np.abs(along) <= half_long) & (np.abs(across) <= half_short)
        elif kind == "ellipse":
            inside = (along / half_long) ** 2 + (across / half_short) ** 2 <= 1.0
        else:
            noise = smooth_field(rng, y1 - y0, x1 - x0, cell=max(2.0, length / 5))
            falloff = np.hypot(along, across) / half_long
            inside = noise - 0.6 * falloff > 0.35
        grain = smooth_field(rng, y1 - y0, x1 - x0, cell=4.0)[..., None]
        paint = colour * (0.8 + 0.4 * grain)
        patch = canvas[y0:y1, x0:x1]
        patch[inside] = (1 - opacity) * patch[inside] + opacity * paint[inside]
