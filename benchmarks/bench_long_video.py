"""Long videos: peak memory and speed of `VideoSegmenter` as the video grows.

CPU: `vita_small_synth` (random weights) on 320x240 videos of 250 to 2,000 frames, each in
a fresh subprocess so the peaks do not mix. Frames are generated lazily (a moving box),
so the video itself never sits in memory; every length takes the two-pass path (past
`long_video_frames`). Peak resident memory is the process's VmHWM at the end, so it
includes Python, torch and the model; the goal is peak(2,000) / peak(250) within 2x.

CUDA (when present): `vita_r50_ytvis19` in bf16 on 640x360 videos of growing length, peak
allocated GPU memory per length, and the longest video that stayed within 12 GiB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

CPU_LENGTHS = (250, 500, 1000, 2000)
CPU_SIZE = (240, 320)  # height, width: the synthetic benchmark's frames
CUDA_LENGTHS = (500, 1000, 2000, 4000, 8000)
CUDA_SIZE = (360, 640)
CUDA_LIMIT_GIB = 12.0
CUDA_TIME_BUDGET_S = 240.0  # no longer video is started past this
REPOSITORY = Path(__file__).resolve().parent.parent


def moving_box_frames(count: int, height: int, width: int) -> Iterator[np.ndarray]:
    """`count` RGB frames `[H, W, 3]` uint8, made one at a time: a box sliding over a
    gradient."""
    background = np.empty((height, width, 3), dtype=np.uint8)
    background[:] = np.linspace(20, 90, width, dtype=np.uint8)[None, :, None]
    size = height // 4
    for index in range(count):
        frame = background.copy()
        x = (4 * index) % (width - size)
        frame[height // 3 : height // 3 + size, x : x + size] = (230, 60, 40)
        yield frame


def _peak_rss_mb() -> float:
    """The process's peak resident set size (VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _segment_on_cpu(frames: int) -> dict[str, float]:
    """Runs in the child process: one video of `frames` frames, timed."""
    import torch

    from vis_core.inference import VideoSegmenter
    from vis_core.modeling.presets import vita_small_synth
    from vis_core.modeling.vita_model import VitaModel

    torch.manual_seed(0)
    segmenter = VideoSegmenter(VitaModel(vita_small_synth()))
    height, width = CPU_SIZE
    segmenter.segment(lambda: moving_box_frames(2, height, width))  # warm-up
    before_mb = _peak_rss_mb()
    start = time.perf_counter()
    instances = segmenter.segment(lambda: moving_box_frames(frames, height, width))
    seconds = time.perf_counter() - start
    assert instances.num_frames == frames
    return {"seconds": seconds, "peak_mb": _peak_rss_mb(), "start_mb": before_mb}


def _run_child(frames: int) -> dict[str, float]:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_long_video", "--child", str(frames)],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{frames}-frame run failed:\n{completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _cpu_table() -> None:
    print(f"CPU, vita_small_synth, {CPU_SIZE[1]}x{CPU_SIZE[0]}, fp32, one subprocess per video")
    print(f"{'frames':>7} {'seconds':>8} {'frames/s':>9} {'start MB':>9} {'peak MB':>8}")
    peaks = {}
    for frames in CPU_LENGTHS:
        row = _run_child(frames)
        peaks[frames] = row["peak_mb"]
        print(
            f"{frames:>7} {row['seconds']:>8.1f} {frames / row['seconds']:>9.1f} "
            f"{row['start_mb']:>9.0f} {row['peak_mb']:>8.0f}",
            flush=True,
        )
    first, last = CPU_LENGTHS[0], CPU_LENGTHS[-1]
    print(
        f"peak at {last} / peak at {first} frames: {peaks[last] / peaks[first]:.2f}x (goal <= 2x)"
    )
    print("start MB: resident peak after loading the model and a 2-frame warm-up.")


def _cuda_table() -> None:
    import torch

    from vis_core.inference import VideoSegmenter
    from vis_core.modeling.presets import vita_r50_ytvis19
    from vis_core.modeling.vita_model import VitaModel

    device = torch.device("cuda")
    height, width = CUDA_SIZE
    segmenter = VideoSegmenter(VitaModel(vita_r50_ytvis19()), device=device, dtype=torch.bfloat16)
    segmenter.segment(lambda: moving_box_frames(2, height, width))  # warm-up
    print(
        f"\nCUDA ({torch.cuda.get_device_name(device)}), vita_r50_ytvis19, {width}x{height}, bf16"
    )
    print(f"{'frames':>7} {'seconds':>8} {'frames/s':>9} {'peak GiB':>9}")
    longest_within = 0
    started = time.perf_counter()
    for frames in CUDA_LENGTHS:
        if time.perf_counter() - started > CUDA_TIME_BUDGET_S:
            print(f"{frames:>7} (skipped: past the {CUDA_TIME_BUDGET_S:.0f} s budget)")
            break
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        try:
            segmenter.segment(lambda count=frames: moving_box_frames(count, height, width))
        except torch.cuda.OutOfMemoryError:
            print(f"{frames:>7} out of memory")
            break
        torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        print(f"{frames:>7} {seconds:>8.1f} {frames / seconds:>9.1f} {peak:>9.2f}", flush=True)
        if peak > CUDA_LIMIT_GIB:
            break
        longest_within = frames
    print(f"longest measured video within {CUDA_LIMIT_GIB:.0f} GiB: {longest_within} frames")


def run() -> None:
    _cpu_table()
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        _cuda_table()
    else:
        print("(no CUDA: the vita_r50_ytvis19 GPU table is skipped)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", type=int, help="segment one video of this many frames")
    args = parser.parse_args()
    if args.child is None:
        run()
    else:
        print(json.dumps(_segment_on_cpu(args.child)))


if __name__ == "__main__":
    main()
