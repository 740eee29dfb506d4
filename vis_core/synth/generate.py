"""Seeding: which random stream draws which video or image.

Video `i` of a split is drawn from `SeedSequence(seed, spawn_key=(split key, stream, i))`,
so it is the same whatever the number of videos generated, and the splits and the still
images never share a stream for the same user seed.
"""

from __future__ import annotations

import zlib

import numpy as np

from vis_core.synth.render import RenderedVideo, render_video
from vis_core.synth.scene import Scene, sample_scene
from vis_core.synth.splits import SynthConfig

VIDEO_STREAM = 0
IMAGE_STREAM = 1


def item_rng(config: SynthConfig, seed: int, stream: int, index: int) -> np.random.Generator:
    """The generator of item `index` of `stream` (VIDEO_STREAM or IMAGE_STREAM)."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got {seed} and {index}")
    split_key = zlib.crc32(config.name.encode("utf-8"))
    sequence = np.random.SeedSequence(seed, spawn_key=(split_key, stream, index))
    return np.random.default_rng(sequence)


def video_name(config: SynthConfig, index: int) -> str:
    """Folder name of video `index` in `file_names`; its mp4 is `videos/NAME.mp4`."""
    return f"{config.name}_{index:05d}"


def video_scene(config: SynthConfig, seed: int, index: int) -> Scene:
    """The scene of video `index` of the split."""
    return sample_scene(config, item_rng(config, seed, VIDEO_STREAM, index))


def image_scene(config: SynthConfig, seed: int, index: int) -> Scene:
    """The one-frame scene of still image `index` of the split's COCO image set."""
    return sample_scene(config, item_rng(config, seed, IMAGE_STREAM, index), num_frames=1)


def synthesize_video(config: SynthConfig, seed: int, index: int) -> tuple[Scene, RenderedVideo]:
    """Regenerate video `index` exactly as the writer drew it, before compression."""
    scene = video_scene(config, seed, index)
    return scene, render_video(scene)
