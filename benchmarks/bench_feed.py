"""Would a GPU be fed? The corpus job against a device stand-in, at 360p and 720p.

The model on the detector's device is replaced by `vis_core.inference.standin`: it holds
"the device" for a fixed time per frame (sleeping: no CPU) and returns what the shipped
model gives on the clip's first frame, repeated, so everything around it is the real job's
work on real-looking outputs: listing, decoding, resizing, batching, the masks at the
original size, RLE, rows and commits, and Ray's traffic between them. One device (one
actor), both pipelines (`single`: one actor does everything for a video; `staged`).

Clips: the first 64-frame stretches of the real 1280x720 clips in `../shared/videos` (or
`VIS_BENCH_FEED_VIDEOS`; synthetic moving boxes where there are none), re-encoded at
1280x720 and at 640x360 (H.264, crf 23), 12 videos a size. Rows:
- capacity: the stand-in's frames/s (1000 / ms per frame); achieved: the frames it held
  the device for over the time from its first frame to its last (its own log: start-up and
  the last video's masks and commit left out, every wait for frames in between counted);
  fraction: their ratio, the share of the time the device was kept busy;
- CPU-ms per frame: of every process of the job together (driver, Ray's own, workers)
  from the third commit to the last (start-up and the first videos' burst left out; `all`:
  the figure that sizes the CPUs a GPU needs), of the driver alone, and per stage (staged
  path, `vis_core.corpus.stage_seconds`, the videos committed after the third).

`VIS_BENCH_FEED_MS` sets the stand-in's ms per frame (default 20; a comma-separated list
runs each, e.g. `20,4.35` for 46 and 230 frames/s).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

VIDEOS = 12
FRAMES = 64
# The steady state starts at this commit: the first videos start together (and their
# workers with them), so their commits come in a burst.
SKIP = 3
SIZES = (("360p", 360, 640), ("720p", 720, 1280))
STAGES = ("decode", "resize", "detect", "head", "masks", "commit")
_SHARED = Path(__file__).resolve().parents[2] / "shared" / "videos"
_REAL_CLIPS = ("01_dog.mp4", "05_default_juggle.mp4")


@dataclass
class _Run:
    """One job: what its outcomes and its processes' CPU time say."""

    size: str
    pipeline: str
    frame_ms: float
    times: list[float] = field(default_factory=list)  # when each video was committed
    frames: list[int] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)  # the job's processes' CPU seconds then
    driver_s: list[float] = field(default_factory=list)  # the driver's
    stages: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    failed: int = 0
    device: list[tuple[float, float, int]] = field(default_factory=list)  # (start, end, frames)

    @property
    def steady_frames(self) -> int:
        return sum(self.frames[SKIP:])

    @property
    def achieved(self) -> float:
        """Frames/s of the device from its first frame to its last."""
        span = max(end for _, end, _ in self.device) - min(start for start, _, _ in self.device)
        return sum(frames for _, _, frames in self.device) / span

    @property
    def capacity(self) -> float:
        return 1000.0 / self.frame_ms

    @property
    def cpu_ms_per_frame(self) -> float:
        """CPU-ms of all the job's processes per frame in the steady state."""
        return 1000 * (self.cpu_s[-1] - self.cpu_s[SKIP - 1]) / self.steady_frames

    @property
    def driver_ms_per_frame(self) -> float:
        return 1000 * (self.driver_s[-1] - self.driver_s[SKIP - 1]) / self.steady_frames

    def stage_ms(self, name: str) -> float:
        return 1000 * self.stages[name] / self.steady_frames


def _source_frames(count: int) -> Iterator[np.ndarray]:
    """`count` RGB frames at 1280x720: the real clips', or synthetic ones."""
    from vis_core.video.decode import open_video

    folder = Path(os.environ.get("VIS_BENCH_FEED_VIDEOS", _SHARED))
    clips = [folder / name for name in _REAL_CLIPS if (folder / name).exists()]
    if not clips:
        from benchmarks.bench_long_video import moving_box_frames

        yield from moving_box_frames(count, 720, 1280)
        return
    made = 0
    while made < count:
        for clip in clips:
            with open_video(str(clip)) as reader:
                for frame in reader.frames():
                    if made == count:
                        return
                    yield frame.image
                    made += 1


