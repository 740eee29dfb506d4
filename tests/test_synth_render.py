"""Synthetic benchmark, in memory: shapes, presets, rendering, label maps, statistics."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from vis_core import masks
from vis_core.synth.annotations import TrackCollector, annotation_record
from vis_core.synth.generate import synthesize_video, video_scene
from vis_core.synth.motion import Trajectory
from vis_core.synth.render import render_video
from vis_core.synth.scene import Scene
from vis_core.synth.shapes import CATEGORIES, inside
from vis_core.synth.splits import (
    DEFAULT_HEIGHT,
    DEFAULT_WIDTH,
    SynthConfigError,
    preset,
    train_preset,
    val_long_preset,
    val_preset,
)
from vis_core.synth.stats import SplitStats, video_stats


def _unit_grid(points: int = 201) -> tuple[np.ndarray, np.ndarray]:
    v, u = np.mgrid[-1.2 : 1.2 : points * 1j, -1.2 : 1.2 : points * 1j]
    return u.astype(np.float32), v.astype(np.float32)


def test_shapes_fit_the_unit_disc_and_differ_from_each_other():
    u, v = _unit_grid()
    shapes = {category.name: inside(category, u, v) for category in CATEGORIES}
    assert len(CATEGORIES) == 8 and [c.id for c in CATEGORIES] == list(range(1, 9))
    for name, mask in shapes.items():
        assert mask.sum() > 0.3 * math.pi * (200 / 2.4) ** 2, name  # fills the disc enough
        assert np.hypot(u, v)[mask].max() <= 1.0, name  # the renderer's box holds it
    names = list(shapes)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            a, b = shapes[first], shapes[second]
            iou = (a & b).sum() / (a | b).sum()
            assert iou < 0.8, (first, second, iou)


def test_presets_defaults_and_overrides():
    assert (train_preset().width, train_preset().height) == (DEFAULT_WIDTH, DEFAULT_HEIGHT)
    assert (DEFAULT_WIDTH, DEFAULT_HEIGHT) == (320, 240)
    assert val_preset().frames == (10, 40) and val_preset().instances[0] >= 2
    long = val_long_preset()
    assert long.frames == (100, 300) and long.instances[0] >= 5
    assert preset("val-long") == long
    assert preset("val").replace(frames=(3, 4)).frames == (3, 4)
    with pytest.raises(SynthConfigError, match="frames"):
        preset("val").replace(frames=(5, 2))
    with pytest.raises(SynthConfigError, match="unknown split"):
        preset("test")
    with pytest.raises(SynthConfigError, match="16x16"):
        preset("train").replace(width=8)


def test_regenerating_a_video_is_exact_and_other_videos_differ():
    config = val_preset().replace(frames=(4, 6))
    scene, first = synthesize_video(config, seed=3, index=1)
    _, again = synthesize_video(config, seed=3, index=1)
    _, other = synthesize_video(config, seed=3, index=2)
    np.testing.assert_array_equal(first.frames, again.frames)
    np.testing.assert_array_equal(first.labels, again.labels)
    assert first.frames.shape == (scene.num_frames, 240, 320, 3)
    assert first.frames.dtype == np.uint8 and first.labels.shape == (scene.num_frames, 240, 320)
    assert first.frames.shape != other.frames.shape or not np.array_equal(
        first.frames, other.frames
    )


def test_splits_and_streams_do_not_share_random_draws():
    train, val = train_preset(), val_preset()
    assert video_scene(train, 0, 0).background.canvas[0, 0].tolist() != (
        video_scene(val, 0, 0).background.canvas[0, 0].tolist()
    )


def _still_scene(objects: list[tuple[int, float, float, float]], depth: tuple[int, ...]) -> Scene:
    """A noiseless 2-frame 64x48 scene with objects (category index, x, y, radius)."""
    base = video_scene(val_preset().replace(width=64, height=48, frames=(2, 2)), 0, 0)
    template = base.objects[0]
    scene_objects = []
    for category_index, x, y, radius in objects:
        trajectory = Trajectory(
            centres=np.array([[x, y], [x + 1.5, y]]),
            radii=np.full(2, radius),
            angles=np.array([0.0, 0.3]),
            aspects=np.ones(2),
        )
        scene_objects.append(
            dataclasses.replace(
                template, category=CATEGORIES[category_index], trajectory=trajectory
            )
        )
    return dataclasses.replace(
        base,
        objects=tuple(scene_objects),
        depth_order=depth,
        occluders=(),
        noise_sigma=0.0,
        exposure=np.ones(2, dtype=np.float32),
    )


def test_labels_are_exactly_the_visible_shapes_in_depth_order():
    # A square (instance 1) in front of a circle (instance 2) that it partly covers.
    scene = _still_scene([(1, 30.0, 24.0, 12.0), (0, 40.0, 24.0, 10.0)], depth=(1, 0))
    video = render_video(scene)
    ys, xs = np.mgrid[0:48, 0:64] + 0.5
    for t in range(2):
        trajectory_square = scene.objects[0].trajectory
        cx, cy = trajectory_square.centres[t]
        angle = trajectory_square.angles[t]
        dx, dy = xs - cx, ys - cy
        u = (math.cos(angle) * dx + math.sin(angle) * dy) / 12.0
        v = (math.cos(angle) * dy - math.sin(angle) * dx) / 12.0
        square = inside(CATEGORIES[1], u, v)
        np.testing.assert_array_equal(video.labels[t] == 1, square)
        circle_x, circle_y = scene.objects[1].trajectory.centres[t]
        circle = (xs - circle_x) ** 2 + (ys - circle_y) ** 2 <= 100.0
        np.testing.assert_array_equal(video.labels[t] == 2, circle & ~square)
        assert video.full_areas[t].tolist() == [square.sum(), circle.sum()]
        # Painted colours differ from the background view where objects are drawn.
        background = scene.background.view(t, 48, 64)
        drawn = video.labels[t] > 0
        assert np.abs(video.frames[t][drawn] - background[drawn]).max() > 0
        np.testing.assert_array_equal(
            video.frames[t][~drawn], np.clip(background[~drawn] + 0.5, 0, 255).astype(np.uint8)
        )


def test_never_visible_instances_get_no_annotation():
    # Instance 2 hides behind instance 1; instance 3 is outside the frame.
    scene = _still_scene(
        [(0, 30.0, 24.0, 15.0), (2, 30.0, 24.0, 6.0), (3, -40.0, 24.0, 8.0)], depth=(2, 1, 0)
    )
    video = render_video(scene)
    collector = TrackCollector([obj.category.id for obj in scene.objects])
    visible = np.stack([collector.add(labels) for labels in video.labels])
    tracks = collector.tracks()
    assert [track.instance for track in tracks] == [1]
    assert visible[:, 1:].sum() == 0 and video.full_areas[:, 1].min() > 0
    record = annotation_record(7, 2, tracks[0], width=64, height=48)
    assert record["id"] == 7 and record["category_id"] == CATEGORIES[0].id
    assert record["iscrowd"] == 0 and record["length"] == 2
    decoded = masks.decode(record["segmentations"])
    np.testing.assert_array_equal(decoded, video.labels == 1)
    assert record["areas"] == masks.area(record["segmentations"]).tolist()
    assert record["bboxes"] == masks.bbox(record["segmentations"]).tolist()
    stats = video_stats(video.full_areas, visible, [obj.category.id for obj in scene.objects])
    assert stats.num_instances == 1


def test_video_stats_definitions():
    # T=3 frames, K=4 instances; full and visible pixel counts per frame.
    full = np.array([[100, 50, 0, 40], [100, 50, 10, 40], [100, 0, 10, 40]])
    visible = np.array([[100, 20, 0, 0], [69, 50, 10, 0], [71, 0, 10, 0]])
    stats = video_stats(full, visible, [1, 1, 2, 3])  # instance 4 is never visible
    assert stats.num_instances == 3
    assert stats.repeated_category  # instances 1 and 2 are both category 1
    # Instance-frames with full > 0: 3 + 2 + 2 = 7; occluded > 30%: (1, t=1) 31%, (2, t=0) 60%.
    assert stats.instance_frames == 7 and stats.occluded_instance_frames == 2
    # Instance 2 is gone in the last frame, instance 3 absent in the first.
    assert stats.tracks_entering_or_leaving == 2
    split = SplitStats.from_videos([stats, video_stats(full[:, :1], visible[:, :1], [5])])
    assert split.mean_instances_per_video == 2.0
    assert split.share_videos_repeated_category == 0.5
    assert split.share_instance_frames_occluded == pytest.approx(3 / 10)
    assert "instances per video" in split.table()
    with pytest.raises(ValueError, match=r"\[T, K\]"):
        video_stats(full, visible[:, :2], [1, 1, 2, 3])


def _render_stats(config, seed: int, count: int) -> SplitStats:
    per_video = []
    for index in range(count):
        scene, video = synthesize_video(config, seed, index)
        ids = [obj.category.id for obj in scene.objects]
        per_video.append(video_stats(video.full_areas, video.visible_areas(), ids))
    return SplitStats.from_videos(per_video)


def test_val_floors_hold():
    stats = _render_stats(val_preset(), seed=0, count=8)
    assert stats.mean_instances_per_video >= 2.0
    assert stats.share_videos_repeated_category >= 0.3


def test_val_long_floors_hold():
    stats = _render_stats(val_long_preset(), seed=0, count=3)
    assert stats.num_frames >= 300
    assert stats.mean_instances_per_video >= 5.0
    assert stats.share_instance_frames_occluded >= 0.2
