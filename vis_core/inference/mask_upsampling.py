"""Masks at the original size from logits at the network's size, made only where they are.

The official inference upsamples each instance's mask logits `[h, w]` (the resized input,
cropped from the padding) bilinearly (align_corners=False) to the original `[H, W]` and
thresholds them at 0. Done on every pixel, a 720p frame with 10 instances costs 9.2
million interpolations, thresholds and bytes for pycocotools to walk again; yet a mask is
a few blobs, and its run-length code changes only at their borders.

Bilinear upsampling is local: output pixel (y, x) mixes the four logits at source rows
(source0[y], source1[y]) and columns (source0[x], source1[x]), its *cell*, with weights
>= 0 of which the first of each pair is > 0. Hence, when upsampling (each source row and
column then has at least one output, and consecutive outputs step by at most one source):
- a cell whose four logits are all > 0 is foreground at all its pixels, one whose four are
  all <= 0 background (a rounded sum of same-signed products keeps their sign; positive
  logits below 2**-100 could underflow to 0, and send the masks to the dense path);
- two vertically adjacent cells share a row of logits, so two unmixed neighbours in a
  column are both foreground or both background: going down an output column (the RLE
  order) the value only changes at pixels of *mixed* cells or at the column's ends;
- so only mixed cells' pixels are computed, with the kernel's own float32 arithmetic
  (`_Arithmetic`: the threshold falls on the same pixels): along the columns first, for
  the cell's top and bottom rows, then down the rows only where those two differ in sign.
The flips (the RLE's run boundaries, `vis_core.rle_encode`) follow from those pixels and
from the cells of the first and last rows, and are encoded in one batch, with the areas
and boxes. The work grows with the source size and the masks' borders, not with H x W.

Whether the local arithmetic reproduces `F.interpolate` bit for bit depends on how PyTorch
was compiled (fused multiply-adds) and on the device: it is checked once per device and
geometry on random logits (`_matching_arithmetic`). Where no candidate matches, where the
output is not an upsampling, or is so small that PyTorch uses another kernel, the masks
are made on every pixel as before (`dense_masks`), and encoded by the same encoder; so
they are when most cells are mixed (noise, not masks), where that is cheaper.

Dimension letters: N masks, h x w the source size, H x W the original size, M mixed cells,
X x Y the largest number of output columns x rows of a cell.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from vis_core.rle_encode import EncodedMasks, encode_flips, encode_masks, sorted_flips

# PyTorch's CPU kernel for outputs with H + W <= 128 is another one (channels-last,
# four weights per pixel); such masks are small enough to make densely.
_SMALL_OUTPUT = 128
# Rows and columns of the random logits on which the local arithmetic is checked.
_LINES = 48
# Positive values from which a sum with weights >= 2**-24 cannot underflow to 0.
_TINY = np.float32(2.0**-100)
# Past this share of the output pixels in mixed cells (noise rather than masks: a model's
# masks of a 720p clip have about 1%), the dense path is cheaper, and needs less memory.
_MOST_MIXED = 1 / 12


@dataclass(frozen=True)
class _Arithmetic:
    """How the compiled kernel rounds `a * wa + b * wb` (at each axis) and the source
    index `scale * (o + 0.5) - 0.5`: fused multiply-adds or not, and which product is
    fused ("first", "second"; None: neither)."""

    index_fused: bool
    fused: str | None


_CANDIDATES = tuple(
    _Arithmetic(index_fused, fused)
    for index_fused, fused in itertools.product((True, False), ("first", "second", None))
)


@dataclass(frozen=True, eq=False)
class _Axis:
    """Bilinear weights along one axis, `n_out` outputs from `n_in` sources.

    source0, source1 `[n_out]` int64: the two source indices of each output; weight0,
    weight1 `[n_out]` float32; first `[n_in + 1]` int64: the first output whose source0
    is each source (first[n_in] = n_out), so source i's outputs are first[i]:first[i + 1].
    By source, padded to the most outputs a source has (S): count `[n_in]` outputs;
    output `[n_in, S]` the outputs (past the source's own: the next source's first);
    output_weight0, output_weight1 `[n_in, S]` float32 their weights.
    """

    source0: np.ndarray
    source1: np.ndarray
    weight0: np.ndarray
    weight1: np.ndarray
    first: np.ndarray
    count: np.ndarray
    output: np.ndarray
    output_weight0: np.ndarray
    output_weight1: np.ndarray


@functools.lru_cache(maxsize=64)
def _axis(n_in: int, n_out: int, arithmetic: _Arithmetic) -> _Axis:
    """PyTorch's `compute_source_index_and_lambda` (align_corners=False) in float32."""
    scale = np.float32(n_in) / np.float32(n_out)
    centre = np.arange(n_out, dtype=np.float32) + np.float32(0.5)
    if arithmetic.index_fused:  # one rounding of scale * centre - 0.5
        source = (np.float64(scale) * centre.astype(np.float64) - 0.5).astype(np.float32)
    else:
        source = scale * centre - np.float32(0.5)
    source = np.maximum(source, np.float32(0))
    source0 = np.minimum(np.floor(source).astype(np.int64), n_in - 1)
    weight1 = np.clip(source - source0.astype(np.float32), 0, 1).astype(np.float32)
    weight0 = np.float32(1) - weight1
    first = np.searchsorted(source0, np.arange(n_in + 1))
    count = np.diff(first)
    output = np.minimum(first[:-1, None] + np.arange(count.max()), first[1:, None])
    at = np.minimum(output, n_out - 1)
    return _Axis(
        source0=source0,
        source1=source0 + (source0 < n_in - 1),
        weight0=weight0,
        weight1=weight1,
        first=first,
        count=count,
        output=output,
        output_weight0=weight0[at],
        output_weight1=weight1[at],
    )


