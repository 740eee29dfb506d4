"""The prepared GPU check: three figures for a lent GPU, in under 8 minutes, as one JSON.

1. **model**: frames/s of `vita_r50_ytvis19` (random weights) at 640x360 in bf16 autocast:
   the frame detector on batches of frames (eager, eager channels-last, and torch.compile
   of the detector at the best eager batch while the part's time lasts, its warm-up
   stated) plus VITA's per-frame share over a 300-frame video. Goal: >= 230 frames/s (5x
   the official 46.1).
2. **corpus**: the corpus job (`run_corpus_job`, staged pipeline, `use_gpu`) on clips
   re-encoded at 640x360 from `shared/videos` (beside the repository as `../shared`, or
   inside it as `./shared` on the device machine; synthetic moving boxes where there are
   none) with that model file, against the model alone (`VideoSegmenter`) on the same
   frames already decoded. Ratio of the job's frames/s to the model's: end to end (Ray's
   start and loading the model included) and steady (from the third commit to the last).
   Goal: >= 0.9.
3. **long_video**: the longest video `VideoSegmenter` runs complete-offline (VITA once
   over every frame's queries, masks for every frame) within 12 GiB of device memory
   (`torch.cuda.max_memory_allocated`), at 1k, 2k, 5k, 10k and 20k frames, stopping at
   the first out-of-memory or peak over 12 GiB. Frames are synthetic and the detector
   replays its output for a chunk of a given shape (the first call of each shape runs for
   real), so the time goes to what grows with length: the frame queries, VITA, and the
   masks and their RLE. Goal: >= 10,000 frames.

Each part runs in its own subprocess under a wall-clock budget (unspent time passes to
the next part), writes its JSON as it goes, and a part that fails or runs out of time
leaves its error and what it had measured; the others go on. The combined figures are
`OUT/gpu_check.json` (OUT: `--out`, else `$OUT`, else `./gpu_check_out`).

    python3 -m benchmarks.gpu_check                # on a lent GPU (infra/gpu_check.sh)
    python3 -m benchmarks.gpu_check --smoke        # CPU, tiny sizes, about a minute

`--smoke` runs the same code on the CPU with the small preset at 64x48, a few frames and
short budgets (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPOSITORY = Path(__file__).resolve().parent.parent
PARTS = ("model", "long_video", "corpus")
GOALS = {"model_fps": 230.0, "corpus_ratio": 0.9, "long_video_frames": 10_000}
OFFICIAL_FPS = 46.1
LIMIT_GIB = 12.0
SKIP_COMMITS = 3  # the steady state of the corpus job starts at this commit
GRACE_S = 15.0  # a part's process may run this long past its own deadline (start, exit)
TOTAL_S = 455.0  # the parts together, graces included, on the GPU


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes and budgets of one check: the GPU's, or the CPU smoke test's."""

    smoke: bool
    height: int
    width: int
    batches: tuple[int, ...]
    vita_frames: int
    timed_calls: int
    clips: int
    clip_frames: int
    lengths: tuple[int, ...]
    budgets: dict[str, float]  # seconds per part
    compile_cap_s: float  # torch.compile is tried only with this much of the part left

    @property
    def total_s(self) -> float:
        return sum(self.budgets.values())


GPU_PLAN = Plan(
    smoke=False,
    height=360,
    width=640,
    batches=(8, 16, 32),
    vita_frames=300,
    timed_calls=10,
    clips=24,
    clip_frames=96,
    lengths=(1000, 2000, 5000, 10_000, 20_000),
    # 430 s of parts; each may overrun by GRACE_S, the whole never past TOTAL_S (8 min
    # less the unpacking and start-up of infra/gpu_check.sh)
    budgets={"model": 175.0, "long_video": 125.0, "corpus": 130.0},
    compile_cap_s=60.0,
)
SMOKE_PLAN = Plan(
    smoke=True,
    height=48,
    width=64,
    batches=(1, 2),
    vita_frames=6,
    timed_calls=2,
    clips=4,
    clip_frames=6,
    lengths=(10, 20),
    budgets={"model": 60.0, "long_video": 60.0, "corpus": 120.0},
    compile_cap_s=float("inf"),  # never: the CPU compile takes minutes
)


# --------------------------------------------------------------------------- helpers


