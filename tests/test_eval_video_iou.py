"""Video IoU: the volume path and the frame-by-frame path against the official per-pair loop."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from vis_core import masks
from vis_core.evaluation.track_masks import TrackMasks, build_track_masks
from vis_core.evaluation.video_iou import (
    video_intersections,
    video_iou_matrix,
    video_iou_reference,
)


def _random_frames(rng: np.random.Generator, length: int, height: int, width: int) -> list:
    """Per frame a dense mask or None, with the border cases of run-length joins."""
    frames: list[np.ndarray | None] = []
    for _ in range(length):
        kind = rng.random()
        if kind < 0.2:
            frames.append(None)
            continue
        mask = np.zeros((height, width), dtype=bool)
        if kind < 0.3:
            pass  # present but empty
        elif kind < 0.4:
            mask[:] = True
        else:
            y0, x0 = rng.integers(0, height), rng.integers(0, width)
            mask[y0 : y0 + rng.integers(1, height), x0 : x0 + rng.integers(1, width)] = True
            mask[0, 0] = rng.random() < 0.5  # starts with foreground or not
            mask[-1, -1] = rng.random() < 0.5  # ends with foreground or not
            mask ^= rng.random((height, width)) < 0.02
        frames.append(mask)
    return frames


def _tracks(frame_lists: list[list], height: int, width: int) -> list[TrackMasks]:
    counts = [
        [None if f is None else masks.encode_one(f)["counts"].encode() for f in frames]
        for frames in frame_lists
    ]
    labels = [f"track {i}" for i in range(len(counts))]
    return build_track_masks(counts, [(height, width)] * len(counts), labels)


def _without_volumes(tracks: list[TrackMasks]) -> list[TrackMasks]:
    return [TrackMasks(size=t.size, counts=t.counts, areas=t.areas, volume=None) for t in tracks]


@pytest.mark.parametrize("seed", range(6))
def test_both_paths_equal_the_official_loop_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    length, height, width = (
        int(rng.integers(1, 7)),
        int(rng.integers(3, 30)),
        int(rng.integers(3, 30)),
    )
    frames = [_random_frames(rng, length, height, width) for _ in range(9)]
    tracks = _tracks(frames, height, width)
    dets, gts = tracks[:5], tracks[5:]
    expected = np.array([[video_iou_reference(d, g) for g in gts] for d in dets])
    assert np.array_equal(video_iou_matrix(dets, gts), expected)
    by_frame = video_iou_matrix(_without_volumes(dets), _without_volumes(gts))
    assert np.array_equal(by_frame, expected)


def test_volume_is_the_frames_side_by_side():
    rng = np.random.default_rng(7)
    frames = [_random_frames(rng, 8, 11, 13) for _ in range(20)]
    for track, track_frames in zip(_tracks(frames, 11, 13), frames, strict=True):
        assert track.volume["size"] == [11, 13 * 8]
        volume = mask_utils.decode(track.volume).astype(bool)  # [H, W*T]
        for t, frame in enumerate(track_frames):
            expected = np.zeros((11, 13), bool) if frame is None else frame
            np.testing.assert_array_equal(volume[:, 13 * t : 13 * (t + 1)], expected)
        # Canonical runs: no empty run after the first, so pycocotools' merge walk is safe.
        runs = _runs_of(volume)
        assert all(run > 0 for run in runs[1:])


def test_intersection_recovery_from_the_iou_is_exact_up_to_2_to_the_32():
    rng = np.random.default_rng(0)
    a = rng.integers(1, 2**32, size=1_000_000).astype(np.float64)
    b = rng.integers(1, 2**32, size=a.size).astype(np.float64)
    i = np.floor(rng.random(a.size) * (np.minimum(a, b) + 1))
    iou = i / (a + b - i)  # what pycocotools returns: (double) i / (double) u
    recovered = np.rint(iou * (a + b) / (1.0 + iou))
    np.testing.assert_array_equal(recovered, i)


def test_frame_by_frame_intersections_on_large_frames():
    # Areas near 10^6 pixels per frame: the recovered intersections must be exact.
    rng = np.random.default_rng(3)
    height, width = 1000, 1200
    frames = []
    for _ in range(4):
        track = []
        for _ in range(2):
            mask = np.zeros((height, width), bool)
            y0, x0 = rng.integers(0, 300, size=2)
            mask[y0 : y0 + 700, x0 : x0 + 900] = True
            mask ^= rng.random((height, width)) < 0.01
            track.append(mask)
        frames.append(track)
    tracks = _tracks(frames, height, width)
    got = video_intersections(tracks[:2], tracks[2:])
    dense = [np.stack(f) for f in frames]
    expected = [[int((dense[d] & dense[g]).sum()) for g in (2, 3)] for d in (0, 1)]
    np.testing.assert_array_equal(got, expected)


def test_no_pairs_give_an_empty_matrix():
    tracks = _tracks([[np.ones((4, 4), bool)]], 4, 4)
    assert video_iou_matrix(tracks, []).shape == (1, 0)
    assert video_iou_matrix([], tracks).shape == (0, 1)


def _runs_of(mask: np.ndarray) -> list[int]:
    flat = mask.flatten(order="F").astype(np.int8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs
