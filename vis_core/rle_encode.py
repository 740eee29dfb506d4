"""Encoding many binary masks to COCO compressed RLE at once, with numpy.

pycocotools' `mask.encode` walks every pixel of every mask in C. Here a batch of masks is
described by its *flips*: for each mask, the column-major pixel positions where the value
changes, reading a 0 before the first pixel and after the last (position H*W is a flip
when the last pixel is foreground). Flips come from dense masks (`mask_flips`) or from
code that knows them without ever making the dense mask
(`vis_core.inference.mask_upsampling`); `encode_flips` turns them, for the whole batch in
a few numpy passes, into the counts strings pycocotools writes, byte for byte, and into
the areas and boxes that would otherwise be measured by decoding those strings again.

The counts format is the one `vis_core.rle_runs` decodes: runs alternate background /
foreground starting with background (a leading 0 when the first pixel is foreground, no
trailing 0); from the fourth run on, each number is the difference to the run two places
earlier; each number is written as 6-bit groups (least significant first, 0x20 = more
groups follow, sign in bit 0x10 of the last group), each group as the character 48 + group.

Dimension letters: N masks, H x W their size, F flips of the batch, R runs.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

# A number takes g groups when it lies in [-2**(5g - 1), 2**(5g - 1)): the thresholds of
# |x| (x ^ sign for negatives) from which it takes one more group.
_GROUP_THRESHOLDS = np.array([1 << (5 * g - 1) for g in range(1, 8)], dtype=np.int64)


@dataclass(frozen=True, eq=False)
class EncodedMasks:
    """N masks of `height` x `width` as COCO compressed RLE, with what is read from them.

    counts: N counts strings (bytes, as pycocotools' `encode` gives them);
    areas `[N]` int64: foreground pixels; boxes `[N, 4]` float64: tight (x, y, w, h),
    zeros for an empty mask (pycocotools' `toBbox`).
    """

    height: int
    width: int
    counts: list[bytes]
    areas: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.counts)

    def rles(self) -> list[dict[str, Any]]:
        """The masks as JSON-ready RLE dicts `{"size": [H, W], "counts": str}`."""
        size = [self.height, self.width]
        return [{"size": list(size), "counts": counts.decode("ascii")} for counts in self.counts]


def encode_masks(masks: np.ndarray) -> EncodedMasks:
    """Encode masks `[N, H, W]` (any dtype, nonzero is foreground)."""
    if masks.ndim != 3:
        raise ValueError(f"expected masks of shape [N, H, W], got {masks.shape}")
    count, height, width = masks.shape
    mask_index, positions = mask_flips(masks)
    return encode_flips(mask_index, positions, count, height, width)


def mask_flips(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The flips of masks `[N, H, W]`: mask_index `[F]` and column-major position `[F]`
    (in [0, H*W]), int64, sorted by mask then position."""
    count, height, width = masks.shape
    foreground = masks if masks.dtype == np.bool_ else masks != 0
    # Changes down each column, with background above and below it: row y of `changes`
    # says pixel (y, x) differs from (y - 1, x). Found in the masks' own (row-major)
    # order, which costs a pass, then sorted, which costs a few per flip: cheaper than
    # turning every mask column-major first.
    changes = np.empty((count, height + 1, width), dtype=bool)
    changes[:, 0] = foreground[:, 0]
    np.not_equal(foreground[:, 1:], foreground[:, :-1], out=changes[:, 1:-1])
    changes[:, -1] = foreground[:, -1]
    mask_index, rest = np.divmod(np.flatnonzero(changes), (height + 1) * width)
    y, x = np.divmod(rest, width)
    return sorted_flips(mask_index, x * height + y, height * width)


def sorted_flips(
    mask_index: np.ndarray, positions: np.ndarray, pixels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Flips in any order, sorted by mask then position; a position flipped twice (a
    column that ends in foreground, and the next one that starts in it) is no flip."""
    order = np.sort(mask_index * (pixels + 1) + positions)
    twice = np.flatnonzero(order[1:] == order[:-1])
    if twice.size:
        order = np.delete(order, np.concatenate([twice, twice + 1]))
    return np.divmod(order, pixels + 1)


def encode_flips(
    mask_index: np.ndarray, positions: np.ndarray, count: int, height: int, width: int
) -> EncodedMasks:
    """Encode N = `count` masks of `height` x `width` from their flips.

    mask_index, positions `[F]` int: each mask's flips (see the module docstring),
    strictly increasing within a mask, masks in order; every mask has an even number.
    """
    pixels = height * width
    mask_index = np.asarray(mask_index, dtype=np.int64)
    positions = np.asarray(positions, dtype=np.int64)
    flips = np.bincount(mask_index, minlength=count)  # [N]
    if flips.size != count or np.any(flips % 2):
        raise ValueError("every mask needs an even number of flips, masks in [0, count)")
    areas, boxes = _areas_and_boxes(mask_index, positions, count, height)

    # Each mask's run boundaries: 0, its flips, H*W; runs are their differences.
    edges = np.empty(positions.size + 2 * count, dtype=np.int64)
    edge_start = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(flips + 2, out=edge_start[1:])
    edges[edge_start[:-1]] = 0
    edges[edge_start[1:] - 1] = pixels
    edges[np.arange(positions.size) + 2 * mask_index + 1] = positions
    runs = np.diff(edges)
    keep = np.ones(runs.size, dtype=bool)
    keep[edge_start[1:-1] - 1] = False  # from one mask's end to the next one's start
    # No trailing 0 run after a mask that ends in foreground (an empty frame keeps its "0").
    run_count = flips + 1
    trailing_zero = np.zeros(count, dtype=bool)
    if positions.size:
        last_flip = positions[np.maximum(np.cumsum(flips) - 1, 0)]
        trailing_zero = (flips > 0) & (last_flip == pixels)
    keep[(edge_start[1:] - 2)[trailing_zero]] = False
    run_count -= trailing_zero
    runs = runs[keep]
    return EncodedMasks(
        height=height,
        width=width,
        counts=_counts_strings(runs, run_count),
        areas=areas,
        boxes=boxes,
    )


def _counts_strings(runs: np.ndarray, run_count: np.ndarray) -> list[bytes]:
    """Runs `[R]` of N masks (`run_count[i]` each, at least one) -> N counts strings."""
    run_start = np.zeros(run_count.size + 1, dtype=np.int64)
    np.cumsum(run_count, out=run_start[1:])
    in_mask = np.arange(runs.size) - np.repeat(run_start[:-1], run_count)
    values = runs.copy()
    later = np.flatnonzero(in_mask >= 3)
    values[later] -= runs[later - 2]
    magnitude = values ^ (values >> 63)  # x for x >= 0, -x - 1 for x < 0
    groups = np.searchsorted(_GROUP_THRESHOLDS, magnitude, side="right") + 1  # [R]
    char_start = np.zeros(runs.size + 1, dtype=np.int64)
    np.cumsum(groups, out=char_start[1:])
    if char_start[-1] == runs.size:  # every number is one character (small masks)
        chars = (values & 0x1F).astype(np.uint8) + np.uint8(48)
    else:
        number = np.repeat(np.arange(runs.size), groups)  # [C] the number of each character
        group = np.arange(char_start[-1]) - char_start[:-1][number]
        payload = (values[number] >> (5 * group)) & 0x1F
        more = group < groups[number] - 1
        chars = (payload | (more.astype(np.int64) << 5)).astype(np.uint8) + np.uint8(48)
    text = chars.tobytes()
    bounds = char_start[run_start].tolist()
    return [text[start:stop] for start, stop in itertools.pairwise(bounds)]


def _areas_and_boxes(
    mask_index: np.ndarray, positions: np.ndarray, count: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Foreground pixels `[N]` and tight boxes `[N, 4]` (x, y, w, h) from the flips."""
    # Masks have even flip counts, so a flip's parity in the batch is its parity in its
    # mask: even flips start foreground runs, odd ones end them.
    starts, ends, owner = positions[0::2], positions[1::2], mask_index[0::2]
    areas = np.bincount(owner, weights=ends - starts, minlength=count).astype(np.int64)
    boxes = np.zeros((count, 4), dtype=np.float64)
    if starts.size == 0:
        return areas, boxes
    first_x, first_y = np.divmod(starts, height)
    last_x, last_y = np.divmod(ends - 1, height)
    # A run that goes on into the next column covers the last row and the first.
    wraps = first_x != last_x
    first_y[wraps] = 0
    last_y[wraps] = height - 1
    shown = np.flatnonzero(np.bincount(owner, minlength=count))
    segment = np.searchsorted(owner, shown)  # each shown mask's first run
    segment_end = np.append(segment[1:], owner.size) - 1
    x0, x1 = first_x[segment], last_x[segment_end]  # columns only grow along a mask
    y0 = np.minimum.reduceat(first_y, segment)
    y1 = np.maximum.reduceat(last_y, segment)
    boxes[shown] = np.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], axis=1)
    return areas, boxes
