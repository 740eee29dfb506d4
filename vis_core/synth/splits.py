"""Generation settings of the synthetic benchmark and the split presets.

Default frame size: 320 x 240 pixels (width x height) at 10 fps, small enough for CPU
training and large enough that the smallest objects (radius 0.05 of the short side, 12 px)
keep their shape.

Presets (functions returning a frozen `SynthConfig`):
- `train`: 12 to 48 frames, 1 to 7 instances, all difficulties in moderate amounts.
- `val`: short videos (10 to 40 frames), 2 to 6 instances, repeated categories in about
  60% of videos (floors: >= 2 instances a video, >= 30% with a repeated category).
- `val-long`: OVIS-like, 100 to 300 frames, 5 to 10 instances pulled together into a
  crowd, large objects and foreground poles (floors: >= 5 instances a video, >= 20% of
  instance-frames more than 30% occluded; see `stats.py` for the definitions).

Range fields are inclusive `(low, high)` pairs; per video a value is drawn uniformly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_WIDTH = 320
DEFAULT_HEIGHT = 240
DEFAULT_FPS = 10.0
# Labels are stored as uint8 maps, with 0 for the background.
MAX_INSTANCES = 255


class SynthConfigError(ValueError):
    """A generation setting is out of its valid range."""


@dataclass(frozen=True)
class SynthConfig:
    """Everything that shapes a generated split except the seed and the number of videos."""

    name: str
    width: int = DEFAULT_WIDTH
    height: int = DEFAULT_HEIGHT
    fps: float = DEFAULT_FPS
    frames: tuple[int, int] = (12, 48)
    instances: tuple[int, int] = (1, 7)
    # Chance that a video is forced to hold 2 or 3 instances of one category (repeats also
    # happen by chance when categories are drawn independently).
    repeat_category_prob: float = 0.4
    radius: tuple[float, float] = (0.05, 0.2)  # object radius / min(width, height)
    speed: tuple[float, float] = (0.004, 0.03)  # pixels per frame / min(width, height)
    enter_prob: float = 0.25  # an object starts outside the frame and moves in
    free_prob: float = 0.3  # an object does not bounce off the borders and may leave
    crowding: tuple[float, float] = (0.0, 2.0)  # pull towards a common point (occlusion)
    occluders: tuple[int, int] = (0, 1)  # foreground poles in front of every object
    clutter: tuple[int, int] = (5, 30)  # background clutter items
    pan_prob: float = 0.5  # chance of a slowly panning camera
    noise_sigma: tuple[float, float] = (1.0, 6.0)  # camera noise, grey levels
    crf: tuple[int, int] = (20, 28)  # H.264 constant rate factor of the mp4

    def __post_init__(self) -> None:
        if self.width < 16 or self.height < 16:
            raise SynthConfigError(f"frame size must be at least 16x16, got {self.size_text}")
        if self.fps <= 0:
            raise SynthConfigError(f"fps must be positive, got {self.fps}")
        _check_range("frames", self.frames, minimum=1)
        _check_range("instances", self.instances, minimum=0, maximum=MAX_INSTANCES)
        _check_range("radius", self.radius, minimum=0.005, maximum=0.5)
        _check_range("speed", self.speed, minimum=0.0)
        _check_range("crowding", self.crowding, minimum=0.0)
        _check_range("occluders", self.occluders, minimum=0)
        _check_range("clutter", self.clutter, minimum=0)
        _check_range("noise_sigma", self.noise_sigma, minimum=0.0)
        _check_range("crf", self.crf, minimum=0, maximum=51)
        for field in ("repeat_category_prob", "enter_prob", "free_prob", "pan_prob"):
            value = getattr(self, field)
            if not 0.0 <= value <= 1.0:
                raise SynthConfigError(f"{field} must be in [0, 1], got {value}")

    @property
    def size_text(self) -> str:
        return f"{self.width}x{self.height}"

    def replace(self, **changes: Any) -> SynthConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON-ready values (ranges become lists)."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
        }


def _check_range(
    name: str, value: tuple[float, float], minimum: float, maximum: float | None = None
) -> None:
    if len(value) != 2 or value[0] > value[1]:
        raise SynthConfigError(f"{name} must be a (low, high) pair with low <= high, got {value}")
    if value[0] < minimum or (maximum is not None and value[1] > maximum):
        upper = "" if maximum is None else f" and <= {maximum}"
        raise SynthConfigError(f"{name} must be >= {minimum}{upper}, got {value}")


def train_preset() -> SynthConfig:
    return SynthConfig(name="train")


def val_preset() -> SynthConfig:
    return SynthConfig(
        name="val",
        frames=(10, 40),
        instances=(2, 6),
        repeat_category_prob=0.5,
    )


def val_long_preset() -> SynthConfig:
    return SynthConfig(
        name="val-long",
        frames=(100, 300),
        instances=(5, 10),
        repeat_category_prob=0.5,
        radius=(0.08, 0.2),
        speed=(0.003, 0.02),
        enter_prob=0.15,
        free_prob=0.1,
        crowding=(1.0, 2.5),
        occluders=(1, 2),
        pan_prob=0.7,
    )


PRESETS: dict[str, Callable[[], SynthConfig]] = {
    "train": train_preset,
    "val": val_preset,
    "val-long": val_long_preset,
}


def preset(name: str) -> SynthConfig:
    """The config of split preset `name` (`train`, `val` or `val-long`)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise SynthConfigError(f"unknown split {name!r}; choose one of {sorted(PRESETS)}") from None
