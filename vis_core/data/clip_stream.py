"""An endless stream of augmented training clips from several sources, mixed by weight.

Sources: clips sampled from annotated videos (`VideoClipSource`) and pseudo-videos made
from still images by an independent random crop per frame (`PseudoVideoSource`), as
VITA trains on COCO and YouTube-VIS together. Each source maps its categories to the
model's contiguous labels by category name.

Dimension letters: N instances, T frames, H x W a frame.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from vis_core.data.augment import (
    AugmentConfig,
    augment_clip,
    random_crop_window,
    resize_clip_to,
)
from vis_core.data.clips import Clip, load_clip, sample_frame_indices
from vis_core.data.coco import CocoDataset
from vis_core.data.ytvis import YtvisDataset


class ClipSource(Protocol):
    def sample(self, num_frames: int, rng: np.random.Generator) -> Clip: ...


@dataclass(frozen=True)
class VideoClipSource:
    """Clips of T frames within `sampling_range` frames of a random reference frame."""

    dataset: YtvisDataset
    label_of_category: Mapping[int, int]
    sampling_range: int = 20

    def sample(self, num_frames: int, rng: np.random.Generator) -> Clip:
        video = self.dataset.videos[int(rng.integers(len(self.dataset)))]
        indices = sample_frame_indices(video.length, num_frames, self.sampling_range, rng)
        return load_clip(self.dataset, video, indices.tolist(), self.label_of_category)


@dataclass(frozen=True)
class PseudoVideoSource:
    """One still image seen T times through independent random crops, so objects move."""

    dataset: CocoDataset
    label_of_category: Mapping[int, int]
    crop_scale: tuple[float, float] = (0.7, 1.0)

    def sample(self, num_frames: int, rng: np.random.Generator) -> Clip:
        image_entry = self.dataset.images[int(rng.integers(len(self.dataset)))]
        image = self.dataset.read_image(image_entry)
        image_masks, instances = self.dataset.instance_masks(image_entry)
        known = [k for k, i in enumerate(instances) if i.category_id in self.label_of_category]
        image_masks = image_masks[known]
        height, width = image.shape[:2]
        frames, frame_masks = [], []  # each [H, W, 3] and [N, H, W]
        for _ in range(num_frames):
            rows, cols = random_crop_window(height, width, self.crop_scale, rng)
            crop, crop_masks = resize_clip_to(
                image[None, rows, cols],
                image_masks[:, None, rows, cols],
                height,
                width,
            )
            frames.append(crop[0])
            frame_masks.append(crop_masks[:, 0])
        labels = [self.label_of_category[instances[k].category_id] for k in known]
        return Clip(
            frames=np.stack(frames),
            masks=np.stack(frame_masks, axis=1),
            labels=np.asarray(labels, dtype=np.int64),
            track_ids=np.arange(1, len(known) + 1, dtype=np.int64),
            frame_indices=np.zeros(num_frames, dtype=np.int64),
        )


class ClipStream(torch.utils.data.IterableDataset):
    """Endless augmented clips; source i is drawn with probability weights[i] / sum.

    Every (seed, rank, DataLoader worker) gets its own random stream, so distributed
    workers and loader processes never repeat each other's clips.
    """

    def __init__(
        self,
        sources: Sequence[ClipSource],
        weights: Sequence[float],
        num_frames: int,
        augment: AugmentConfig,
        seed: int = 0,
        rank: int = 0,
    ):
        if len(sources) != len(weights) or not sources or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError("need one non-negative weight per source, not all zero")
        self.sources = list(sources)
        self.probabilities = np.asarray(weights, dtype=float) / sum(weights)
        self.num_frames = num_frames
        self.augment = augment
        self.seed = seed
        self.rank = rank

    def __iter__(self) -> Iterator[Clip]:
        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id
        rng = np.random.default_rng([self.seed, self.rank, worker])
        while True:
            source = self.sources[int(rng.choice(len(self.sources), p=self.probabilities))]
            clip = source.sample(self.num_frames, rng)
            yield augment_clip(clip, self.augment, rng)
