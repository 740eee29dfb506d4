"""Render a `Scene` to RGB frames and exact instance label maps, in numpy.

Each object is rasterised only inside its own box: the pixel centres of the box are
mapped to the object's unit coordinates and tested with the shape's inside function.
Objects are painted far to near, so the label map holds the visible part of each object;
foreground poles then paint over objects with label 0. Camera exposure and noise come
last and touch only colours, never labels. There is no anti-aliasing: the label of a
pixel is exactly the object whose colour was painted there.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from vis_core.synth.scene import Occluder, Scene, SceneObject
from vis_core.synth.shapes import inside
from vis_core.synth.textures import shade

_NOISE_SLACK = 64  # the noise field is this many pixels larger than a frame on each axis


@dataclass(frozen=True, eq=False)
class RenderedFrame:
    """One frame: `image` `[H, W, 3]` uint8, `labels` `[H, W]` uint8 (0 background, k for
    instance k), `full_areas` `[K]` int64 pixels of each object's whole shape inside the
    frame, as if nothing were in front of it.
    """

    image: np.ndarray
    labels: np.ndarray
    full_areas: np.ndarray

    def visible_areas(self, num_instances: int) -> np.ndarray:
        """Visible pixels `[K]` of instances 1..K."""
        return np.bincount(self.labels.ravel(), minlength=num_instances + 1)[1:]


@dataclass(frozen=True, eq=False)
class RenderedVideo:
    """A whole video: `frames` `[T, H, W, 3]` uint8, `labels` `[T, H, W]` uint8,
    `full_areas` `[T, K]` int64 (see `RenderedFrame`)."""

    frames: np.ndarray
    labels: np.ndarray
    full_areas: np.ndarray

    def visible_areas(self) -> np.ndarray:
        """Visible pixels `[T, K]` of instances 1..K in each frame."""
        num_instances = self.full_areas.shape[1]
        return np.stack(
            [np.bincount(frame.ravel(), minlength=num_instances + 1)[1:] for frame in self.labels]
        )


def render_frames(scene: Scene) -> Iterator[RenderedFrame]:
    """Render the scene frame by frame (bounded memory for long videos)."""
    noise_rng = np.random.default_rng(scene.noise_seed)
    height, width = scene.height, scene.width
    # Drawing fresh Gaussian noise for every frame costs more than the rest of the frame:
    # each frame takes a random window of one larger noise field instead.
    noise_field = noise_rng.standard_normal(
        (height + _NOISE_SLACK, width + _NOISE_SLACK, 3), dtype=np.float32
    )
    noise_field *= scene.noise_sigma
    pixel_x = np.arange(width, dtype=np.float32)[None, :] + 0.5
    pixel_y = np.arange(height, dtype=np.float32)[:, None] + 0.5
    for t in range(scene.num_frames):
        canvas = scene.background.view(t, height, width)
        labels = np.zeros((height, width), dtype=np.uint8)
        full_areas = np.zeros(len(scene.objects), dtype=np.int64)
        for index in scene.depth_order:
            full_areas[index] = _draw_object(canvas, labels, scene.objects[index], t, index + 1)
        shift = scene.background.shift(t)
        for occluder in scene.occluders:
            _draw_occluder(canvas, labels, occluder, shift, pixel_x, pixel_y)
        canvas *= scene.exposure[t]
        if scene.noise_sigma > 0:
            dy, dx = noise_rng.integers(_NOISE_SLACK + 1, size=2)
            canvas += noise_field[dy : dy + height, dx : dx + width]
        image = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
        yield RenderedFrame(image=image, labels=labels, full_areas=full_areas)


def render_video(scene: Scene) -> RenderedVideo:
    """Render every frame and stack them."""
    frames, labels, full_areas = [], [], []
    for frame in render_frames(scene):
        frames.append(frame.image)
        labels.append(frame.labels)
        full_areas.append(frame.full_areas)
    return RenderedVideo(
        frames=np.stack(frames),
        labels=np.stack(labels),
        full_areas=np.stack(full_areas).reshape(scene.num_frames, len(scene.objects)),
    )


def _draw_object(
    canvas: np.ndarray, labels: np.ndarray, obj: SceneObject, t: int, label: int
) -> int:
    """Paint `obj` at frame `t` into `canvas` `[H, W, 3]` and `labels` `[H, W]`; return the
    number of pixels its shape covers inside the frame."""
    height, width = labels.shape
    trajectory = obj.trajectory
    centre_x, centre_y = (float(c) for c in trajectory.centres[t])
    radius = float(trajectory.radii[t])
    aspect = float(trajectory.aspects[t])
    reach = radius * max(aspect, 1.0 / aspect) + 1.0
    x0, x1 = max(0, math.floor(centre_x - reach)), min(width, math.ceil(centre_x + reach) + 1)
    y0, y1 = max(0, math.floor(centre_y - reach)), min(height, math.ceil(centre_y + reach) + 1)
    if x1 <= x0 or y1 <= y0:
        return 0
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] + (0.5 - centre_x)  # [1, w]
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] + (0.5 - centre_y)  # [h, 1]
    cos, sin = math.cos(trajectory.angles[t]), math.sin(trajectory.angles[t])
    u = (cos * dx + sin * dy) / (radius * aspect)  # [h, w]
    v = (cos * dy - sin * dx) * (aspect / radius)
    mask = inside(obj.category, u, v)
    count = int(np.count_nonzero(mask))
    if count:
        colours = shade(obj.appearance, u[mask], v[mask], obj.drift[t], obj.brightness[t])
        canvas[y0:y1, x0:x1][mask] = colours
        labels[y0:y1, x0:x1][mask] = label
    return count


def _draw_occluder(
    canvas: np.ndarray,
    labels: np.ndarray,
    occluder: Occluder,
    shift: np.ndarray,
    pixel_x: np.ndarray,
    pixel_y: np.ndarray,
) -> None:
    """Paint a foreground pole (label 0) that moves against the camera pan `shift` `[2]`."""
    anchor_x = occluder.anchor[0] - occluder.parallax * shift[0]
    anchor_y = occluder.anchor[1] - occluder.parallax * shift[1]
    # Signed distance from the pole's centre line.
    across = (pixel_y - anchor_y) * math.cos(occluder.angle) - (pixel_x - anchor_x) * math.sin(
        occluder.angle
    )
    relative = across / occluder.half_width  # [H, W]
    mask = np.abs(relative) <= 1.0
    # Rounded shading across the pole, so it reads as a solid cylinder.
    canvas[mask] = occluder.colour * (1.0 - 0.35 * relative[mask, None] ** 2)
    labels[mask] = 0
