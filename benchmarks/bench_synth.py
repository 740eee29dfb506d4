"""Synthetic benchmark generation speed: rendering alone and full writing, 1 and 2 workers.

"write" is everything `vis synth` does per frame: render, H.264 encode, RLE of the label
maps, statistics. Figures are frames per second of wall time on this machine.
"""

from __future__ import annotations

import tempfile
import time

from vis_core.synth.generate import video_scene
from vis_core.synth.render import render_frames
from vis_core.synth.splits import SynthConfig, preset
from vis_core.synth.writer import generate_split

CASES = (("train", 12), ("val-long", 2))


def _render_only(config: SynthConfig, count: int) -> tuple[int, float]:
    start = time.perf_counter()
    frames = 0
    for index in range(count):
        for _ in render_frames(video_scene(config, 0, index)):
            frames += 1
    return frames, time.perf_counter() - start


def _write(config: SynthConfig, count: int, workers: int) -> tuple[int, float]:
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as out:
        summary = generate_split(out, config, num_videos=count, seed=0, workers=workers)
    return summary.stats.num_frames, summary.seconds


def run() -> None:
    rows = []
    for split, count in CASES:
        config = preset(split)
        measured = [("render", 1, *_render_only(config, count))]
        measured += [("write", workers, *_write(config, count, workers)) for workers in (1, 2)]
        base = measured[1][2] / measured[1][3]
        for stage, workers, frames, seconds in measured:
            fps = frames / seconds
            rows.append((split, stage, workers, count, frames, seconds, fps, fps / base))
    header = ("split", "stage", "workers", "videos", "frames", "seconds", "frames/s", "vs write/1")
    print(
        f"{header[0]:<9} {header[1]:<7} {header[2]:>7} {header[3]:>6} {header[4]:>6} "
        f"{header[5]:>7} {header[6]:>8} {header[7]:>10}"
    )
    for split, stage, workers, count, frames, seconds, fps, ratio in rows:
        print(
            f"{split:<9} {stage:<7} {workers:>7} {count:>6} {frames:>6} "
            f"{seconds:>7.2f} {fps:>8.0f} {ratio:>9.2f}x"
        )


if __name__ == "__main__":
    run()
