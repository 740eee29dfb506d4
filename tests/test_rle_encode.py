"""The vectorised RLE encoder against pycocotools: counts strings byte for byte, areas and
boxes, on random masks and on the cases that stress the format."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from vis_core import masks
from vis_core.rle_encode import EncodedMasks, encode_flips, encode_masks, mask_flips
from vis_core.rle_runs import decode_counts


def coco_encode(stack: np.ndarray) -> list[dict]:
    """pycocotools' own encoding of masks `[N, H, W]`."""
    return mask_utils.encode(np.asfortranarray(np.moveaxis(stack != 0, 0, -1).astype(np.uint8)))


def assert_matches_pycocotools(stack: np.ndarray) -> EncodedMasks:
    encoded = encode_masks(stack)
    expected = coco_encode(stack)
    assert encoded.counts == [rle["counts"] for rle in expected]
    np.testing.assert_array_equal(encoded.areas, mask_utils.area(expected))
    np.testing.assert_array_equal(encoded.boxes, mask_utils.toBbox(expected).reshape(-1, 4))
    assert encoded.areas.dtype == np.int64 and encoded.boxes.dtype == np.float64
    return encoded


def from_runs(runs: list[int], height: int, width: int) -> np.ndarray:
    """A mask `[H, W]` from its column-major runs (background first)."""
    values = np.repeat(np.arange(len(runs)) % 2, runs).astype(bool)
    return values.reshape(width, height).T


SIZES = [(1, 1), (1, 9), (9, 1), (7, 13), (2, 2), (24, 32), (31, 17), (64, 100)]


@pytest.mark.parametrize("height, width", SIZES)
@pytest.mark.parametrize("density", [0.0, 0.02, 0.3, 0.5, 0.9, 1.0])
def test_random_masks(height: int, width: int, density: float) -> None:
    rng = np.random.default_rng(height * 1000 + width)
    noise = rng.random((6, height, width)) < density
    # Blobs: long runs of both values, as real masks have.
    coarse = rng.random((6, (height + 3) // 4, (width + 3) // 4)) < density
    blobs = coarse.repeat(4, axis=1).repeat(4, axis=2)[:, :height, :width]
    assert_matches_pycocotools(np.concatenate([noise, blobs]))


def test_masks_of_single_pixels_rows_and_columns() -> None:
    height, width = 7, 13
    cases = []
    for y, x in [(0, 0), (height - 1, width - 1), (3, 6), (height - 1, 0), (0, width - 1)]:
        mask = np.zeros((height, width), bool)
        mask[y, x] = True
        cases += [mask, ~mask]
    for row in (0, 3, height - 1):
        mask = np.zeros((height, width), bool)
        mask[row] = True
        cases += [mask, ~mask]
    for column in (0, 5, width - 1):
        mask = np.zeros((height, width), bool)
        mask[:, column] = True
        cases += [mask, ~mask]
    checker = (np.arange(height)[:, None] + np.arange(width)) % 2 == 0
    cases += [checker, ~checker, np.zeros((height, width), bool), np.ones((height, width), bool)]
    assert_matches_pycocotools(np.stack(cases))


@pytest.mark.parametrize("height, width", [(1, 1), (1, 40), (40, 1), (5, 8), (8, 5)])
def test_odd_sizes_empty_full_and_checkerboards(height: int, width: int) -> None:
    checker = (np.arange(height)[:, None] + np.arange(width)) % 2 == 1
    stack = np.stack([np.zeros_like(checker), np.ones_like(checker), checker, ~checker])
    assert_matches_pycocotools(stack)


def test_long_runs_and_large_differences() -> None:
    # 300 x 400 = 120,000 pixels: runs past 2**16, and differences to the run two places
    # earlier that are large and negative or positive (numbers of 1 to 4 groups, both signs).
    height, width = 300, 400
    pixels = height * width
    run_lists = [
        [pixels - 1, 1],
        [0, pixels - 1, 1],
        [70_000, 3, 5, 49_990, 2],
        [1, 65_537, 2, 3, 54_455, 2],
        [15, 16, 17, 31, 32, 511, 512, 513, 16_383, 16_384, 16_385, 60_000, 9_201],
        [100_000, 17, 2, 19_000, 981],
    ]
    stack = []
    for runs in run_lists:
        assert sum(runs) == pixels
        stack.append(from_runs(runs, height, width))
    encoded = assert_matches_pycocotools(np.stack(stack))
    decoded = decode_counts(encoded.counts)
    for index, runs in enumerate(run_lists):
        got = decoded.runs[decoded.offsets[index] : decoded.offsets[index + 1]]
        assert got.tolist() == [run for position, run in enumerate(runs) if run or position == 0]


def test_numbers_of_up_to_seven_groups_without_dense_masks() -> None:
    # Flips need no dense mask: runs up to 2**30 (differences that take 7 groups; a first
    # run of 0 when the mask starts in foreground) against pycocotools' encoding of the
    # same uncompressed runs (it counts pixels in 32 bits).
    rng = np.random.default_rng(3)
    for _ in range(30):
        count = int(rng.integers(1, 8))
        scale = rng.choice([2**4, 2**9, 2**14, 2**19, 2**24, 2**29, 2**30], size=count)
        runs = [int(v) for v in rng.integers(1, scale)]
        runs[0] = 0 if rng.random() < 0.3 else runs[0]
        runs.append(int(rng.integers(1, 2**30)))
        height, width = 1, sum(runs)
        flips = np.cumsum(runs)[:-1]
        if flips.size % 2:  # the mask ends in foreground
            flips = np.append(flips, width)
        encoded = encode_flips(np.zeros(flips.size, np.int64), flips, 1, height, width)
        expected = mask_utils.frPyObjects({"size": [height, width], "counts": runs}, height, width)
        assert encoded.counts == [expected["counts"]]
        assert encoded.areas[0] == sum(runs[1::2])


def test_flips_of_masks_of_any_dtype() -> None:
    rng = np.random.default_rng(4)
    stack = rng.random((3, 9, 11)) < 0.4
    index, positions = mask_flips(stack.astype(np.float32) * 3.5)
    expected = mask_flips(stack)
    np.testing.assert_array_equal(index, expected[0])
    np.testing.assert_array_equal(positions, expected[1])
    assert encode_masks((stack * 255).astype(np.uint8)).counts == encode_masks(stack).counts


def test_no_masks_and_rle_dicts() -> None:
    empty = encode_masks(np.zeros((0, 4, 5), bool))
    assert empty.counts == [] and empty.areas.shape == (0,) and empty.boxes.shape == (0, 4)
    stack = np.random.default_rng(5).random((4, 6, 7)) < 0.5
    assert encode_masks(stack).rles() == masks.encode(stack)
    with pytest.raises(ValueError, match="even number of flips"):
        encode_flips(np.array([0]), np.array([3]), 1, 2, 2)
