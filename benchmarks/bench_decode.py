"""Decode throughput: raw PyAV against `vis_core.video.decode`, side by side in one run.

Uses the real 1280x720 H.264 clip `01_dog.mp4` when it is present (or the video named by
`VIS_BENCH_VIDEO`), else a generated 720p mp4. Every method decodes the whole video to RGB
uint8 arrays, in interleaved rounds; the table gives the median frames per second and the
ratio to raw PyAV (`container.decode` + `to_ndarray("rgb24")`, AUTO threading), and the
median CPU time per frame of all threads.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

from vis_core.video.decode import open_video
from vis_core.video.encode import write_mp4

_REAL_VIDEO = Path("/work/shared/videos/01_dog.mp4")
_ROUNDS = 5
_SHORTEST_EDGE = 360


def _raw_pyav(path: str, **to_ndarray_options: object) -> int:
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        count = 0
        for frame in container.decode(stream):
            frame.to_ndarray(format="rgb24", **to_ndarray_options)
            count += 1
    return count


def _reader_frames(path: str, shortest_edge: int | None) -> int:
    with open_video(path) as video:
        return sum(1 for _ in video.frames(shortest_edge=shortest_edge))


def _reader_chunks(path: str, shortest_edge: int | None) -> int:
    with open_video(path) as video:
        return sum(len(chunk) for chunk in video.iter_chunks(16, shortest_edge=shortest_edge))


def _generated_video(folder: str) -> str:
    """A 120-frame 1280x720 mp4 with moving gradients (compresses like real footage)."""
    ys, xs = np.mgrid[0:720, 0:1280]
    frames = (
        np.stack([(xs + 8 * t) % 256, (ys + 4 * t) % 256, (xs + ys) // 8 % 256], axis=-1)
        for t in range(120)
    )
    path = os.path.join(folder, "generated_720p.mp4")
    write_mp4(path, (frame.astype(np.uint8) for frame in frames), fps=30.0)
    return path


def _measure(path: str) -> None:
    with open_video(path) as video:
        info = video.info
        small_height, small_width = video.output_size(_SHORTEST_EDGE)
    methods: dict[str, Callable[[], int]] = {
        "raw PyAV, rgb24 full size": lambda: _raw_pyav(path),
        "raw PyAV, to_ndarray resize": lambda: _raw_pyav(
            path, width=small_width, height=small_height
        ),
        "reader frames, full size": lambda: _reader_frames(path, None),
        f"reader frames, shortest edge {_SHORTEST_EDGE}": lambda: _reader_frames(
            path, _SHORTEST_EDGE
        ),
        "reader chunks of 16, full size": lambda: _reader_chunks(path, None),
        f"reader chunks of 16, edge {_SHORTEST_EDGE}": lambda: _reader_chunks(path, _SHORTEST_EDGE),
    }
    fps: dict[str, list[float]] = {name: [] for name in methods}
    cpu_ms: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(_ROUNDS):
        for name, method in methods.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            count = method()
            fps[name].append(count / (time.perf_counter() - start))
            cpu_ms[name].append(1000 * (time.process_time() - start_cpu) / count)
    raw = "raw PyAV, rgb24 full size"
    median_raw, best_raw = statistics.median(fps[raw]), max(fps[raw])
    print(
        f"decode: {Path(path).name} {info.codec} {info.width}x{info.height} "
        f"{info.num_frames} frames, {os.cpu_count()} CPUs, {_ROUNDS} interleaved rounds"
    )
    # Best-of figures and CPU time (all threads) are the least disturbed by other work on a
    # shared machine.
    print(
        f"{'method':<36} {'median fps':>10} {'vs raw':>7} {'best fps':>9} {'vs raw':>7} "
        f"{'CPU ms/frame':>12}"
    )
    for name, values in fps.items():
        median, best = statistics.median(values), max(values)
        print(
            f"{name:<36} {median:>10.1f} {median / median_raw:>6.2f}x "
            f"{best:>9.1f} {best / best_raw:>6.2f}x {statistics.median(cpu_ms[name]):>12.2f}"
        )


def run() -> None:
    chosen = os.environ.get("VIS_BENCH_VIDEO") or (str(_REAL_VIDEO) if _REAL_VIDEO.exists() else "")
    if chosen:
        _measure(chosen)
        return
    with tempfile.TemporaryDirectory() as folder:
        _measure(_generated_video(folder))


if __name__ == "__main__":
    run()
