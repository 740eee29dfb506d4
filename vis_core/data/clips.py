"""Training clips: T frames sampled from a video, with their instances' masks.

Dimension letters: N instances, T frames, H x W the frame size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from vis_core.data.frames import read_frames
from vis_core.data.ytvis import VideoEntry, YtvisDataset


@dataclass(frozen=True)
class Clip:
    """One training clip before augmentation and batching.

    frames `[T, H, W, 3]` uint8 RGB; masks `[N, T, H, W]` bool; labels `[N]` int64
    (contiguous class index); track_ids `[N]` int64; frame_indices `[T]` in the video.
    """

    frames: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    track_ids: np.ndarray
    frame_indices: np.ndarray

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]


def sample_frame_indices(
    length: int, num_frames: int, sampling_range: int, rng: np.random.Generator
) -> np.ndarray:
    """`[T]` sorted frame indices: a reference frame, then T-1 others within
    `sampling_range` frames of it (as VITA samples clips); repeats only when the video is
    shorter than T."""
    if length < 1 or num_frames < 1:
        raise ValueError(f"need a video and a clip length, got {length=} {num_frames=}")
    reference = int(rng.integers(length))
    low = max(0, reference - sampling_range // 2)
    high = min(length, reference + sampling_range // 2 + 1)
    window = np.setdiff1d(np.arange(low, high), [reference])
    if len(window) >= num_frames - 1:
        others = rng.choice(window, num_frames - 1, replace=False)
    else:  # a short video: every frame, then repeats
        others = np.concatenate([window, rng.choice(length, num_frames - 1 - len(window))])
    return np.sort(np.concatenate([[reference], others]).astype(np.int64))


def load_clip(
    dataset: YtvisDataset,
    video: VideoEntry,
    frame_indices: Sequence[int],
    label_of_category: Mapping[int, int],
    frames_root: str | None = None,
) -> Clip:
    """Decode the frames at `frame_indices` and the masks of every non-crowd instance
    visible in at least one of them."""
    indices = np.asarray(frame_indices, dtype=np.int64)
    frames = read_frames(dataset, video, indices.tolist(), frames_root)
    masks, labels, track_ids = [], [], []
    for track in dataset.tracks(video.id):
        if track.iscrowd or track.category_id not in label_of_category:
            continue
        track_masks = track.masks(indices)  # [T, H, W]
        if not track_masks.any():
            continue
        masks.append(track_masks)
        labels.append(label_of_category[track.category_id])
        track_ids.append(track.id)
    height, width = frames.shape[1:3]
    return Clip(
        frames=frames,
        masks=np.stack(masks) if masks else np.zeros((0, len(indices), height, width), bool),
        labels=np.asarray(labels, dtype=np.int64),
        track_ids=np.asarray(track_ids, dtype=np.int64),
        frame_indices=indices,
    )
