"""One tracklet's masks over its frames, read back from the output tables.

What a notebook needs to look at a track rather than read its numbers: `track_frames`
pairs each frame of the track (decoded from the video's `uri` in its `videos` row) with
the track's dense mask in that frame; `track_sheet` blends the mask over the frames, in
the colour `vis render` gives the track (it depends on the track id only), and tiles them
into a contact sheet.

Memory stays bounded: the video's masks are held as compressed RLE, the video is decoded
one frame at a time and only up to the last frame asked for, and only the frames kept
(`max_frames` of them, evenly spaced over the track) are held.

Dimension letters: N frames of the track, H x W a frame.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow.compute as pc

from vis_core import masks
from vis_core.render.font import draw_text
from vis_core.render.overlay import contact_sheet, instance_colors, overlay_masks
from vis_core.tables.read import VideoRowError, latest_run_id, ok_video_row, read_table
from vis_core.tables.schema import TRACKLET_FRAMES
from vis_core.video.decode import open_video

_KNOWN_SHOWN = 10  # track ids listed when the one asked for is not in the video


class TrackError(ValueError):
    """The tables hold no such track to show: an unknown or failed video, an unknown
    track, or masks that do not fit the video's frames."""


class TrackFrame(NamedTuple):
    """One frame of a track: `frame_index`, `image` `[H, W, 3]` uint8 RGB and the track's
    `mask` `[H, W]` bool in it."""

    frame_index: int
    image: np.ndarray
    mask: np.ndarray


def track_frames(
    tables_uri: str,
    video_id: str,
    track_id: int,
    *,
    run_id: str | None = None,
    max_frames: int | None = None,
) -> list[TrackFrame]:
    """The frames where track `track_id` of `video_id` has a non-empty mask, in order.

    tables_uri: the corpus job's output prefix (path or fsspec URI); run_id: the run to
    read (None: the latest); max_frames: keep at most this many frames, evenly spaced over
    the track (its first and last frames included); None keeps them all.

    Raises:
        TablesNotFoundError: no committed video under `tables_uri`.
        TrackError: the video is not in the run or failed in it, the track is not in the
            video, or its masks do not fit the frames.
        VideoDecodeError: the video cannot be read from its `uri`.
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be positive, got {max_frames!r}")
    run = run_id if run_id is not None else latest_run_id(tables_uri)
    video = _video_row(tables_uri, video_id, run)
    rows = read_table(
        tables_uri,
        TRACKLET_FRAMES,
        run_id=run,
        video_ids=[video_id],
        columns=["track_id", "frame_index", "mask", "height", "width"],
    )
    track_rows = rows.filter(pc.equal(rows["track_id"], track_id)).sort_by("frame_index")
    if track_rows.num_rows == 0:
        known = sorted(set(rows["track_id"].to_pylist()))
        listed = ", ".join(map(str, known[:_KNOWN_SHOWN])) + (
            ", ..." if len(known) > _KNOWN_SHOWN else ""
        )
        raise TrackError(
            f"video {video_id!r} of run {run!r} has no track {track_id}; its tracks are [{listed}]"
        )
    kept = track_rows.take(_evenly_spaced(track_rows.num_rows, max_frames))
    wanted = {index: row for row, index in enumerate(kept["frame_index"].to_pylist())}
    counts = kept["mask"].to_pylist()  # [N] compressed RLE
    heights, widths = kept["height"].to_pylist(), kept["width"].to_pylist()

    shown: list[TrackFrame] = []
    decoded = 0
    with open_video(video["uri"]) as reader:
        # Sequential decoding, stopped after the last frame wanted.
        for frame in reader.frames(max_output_frames=max(wanted) + 1):
            decoded += 1
            row = wanted.get(frame.index)
            if row is None:
                continue
            size = (heights[row], widths[row])
            if size != frame.image.shape[:2]:
                raise TrackError(
                    f"masks are {size[1]}x{size[0]} but the frames of {video_id!r} are "
                    f"{frame.image.shape[1]}x{frame.image.shape[0]}"
                )
            mask = masks.decode([masks.from_bytes(counts[row], *size)])[0]
            shown.append(TrackFrame(frame.index, frame.image, mask.astype(bool)))
    if len(shown) != len(wanted):
        raise TrackError(
            f"track {track_id} of {video_id!r} has masks up to frame {max(wanted)}, but the "
            f"video has only {decoded} frames"
        )
    return shown


def track_color(track_id: int) -> np.ndarray:
    """`[3]` uint8: the colour of a track, the same as `vis render` draws it in."""
    return instance_colors(track_id + 1)[track_id]


def track_sheet(
    tables_uri: str,
    video_id: str,
    track_id: int,
    *,
    run_id: str | None = None,
    frames: int = 8,
    columns: int = 4,
) -> np.ndarray:
    """A contact sheet `[H', W', 3]` uint8 of up to `frames` frames of a track, evenly
    spaced over it, with its mask blended over each and the frame index at the top left.

    See `track_frames` for the arguments and errors.
    """
    color = track_color(track_id)
    tiles = []
    for shown in track_frames(tables_uri, video_id, track_id, run_id=run_id, max_frames=frames):
        tile = overlay_masks(shown.image, shown.mask[None], color[None])  # [H, W, 3]
        scale = max(1, min(tile.shape[:2]) // 360)  # the label size `vis render` uses
        draw_text(tile, f"frame {shown.frame_index}", 2 * scale, 2 * scale, color, scale=scale)
        tiles.append(tile)
    return contact_sheet(tiles, columns=min(columns, len(tiles)))


def _video_row(tables_uri: str, video_id: str, run: str) -> dict:
    try:
        return ok_video_row(tables_uri, video_id, run)
    except VideoRowError as error:
        raise TrackError(str(error)) from None


def _evenly_spaced(count: int, limit: int | None) -> list[int]:
    """Positions of at most `limit` of `count` items, evenly spaced, first and last kept."""
    if limit is None or limit >= count:
        return list(range(count))
    return sorted(set(np.linspace(0, count - 1, limit).round().astype(int).tolist()))