class PartReport:
    """A part's JSON, rewritten (atomically) after every figure it adds."""

    def __init__(self, path: Path, part: str):
        self.path = path
        self.data: dict[str, Any] = {"part": part, "status": "running"}
        self.write()

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.write()

    def write(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.data, indent=1, default=_jsonable))
        temporary.replace(self.path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _model_config(plan: Plan):
    """R-50 on the GPU; in the smoke test the small preset at the smoke test's size, whose
    videos past 8 frames take the segmenter's two-pass path."""
    from vis_core.modeling.presets import vita_r50_ytvis19, vita_small_synth

    if not plan.smoke:
        return vita_r50_ytvis19()
    config = vita_small_synth()
    return dataclasses.replace(
        config,
        input=dataclasses.replace(config.input, min_size_test=plan.height),
        inference=dataclasses.replace(config.inference, long_video_frames=8),
    )


def _device_and_dtype():
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), torch.float32


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(fn: Callable[[], object], device, calls: int, until: float) -> float:
    """Median seconds of `fn()` over `calls` calls (fewer past the deadline `until`), after
    two warm-up calls."""
    for _ in range(2):
        fn()
    _synchronize(device)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
        if time.perf_counter() > until:
            break
    return sorted(times)[len(times) // 2]


@contextlib.contextmanager
def _setting(module_name: str, name: str, value: Any) -> Iterator[None]:
    """A module-level setting of the model's code changed for the duration."""
    module = importlib.import_module(module_name)
    before = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, before)


def moving_box_frames(count: int, height: int, width: int) -> Iterator[np.ndarray]:
    """`count` RGB frames `[H, W, 3]` uint8, made one at a time (a box over a gradient)."""
    from benchmarks.bench_long_video import moving_box_frames as frames

    return frames(count, height, width)


# --------------------------------------------------------------------------- part 1


