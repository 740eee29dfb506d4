"""Clip-consistent augmentation: every frame of a clip gets the same transform.

Resize (shortest edge drawn from a list, longest edge capped), horizontal flip and a
random crop, as the official VIS recipes do; frames are resized bilinearly, masks by
nearest neighbour so they stay exact label maps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.nn import functional as F

from vis_core.data.clips import Clip


@dataclass(frozen=True)
class AugmentConfig:
    """min_sizes: shortest-edge choices; crop_prob: chance of a random crop of
    `crop_scale` (relative size range) before resizing."""

    min_sizes: tuple[int, ...] = (240,)
    max_size: int = 640
    flip_prob: float = 0.5
    crop_prob: float = 0.0
    crop_scale: tuple[float, float] = (0.6, 1.0)


def augment_clip(clip: Clip, config: AugmentConfig, rng: np.random.Generator) -> Clip:
    """Apply one random crop/flip/resize to all frames and masks of `clip`."""
    frames, masks = clip.frames, clip.masks
    if rng.random() < config.crop_prob:
        rows, cols = random_crop_window(*frames.shape[1:3], config.crop_scale, rng)
        frames, masks = frames[:, rows, cols], masks[:, :, rows, cols]
    if rng.random() < config.flip_prob:
        frames, masks = frames[:, :, ::-1], masks[..., ::-1]
    size = int(rng.choice(config.min_sizes))
    frames, masks = resize_clip(frames, masks, size, config.max_size)
    visible = masks.any(axis=(1, 2, 3))  # cropping may remove an instance
    return replace(
        clip,
        frames=frames,
        masks=masks[visible],
        labels=clip.labels[visible],
        track_ids=clip.track_ids[visible],
    )


def resize_clip(
    frames: np.ndarray, masks: np.ndarray, shortest_edge: int, max_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Resize frames `[T, H, W, 3]` and masks `[N, T, H, W]` so the short side is
    `shortest_edge` and the long side at most `max_size`."""
    height, width = frames.shape[1:3]
    scale = min(shortest_edge / min(height, width), max_size / max(height, width))
    return resize_clip_to(
        frames, masks, max(1, round(height * scale)), max(1, round(width * scale))
    )


def resize_clip_to(
    frames: np.ndarray, masks: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Resize frames `[T, h, w, 3]` (bilinear) and masks `[N, T, h, w]` (nearest) to
    exactly `height` x `width`."""
    new_size = (height, width)
    if new_size == frames.shape[1:3]:
        return np.ascontiguousarray(frames), np.ascontiguousarray(masks)
    images = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    images = F.interpolate(images, size=new_size, mode="bilinear", align_corners=False)
    resized = images.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if masks.size == 0:
        return resized, np.zeros((masks.shape[0], masks.shape[1], *new_size), bool)
    labels = torch.from_numpy(np.ascontiguousarray(masks)).float().flatten(0, 1)[:, None]
    labels = F.interpolate(labels, size=new_size, mode="nearest")[:, 0] > 0.5
    return resized, labels.unflatten(0, masks.shape[:2]).numpy()


def random_crop_window(
    height: int, width: int, scale: tuple[float, float], rng: np.random.Generator
) -> tuple[slice, slice]:
    """Rows and columns of a random crop whose sides are `scale` times the frame's."""
    crop_h = max(1, round(height * rng.uniform(*scale)))
    crop_w = max(1, round(width * rng.uniform(*scale)))
    top = int(rng.integers(height - crop_h + 1))
    left = int(rng.integers(width - crop_w + 1))
    return slice(top, top + crop_h), slice(left, left + crop_w)
