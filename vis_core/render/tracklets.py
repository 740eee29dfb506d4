"""Draw one video's tracklets from the output tables: an mp4 and a PNG contact sheet.

The rows come from the tables (`vis_core.tables.read`, one run: the one asked for or the
latest); the frames from the video's `uri` in its `videos` row, decoded one at a time.
Each tracklet's mask is blended over the frame in a colour that depends only on its
`track_id`, with its outline, and labelled `#<track_id> <category_name> <score>` at the
top-left of its box in that frame. Only tracks scoring at least `min_score` are drawn (the
tables keep every selected instance, down to scores near 0): a preview shows what the model
is confident of, and says so in a legend at its bottom-left corner.

Memory stays bounded for long videos: the video's masks are held as compressed RLE (a few
MB even for thousands of frames), dense masks and frames one frame at a time, and the
contact sheet keeps only its `sheet_frames` tiles.

Dimension letters: N rows of `tracklet_frames`, T frames, H x W a frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vis_core import masks
from vis_core.render import DEFAULT_MIN_SCORE
from vis_core.render.font import draw_text, text_size
from vis_core.render.overlay import contact_sheet, instance_colors, overlay_masks, write_png
from vis_core.tables.read import VideoRowError, latest_run_id, ok_video_row, read_table
from vis_core.tables.schema import TRACKLET_FRAMES, TRACKLETS
from vis_core.video.decode import open_video
from vis_core.video.encode import Mp4Writer

SHEET_COLUMNS = 4
# Wider frames are shrunk by a whole factor for the contact sheet, so that it stays small.
SHEET_TILE_MAX_WIDTH = 480
_MP4_CRF = 18  # a little better than the default 23, so labels stay sharp
_LEGEND_COLOR = np.array([255, 255, 255], np.uint8)


class RenderError(ValueError):
    """The tables cannot be rendered for this video (unknown, failed, inconsistent)."""


@dataclass(frozen=True)
class RenderSummary:
    """What `render_tracklets` wrote.

    frames_written: frames in the mp4; tracklets_drawn: distinct track ids shown in at
    least one of them; sheet_uri: None when no contact sheet was asked for.
    """

    video_id: str
    run_id: str
    frames_written: int
    tracklets_drawn: int
    out_uri: str
    sheet_uri: str | None
    tracklets_hidden: int = 0
    min_score: float = DEFAULT_MIN_SCORE


@dataclass(frozen=True)
class _Track:
    label: str
    color: np.ndarray  # [3] uint8
    score: float


def render_tracklets(
    tables_uri: str,
    video_id: str,
    out_uri: str,
    *,
    sheet_uri: str | None = None,
    run_id: str | None = None,
    sheet_frames: int = 8,
    min_score: float = DEFAULT_MIN_SCORE,
) -> RenderSummary:
    """Render the committed tracklets of `video_id` over its frames to an mp4 at `out_uri`.

    tables_uri: the output prefix of the corpus job (path or fsspec URI); run_id: the run
    to show (None: the latest); sheet_uri: also write a PNG contact sheet of `sheet_frames`
    evenly spaced frames there; min_score: draw only tracks scoring at least this (0: all,
    and no legend).

    Raises:
        TablesNotFoundError: no committed video under `tables_uri`.
        RenderError: the video is not in the run, failed in it, or its masks do not fit
            its frames.
        VideoDecodeError: the video cannot be read from its `uri`.
    """
    if sheet_frames < 1:
        raise ValueError(f"sheet_frames must be positive, got {sheet_frames!r}")
    if not 0.0 <= min_score <= 1.0:
        raise ValueError(f"min_score must be in [0, 1], got {min_score!r}")
    run = run_id if run_id is not None else latest_run_id(tables_uri)
    video = _video_row(tables_uri, video_id, run)
    all_tracks = _tracks(tables_uri, video_id, run)
    tracks = {k: track for k, track in all_tracks.items() if track.score >= min_score}
    legend = f"tracks scoring >= {min_score:.2f}" if min_score > 0 else None
    rows = read_table(
        tables_uri,
        TRACKLET_FRAMES,
        run_id=run,
        video_ids=[video_id],
        columns=["track_id", "frame_index", "mask", "height", "width", "bbox"],
    ).sort_by([("frame_index", "ascending"), ("track_id", "ascending")])
    rows = rows.filter(pc.is_in(rows["track_id"], pa.array(sorted(tracks), pa.int64())))
    frame_index = rows["frame_index"].to_numpy()  # [N], sorted
    track_ids = rows["track_id"].to_numpy()  # [N]
    boxes = pc.list_flatten(rows["bbox"]).to_numpy().reshape(-1, 4)  # [N, 4] x, y, w, h
    sizes = np.stack([rows["height"].to_numpy(), rows["width"].to_numpy()], axis=1)  # [N, 2]
    counts = rows["mask"].combine_chunks()  # [N] compressed RLE, decoded frame by frame

    drawn: set[int] = set()
    tiles: list[np.ndarray] = []
    with open_video(video["uri"]) as reader:
        fps = video["fps"] or reader.info.fps
        num_frames = video["num_frames"] or reader.info.num_frames
        scale = max(1, min(reader.info.height, reader.info.width) // 360)
        picked = set(np.linspace(0, max(num_frames - 1, 0), sheet_frames).round().astype(int))
        with Mp4Writer(out_uri, fps=fps, crf=_MP4_CRF) as writer:
            for frame in reader.frames():
                start, stop = np.searchsorted(frame_index, [frame.index, frame.index + 1])
                shown = range(start, stop)
                image = _draw(
                    frame.image,
                    [_frame_mask(counts[row].as_py(), sizes[row], frame.image) for row in shown],
                    [tracks[int(track_ids[row])] for row in shown],
                    boxes[start:stop],
                    scale,
                    legend,
                )
                drawn.update(int(track_id) for track_id in track_ids[start:stop])
                writer.write(image)
                if sheet_uri is not None and frame.index in picked:
                    tiles.append(_thumbnail(image))
            frames_written = writer.num_frames
    if sheet_uri is not None:
        write_png(sheet_uri, contact_sheet(tiles, columns=min(SHEET_COLUMNS, len(tiles))))
    return RenderSummary(
        video_id=video_id,
        run_id=run,
        frames_written=frames_written,
        tracklets_drawn=len(drawn),
        out_uri=out_uri,
        sheet_uri=sheet_uri,
        tracklets_hidden=len(all_tracks) - len(tracks),
        min_score=min_score,
    )


def label_origin(
    box: np.ndarray | tuple[float, float, float, float],
    label_size: tuple[int, int],
    frame_size: tuple[int, int],
) -> tuple[int, int]:
    """(x, y) of a label's top-left corner for a box (x, y, w, h): just above the box's
    top-left corner, or just inside it where there is no room above; moved left where it
    would run past the right border. label_size is (width, height), frame_size (H, W)."""
    width, height = label_size
    x, y = int(box[0]), int(box[1])
    top = y - height if y >= height else y
    left = max(0, min(x, frame_size[1] - width))
    return left, top


def _video_row(tables_uri: str, video_id: str, run: str) -> dict:
    try:
        return ok_video_row(tables_uri, video_id, run)
    except VideoRowError as error:
        raise RenderError(str(error)) from None


def _tracks(tables_uri: str, video_id: str, run: str) -> dict[int, _Track]:
    """Label and colour of each track id; the colour depends on the track id only."""
    table = read_table(
        tables_uri,
        TRACKLETS,
        run_id=run,
        video_ids=[video_id],
        columns=["track_id", "category_name", "score"],
    )
    ids = table["track_id"].to_pylist()
    colors = instance_colors(max(ids, default=-1) + 1)
    return {
        track_id: _Track(f"#{track_id} {name} {score:.2f}", colors[track_id], score)
        for track_id, name, score in zip(
            ids, table["category_name"].to_pylist(), table["score"].to_pylist(), strict=True
        )
    }


def _frame_mask(counts: bytes, size: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """The dense mask `[H, W]` bool of one `tracklet_frames` row (its RLE counts and
    (height, width)), checked against the frame it is drawn on."""
    height, width = int(size[0]), int(size[1])
    if (height, width) != frame.shape[:2]:
        raise RenderError(
            f"masks are {width}x{height} but the video's frames are "
            f"{frame.shape[1]}x{frame.shape[0]}"
        )
    return masks.decode([masks.from_bytes(counts, height, width)])[0]


def _draw(
    image: np.ndarray,
    frame_masks: list[np.ndarray],
    tracks: list[_Track],
    boxes: np.ndarray,
    scale: int,
    legend: str | None = None,
) -> np.ndarray:
    """One frame `[H, W, 3]` with its tracklets' masks `[H, W]` and labels drawn over it,
    and the legend (if any) at the bottom-left corner.

    Labels go on after every mask, so that no mask covers a label.
    """
    if not tracks and legend is None:
        return image
    out = image.copy()
    if tracks:
        colors = np.stack([track.color for track in tracks])
        out = overlay_masks(image, np.stack(frame_masks), colors)
    for track, box in zip(tracks, boxes, strict=True):
        size = text_size(track.label, scale)
        x, y = label_origin(box, size, image.shape[:2])
        draw_text(out, track.label, x, y, track.color, scale=scale)
    if legend is not None:
        height = text_size(legend, scale)[1]
        draw_text(out, legend, 0, image.shape[0] - height, _LEGEND_COLOR, scale=scale)
    return out


def _thumbnail(image: np.ndarray) -> np.ndarray:
    """`image` `[H, W, 3]` shrunk by the smallest whole factor that brings its width to at
    most `SHEET_TILE_MAX_WIDTH` (an average over each factor x factor block)."""
    factor = -(-image.shape[1] // SHEET_TILE_MAX_WIDTH)
    if factor == 1:
        return image.copy()
    height, width = image.shape[0] // factor, image.shape[1] // factor
    blocks = image[: height * factor, : width * factor].reshape(height, factor, width, factor, 3)
    return blocks.mean(axis=(1, 3)).round().astype(np.uint8)