def part_model(plan: Plan, report: PartReport, deadline: float) -> None:
    """Detector frames/s by batch and variant, VITA's frames/s, their combination."""
    import torch

    from vis_core.inference.segmenter import inference_autocast
    from vis_core.modeling.vita_model import VitaModel

    device, dtype = _device_and_dtype()
    torch.manual_seed(0)
    model = VitaModel(_model_config(plan)).to(device).eval()
    report.update(
        preset=model.config.name,
        size=f"{plan.width}x{plan.height}",
        dtype=str(dtype).removeprefix("torch."),
        device=_device_name(device),
        rows=[],
    )
    rows: list[dict[str, Any]] = []
    autocast = inference_autocast(device, dtype)

    def images_of(batch: int, channels_last: bool):
        frames = torch.randint(
            0, 256, (batch, plan.height, plan.width, 3), dtype=torch.uint8, device=device
        )
        images = model.detector.preprocess(frames)
        return images.contiguous(memory_format=torch.channels_last) if channels_last else images

    def measure(variant: str, detector, batch: int, channels_last: bool) -> dict[str, Any]:
        images = images_of(batch, channels_last)
        with torch.inference_mode(), autocast:
            seconds = _median_seconds(lambda: detector(images), device, plan.timed_calls, deadline)
        row = {"variant": variant, "batch": batch, "detector_fps": batch / seconds}
        rows.append(row)
        report.update(rows=rows)
        return row

    # VITA: one video of `vita_frames` frames of queries (its cost is per video).
    with torch.inference_mode(), autocast:
        queries = model.detector(images_of(plan.batches[0], False)).frame_queries[-1]
        repeat = -(-plan.vita_frames // queries.shape[0])
        video = queries.repeat(repeat, 1, 1)[: plan.vita_frames][None, None]  # [1, 1, T, Q, C]
        vita_s = _median_seconds(lambda: model.vita(video), device, plan.timed_calls, deadline)
    report.update(vita={"frames": plan.vita_frames, "fps": plan.vita_frames / vita_s})

    report.update(in_progress="eager")
    for batch in plan.batches:
        if time.perf_counter() > deadline:
            break
        measure("eager", model.detector, batch, False)
    best_batch = max(rows, key=lambda row: row["detector_fps"])["batch"]
    if time.perf_counter() < deadline:
        report.update(in_progress="channels_last")
        model.detector.to(memory_format=torch.channels_last)
        measure("eager_channels_last", model.detector, best_batch, True)
        model.detector.to(memory_format=torch.contiguous_format)
    for variant, module, name, value in (
        ("eager_grid_sample", "ms_deform_attn", "SAMPLING", "grid_sample"),
        ("eager_explicit_attention", "layers", "FUSED_ATTENTION", False),
    ):
        # The CPU's choices (README "Inference changes on the CPU"), on the device.
        if time.perf_counter() < deadline:
            report.update(in_progress=variant)
            with _setting(f"vis_core.modeling.{module}", name, value):
                measure(variant, model.detector, best_batch, False)
    if device.type == "cuda" and time.perf_counter() < deadline:
        report.update(in_progress="cudnn_benchmark")
        torch.backends.cudnn.benchmark = True
        measure("eager_cudnn_benchmark", model.detector, best_batch, False)
        torch.backends.cudnn.benchmark = False

    _finish_model(report, rows)  # the figures so far, should the compile outlast the part
    left = deadline - time.perf_counter()
    if left < plan.compile_cap_s or plan.smoke:
        report.update(compile={"status": "not run", "seconds_left": left})
    else:
        # The parent kills this process at the part's deadline: a compile that takes
        # longer leaves `in_progress: compile` and the eager rows.
        report.update(in_progress="compile", compile={"status": "compiling", "batch": best_batch})
        compiled = torch.compile(model.detector, dynamic=False)
        images = images_of(best_batch, False)
        started = time.perf_counter()
        with torch.inference_mode(), autocast:
            compiled(images)
            _synchronize(device)
        warmup_s = time.perf_counter() - started
        report.update(compile={"status": "compiled", "batch": best_batch, "warmup_s": warmup_s})
        row = measure("compiled", compiled, best_batch, False)
        report.update(compile={"status": "ok", "batch": best_batch, "warmup_s": warmup_s, **row})
    _finish_model(report, rows)


def _finish_model(report: PartReport, rows: list[dict[str, Any]]) -> None:
    best = max(rows, key=lambda row: row["detector_fps"])
    vita_fps = report.data["vita"]["fps"]
    fps = 1.0 / (1.0 / best["detector_fps"] + 1.0 / vita_fps)
    report.update(
        best={**best, "vita_fps": vita_fps, "model_fps": fps},
        model_fps=fps,
        vs_official=fps / OFFICIAL_FPS,
        goal_met=fps >= GOALS["model_fps"],
        in_progress=None,
    )


# --------------------------------------------------------------------------- part 2


def find_videos() -> list[Path]:
    """The real clips in `shared/videos`: `$VIS_GPU_CHECK_VIDEOS`, the repository's own
    `shared/` (on the device machine), or the `shared/` beside it (a developer's checkout)."""
    candidates = [REPOSITORY / "shared" / "videos", REPOSITORY.parent / "shared" / "videos"]
    if os.environ.get("VIS_GPU_CHECK_VIDEOS"):
        candidates.insert(0, Path(os.environ["VIS_GPU_CHECK_VIDEOS"]))
    for folder in candidates:
        videos = sorted(folder.glob("*.mp4")) if folder.is_dir() else []
        if videos:
            return videos
    return []


def _source_frames(videos: list[Path], count: int, height: int, width: int) -> Iterator[np.ndarray]:
    """`count` frames of `videos` in turn (again from the first when they run out), or of
    moving boxes where there are none, at height x width (area resize)."""
    import torch
    from torch.nn import functional as F

    from vis_core.video.decode import open_video

    def every_frame() -> Iterator[np.ndarray]:
        if not videos:
            yield from moving_box_frames(count, height, width)
            return
        while True:
            for video in videos:
                with open_video(str(video)) as reader:
                    for frame in reader.frames():
                        yield frame.image

    for index, frame in enumerate(every_frame()):
        if index == count:
            return
        if frame.shape[:2] != (height, width):
            tensor = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
            tensor = F.interpolate(tensor, size=(height, width), mode="area")
            frame = np.ascontiguousarray(tensor[0].permute(1, 2, 0).round().byte().numpy())
        yield frame


def make_clips(folder: Path, videos: list[Path], plan: Plan) -> list[Path]:
    """`plan.clips` clips of `plan.clip_frames` frames at the plan's size (H.264)."""
    from vis_core.video.encode import Mp4Writer

    folder.mkdir(parents=True)
    paths = [folder / f"clip_{index:03d}.mp4" for index in range(plan.clips)]
    frames = _source_frames(videos, plan.clips * plan.clip_frames, plan.height, plan.width)
    for path in paths:
        writer = Mp4Writer(str(path), fps=25.0)
        for _ in range(plan.clip_frames):
            writer.write(next(frames))
        writer.close()
    return paths


def _decoded(path: Path) -> list[np.ndarray]:
    from vis_core.video.decode import open_video

    with open_video(str(path)) as reader:
        return [frame.image for frame in reader.frames()]


def part_corpus(plan: Plan, report: PartReport, deadline: float) -> None:
    """The corpus job's frames/s against the model alone on the same frames."""
    import torch

    from vis_core.inference.segmenter import VideoSegmenter
    from vis_core.modeling.model_file import save_model
    from vis_core.modeling.vita_model import VitaModel
    from workflows.corpus_job import CorpusJobConfig, run_corpus_job

    device, dtype = _device_and_dtype()
    sources = find_videos()
    report.update(
        sources=[path.name for path in sources] or "synthetic moving boxes",
        clips=plan.clips,
        clip_frames=plan.clip_frames,
        size=f"{plan.width}x{plan.height}",
        device=_device_name(device),
        pipeline="staged",
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        clips = make_clips(root / "clips", sources, plan)
        torch.manual_seed(0)
        model = VitaModel(_model_config(plan))
        model_file = str(root / "model.vis.pt")
        save_model(model_file, model)
        report.update(clips_s=time.perf_counter() - started, in_progress="model alone")

        videos = [_decoded(path) for path in clips]
        segmenter = VideoSegmenter(model, device=device, dtype=dtype)
        segmenter.segment(videos[0][:2])  # warm-up
        _synchronize(device)
        start = time.perf_counter()
        frames = sum(segmenter.segment(video).num_frames for video in videos)
        _synchronize(device)
        alone_fps = frames / (time.perf_counter() - start)
        report.update(frames=frames, alone_fps=alone_fps, in_progress="corpus job")
        del segmenter, model
        if device.type == "cuda":
            torch.cuda.empty_cache()

        commits: list[tuple[float, int]] = []
        summary = run_corpus_job(
            CorpusJobConfig(
                input_uri=str(root / "clips"),
                output_uri=str(root / "tables"),
                model_uri=model_file,
                use_gpu=device.type == "cuda",
                workers=1,
                pipeline="staged",
                track=False,
                progress=False,
            ),
            on_outcome=lambda outcome: commits.append((time.perf_counter(), outcome.num_frames)),
        )
    if summary.failed:
        raise RuntimeError(f"{summary.failed} clips failed: {summary.failures[:3]}")
    job_fps = summary.frames_per_second
    steady = commits[SKIP_COMMITS - 1 :]
    steady_fps = None
    if len(steady) > 1 and steady[-1][0] > steady[0][0]:
        steady_fps = sum(count for _, count in steady[1:]) / (steady[-1][0] - steady[0][0])
    ratio = steady_fps / alone_fps if steady_fps is not None else None
    report.update(
        job_frames=summary.frames,
        job_seconds=summary.seconds,
        job_fps=job_fps,
        ratio_end_to_end=job_fps / alone_fps,
        steady_fps=steady_fps,
        ratio=ratio,
        goal_met=ratio is not None and ratio >= GOALS["corpus_ratio"],
        in_progress=None,
    )


# --------------------------------------------------------------------------- part 3


class _Replay:
    """The detector of `model`, replayed: its output for the largest chunk seen so far is
    computed once, kept slim (what `VideoSegmenter` reads: the last layer's frame queries,
    the class logits and the clip mask features), and sliced for every later chunk of at
    most that many frames. So a long video's first pass costs what grows with its length
    (the frame queries) and not the detector's time."""

    def __init__(self, detector):
        self.forward = detector.forward
        self.features = detector.mask_features
        self.detections = None
        self.mask_features = None
        detector.forward = self.replay_forward
        detector.mask_features = self.replay_mask_features

    def replay_forward(self, images, *args, **kwargs):
        count = images.shape[0]
        if self.detections is None or self.detections.frame_queries.shape[1] < count:
            full = self.forward(images, *args, **kwargs)
            self.detections = dataclasses.replace(
                full,
                pred_masks=full.pred_masks[:, :0].clone(),  # not a view: frees the masks
                aux_outputs=(),
                frame_queries=full.frame_queries[-1:],
                attended_maps=(),
                decoder_mask_features=None,
            )
            del full
        kept = self.detections
        return dataclasses.replace(
            kept,
            pred_logits=kept.pred_logits[:count],
            pred_masks=kept.pred_masks[:count],
            frame_queries=kept.frame_queries[:, :count],
            clip_mask_features=kept.clip_mask_features[:count],
        )

    def replay_mask_features(self, images):
        count = images.shape[0]
        if self.mask_features is None or self.mask_features.shape[0] < count:
            self.mask_features = self.features(images)
        return self.mask_features[:count]


def part_long_video(plan: Plan, report: PartReport, deadline: float) -> None:
    """The longest video run complete-offline within `LIMIT_GIB` of device memory."""
    import torch

    from vis_core.inference.segmenter import VideoSegmenter
    from vis_core.modeling.vita_model import VitaModel

    device, dtype = _device_and_dtype()
    torch.manual_seed(0)
    model = VitaModel(_model_config(plan))
    _Replay(model.detector)
    segmenter = VideoSegmenter(model, device=device, dtype=dtype)
    height, width = plan.height, plan.width
    # The warm-up: one full detector chunk for real. Its own peak over what was allocated
    # before (the detector's transient memory) is added to every length's replayed peak,
    # an upper bound of what running it for real would have needed.
    chunk = segmenter.config.detector_chunk_frames
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    segmenter.segment(lambda: moving_box_frames(chunk, height, width))
    detector_gib = None
    if device.type == "cuda":
        detector_gib = (torch.cuda.max_memory_allocated(device) - before) / 2**30
    report.update(
        preset=model.config.name,
        size=f"{width}x{height}",
        device=_device_name(device),
        limit_gib=LIMIT_GIB,
        long_video_frames=segmenter.config.long_video_frames,
        replay="the detector's output for a full chunk is computed once, then replayed",
        detector_chunk_gib=detector_gib,
        rows=[],
        longest_frames=0,
    )
    rows: list[dict[str, Any]] = []
    longest = 0
    stop = None
    last: tuple[int, float] | None = None
    for frames in plan.lengths:
        if last is not None:
            projected = last[1] * frames / last[0] * 1.2
            if time.perf_counter() + projected > deadline:
                stop = f"{frames} frames not run: about {projected:.0f} s, past the part's budget"
                break
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        report.update(in_progress=f"{frames} frames")
        start = time.perf_counter()
        try:
            instances = segmenter.segment(
                lambda count=frames: moving_box_frames(count, height, width)
            )
            _synchronize(device)
        except torch.cuda.OutOfMemoryError:
            rows.append({"frames": frames, "status": "out of memory"})
            stop = f"out of memory at {frames} frames"
            break
        seconds = time.perf_counter() - start
        if instances.num_frames != frames:
            raise RuntimeError(f"{instances.num_frames} frames segmented of {frames}")
        replayed = bound = None
        if device.type == "cuda":
            replayed = torch.cuda.max_memory_allocated(device) / 2**30
            bound = replayed + detector_gib
        within = bound is None or bound <= LIMIT_GIB
        rows.append(
            {
                "frames": frames,
                "seconds": seconds,
                "fps": frames / seconds,
                "replayed_peak_gib": replayed,
                "peak_gib": bound,
            }
        )
        last = (frames, seconds)
        if within:
            longest = frames
        report.update(rows=rows, longest_frames=longest)
        if not within:
            stop = f"peak {bound:.2f} GiB over {LIMIT_GIB:.0f} GiB at {frames} frames"
            break
    report.update(
        stop=stop or "every length ran",
        longest_frames=longest,
        goal_met=longest >= GOALS["long_video_frames"],
        in_progress=None,
    )


# --------------------------------------------------------------------------- driver

PART_FUNCTIONS = {"model": part_model, "corpus": part_corpus, "long_video": part_long_video}


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def run_part(name: str, plan: Plan, path: Path, deadline: float) -> None:
    """In the child process: one part, its JSON at `path`."""
    report = PartReport(path, name)
    try:
        PART_FUNCTIONS[name](plan, report, deadline)
        report.update(status="ok")
    except Exception as error:  # the part's error goes in its JSON; the parent goes on
        import traceback

        report.update(
            status="error",
            error=f"{type(error).__name__}: {error}"[:2000],
            traceback=traceback.format_exc()[-4000:],
        )
        raise


def run_check(plan: Plan, out: Path, parts: tuple[str, ...] = PARTS) -> dict[str, Any]:
    """Each part in a subprocess with its budget (plus what earlier parts left); the
    combined JSON `out/gpu_check.json` is rewritten after each part."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    combined: dict[str, Any] = {
        "smoke": plan.smoke,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "goals": GOALS,
        "budget_s": plan.total_s,
        "parts": {},
    }
    target = out / "gpu_check.json"
    carried = 0.0
    for name in parts:
        left = (TOTAL_S if not plan.smoke else float("inf")) - (time.perf_counter() - started)
        budget = min(plan.budgets[name] + carried, left - GRACE_S)
        if budget < 10:
            combined["parts"][name] = {"part": name, "status": "not run", "error": "no time left"}
            combined["figures"] = _figures(combined["parts"])
            target.write_text(json.dumps(combined, indent=1))
            continue
        path = out / f"gpu_check_{name}.json"
        part_started = time.perf_counter()
        command = [sys.executable, "-m", "benchmarks.gpu_check", "--part", name]
        command += ["--json", str(path), "--seconds", f"{budget:.1f}"]
        command += ["--smoke"] if plan.smoke else []
        log = out / "gpu_check.log"
        with log.open("a") as stream:
            stream.write(f"== {name} (budget {budget:.0f} s)\n")
            stream.flush()
            code = _run_child(command, stream, budget + GRACE_S)
        seconds = time.perf_counter() - part_started
        carried = max(0.0, budget - seconds)
        result = json.loads(path.read_text()) if path.exists() else {"part": name}
        if code == "timeout":
            result.update(status="timeout", error=f"stopped at its budget of {budget:.0f} s")
        elif code != 0 and result.get("status") != "error":
            result.update(status="error", error=f"exit code {code}; see gpu_check.log")
        result["seconds"] = seconds
        combined["parts"][name] = result
        combined["elapsed_s"] = time.perf_counter() - started
        combined["figures"] = _figures(combined["parts"])
        target.write_text(json.dumps(combined, indent=1))
        print(f"{name}: {result.get('status')} in {seconds:.0f} s", flush=True)
    print(json.dumps(combined["figures"], indent=1))
    return combined


def _run_child(command: list[str], stream, timeout: float) -> int | str:
    """Run a part's process in its own process group; past `timeout` the whole group (the
    part and whatever it started, Ray's processes too) is killed: "timeout"."""
    process = subprocess.Popen(
        command, cwd=REPOSITORY, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return "timeout"


def _figures(parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The three headline figures and whether each meets its goal."""
    model, corpus, long_video = (parts.get(name, {}) for name in ("model", "corpus", "long_video"))
    return {
        "model_fps": model.get("model_fps"),
        "model_goal_met": model.get("goal_met"),
        "corpus_ratio": corpus.get("ratio"),
        "corpus_ratio_end_to_end": corpus.get("ratio_end_to_end"),
        "corpus_goal_met": corpus.get("goal_met"),
        "long_video_frames": long_video.get("longest_frames"),
        "long_video_goal_met": long_video.get("goal_met"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes (the test)")
    parser.add_argument("--out", help="folder of the JSON (default: $OUT, else ./gpu_check_out)")
    parser.add_argument("--parts", nargs="*", choices=PARTS, default=list(PARTS))
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)  # the child's
    parser.add_argument("--json", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    plan = SMOKE_PLAN if args.smoke else GPU_PLAN
    if args.part is not None:
        import torch

        if plan.smoke:
            torch.set_num_threads(1)
        deadline = time.perf_counter() + args.seconds
        try:
            run_part(args.part, plan, Path(args.json), deadline)
        except Exception:
            sys.exit(1)
        return
    if not plan.smoke:
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA device: run on a lent GPU, or --smoke on the CPU")
    out = Path(args.out or os.environ.get("OUT") or "gpu_check_out")
    run_check(plan, out, tuple(args.parts))


if __name__ == "__main__":
    main()
