"""Smooth, plausible object motion: position, size, rotation and stretch over time.

Velocity changes through a correlated (Ornstein-Uhlenbeck) acceleration, so paths curve
and speed varies without jitter. An object either bounces off the frame borders (at a
random inset, so it may poke partly out first) or moves freely and may leave. An entering
object starts outside one border, heading in. An optional crowd point pulls objects
together like a spring, which makes them pass in front of each other (heavy occlusion).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Correlation of the acceleration from one frame to the next (higher: smoother turns).
_ACCEL_CORRELATION = 0.9
# Spring constant of the crowd pull per unit of `crowding` (1/frame^2): a period of
# about 140 frames at crowding 1.
_CROWD_SPRING = 0.002


@dataclass(frozen=True, eq=False)
class Trajectory:
    """Per-frame pose of one object over `T` frames.

    `centres` `[T, 2]` (x, y) in pixels (pixel centres at +0.5), `radii` `[T]` pixels (the
    shape's unit disc), `angles` `[T]` radians (the unit frame's u axis is the screen
    direction (cos, sin) with y down), `aspects` `[T]` stretch along u (and 1 / aspect
    along v, so the area is kept).
    """

    centres: np.ndarray
    radii: np.ndarray
    angles: np.ndarray
    aspects: np.ndarray

    @property
    def extents(self) -> np.ndarray:
        """Radius `[T]` of a disc around the centre that contains the drawn shape."""
        return self.radii * np.maximum(self.aspects, 1.0 / self.aspects)

    def frames_in_view(self, width: int, height: int, overlap: float = 0.5) -> np.ndarray:
        """Boolean `[T]`: the shape's centre is within `overlap` extents of the frame."""
        reach = overlap * self.extents
        x, y = self.centres[:, 0], self.centres[:, 1]
        return (x > -reach) & (x < width + reach) & (y > -reach) & (y < height + reach)


def sample_trajectory(
    rng: np.random.Generator,
    *,
    width: int,
    height: int,
    num_frames: int,
    radius: float,
    speed: float,
    enters: bool,
    bounces: bool,
    crowd: np.ndarray | None = None,
    crowding: float = 0.0,
) -> Trajectory:
    """Simulate one object's pose over `num_frames` frames.

    `radius` is the base size in pixels, `speed` the initial speed in pixels per frame,
    `crowd` an optional `[T, 2]` path of the point that pulls with strength `crowding`.
    """
    t = np.arange(num_frames, dtype=np.float64)
    radii = _radii(rng, t, radius)
    angles = (
        rng.uniform(0, 2 * math.pi)
        + rng.uniform(-0.08, 0.08) * t
        + rng.uniform(0, 0.3) * np.sin(2 * math.pi * t / rng.uniform(20, 80) + rng.uniform(0, 7))
    )
    aspects = np.exp(
        rng.uniform(0, 0.15) * np.sin(2 * math.pi * t / rng.uniform(15, 60) + rng.uniform(0, 7))
    )
    extent = float((radii * np.maximum(aspects, 1 / aspects)).max())

    if enters:
        position, heading = _entry(rng, width, height, extent, speed * rng.uniform(0, 0.5) * len(t))
    else:
        size = np.array([width, height], dtype=np.float64)
        if crowd is not None:  # start near the crowd, the closer the stronger its pull
            offset = rng.normal(0.0, 0.3 / (1.0 + crowding), 2) * size
            position = np.clip(crowd[0] + offset, 0.05 * size, 0.95 * size)
        else:
            position = rng.uniform(0.1, 0.9, 2) * size
        heading = rng.uniform(0, 2 * math.pi)
    velocity = speed * np.array([math.cos(heading), math.sin(heading)])
    accel_sigma = 0.08 * speed
    max_speed = 2.0 * max(speed, 0.5)
    insets = rng.uniform(-0.3, 0.9) * radii  # how close the centre gets before bouncing

    centres = np.empty((num_frames, 2))
    accel = np.zeros(2)
    size = np.array([width, height], dtype=np.float64)
    for step in range(num_frames):
        centres[step] = position
        accel = _ACCEL_CORRELATION * accel + math.sqrt(
            1 - _ACCEL_CORRELATION**2
        ) * accel_sigma * rng.standard_normal(2)
        pull = crowding * _CROWD_SPRING * (crowd[step] - position) if crowd is not None else 0.0
        velocity = velocity + accel + pull
        norm = math.hypot(velocity[0], velocity[1])
        if norm > max_speed:
            velocity *= max_speed / norm
        position = position + velocity
        if bounces:
            low = (position < insets[step]) & (velocity < 0)
            high = (position > size - insets[step]) & (velocity > 0)
            velocity = np.where(low | high, -velocity, velocity)
    return Trajectory(centres=centres, radii=radii, angles=angles, aspects=aspects)


def sample_crowd_path(
    rng: np.random.Generator, width: int, height: int, num_frames: int
) -> np.ndarray:
    """A slowly wandering point `[T, 2]` (x, y) near the frame centre."""
    t = np.arange(num_frames, dtype=np.float64)
    path = np.empty((num_frames, 2))
    for axis, extent in enumerate((width, height)):
        amplitude = rng.uniform(0.05, 0.25) * extent
        period = rng.uniform(60, 200)
        path[:, axis] = extent / 2 + amplitude * np.sin(
            2 * math.pi * t / period + rng.uniform(0, 7)
        )
    return path


def _radii(rng: np.random.Generator, t: np.ndarray, radius: float) -> np.ndarray:
    """Size over time: a slow pulse plus an approach or recession over the video."""
    duration = max(len(t) - 1, 1)
    pulse = rng.uniform(0, 0.15) * np.sin(
        2 * math.pi * t / rng.uniform(20, 100) + rng.uniform(0, 7)
    )
    drift = rng.uniform(-0.35, 0.35) * (t / duration - 0.5) * min(1.0, len(t) / 30)
    return radius * np.exp(pulse + drift)


def _entry(
    rng: np.random.Generator, width: int, height: int, extent: float, lead: float
) -> tuple[np.ndarray, float]:
    """A start just outside a random border (`lead` pixels further out) and an inward heading."""
    border = int(rng.integers(4))
    spread = rng.uniform(-0.7, 0.7)
    outside = extent + lead
    if border == 0:  # left
        return np.array([-outside, rng.uniform(0.1, 0.9) * height]), 0.0 + spread
    if border == 1:  # right
        return np.array([width + outside, rng.uniform(0.1, 0.9) * height]), math.pi + spread
    if border == 2:  # top
        return np.array([rng.uniform(0.1, 0.9) * width, -outside]), math.pi / 2 + spread
    return np.array([rng.uniform(0.1, 0.9) * width, height + outside]), -math.pi / 2 + spread
