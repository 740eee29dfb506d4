"""Smooth random fields (value noise) and bilinear sampling, in plain numpy.

Used for object noise textures, the background's colour blotches and fine grain, and the
sub-pixel camera pan.
"""

from __future__ import annotations

import numpy as np


def bilinear_sample(grid: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sample `grid` `[GH, GW, ...]` at fractional rows `ys` and columns `xs`.

    `ys` and `xs` broadcast to the output's leading shape `[...S]`; positions are clamped
    to the grid, so the border value extends outwards. Returns `[...S, ...]` float32.
    """
    grid_h, grid_w = grid.shape[:2]
    ys = np.clip(np.asarray(ys, dtype=np.float32), 0, grid_h - 1)
    xs = np.clip(np.asarray(xs, dtype=np.float32), 0, grid_w - 1)
    y0 = np.minimum(ys.astype(np.intp), grid_h - 2) if grid_h > 1 else np.zeros_like(ys, np.intp)
    x0 = np.minimum(xs.astype(np.intp), grid_w - 2) if grid_w > 1 else np.zeros_like(xs, np.intp)
    y1 = np.minimum(y0 + 1, grid_h - 1)
    x1 = np.minimum(x0 + 1, grid_w - 1)
    trailing = (1,) * (grid.ndim - 2)
    fy = (ys - y0).reshape(ys.shape + trailing)
    fx = (xs - x0).reshape(xs.shape + trailing)
    top = grid[y0, x0] * (1 - fx) + grid[y0, x1] * fx
    bottom = grid[y1, x0] * (1 - fx) + grid[y1, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def smooth_field(
    rng: np.random.Generator, height: int, width: int, cell: float, channels: int = 0
) -> np.ndarray:
    """Value noise in [0, 1]: `[H, W]` (or `[H, W, C]` when `channels` > 0).

    Random values on a lattice of spacing `cell` pixels, bilinearly interpolated, so the
    field varies on the scale of `cell`.
    """
    if cell <= 0:
        raise ValueError(f"cell must be positive, got {cell}")
    grid_h = int(np.ceil(height / cell)) + 2
    grid_w = int(np.ceil(width / cell)) + 2
    shape = (grid_h, grid_w, channels) if channels else (grid_h, grid_w)
    lattice = rng.random(shape, dtype=np.float32)
    ys = (np.arange(height, dtype=np.float32) / cell)[:, None]
    xs = (np.arange(width, dtype=np.float32) / cell)[None, :]
    return bilinear_sample(lattice, ys, xs)
