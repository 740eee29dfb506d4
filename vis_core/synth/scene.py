"""A sampled scene: objects with their motion and appearance, depth order, camera.

A `Scene` holds every random choice of one video, so rendering it is a pure function
(`render.py`) and a test can regenerate any video from its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vis_core.synth.background import Background, sample_background
from vis_core.synth.motion import Trajectory, sample_crowd_path, sample_trajectory
from vis_core.synth.shapes import CATEGORIES, Category
from vis_core.synth.splits import SynthConfig
from vis_core.synth.textures import Appearance, sample_appearance

# Attempts at a trajectory that shows the object before falling back to a bouncing start
# inside the frame.
_TRAJECTORY_ATTEMPTS = 20
_MIN_FRAMES_IN_VIEW = 3


@dataclass(frozen=True, eq=False)
class SceneObject:
    """One instance: `drift` `[T]` in [0, 1] blends its colours, `brightness` `[T]` scales them."""

    category: Category
    trajectory: Trajectory
    appearance: Appearance
    drift: np.ndarray
    brightness: np.ndarray


@dataclass(frozen=True, eq=False)
class Occluder:
    """A foreground pole in front of every object: the band within `half_width` pixels of
    the line through `anchor` `[2]` (x, y) with direction angle `angle`. It is background
    (label 0) and moves `parallax` times as much as the background when the camera pans.
    """

    anchor: np.ndarray
    angle: float
    half_width: float
    colour: np.ndarray
    parallax: float


@dataclass(frozen=True, eq=False)
class Scene:
    """Everything needed to render one video of `num_frames` frames `height` x `width`.

    Instance k (label value k in the label maps, k >= 1) is `objects[k - 1]`. Objects are
    drawn in `depth_order` (indices into `objects`, farthest first), so later ones hide
    earlier ones. `exposure` `[T]` scales the whole frame; camera noise of `noise_sigma`
    grey levels comes from a generator seeded with `noise_seed`.
    """

    width: int
    height: int
    num_frames: int
    objects: tuple[SceneObject, ...]
    depth_order: tuple[int, ...]
    occluders: tuple[Occluder, ...]
    background: Background
    exposure: np.ndarray
    noise_sigma: float
    noise_seed: int
    crf: int


def sample_scene(
    config: SynthConfig, rng: np.random.Generator, num_frames: int | None = None
) -> Scene:
    """Draw a scene from `config`; `num_frames` fixes the length (else from `config.frames`)."""
    width, height = config.width, config.height
    frames = num_frames if num_frames is not None else _between(rng, config.frames)
    background = sample_background(
        rng,
        width,
        height,
        frames,
        clutter=_between(rng, config.clutter),
        pan=bool(rng.random() < config.pan_prob),
    )
    background_colour = background.canvas.mean(axis=(0, 1))
    count = _between(rng, config.instances)
    categories = _sample_categories(rng, count, config.repeat_category_prob)
    crowding = float(rng.uniform(*config.crowding))
    crowd = sample_crowd_path(rng, width, height, frames) if crowding > 0 else None
    objects = tuple(
        _sample_object(rng, config, frames, category, crowd, crowding, background_colour)
        for category in categories
    )
    depth_order = tuple(int(i) for i in rng.permutation(count))
    occluders = tuple(
        _sample_occluder(rng, width, height) for _ in range(_between(rng, config.occluders))
    )
    t = np.arange(frames)
    exposure = (
        1.0
        + rng.uniform(0, 0.08) * np.sin(2 * math.pi * t / rng.uniform(30, 150) + rng.uniform(0, 7))
        + rng.normal(0.0, 0.01, frames)
    )
    return Scene(
        width=width,
        height=height,
        num_frames=frames,
        objects=objects,
        depth_order=depth_order,
        occluders=occluders,
        background=background,
        exposure=exposure.astype(np.float32),
        noise_sigma=float(rng.uniform(*config.noise_sigma)),
        noise_seed=int(rng.integers(2**63)),
        crf=_between(rng, config.crf),
    )


def _between(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))


def _sample_categories(rng: np.random.Generator, count: int, repeat_prob: float) -> list[Category]:
    """`count` categories, with 2 or 3 copies of one when a repeat is forced."""
    picks = [CATEGORIES[int(i)] for i in rng.integers(len(CATEGORIES), size=count)]
    if count >= 2 and rng.random() < repeat_prob:
        copies = min(count, int(rng.integers(2, 4)))
        positions = rng.choice(count, size=copies, replace=False)
        for position in positions[1:]:
            picks[int(position)] = picks[int(positions[0])]
    return picks


def _sample_object(
    rng: np.random.Generator,
    config: SynthConfig,
    num_frames: int,
    category: Category,
    crowd: np.ndarray | None,
    crowding: float,
    background_colour: np.ndarray,
) -> SceneObject:
    size = min(config.width, config.height)
    low, high = config.radius
    radius = size * math.exp(rng.uniform(math.log(low), math.log(high)))
    speed = size * rng.uniform(*config.speed)
    needed = min(num_frames, _MIN_FRAMES_IN_VIEW)
    enters = bool(rng.random() < config.enter_prob)
    bounces = bool(rng.random() >= config.free_prob)
    for attempt in range(_TRAJECTORY_ATTEMPTS + 1):
        if attempt == _TRAJECTORY_ATTEMPTS:  # give up on entering or leaving
            enters, bounces = False, True
        trajectory = sample_trajectory(
            rng,
            width=config.width,
            height=config.height,
            num_frames=num_frames,
            radius=radius,
            speed=speed,
            enters=enters,
            bounces=bounces,
            crowd=crowd,
            crowding=crowding,
        )
        if trajectory.frames_in_view(config.width, config.height).sum() >= needed:
            break
    t = np.arange(num_frames)
    drift = 0.5 - 0.5 * np.cos(2 * math.pi * t / rng.uniform(40, 200) + rng.uniform(0, 7))
    brightness = 1.0 + rng.uniform(0, 0.25) * np.sin(
        2 * math.pi * t / rng.uniform(20, 120) + rng.uniform(0, 7)
    )
    return SceneObject(
        category=category,
        trajectory=trajectory,
        appearance=sample_appearance(rng, avoid=background_colour),
        drift=drift.astype(np.float32),
        brightness=brightness.astype(np.float32),
    )


def _sample_occluder(rng: np.random.Generator, width: int, height: int) -> Occluder:
    size = min(width, height)
    # Mostly upright poles, sometimes a slanted branch.
    angle = (
        math.pi / 2 + rng.uniform(-0.25, 0.25) if rng.random() < 0.7 else rng.uniform(0, math.pi)
    )
    return Occluder(
        anchor=np.array([rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height]),
        angle=float(angle),
        half_width=float(size * rng.uniform(0.015, 0.05)),
        colour=rng.uniform(20.0, 200.0, 3).astype(np.float32),
        parallax=float(rng.uniform(1.2, 2.0)),
    )
