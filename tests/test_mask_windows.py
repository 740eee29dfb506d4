"""Masks from windows of their logits are `upsampled_masks` of the whole maps, bit for bit:
on the shapes and geometries of `test_mask_upsampling.py`, windows at the maps' borders,
instances with no positive logit, and the dense fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_mask_upsampling import GEOMETRIES, assert_same, logit_maps
from vis_core.inference import mask_upsampling as upsampling
from vis_core.inference import mask_windows
from vis_core.inference.mask_upsampling import upsampled_masks
from vis_core.inference.mask_windows import logit_window, windowed_masks


def windows_of(maps: torch.Tensor, frames: int) -> list:
    return [logit_window(maps[start : start + frames]) for start in range(0, len(maps), frames)]


@pytest.mark.parametrize("source, original", GEOMETRIES)
@pytest.mark.parametrize("kind", ["blobs", "noise", "positive", "negative", "borders"])
def test_windows_give_the_masks_of_the_whole_maps(monkeypatch, source, original, kind) -> None:
    frames = 2 if kind != "borders" else 3
    maps = logit_maps(kind, 2 * frames, *source, seed=sum(source) + len(kind))
    expected = upsampled_masks(maps, *original)
    windows = windows_of(maps, frames)
    assert_same(windowed_masks(windows, frames, source, *original), expected)
    monkeypatch.setattr(upsampling, "_MOST_MIXED", np.inf)
    monkeypatch.setattr(mask_windows, "_MOST_MIXED", np.inf)
    assert_same(windowed_masks(windows, frames, source, *original), expected)


def test_windows_of_small_masks_are_small_and_take_no_dense_path(monkeypatch) -> None:
    ys, xs = torch.meshgrid(torch.arange(240.0), torch.arange(427.0), indexing="ij")
    centres = [(30, 40), (32, 44), (0, 0), (0, 0), (200, 400), (205, 410), (120, 200), (118, 190)]
    maps = torch.stack([4 - ((ys - y) ** 2 + (xs - x) ** 2).sqrt() / 6 for y, x in centres])
    maps[2:4] = -1.0  # an instance with no positive logit: no window
    windows = windows_of(maps, 2)
    assert windows[1] is None
    assert sum(w.values.size for w in windows if w is not None) < 0.5 * maps.numel()
    expected = upsampled_masks(maps, 720, 1280)

    def no_dense(*args: object) -> None:
        raise AssertionError("the whole maps were made")

    monkeypatch.setattr(mask_windows, "_whole_maps", no_dense)
    assert_same(windowed_masks(windows, 2, (240, 427), 720, 1280), expected)


def test_tiny_logits_and_no_matching_arithmetic_take_the_dense_path(monkeypatch) -> None:
    maps = logit_maps("blobs", 4, 24, 40, seed=5)
    maps[1, 3, 3] = 1e-35
    expected = upsampled_masks(maps, 73, 121)
    assert_same(windowed_masks(windows_of(maps, 2), 2, (24, 40), 73, 121), expected)
    monkeypatch.setattr(mask_windows, "_matching_arithmetic", lambda *args: None)
    assert_same(windowed_masks(windows_of(maps, 2), 2, (24, 40), 73, 121), expected)
