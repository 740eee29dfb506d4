"""Generate a split and write it to a local folder or object storage (fsspec).

Layout under the output URI:
- `videos/NAME.mp4`: H.264 videos (PyAV), NAME = `SPLIT_00000`, ...;
- `annotations.json`: YouTube-VIS 2019 annotations (see `annotations.py`);
- `stats.json`: difficulty statistics (see `stats.py`) and the generation settings;
- `coco/images/*.jpg` and `coco/annotations.json` when still images are asked for.

Videos are independent (each has its own seed), so they are rendered in worker processes
when `workers > 1` and gathered in index order: the output does not depend on `workers`.
The json files are written last, so their presence means the split is complete.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from vis_core.storage import join, open_fs
from vis_core.synth.annotations import (
    TrackCollector,
    TrackMasks,
    annotation_record,
    category_records,
    dump_json,
    video_record,
)
from vis_core.synth.coco_images import CocoImage, coco_annotation_file, write_image
from vis_core.synth.generate import video_name, video_scene
from vis_core.synth.render import render_frames
from vis_core.synth.splits import SynthConfig
from vis_core.synth.stats import SplitStats, VideoStats, video_stats
from vis_core.video.encode import Mp4Writer

logger = logging.getLogger(__name__)

_LOG_INTERVAL_S = 5.0
# x264's macroblock-tree rate control (on in "veryfast" and slower presets) reads memory
# it has not initialised when B-frames meet the end of a short stream: the same frames
# then encode differently from run to run. "superfast" turns it off, so equal frames give
# equal mp4s (checked over lengths 1 to 40, repeated encodes).
_X264_PRESET = "superfast"
Result = TypeVar("Result")


@dataclass(frozen=True)
class WrittenVideo:
    """What the annotation file needs of one written video."""

    index: int
    name: str
    num_frames: int
    tracks: tuple[TrackMasks, ...]
    stats: VideoStats


@dataclass(frozen=True)
class SplitSummary:
    """The result of `generate_split`: statistics and where the files went."""

    stats: SplitStats
    annotations_uri: str
    stats_uri: str
    coco_annotations_uri: str | None
    seconds: float


def video_uri(out_uri: str, name: str) -> str:
    return f"{out_uri.rstrip('/')}/videos/{name}.mp4"


def write_video(out_uri: str, config: SynthConfig, seed: int, index: int) -> WrittenVideo:
    """Render video `index`, encode its mp4 under `out_uri`, collect its masks and stats."""
    scene = video_scene(config, seed, index)
    name = video_name(config, index)
    category_ids = [obj.category.id for obj in scene.objects]
    collector = TrackCollector(category_ids)
    full_areas, visible_areas = [], []
    uri = video_uri(out_uri, name)
    with Mp4Writer(uri, fps=config.fps, crf=scene.crf, preset=_X264_PRESET) as writer:
        for frame in render_frames(scene):
            writer.write(frame.image)
            visible_areas.append(collector.add(frame.labels))
            full_areas.append(frame.full_areas)
    shape = (scene.num_frames, len(scene.objects))
    stats = video_stats(
        np.stack(full_areas).reshape(shape), np.stack(visible_areas).reshape(shape), category_ids
    )
    return WrittenVideo(index, name, scene.num_frames, tuple(collector.tracks()), stats)


def generate_split(
    out_uri: str,
    config: SynthConfig,
    num_videos: int,
    seed: int = 0,
    coco_images: int = 0,
    workers: int = 1,
) -> SplitSummary:
    """Write `num_videos` videos (and `coco_images` still images) of `config` to `out_uri`.

    With `workers` > 1 the videos are rendered in spawned processes, which import the
    caller's main module: a script calling this needs the `if __name__ == "__main__":`
    guard (the `vis` command has it), and the target must be shared storage (not
    `memory://`).
    """
    if num_videos < 0 or coco_images < 0:
        raise ValueError(f"counts must be >= 0, got {num_videos} videos, {coco_images} images")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    start = time.perf_counter()
    fs, root = open_fs(out_uri)
    fs.makedirs(root, exist_ok=True)
    info = {
        "description": "vis synthetic video instance segmentation benchmark",
        "split": config.name,
        "seed": seed,
        "num_videos": num_videos,
        "config": config.to_json(),
    }
    with _Executor(workers) as pool:
        progress = _Progress("video", num_videos)
        videos: list[WrittenVideo] = []
        for video in pool.map(functools.partial(write_video, out_uri, config, seed), num_videos):
            videos.append(video)
            progress.update(video.num_frames)
        images: list[CocoImage] = []
        if coco_images:
            progress = _Progress("image", coco_images)
            for image in pool.map(
                functools.partial(write_image, out_uri, config, seed), coco_images
            ):
                images.append(image)
                progress.update(1)

    coco_uri = None
    if coco_images:
        coco_path = join(root, "coco", "annotations.json")
        with fs.open(coco_path, "wb") as file:
            file.write(dump_json(coco_annotation_file(images, info)))
        coco_uri = fs.unstrip_protocol(coco_path)
    stats = SplitStats.from_videos([video.stats for video in videos])
    annotations_path = join(root, "annotations.json")
    with fs.open(annotations_path, "wb") as file:
        file.write(dump_json(_annotation_file(videos, config, info)))
    stats_path = join(root, "stats.json")
    with fs.open(stats_path, "wb") as file:
        file.write(
            dump_json(
                {"split": config.name, "seed": seed, **stats.to_json(), "config": info["config"]}
            )
        )
    return SplitSummary(
        stats=stats,
        annotations_uri=fs.unstrip_protocol(annotations_path),
        stats_uri=fs.unstrip_protocol(stats_path),
        coco_annotations_uri=coco_uri,
        seconds=time.perf_counter() - start,
    )


def _annotation_file(
    videos: list[WrittenVideo], config: SynthConfig, info: dict[str, Any]
) -> dict[str, Any]:
    video_records, annotations = [], []
    for video in videos:
        video_id = video.index + 1
        video_records.append(
            video_record(
                video_id, video.name, config.width, config.height, video.num_frames, config.fps
            )
        )
        for track in video.tracks:
            annotations.append(
                annotation_record(
                    len(annotations) + 1, video_id, track, config.width, config.height
                )
            )
    return {
        "info": info,
        "videos": video_records,
        "annotations": annotations,
        "categories": category_records(),
    }


class _Executor:
    """Runs tasks in this process (workers == 1) or in a spawn-started process pool."""

    def __init__(self, workers: int):
        self._pool = (
            ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
            if workers > 1
            else None
        )

    def map(self, function: Callable[[int], Result], count: int) -> Iterator[Result]:
        """`function(i)` for i in 0..count-1, results in index order."""
        if self._pool is None:
            return map(function, range(count))
        return self._pool.map(function, range(count))

    def __enter__(self) -> _Executor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


class _Progress:
    """Logs `done/total` with throughput every few seconds and at the end."""

    def __init__(self, kind: str, total: int):
        self.kind, self.total = kind, total
        self.done = self.frames = 0
        self.start = self.last_log = time.perf_counter()

    def update(self, frames: int) -> None:
        self.done += 1
        self.frames += frames
        now = time.perf_counter()
        if self.done < self.total and now - self.last_log < _LOG_INTERVAL_S:
            return
        self.last_log = now
        elapsed = max(now - self.start, 1e-9)
        remaining = elapsed / self.done * (self.total - self.done)
        logger.info(
            "%s %d/%d, %d frames, %.0f frames/s, %.0f s left",
            self.kind,
            self.done,
            self.total,
            self.frames,
            self.frames / elapsed,
            remaining,
        )