def _corpora(root: Path) -> dict[str, Path]:
    """One folder of `VIDEOS` clips of `FRAMES` frames per size."""
    import torch
    from torch.nn import functional as F

    from vis_core.video.encode import Mp4Writer

    folders = {name: root / name for name, _, _ in SIZES}
    for folder in folders.values():
        folder.mkdir(parents=True)
    writers: dict[str, Mp4Writer] = {}
    for index, frame in enumerate(_source_frames(VIDEOS * FRAMES)):
        video = index // FRAMES
        for name, height, width in SIZES:
            if index % FRAMES == 0:
                if name in writers:
                    writers[name].close()
                writers[name] = Mp4Writer(str(folders[name] / f"clip_{video}.mp4"), fps=25.0)
            if frame.shape[:2] != (height, width):
                tensor = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
                tensor = F.interpolate(tensor, size=(height, width), mode="area")
                frame = tensor[0].permute(1, 2, 0).round().byte().numpy()
            writers[name].write(np.ascontiguousarray(frame))
    for writer in writers.values():
        writer.close()
    return folders


def _job_cpu_s() -> float:
    """CPU seconds so far of this process and its descendants (Ray's and its workers)."""
    import psutil

    total = 0.0
    me = psutil.Process()
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def _run(folder: Path, output: Path, size: str, pipeline: str, frame_ms: float) -> _Run:
    from workflows.corpus_job import CorpusJobConfig, VideoOutcome, run_corpus_job
    from workflows.staged_options import DeviceStandIn

    result = _Run(size, pipeline, frame_ms)
    logs = output.with_name(output.name + "_device")
    logs.mkdir()

    def seen(outcome: VideoOutcome) -> None:
        result.times.append(time.perf_counter())
        result.cpu_s.append(_job_cpu_s())
        result.driver_s.append(time.process_time())
        result.frames.append(outcome.num_frames)
        result.failed += outcome.status != "ok"
        if outcome.stages is not None and len(result.frames) > SKIP:
            for name in STAGES:
                result.stages[name] += getattr(outcome.stages, name)

    run_corpus_job(
        CorpusJobConfig(
            input_uri=str(folder),
            output_uri=str(output),
            workers=1,
            pipeline=pipeline,
            standin=DeviceStandIn(frame_ms, str(logs)),
            track=False,
            progress=False,
        ),
        on_outcome=seen,
    )
    if result.failed:
        raise RuntimeError(f"{result.failed} videos of the benchmark failed")
    for log in logs.iterdir():
        for line in log.read_text().split("\n"):
            if line:
                start, end, frames = line.split()
                result.device.append((float(start), float(end), int(frames)))
    return result


def run() -> None:
    import ray

    frame_times = [float(ms) for ms in os.environ.get("VIS_BENCH_FEED_MS", "20").split(",")]
    runs: list[_Run] = []
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        corpora = _corpora(root / "clips")
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
        try:
            for frame_ms in frame_times:
                for size, _, _ in SIZES:
                    for pipeline in ("single", "staged"):
                        output = root / f"out_{size}_{pipeline}_{frame_ms}"
                        runs.append(_run(corpora[size], output, size, pipeline, frame_ms))
        finally:
            ray.shutdown()
    print(
        f"{VIDEOS} clips of {FRAMES} frames a size, one stand-in device; load average "
        f"{load:.1f} before, {os.getloadavg()[0]:.1f} after (on {os.cpu_count()} cores)"
    )
    header = ("size", "pipeline", "ms/frame", "capacity", "achieved", "fraction", "CPU-ms all")
    header += ("driver",)
    print("  ".join(f"{h:>10}" for h in (*header, *STAGES)))
    for r in runs:
        stages = [f"{r.stage_ms(name):10.2f}" for name in STAGES] if r.pipeline == "staged" else []
        print(
            f"{r.size:>10}  {r.pipeline:>10}  {r.frame_ms:10.2f}  {r.capacity:10.1f}  "
            f"{r.achieved:10.1f}  {r.achieved / r.capacity:10.2f}  {r.cpu_ms_per_frame:10.1f}  "
            f"{r.driver_ms_per_frame:10.2f}  " + "  ".join(stages)
        )
    print("CPU cores a GPU needs (staged: all the job's CPU-ms per frame x frames/s):")
    for r in runs:
        if r.pipeline == "staged":
            cores = ", ".join(
                f"{rate} frames/s: {rate * r.cpu_ms_per_frame / 1000:.1f}" for rate in (46, 230)
            )
            print(f"  {r.size} (stand-in {r.frame_ms} ms): {cores}")
