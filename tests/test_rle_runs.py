"""Batch decoding of compressed RLE counts: runs, areas and malformed strings."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from vis_core import masks, rle_runs
from vis_core.rle_runs import decode_counts

H, W = 23, 31


@pytest.fixture
def stack() -> np.ndarray:
    rng = np.random.default_rng(0)
    dense = rng.random((60, H, W)) > 0.5
    dense[0] = False
    dense[1] = True
    dense[2] = False
    dense[2, 5:9, 3:30] = True  # long runs: multi-character numbers, negative differences
    return dense


def _encoded(dense: np.ndarray) -> list[bytes]:
    return [rle["counts"].encode() for rle in masks.encode(dense)]


def _dense_runs(mask: np.ndarray) -> list[int]:
    flat = mask.flatten(order="F").astype(np.int8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


def test_runs_and_areas_match_the_masks(stack):
    counts = _encoded(stack)
    decoded = decode_counts([b"", *counts, b""])  # empty strings own no runs
    assert not decoded.malformed[1:-1].any()
    for index, mask in enumerate(stack, start=1):
        runs = decoded.runs[decoded.offsets[index] : decoded.offsets[index + 1]]
        assert runs.tolist() == _dense_runs(mask)
    np.testing.assert_array_equal(decoded.pixel_totals[1:-1], H * W)
    np.testing.assert_array_equal(decoded.pixel_totals[[0, -1]], 0)
    rles = [{"size": [H, W], "counts": c} for c in counts]
    np.testing.assert_array_equal(decoded.areas[1:-1], mask_utils.area(rles))


def test_chunks_give_the_same_result(stack, monkeypatch):
    counts = _encoded(stack)
    whole = decode_counts(counts)
    monkeypatch.setattr(rle_runs, "_CHUNK_CHARS", 50)
    chunked = decode_counts(counts)
    for field in ("runs", "offsets", "pixel_totals", "areas", "malformed"):
        np.testing.assert_array_equal(getattr(chunked, field), getattr(whole, field))


def test_verdicts_agree_with_the_shared_per_string_check(stack):
    rng = np.random.default_rng(1)
    mutated = [b"", b"0", b"1"]
    for counts in _encoded(stack) * 5:
        damaged = bytearray(counts)
        for _ in range(int(rng.integers(0, 3))):
            operation = rng.integers(3)
            if operation == 0 and damaged:
                damaged[rng.integers(len(damaged))] = int(rng.integers(40, 120))
            elif operation == 1 and damaged:
                del damaged[rng.integers(len(damaged))]
            else:
                damaged.insert(int(rng.integers(len(damaged) + 1)), int(rng.integers(48, 112)))
        mutated.append(bytes(damaged))
    decoded = decode_counts(mutated)
    invalid = decoded.malformed | (decoded.pixel_totals != H * W)
    for counts, verdict in zip(mutated, invalid, strict=True):
        try:
            masks.to_compressed({"size": [H, W], "counts": counts}, H, W)
            valid = True
        except masks.MaskFormatError:
            valid = False
        assert valid != verdict, counts
    assert 0.2 < invalid.mean() < 0.95  # the fuzzing made both kinds


@pytest.mark.parametrize(
    "counts",
    [b"0 ", b"P", b"oooooooo0", b"0\x00"],  # bad byte, cut number, too long, NUL
)
def test_malformed_strings_are_flagged(counts):
    assert decode_counts([counts]).malformed.tolist() == [True]
