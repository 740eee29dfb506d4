"""The frames of a dataset video, from an mp4 or from a folder of JPEG files.

A video's frames are looked up in this order:
1. its `video_path` (an mp4 relative to the annotation file's folder);
2. `<root>/videos/<NAME>.mp4`, where NAME is the folder of its `file_names`;
3. the JPEG files `<frames_root>/<file_name>`, as in the public YouTube-VIS and OVIS
   downloads (`frames_root` defaults to `<root>/JPEGImages`).
JPEGs are decoded with PyAV too, so no image library is needed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from vis_core.data.ytvis import VideoEntry, YtvisDataset
from vis_core.storage import join, open_fs
from vis_core.video.decode import open_video
from vis_core.video.errors import CorruptVideoError, VideoReadError
from vis_core.video.image import decode_image


def video_source(dataset: YtvisDataset, video: VideoEntry) -> str | None:
    """The URI of the video's mp4, or None when its frames are JPEG files."""
    if video.video_path is not None:
        return join(dataset.root, video.video_path)
    candidate = join(dataset.root, "videos", f"{video.name}.mp4")
    fs, path = open_fs(candidate)
    return candidate if fs.exists(path) else None


def iter_frames(
    dataset: YtvisDataset,
    video: VideoEntry,
    frames_root: str | None = None,
    shortest_edge: int | None = None,
) -> Iterator[np.ndarray]:
    """Yield the video's frames `[H, W, 3]` uint8 RGB in order, one at a time.

    Raises a `VideoDecodeError` subclass when a frame cannot be read or the number of
    frames differs from the annotation file's.
    """
    source = video_source(dataset, video)
    if source is None:
        yield from _iter_jpegs(
            frames_root or join(dataset.root, "JPEGImages"), video, shortest_edge
        )
        return
    count = 0
    with open_video(source) as reader:
        for frame in reader.frames(shortest_edge=shortest_edge):
            count += 1
            if count > video.length:
                break
            yield frame.image
    if count != video.length:
        raise CorruptVideoError(
            source, f"has {count} frames where the annotations list {video.length}"
        )


def read_frames(
    dataset: YtvisDataset,
    video: VideoEntry,
    indices: Sequence[int] | None = None,
    frames_root: str | None = None,
) -> np.ndarray:
    """Frames `[T, H, W, 3]` uint8 at `indices` (all frames when None), decoded in order."""
    wanted = range(video.length) if indices is None else indices
    if any(not 0 <= index < video.length for index in wanted):
        raise IndexError(f"frame indices {list(wanted)} outside video {video.id} of {video.length}")
    if not wanted:
        return np.zeros((0, video.height, video.width, 3), dtype=np.uint8)
    positions: dict[int, list[int]] = {}
    for position, index in enumerate(wanted):
        positions.setdefault(index, []).append(position)
    out: list[np.ndarray | None] = [None] * len(wanted)
    last = max(positions)
    for index, frame in enumerate(iter_frames(dataset, video, frames_root)):
        for position in positions.get(index, ()):
            out[position] = frame
        if index == last:
            break
    return np.stack(out)


def _iter_jpegs(
    frames_root: str, video: VideoEntry, shortest_edge: int | None
) -> Iterator[np.ndarray]:
    fs, root = open_fs(frames_root)
    for file_name in video.file_names:
        path = join(root, file_name)
        try:
            data = fs.cat_file(path)
        except FileNotFoundError:
            raise VideoReadError(path, "frame file not found") from None
        yield decode_image(data, path, shortest_edge)