def _mix(a: np.ndarray, wa: np.ndarray, b: np.ndarray, wb: np.ndarray, fused: str | None):
    """`a * wa + b * wb` in float32, rounded as the kernel does (all float32 inputs)."""
    if fused is None:
        return a * wa + b * wb
    return _fused_sum(a, wa, b, wb, fused).astype(np.float32)


def _mix_positive(
    a: np.ndarray, wa: np.ndarray, b: np.ndarray, wb: np.ndarray, fused: str | None
) -> np.ndarray:
    """`_mix(...) > 0`, without rounding to float32 (which gives 0 from 2**-150 down)."""
    if fused is None:
        return a * wa + b * wb > 0
    return _fused_sum(a, wa, b, wb, fused) > 2.0**-150


def _fused_sum(a: np.ndarray, wa: np.ndarray, b: np.ndarray, wb: np.ndarray, fused: str):
    """`a * wa + b * wb` in float64 with one product rounded to float32: rounded once
    more to float32, a fused multiply-add (a product of two float32 is exact in float64;
    the sum is exact too unless the exponents are far apart, and then the double rounding
    differs from a single one in about one case in 2**29)."""
    if fused == "first":
        return a.astype(np.float64) * wa + b * wb
    return a * wa + b.astype(np.float64) * wb


def _bilinear(
    corners: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    row_weights: tuple[np.ndarray, np.ndarray],
    column_weights: tuple[np.ndarray, np.ndarray],
    arithmetic: _Arithmetic,
) -> np.ndarray:
    """The kernel's value from the logits at (source0, source1) rows x columns: first
    along the columns for each source row, then along the rows (broadcasting shapes)."""
    top_left, top_right, bottom_left, bottom_right = corners
    top = _mix(top_left, column_weights[0], top_right, column_weights[1], arithmetic.fused)
    bottom = _mix(bottom_left, column_weights[0], bottom_right, column_weights[1], arithmetic.fused)
    return _mix(top, row_weights[0], bottom, row_weights[1], arithmetic.fused)


def dense_masks(logits: Tensor, height: int, width: int) -> EncodedMasks:
    """Logits `[N, h, w]` -> bilinear to `[N, H, W]`, > 0, encoded: the reference path."""
    upsampled = F.interpolate(
        logits[:, None].float(), size=(height, width), mode="bilinear", align_corners=False
    )[:, 0]
    return encode_masks((upsampled > 0).cpu().numpy())


def upsampled_masks(logits: Tensor, height: int, width: int) -> EncodedMasks:
    """Logits `[N, h, w]` (float, any device) -> the N masks `dense_masks` gives, encoded,
    computing only the pixels of mixed cells (module docstring)."""
    count, source_height, source_width = logits.shape
    if (source_height, source_width) == (height, width):
        return encode_masks((logits > 0).cpu().numpy())  # the kernel copies the input
    if height < source_height or width < source_width or height + width <= _SMALL_OUTPUT:
        return dense_masks(logits, height, width)
    arithmetic = _matching_arithmetic(logits.device, source_height, source_width, height, width)
    if arithmetic is None:
        return dense_masks(logits, height, width)
    # On an accelerator the logits come to the CPU once: 4 bytes a source pixel, less
    # than half of what 720p masks would weigh at a byte a pixel.
    cells = _Cells.of(logits.float().cpu().numpy())
    rows = _axis(source_height, height, arithmetic)
    columns = _axis(source_width, width, arithmetic)
    grid = rows.output.shape[1] * columns.output.shape[1]  # pixel slots of a mixed cell
    if cells is None or len(cells.mixed) * grid > _MOST_MIXED * count * height * width:
        return dense_masks(logits, height, width)
    mask_index, positions = _flips(cells, rows, columns, arithmetic, height)
    return encode_flips(mask_index, positions, count, height, width)


