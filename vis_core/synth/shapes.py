"""The object categories of the synthetic benchmark and their inside tests.

Every shape is defined in the object's own unit coordinates (u, v): u to the right, v down,
the object centred at (0, 0) and contained in the unit disc, so a renderer only needs the
box `centre ± radius` to draw it. The eight shapes were chosen to stay distinguishable at
small scale and under rotation and mild stretching: filled round (circle) against holed
round (ring), corners (square, triangle), concave outlines (star, cross, crescent, heart).
Identity is carried by the outline only: colour and texture are sampled independently.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

InsideTest = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Category:
    """A YouTube-VIS category: `id` is 1-based, as in the annotation file."""

    id: int
    name: str
    supercategory: str = "shape"


def _circle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + v * v <= 1.0


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Half side 0.7 keeps the corners (radius 0.99) inside the unit disc.
    return np.maximum(np.abs(u), np.abs(v)) <= 0.7


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Equilateral, circumradius 1, apex up: inside all three edges at inradius 0.5.
    inside = np.ones(np.broadcast_shapes(u.shape, v.shape), dtype=bool)
    for angle in (math.pi / 2, math.pi * 7 / 6, math.pi * 11 / 6):
        inside &= u * math.cos(angle) + v * math.sin(angle) <= 0.5
    return inside


_STAR_POINTS = 5
_STAR_INNER = 0.42


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Fold the angle into one half-spike [0, pi/5] (tip at 0, notch at pi/5), then test
    # against the straight edge from the tip (1, 0) to the notch.
    sector = 2 * math.pi / _STAR_POINTS
    theta = np.mod(np.arctan2(u, -v), sector)  # tip of the first spike points up
    phi = np.minimum(theta, sector - theta)
    radius = np.hypot(u, v)
    x, y = radius * np.cos(phi), radius * np.sin(phi)
    notch_x = _STAR_INNER * math.cos(sector / 2)
    notch_y = _STAR_INNER * math.sin(sector / 2)
    # Edge normal pointing away from the centre: perpendicular to (notch - tip).
    normal_x, normal_y = notch_y, 1.0 - notch_x
    return (x - 1.0) * normal_x + y * normal_y <= 0.0


def _ring(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    squared = u * u + v * v
    return (squared <= 1.0) & (squared >= 0.55**2)


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))


def _crescent(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (u * u + v * v <= 1.0) & ((u - 0.5) ** 2 + v * v >= 0.8**2)


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # The classic implicit heart (x^2 + y^2 - 1)^3 <= x^2 y^3, y up, lobes at the top;
    # scaled and shifted so its farthest point lies just inside the unit disc.
    x = u * 1.36
    y = -v * 1.36 + 0.12
    return (x * x + y * y - 1.0) ** 3 - x * x * y**3 <= 0.0


CATEGORIES: tuple[Category, ...] = (
    Category(1, "circle"),
    Category(2, "square"),
    Category(3, "triangle"),
    Category(4, "star"),
    Category(5, "ring"),
    Category(6, "cross"),
    Category(7, "crescent"),
    Category(8, "heart"),
)

_INSIDE_TESTS: dict[str, InsideTest] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "star": _star,
    "ring": _ring,
    "cross": _cross,
    "crescent": _crescent,
    "heart": _heart,
}


def category_by_name(name: str) -> Category:
    for category in CATEGORIES:
        if category.name == name:
            return category
    raise KeyError(f"unknown shape category {name!r}; known: {[c.name for c in CATEGORIES]}")


def inside(category: Category, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean inside test of `category` at unit coordinates `u`, `v` (same shape, e.g. [h, w])."""
    try:
        test = _INSIDE_TESTS[category.name]
    except KeyError:
        raise KeyError(f"no inside test for category {category.name!r}") from None
    return test(u, v)
