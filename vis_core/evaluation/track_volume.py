"""A whole track as one RLE mask: its T frames side by side, `[H, W*T]`.

In column-major order frame t of a video occupies pixels [t*H*W, (t+1)*H*W) of such a
volume, so the frames' run lengths simply follow one another (an absent frame is one
background run of H*W). The official video IoU, sum of intersections over sum of unions
over the frames, is then the plain IoU of two volumes: one pycocotools `iou` call gives
it for all (result, GT) pairs of a video and category, exactly (`i / u` of the same
integers, in C).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils

from vis_core import masks
from vis_core.rle_runs import RUN_LIMIT, DecodedCounts

# pycocotools counts a volume's pixels in uint32: longer videos use the per-frame path.
MAX_VOLUME_PIXELS = RUN_LIMIT - 1


def track_volumes(
    decoded: DecodedCounts,
    frame_strings: Sequence[np.ndarray],
    frame_sizes: Sequence[tuple[int, int]],
) -> list[masks.RLE | None]:
    """Compressed volume RLE `[H, W*T]` (bytes counts) of each of K tracks.

    decoded: the runs of every present frame of the tracks.
    frame_strings: per track `[T]` int64, the index in `decoded` of each frame's counts,
        -1 where the object is absent.
    frame_sizes: per track (H, W).
    Returns None for a track with no frames or more than 2**32 - 1 volume pixels.
    """
    lengths = np.array([len(strings) for strings in frame_strings], dtype=np.int64)  # [K]
    pixels = np.array([h * w for h, w in frame_sizes], dtype=np.int64)  # [K]
    supported = np.flatnonzero((lengths > 0) & (pixels * lengths <= MAX_VOLUME_PIXELS))
    volumes: list[masks.RLE | None] = [None] * len(frame_strings)
    if supported.size == 0:
        return volumes
    slots = np.concatenate([frame_strings[k] for k in supported])  # [S] string or -1
    slot_track = np.repeat(np.arange(supported.size), lengths[supported])  # [S]
    absent = slots < 0

    # A pool of runs: every decoded run, then one background run per absent frame.
    pool = np.concatenate([decoded.runs, pixels[supported][slot_track[absent]]])
    present_slots = np.where(absent, 0, slots)
    offsets = np.append(decoded.offsets, decoded.runs.size)  # valid even with no strings
    start = np.where(absent, decoded.runs.size + np.cumsum(absent) - 1, offsets[present_slots])
    size = np.where(absent, 1, offsets[present_slots + 1] - start)
    # Frames join at their borders: a background run that follows a background tail, or
    # the foreground run after an empty leading run that follows a foreground tail, is
    # added to the tail instead of starting a run of its own.
    first_of_track = np.ones(slots.size, dtype=bool)
    first_of_track[1:] = slot_track[1:] != slot_track[:-1]
    ends_background = (size & 1).astype(bool)  # runs alternate from background
    previous_background = np.roll(ends_background, 1)
    joined = np.where(previous_background, 1, np.where(pool[start] == 0, 2, 0))
    joined[first_of_track] = 0
    kept = size - joined
    out_start = np.cumsum(kept) - kept
    runs = pool[_concatenated_ranges(start + joined, kept)]
    merging = np.flatnonzero(joined > 0)
    np.add.at(runs, out_start[merging] - 1, pool[start[merging] + joined[merging] - 1])
    runs = runs.astype(np.uint32)
    bounds = np.append(out_start[first_of_track], runs.size)  # [K' + 1] runs of each track
    uncompressed = [
        {
            "size": [frame_sizes[k][0], frame_sizes[k][1] * int(lengths[k])],
            "counts": runs[bounds[i] : bounds[i + 1]],
        }
        for i, k in enumerate(supported.tolist())
    ]
    # One C call compresses all volumes (sizes come from each dict).
    for k, rle in zip(supported.tolist(), mask_utils.frPyObjects(uncompressed, 0, 0), strict=True):
        volumes[k] = rle
    return volumes


def _concatenated_ranges(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """`[sum(sizes)]` the indices start_i .. start_i + size_i - 1 for each i in turn."""
    ends = np.cumsum(sizes)
    return np.arange(ends[-1]) + np.repeat(starts - (ends - sizes), sizes)