@dataclass(frozen=True, eq=False)
class _Cells:
    """What the flips need of N logit maps `[N, h, w]`.

    Cell (n, i, j) holds the logits at rows (i, min(i + 1, h - 1)) and columns
    (j, min(j + 1, w - 1)). mixed `[M, 3]` int64 (n, i, j) of the mixed cells, sorted;
    corners: their four logits `[M]` float32 (top left, top right, bottom left, bottom
    right); above_full, below_full `[M]`: the cell at i - 1 (i + 1) is all foreground;
    top_full, bottom_full `[N, w]`: the cells of the first (last) row are.
    """

    shape: tuple[int, int, int]
    mixed: np.ndarray
    corners: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    above_full: np.ndarray
    below_full: np.ndarray
    top_full: np.ndarray
    bottom_full: np.ndarray

    @classmethod
    def of(cls, logits: np.ndarray) -> _Cells | None:
        """From logits `[N, h, w]` float32 (any strides); None when a positive logit is
        so small (< 2**-100) that a product with a weight could underflow to 0."""
        count, height, width = logits.shape
        positive = np.greater(logits, 0)
        if np.any(logits[positive] < _TINY):
            return None
        # Per cell, its positive logits (0 to 4): pairs of rows, then pairs of columns,
        # each as one shifted add over the flattened maps (the last row and column, which
        # read into the next map or row there, are redone: their cells repeat them).
        ones = positive.view(np.uint8).reshape(-1)
        rows = np.empty_like(ones)
        np.add(ones[:-width], ones[width:], out=rows[:-width])
        rows = rows.reshape(count, height, width)
        rows[:, -1] = positive[:, -1] * np.uint8(2)
        flat_rows = rows.reshape(-1)
        cells = np.empty_like(flat_rows)
        np.add(flat_rows[:-1], flat_rows[1:], out=cells[:-1])
        cells = cells.reshape(count, height, width)
        cells[:, :, -1] = rows[:, :, -1] * np.uint8(2)
        # 1, 2 and 3 positive logits make a mixed cell: (cells & 3) != 0.
        flat = np.flatnonzero(np.bitwise_and(cells, 3) != 0)  # sorted (n, i, j)
        n, rest = np.divmod(flat, height * width)
        i, j = np.divmod(rest, width)
        below = np.minimum(i + 1, height - 1)
        right = np.minimum(j + 1, width - 1)
        full = cells.reshape(-1)
        return cls(
            shape=(count, height, width),
            mixed=np.stack([n, i, j], axis=1),
            corners=(
                logits[n, i, j],
                logits[n, i, right],
                logits[n, below, j],
                logits[n, below, right],
            ),
            above_full=(full[np.maximum(flat - width, 0)] == 4) & (i > 0),
            below_full=(full[np.minimum(flat + width, full.size - 1)] == 4) & (i < height - 1),
            top_full=cells[:, 0] == 4,
            bottom_full=cells[:, -1] == 4,
        )


