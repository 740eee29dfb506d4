"""The masks of evaluated tracks, decoded and checked in one batch.

Every frame's compressed counts are decoded with numpy (`rle_runs`), which checks them
(pycocotools' C code would take broken counts silently), gives the per-frame areas, and
lets each track be laid out as one volume RLE for the video IoU (`track_volume`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vis_core import masks
from vis_core.evaluation.errors import EvaluationInputError
from vis_core.evaluation.track_volume import track_volumes
from vis_core.rle_runs import decode_counts


@dataclass(frozen=True, eq=False)
class TrackMasks:
    """The masks of one object over a video of T frames of H x W.

    size: (H, W).
    counts: `[T]` compressed RLE counts as bytes, or None where the object is absent.
    areas: `[T]` int64 foreground pixels, 0 where absent.
    volume: the frames side by side as one compressed RLE `[H, W*T]`, or None when the
        volume has 2**32 pixels or more (then the IoU goes frame by frame).
    """

    size: tuple[int, int]
    counts: tuple[bytes | None, ...]
    areas: np.ndarray
    volume: masks.RLE | None

    @property
    def rles(self) -> list[masks.RLE | None]:
        """`[T]` compressed RLE dicts (bytes counts, for pycocotools' C code) or None."""
        size = list(self.size)
        return [None if c is None else {"size": size, "counts": c} for c in self.counts]

    @property
    def present(self) -> np.ndarray:
        """`[T]` bool: frames where the object has a (possibly empty) mask."""
        return np.fromiter((c is not None for c in self.counts), bool, len(self.counts))


def build_track_masks(
    frame_counts: Sequence[Sequence[bytes | None]],
    frame_sizes: Sequence[tuple[int, int]],
    labels: Sequence[str],
) -> list[TrackMasks]:
    """Check and index K tracks given per frame compressed counts (bytes) or None.

    frame_sizes: (H, W) of each track's video; labels: how errors name each track.
    Raises EvaluationInputError for the first malformed mask, naming track and frame.
    """
    counts: list[bytes] = []
    frame_strings: list[np.ndarray] = []
    pixel_totals: list[int] = []
    for track_counts, (height, width) in zip(frame_counts, frame_sizes, strict=True):
        strings = np.full(len(track_counts), -1, dtype=np.int64)
        for frame, frame_count in enumerate(track_counts):
            if frame_count is not None:
                strings[frame] = len(counts)
                counts.append(frame_count)
        pixel_totals.extend([height * width] * (len(counts) - len(pixel_totals)))
        frame_strings.append(strings)
    decoded = decode_counts(counts)
    invalid = np.flatnonzero(decoded.malformed | (decoded.pixel_totals != pixel_totals))
    if invalid.size:
        _raise_malformed(int(invalid[0]), frame_strings, counts, frame_sizes, labels)
    areas = np.append(decoded.areas, 0)  # index -1 (absent) reads 0
    volumes = track_volumes(decoded, frame_strings, frame_sizes)
    return [
        TrackMasks(size=size, counts=tuple(track_counts), areas=areas[strings], volume=volume)
        for track_counts, strings, size, volume in zip(
            frame_counts, frame_strings, frame_sizes, volumes, strict=True
        )
    ]


def _raise_malformed(
    string: int,
    frame_strings: list[np.ndarray],
    counts: list[bytes],
    frame_sizes: Sequence[tuple[int, int]],
    labels: Sequence[str],
) -> None:
    track = next(k for k, strings in enumerate(frame_strings) if string in strings)
    frame = int(np.flatnonzero(frame_strings[track] == string)[0])
    height, width = frame_sizes[track]
    try:  # the shared per-string check says what is wrong
        masks.to_compressed({"size": [height, width], "counts": counts[string]}, height, width)
        reason = "compressed RLE counts do not decode to the frame"
    except masks.MaskFormatError as error:
        reason = str(error)
    raise EvaluationInputError(f"{labels[track]} frame {frame}: {reason}")
