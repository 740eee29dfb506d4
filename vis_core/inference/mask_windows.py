"""Masks from windows of their logits: `upsampled_masks` where only a few pixels of each map
can be positive, so that neither the device's output nor the CPU's work is the whole map.

An instance covers a few percent of a frame; everywhere else its logits are <= 0, and so
its masks are background there, whatever the values. `logit_window` cuts the maps of one
instance over some frames (`[t, h, w]`, at the network's resized size) to the rectangle of
their positive logits with a margin of one pixel (where the map has room); `windowed_masks`
makes the masks `upsampled_masks` would make of the whole maps, bit for bit, from the
windows alone: `mask_upsampling`'s cells are found window by window and placed in the
frame, and its flips follow as before. Its premises hold across a window's edge: every
logit outside is <= 0 and so is the window's margin, so a cell that reaches outside is all
background on either count, a mixed cell lies wholly inside, and a cell next to a window
is never all foreground. Where `upsampled_masks` would take its dense path, the whole maps
are rebuilt (-1 outside the windows, which thresholds the same) and handed to it.

The work and the bytes grow with the instances' extent, not the frame's: for the shipped
model's masks on a 720p clip, about a tenth of the maps'.

Dimension letters: t frames of a window, h x w the maps' size, H x W the original size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vis_core.inference.mask_upsampling import (
    _MOST_MIXED,
    _SMALL_OUTPUT,
    _axis,
    _Cells,
    _flips,
    _matching_arithmetic,
    upsampled_masks,
)
from vis_core.rle_encode import EncodedMasks, encode_flips


@dataclass(frozen=True, eq=False)
class LogitWindow:
    """Rows top.. and columns left.. of t logit maps: values `[t, h_w, w_w]` float32.
    Every logit of the maps outside it is <= 0, and so is its outermost ring of pixels
    where it does not lie on the maps' border."""

    top: int
    left: int
    values: np.ndarray


def logit_window(maps: Tensor) -> LogitWindow | None:
    """The window of maps `[t, h, w]` (any device) around their positive logits, with a
    margin of one pixel; None when no logit is positive."""
    positive = maps > 0
    rows = torch.nonzero(positive.any(dim=2).any(dim=0)).flatten().tolist()
    if not rows:
        return None
    columns = torch.nonzero(positive.any(dim=1).any(dim=0)).flatten().tolist()
    height, width = maps.shape[1:]
    top, bottom = max(rows[0] - 1, 0), min(rows[-1] + 2, height)
    left, right = max(columns[0] - 1, 0), min(columns[-1] + 2, width)
    values = maps[:, top:bottom, left:right].float().cpu().numpy()
    return LogitWindow(top, left, np.ascontiguousarray(values))


def windowed_masks(
    windows: Sequence[LogitWindow | None],
    frames: int,
    source: tuple[int, int],
    height: int,
    width: int,
) -> EncodedMasks:
    """The masks of `len(windows) * frames` maps of size `source`, instance-major (window
    i holds maps i * frames ..), that are <= 0 outside their windows (None: everywhere),
    as `upsampled_masks` makes them at `height` x `width`."""
    count = len(windows) * frames
    source_height, source_width = source
    whole = (source_height, source_width) == (height, width)
    small = height < source_height or width < source_width or height + width <= _SMALL_OUTPUT
    cpu = torch.device("cpu")
    arithmetic = None
    if not (whole or small):
        arithmetic = _matching_arithmetic(cpu, source_height, source_width, height, width)
    cells = None if arithmetic is None else _cells(windows, frames, source)
    if arithmetic is None or cells is None:
        return upsampled_masks(_whole_maps(windows, frames, source), height, width)
    rows = _axis(source_height, height, arithmetic)
    columns = _axis(source_width, width, arithmetic)
    grid = rows.output.shape[1] * columns.output.shape[1]
    if len(cells.mixed) * grid > _MOST_MIXED * count * height * width:
        return upsampled_masks(_whole_maps(windows, frames, source), height, width)
    mask_index, positions = _flips(cells, rows, columns, arithmetic, height)
    return encode_flips(mask_index, positions, count, height, width)


def _cells(
    windows: Sequence[LogitWindow | None], frames: int, source: tuple[int, int]
) -> _Cells | None:
    """`_Cells.of` the whole maps, found window by window (see the module docstring)."""
    source_height, source_width = source
    count = len(windows) * frames
    mixed, corners, above, below = [], [], [], []
    top_full = np.zeros((count, source_width), dtype=bool)
    bottom_full = np.zeros((count, source_width), dtype=bool)
    for index, window in enumerate(windows):
        if window is None:
            continue
        local = _Cells.of(window.values)
        if local is None:  # a logit small enough to underflow: the dense path
            return None
        first = index * frames
        n, i, j = local.mixed.T
        mixed.append(np.stack([n + first, i + window.top, j + window.left], axis=1))
        corners.append(local.corners)
        above.append(local.above_full)
        below.append(local.below_full)
        columns = slice(window.left, window.left + window.values.shape[2])
        if window.top == 0:
            top_full[first : first + frames, columns] = local.top_full
        if window.top + window.values.shape[1] == source_height:
            bottom_full[first : first + frames, columns] = local.bottom_full
    if not mixed:
        empty = np.zeros(0, dtype=np.float32)
        return _Cells(
            shape=(count, source_height, source_width),
            mixed=np.zeros((0, 3), dtype=np.int64),
            corners=(empty, empty, empty, empty),
            above_full=np.zeros(0, dtype=bool),
            below_full=np.zeros(0, dtype=bool),
            top_full=top_full,
            bottom_full=bottom_full,
        )
    return _Cells(
        shape=(count, source_height, source_width),
        mixed=np.concatenate(mixed),
        corners=(
            np.concatenate([c[0] for c in corners]),
            np.concatenate([c[1] for c in corners]),
            np.concatenate([c[2] for c in corners]),
            np.concatenate([c[3] for c in corners]),
        ),
        above_full=np.concatenate(above),
        below_full=np.concatenate(below),
        top_full=top_full,
        bottom_full=bottom_full,
    )


def _whole_maps(
    windows: Sequence[LogitWindow | None], frames: int, source: tuple[int, int]
) -> Tensor:
    """The maps `[N, h, w]` with the windows' logits and -1 elsewhere."""
    maps = np.full((len(windows) * frames, *source), -1.0, dtype=np.float32)
    for index, window in enumerate(windows):
        if window is not None:
            rows, columns = window.values.shape[1:]
            view = maps[index * frames : (index + 1) * frames]
            view[:, window.top : window.top + rows, window.left : window.left + columns] = (
                window.values
            )
    return torch.from_numpy(maps)