def _flips(
    cells: _Cells, rows: _Axis, columns: _Axis, arithmetic: _Arithmetic, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """The masks' flips (`vis_core.rle_encode`), sorted: inside and below mixed cells, and
    where columns start or end in foreground (module docstring)."""
    source_height, source_width = cells.shape[1:]
    n, i, j = cells.mixed.T  # [M] each
    # Each mixed cell's output pixels on a grid [M, X, Y] (columns, then rows: the RLE
    # order) as large as the largest cell; slots past a cell's own pixels are invalid.
    slots_x, slots_y = np.arange(columns.output.shape[1]), np.arange(rows.output.shape[1])
    x = columns.output[j]  # [M, X]
    valid_x = slots_x < columns.count[j][:, None]
    x_at = np.minimum(x, columns.first[-1] - 1)
    # Along the columns first (the kernel's order): the top and bottom rows at each x.
    top_left, top_right, bottom_left, bottom_right = (c[:, None] for c in cells.corners)
    column_weights = (columns.weight0[x_at], columns.weight1[x_at])
    top = _mix(top_left, column_weights[0], top_right, column_weights[1], arithmetic.fused)
    bottom = _mix(bottom_left, column_weights[0], bottom_right, column_weights[1], arithmetic.fused)
    # Then down the rows, only where the top and bottom differ in sign: the others are
    # foreground (both clear of underflow) or background throughout.
    foreground = np.repeat(((top > _TINY) & (bottom > _TINY))[:, :, None], slots_y.size, axis=2)
    split = ((top > 0) | (bottom > 0)) & ((top <= _TINY) | (bottom <= _TINY)) & valid_x
    split = np.flatnonzero(split)
    split_row = i[split // slots_x.size]
    foreground.reshape(-1, slots_y.size)[split] = _mix_positive(
        top.reshape(-1)[split][:, None],
        rows.output_weight0[split_row],
        bottom.reshape(-1)[split][:, None],
        rows.output_weight1[split_row],
        arithmetic.fused,
    )

    # The value just above each cell's first row: background at the top of the frame,
    # the last row of the cell above when that one is mixed too (found by its key), else
    # that cell's constant value.
    row_count = rows.count[i]
    last = np.take_along_axis(foreground, (row_count - 1)[:, None, None], axis=2)[:, :, 0]
    key = (n * source_height + i) * source_width + j  # sorted
    above = np.minimum(np.searchsorted(key, key - source_width), key.size - 1)
    above_mixed = (key[above] == key - source_width) & (i > 0)
    before_first = np.where(above_mixed[:, None], last[above], cells.above_full[:, None])
    previous = np.concatenate([before_first[:, :, None], foreground[:, :, :-1]], axis=2)
    changes = (foreground != previous) & valid_x[:, :, None]
    changes &= slots_y < row_count[:, None, None]
    flat = np.flatnonzero(changes)
    cell, slot = np.divmod(flat, slots_x.size * slots_y.size)
    slot_x, slot_y = np.divmod(slot, slots_y.size)
    flip_mask = [n[cell]]
    flip_position = [x[cell, slot_x] * height + rows.output[i[cell], slot_y]]

    # Just below each cell's last row: the frame's bottom (background) or an unmixed cell.
    below_key = key + source_width
    below = np.minimum(np.searchsorted(key, below_key), key.size - 1)
    below_mixed = (key[below] == below_key) & (i < source_height - 1)
    after_last = cells.below_full & (i < source_height - 1)
    ends = (last != after_last[:, None]) & ~below_mixed[:, None] & valid_x
    cell, slot_x = np.nonzero(ends)
    flip_mask.append(n[cell])
    flip_position.append(x[cell, slot_x] * height + rows.first[i[cell] + 1])

    # Columns that start (end) in a foreground cell flip at their first (past their last)
    # pixel.
    for full, offset in ((cells.top_full, 0), (cells.bottom_full, height)):
        mask_index, source_column = np.nonzero(full)
        repeats = columns.count[source_column]
        output_column = np.repeat(columns.first[source_column], repeats) + _ranks(repeats)
        flip_mask.append(np.repeat(mask_index, repeats))
        flip_position.append(output_column * height + offset)

    return sorted_flips(
        np.concatenate(flip_mask), np.concatenate(flip_position), height * columns.first[-1]
    )


def _ranks(repeats: np.ndarray) -> np.ndarray:
    """0, 1, ..., r - 1 for each r of `repeats`, concatenated."""
    starts = np.cumsum(repeats) - repeats
    return np.arange(int(repeats.sum())) - np.repeat(starts, repeats)


@functools.lru_cache(maxsize=32)
def _matching_arithmetic(
    device: torch.device, source_height: int, source_width: int, height: int, width: int
) -> _Arithmetic | None:
    """The candidate arithmetic that gives `F.interpolate`'s values bit for bit on random
    logits (every pixel of some rows and columns), or None."""
    generator = torch.Generator().manual_seed(0)
    # A slice of a larger map, as the segmenter's logits are (cropped from the padding).
    padded = torch.randn(2, source_height + 3, source_width + 5, generator=generator) * 8
    logits = padded[:, :source_height, :source_width]
    expected = (
        F.interpolate(
            logits.to(device)[None], size=(height, width), mode="bilinear", align_corners=False
        )[0]
        .cpu()
        .numpy()
    )
    source = logits.numpy()
    picks = np.random.default_rng(0)
    lines_y = np.unique(np.r_[0, 1, height - 2, height - 1, picks.integers(0, height, _LINES)])
    lines_x = np.unique(np.r_[0, 1, width - 2, width - 1, picks.integers(0, width, _LINES)])
    probes = [
        (lines_y[:, None], np.arange(width)[None, :]),
        (np.arange(height)[:, None], lines_x[None, :]),
    ]
    for arithmetic in _CANDIDATES:
        rows = _axis(source_height, height, arithmetic)
        columns = _axis(source_width, width, arithmetic)
        if all(
            np.array_equal(
                _bilinear(
                    (
                        source[:, rows.source0[y], columns.source0[x]],
                        source[:, rows.source0[y], columns.source1[x]],
                        source[:, rows.source1[y], columns.source0[x]],
                        source[:, rows.source1[y], columns.source1[x]],
                    ),
                    (rows.weight0[y], rows.weight1[y]),
                    (columns.weight0[x], columns.weight1[x]),
                    arithmetic,
                ),
                expected[:, y, x],
            )
            for y, x in probes
        ):
            return arithmetic
    return None
