"""Object appearance: a texture pattern in the object's own frame, two colours, shading.

The pattern is evaluated at the object's unit coordinates (u, v), so it moves, turns and
scales with the object. Colour is sampled independently of the category and drifts slowly
over the video (`drift` from 0 to 1 blends the start colours into the end colours), and a
per-frame brightness factor and a fixed linear shading add appearance change.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from vis_core.synth.noise import bilinear_sample

_NOISE_TILE = 8  # lattice points across the object's [-1, 1] extent


class Pattern(enum.Enum):
    SOLID = "solid"
    STRIPES = "stripes"
    CHECKER = "checker"
    GRADIENT = "gradient"
    NOISE = "noise"
    DOTS = "dots"


@dataclass(frozen=True, eq=False)
class Appearance:
    """How one object is painted.

    `start_colours` and `end_colours` are `[2, 3]` RGB in [0, 255]: the pattern's two
    colours at drift 0 and drift 1. `noise_tile` `[G, G]` in [0, 1] is the NOISE pattern.
    """

    pattern: Pattern
    start_colours: np.ndarray
    end_colours: np.ndarray
    frequency: float  # pattern periods per unit length
    direction: float  # radians; orientation of stripes and gradients
    noise_tile: np.ndarray
    shading: tuple[float, float]  # brightness slope along u and v


def sample_appearance(rng: np.random.Generator, avoid: np.ndarray | None = None) -> Appearance:
    """A random pattern with two clearly different colours and a random drift target.

    `avoid` `[3]` is a colour (the background's mean) the first colour should differ from,
    so that objects are rarely camouflaged as a whole.
    """
    pattern = Pattern(rng.choice([p.value for p in Pattern]))
    first = rng.uniform(15.0, 240.0, 3)
    for _ in range(8):
        if avoid is None or np.abs(first - avoid).max() >= 60.0:
            break
        first = rng.uniform(15.0, 240.0, 3)
    second = rng.uniform(15.0, 240.0, 3)
    for _ in range(8):  # a pattern needs visible contrast between its two colours
        if np.abs(second - first).max() >= 70.0:
            break
        second = rng.uniform(15.0, 240.0, 3)
    start = np.stack([first, second]).astype(np.float32)
    end = np.clip(start + rng.normal(0.0, 45.0, (2, 3)), 0.0, 255.0).astype(np.float32)
    slope = rng.uniform(0.0, 0.3)
    slope_angle = rng.uniform(0.0, 2 * math.pi)
    return Appearance(
        pattern=pattern,
        start_colours=start,
        end_colours=end,
        frequency=float(rng.uniform(1.0, 3.0)),
        direction=float(rng.uniform(0.0, math.pi)),
        noise_tile=rng.random((_NOISE_TILE, _NOISE_TILE), dtype=np.float32),
        shading=(slope * math.cos(slope_angle), slope * math.sin(slope_angle)),
    )


def pattern_weight(appearance: Appearance, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Blend weight `[h, w]` in [0, 1] of the second colour at unit coordinates `u`, `v`."""
    kind = appearance.pattern
    freq = appearance.frequency
    along = u * math.cos(appearance.direction) + v * math.sin(appearance.direction)
    if kind is Pattern.SOLID:
        return np.zeros_like(u)
    if kind is Pattern.STRIPES:
        return (np.mod(along * freq, 1.0) < 0.5).astype(np.float32)
    if kind is Pattern.CHECKER:
        cells = np.floor(u * freq * 1.5) + np.floor(v * freq * 1.5)
        return np.mod(cells, 2.0).astype(np.float32)
    if kind is Pattern.GRADIENT:
        return np.clip(0.5 + 0.5 * along, 0.0, 1.0).astype(np.float32)
    if kind is Pattern.NOISE:
        scale = (_NOISE_TILE - 1) / 2.0
        return bilinear_sample(appearance.noise_tile, (v + 1.0) * scale, (u + 1.0) * scale)
    if kind is Pattern.DOTS:
        fu = np.mod(u * freq * 1.5, 1.0) - 0.5
        fv = np.mod(v * freq * 1.5, 1.0) - 0.5
        return (fu * fu + fv * fv < 0.09).astype(np.float32)
    raise ValueError(f"unknown pattern {kind}")


def shade(
    appearance: Appearance, u: np.ndarray, v: np.ndarray, drift: float, brightness: float
) -> np.ndarray:
    """RGB colours `[h, w, 3]` float32 (0..255, unclipped) at unit coordinates `u`, `v`."""
    colours = (1.0 - drift) * appearance.start_colours + drift * appearance.end_colours
    weight = pattern_weight(appearance, u, v)[..., None]
    rgb = colours[0] + weight * (colours[1] - colours[0])
    light = brightness * (1.0 + appearance.shading[0] * u + appearance.shading[1] * v)
    return (rgb * light[..., None]).astype(np.float32)
