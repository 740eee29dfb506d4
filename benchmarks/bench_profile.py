"""Where inference time goes, per module: `VideoSegmenter` on CPU, one torch thread.

For each preset and network input size (360p: 640x360, 720p: 1280x720; the preset's
`min_size_test` is set to the frames' height so the network sees that size), one video
of a few synthetic frames goes through `VideoSegmenter.segment` (random weights: speed
only), with timers on the modules: backbone; pixel decoder, and within it the
deformable attention layers and their sampling core (`grid_sample` and the weighted sum);
frame decoder; VITA (its forward over the video and the per-frame projection of the
mask features); the masks (mask logits, upsampling, scoring, masks at the original size
and RLE); and the rest (resizing, normalising, padding, Python). Milliseconds per frame,
the fastest of `ROUNDS` rounds after a warm-up (all modules of a row come from one
round, so their shares hold while the machine's load moves).

    python -m benchmarks.run profile            # or: python -m benchmarks.bench_profile

`--compare CHOICE` instead times the frame detector alone with each option of one
inference choice (`CHOICES`: e.g. the deformable attention's sampling path), in
interleaved rounds in one process, and prints each option's seconds per frame and its
ratio to the first.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

import torch

# (preset, size name, height, width, frames per video)
ROWS = (
    ("vita_small_synth", "360p", 360, 640, 4),
    ("vita_small_synth", "720p", 720, 1280, 2),
    ("vita_r50_ytvis19", "360p", 360, 640, 2),
    ("vita_r50_ytvis19", "720p", 720, 1280, 1),
)
ROUNDS = 2
COLUMNS = (
    "backbone",
    "pixel decoder",
    "deform attn",
    "sampling",
    "frame decoder",
    "VITA",
    "masks",
    "other",
    "total",
)


_ABSENT = object()


class Timers:
    """Wall seconds by name; `wrap(name, fn)` adds fn's time to name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start

        return timed


@contextlib.contextmanager
def instrumented(segmenter, timers: Timers) -> Iterator[None]:
    """Timers on the segmenter's modules for the duration (restored after)."""
    from vis_core.modeling import ms_deform_attn
    from vis_core.modeling.ms_deform_attn import MSDeformAttn

    model = segmenter.model
    detector = model.detector
    patched: list[tuple[object, str, object]] = []  # (owner, attribute, its own value)

    def patch(owner: object, attribute: str, name: str) -> None:
        patched.append((owner, attribute, vars(owner).get(attribute, _ABSENT)))
        setattr(owner, attribute, timers.wrap(name, getattr(owner, attribute)))

    patch(detector.backbone, "forward", "backbone")
    patch(detector.pixel_decoder, "forward", "pixel decoder")
    patch(detector.frame_decoder, "forward", "frame decoder")
    for module in detector.pixel_decoder.modules():
        if isinstance(module, MSDeformAttn):
            patch(module, "forward", "deform attn")
    patch(ms_deform_attn, "ms_deform_attn_core", "sampling")
    patch(model.vita, "forward", "VITA")
    patch(model.vita, "project_mask_features", "VITA")
    patch(segmenter, "_decode_masks", "masks")
    try:
        yield
    finally:
        for owner, attribute, own in reversed(patched):
            if own is _ABSENT:
                delattr(owner, attribute)  # the class's method again
            else:
                setattr(owner, attribute, own)


def profile_row(preset: str, height: int, width: int, frames: int) -> dict[str, float]:
    """Milliseconds per frame by module (`COLUMNS`) for one preset and size."""
    from benchmarks.bench_long_video import moving_box_frames
    from vis_core.inference.segmenter import VideoSegmenter
    from vis_core.modeling.presets import get_preset
    from vis_core.modeling.vita_model import VitaModel

    config = get_preset(preset)
    config = dataclasses.replace(
        config, input=dataclasses.replace(config.input, min_size_test=height)
    )
    torch.manual_seed(0)
    segmenter = VideoSegmenter(VitaModel(config))
    video = list(moving_box_frames(frames, height, width))
    segmenter.segment(video[:1])  # warm-up
    best: dict[str, float] | None = None
    for _ in range(ROUNDS):
        timers = Timers()
        with instrumented(segmenter, timers):
            start = time.perf_counter()
            segmenter.segment(video)
            total = time.perf_counter() - start
        seconds = dict(timers.seconds)
        seconds["total"] = total
        top = ("backbone", "pixel decoder", "frame decoder", "VITA", "masks")
        seconds["other"] = total - sum(seconds.get(name, 0.0) for name in top)
        if best is None or total < best["total"]:
            best = seconds
    assert best is not None
    return {name: 1000 * best.get(name, 0.0) / frames for name in COLUMNS}


@contextlib.contextmanager
def _sampling(path: str) -> Iterator[None]:
    from vis_core.modeling import ms_deform_attn

    before = ms_deform_attn.SAMPLING
    ms_deform_attn.SAMPLING = path
    try:
        yield
    finally:
        ms_deform_attn.SAMPLING = before


@contextlib.contextmanager
def _fused_attention(fused: bool) -> Iterator[None]:
    from vis_core.modeling import layers

    before = layers.FUSED_ATTENTION
    layers.FUSED_ATTENTION = fused
    try:
        yield
    finally:
        layers.FUSED_ATTENTION = before


@contextlib.contextmanager
def _memory_format(model, memory_format: torch.memory_format) -> Iterator[None]:
    model.detector.to(memory_format=memory_format)
    try:
        yield
    finally:
        model.detector.to(memory_format=torch.contiguous_format)


@contextlib.contextmanager
def _fused_norm(fused: bool) -> Iterator[None]:
    from vis_core.modeling import conv

    before = conv.FUSED_NORM
    conv.FUSED_NORM = fused
    try:
        yield
    finally:
        conv.FUSED_NORM = before


# choice -> {option: model -> a context manager that sets it}; the first is the reference
CHOICES: dict[str, dict[str, Callable]] = {
    "sampling": {
        "grid_sample": lambda model: _sampling("grid_sample"),
        "bag": lambda model: _sampling("bag"),
    },
    "attention": {
        "explicit": lambda model: _fused_attention(False),
        "sdpa": lambda model: _fused_attention(True),
    },
    "frozen_bn": {
        "mul_add": lambda model: _fused_norm(False),
        "addcmul": lambda model: _fused_norm(True),
    },
    "dtype": {
        "float32": lambda model: contextlib.nullcontext(),
        "bfloat16": lambda model: torch.autocast("cpu", dtype=torch.bfloat16),
    },
    "channels_last": {
        "contiguous": lambda model: _memory_format(model, torch.contiguous_format),
        "channels_last": lambda model: _memory_format(model, torch.channels_last),
    },
}


PARTS = ("detector", "backbone", "frame_decoder", "vita")
VITA_FRAMES = 36  # a YouTube-VIS length


def _part_call(model, part: str, images: torch.Tensor) -> Callable[[], object]:
    """What `compare` times: the detector on the frames, its frame decoder alone on
    their (precomputed) pixel-decoder maps, or VITA on `VITA_FRAMES` frames of queries."""
    detector = model.detector
    if part == "detector":
        return lambda: detector(images)
    if part == "backbone":
        return lambda: detector.backbone(images).res5
    pixels = detector.pixel_decoder(detector.backbone(images))
    attended = detector._attended(pixels)
    if part == "frame_decoder":
        return lambda: detector.frame_decoder(attended, pixels.mask_features)
    queries = detector.frame_decoder(attended, pixels.mask_features).frame_queries[-1]
    repeat = -(-VITA_FRAMES // queries.shape[0])
    video = queries.repeat(repeat, 1, 1)[:VITA_FRAMES][None, None]  # [1, 1, T, Q, C]
    return lambda: model.vita(video)


def _outputs(output: object) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    fields = ("pred_logits", "frame_queries", "clip_mask_features", "pred_masks")
    fields += ("pred_mask_embed",)
    return [getattr(output, name) for name in fields if hasattr(output, name)]


def compare(
    choice: str, preset: str, height: int, width: int, frames: int, rounds: int, part: str
) -> None:
    """CPU seconds per frame of `part` under each option of `choice`, interleaved rounds.

    CPU time of this process (one torch thread) rather than wall time: on a machine that
    other jobs load, the wall time of the same call moved by 3x between rounds."""
    from vis_core.modeling.presets import get_preset
    from vis_core.modeling.vita_model import VitaModel

    torch.manual_seed(0)
    model = VitaModel(get_preset(preset)).eval()
    pixels = torch.randint(0, 256, (frames, height, width, 3), dtype=torch.uint8)
    options = CHOICES[choice]
    times: dict[str, list[float]] = {name: [] for name in options}
    outputs = {}
    with torch.inference_mode():
        call = _part_call(model, part, model.detector.preprocess(pixels))
        for round_index in range(rounds + 1):  # the first round is the warm-up
            for name, option in options.items():
                with option(model):
                    start = time.process_time()
                    output = call()
                    seconds = time.process_time() - start
                if round_index:
                    times[name].append(seconds)
                outputs[name] = _outputs(output)
    first = next(iter(options))
    per = VITA_FRAMES if part == "vita" else frames
    base = sorted(times[first])[len(times[first]) // 2] / per
    print(
        f"{preset} {width}x{height}, {part}, {frames} frames, {rounds} rounds, 1 thread, "
        f"CPU seconds per frame: {choice}"
    )
    for name, values in times.items():
        median = sorted(values)[len(values) // 2] / per
        difference = max(
            float((actual.float() - expected.float()).abs().max())
            for actual, expected in zip(outputs[name], outputs[first], strict=True)
        )
        print(
            f"  {name:<14} {median:8.4f} s/frame  {base / median:5.2f}x  "
            f"max |difference| {difference:.1e}  (rounds: "
            + ", ".join(f"{value / per:.4f}" for value in values)
            + ")"
        )


def compile_speed(
    preset: str,
    height: int,
    width: int,
    frames: int,
    rounds: int,
    freezing: bool = False,
    bf16: bool = False,
    mode: str | None = None,
) -> None:
    """The frame detector eager against torch.compile (inductor, default mode, static
    shapes; `freezing`: inductor's freezing, which folds the weights in as constants and
    prepacks them for oneDNN): the compile's warm-up (its first call), then interleaved
    rounds; wall and CPU seconds per frame, and the largest difference of their outputs.
    `bf16`: both under bfloat16 autocast, plus eager float32 as the reference."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = freezing
    from vis_core.modeling.presets import get_preset
    from vis_core.modeling.vita_model import VitaModel

    torch.manual_seed(0)
    model = VitaModel(get_preset(preset)).eval()
    pixels = torch.randint(0, 256, (frames, height, width, 3), dtype=torch.uint8)
    images = model.detector.preprocess(pixels)
    compiled = torch.compile(model.detector, dynamic=False, mode=mode)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.inference_mode():
        with autocast:
            start, cpu = time.perf_counter(), time.process_time()
            compiled_output = compiled(images)
            warmup = time.perf_counter() - start, time.process_time() - cpu
            eager_output = model.detector(images)

        def under_autocast(call: Callable[[], object]) -> Callable[[], object]:
            def run_it() -> object:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    return call()

            return run_it

        runs = {
            "eager": under_autocast(lambda: model.detector(images)),
            "compiled": under_autocast(lambda: compiled(images)),
        }
        if bf16:
            runs["eager_fp32"] = lambda: model.detector(images)
        wall: dict[str, list[float]] = {name: [] for name in runs}
        cpu_s: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(rounds):
            for name, call in runs.items():
                start, cpu = time.perf_counter(), time.process_time()
                call()
                wall[name].append((time.perf_counter() - start) / frames)
                cpu_s[name].append((time.process_time() - cpu) / frames)
    difference = {
        name: float((getattr(compiled_output, name) - getattr(eager_output, name)).abs().max())
        for name in ("pred_logits", "frame_queries", "clip_mask_features")
    }
    print(
        f"{preset} {width}x{height}, {frames} frames, {rounds} rounds, 1 thread: compile "
        f"{'with freezing ' if freezing else ''}{'under bf16 autocast ' if bf16 else ''}"
        f"{f'in mode {mode} ' if mode else ''}"
        f"warm-up {warmup[0]:.0f} s wall ({warmup[1]:.0f} s CPU)"
    )

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    for name in runs:
        wall_s, cpu_seconds = median(wall[name]), median(cpu_s[name])
        print(
            f"  {name:<9} wall {wall_s:7.3f} s/frame ({median(wall['eager']) / wall_s:.2f}x)  "
            f"CPU {cpu_seconds:7.3f} s/frame ({median(cpu_s['eager']) / cpu_seconds:.2f}x)"
        )
    print("  max |compiled - eager|:", ", ".join(f"{k} {v:.1e}" for k, v in difference.items()))


def batch_speed(preset: str, height: int, width: int, batches: list[int], rounds: int) -> None:
    """CPU seconds per frame of the frame detector by frames per call, interleaved rounds."""
    from vis_core.modeling.presets import get_preset
    from vis_core.modeling.vita_model import VitaModel

    torch.manual_seed(0)
    model = VitaModel(get_preset(preset)).eval()
    pixels = torch.randint(0, 256, (max(batches), height, width, 3), dtype=torch.uint8)
    images = model.detector.preprocess(pixels)
    times: dict[int, list[float]] = {batch: [] for batch in batches}
    with torch.inference_mode():
        for round_index in range(rounds + 1):  # the first round is the warm-up
            for batch in batches:
                start = time.process_time()
                model.detector(images[:batch])
                if round_index:
                    times[batch].append((time.process_time() - start) / batch)
    print(f"{preset} {width}x{height}, {rounds} rounds, 1 thread, CPU s/frame by frames per call")
    base = sorted(times[batches[0]])[rounds // 2]
    for batch, values in times.items():
        median = sorted(values)[rounds // 2]
        print(f"  {batch:>3} frames: {median:8.4f} s/frame ({base / median:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", choices=sorted(CHOICES))
    parser.add_argument("--preset", default="vita_r50_ytvis19")
    parser.add_argument("--size", default="360p", choices=("360p", "720p"))
    parser.add_argument("--frames", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--part", default="detector", choices=PARTS)
    parser.add_argument("--compile", action="store_true", help="eager against torch.compile")
    parser.add_argument("--batches", type=int, nargs="*", help="frames per detector call")
    parser.add_argument("--freezing", action="store_true", help="--compile with freezing")
    parser.add_argument("--bf16", action="store_true", help="--compile under bf16 autocast")
    parser.add_argument("--mode", help="--compile's mode (default, max-autotune, ...)")
    args = parser.parse_args()
    if args.compare is None and not args.compile and not args.batches:
        run()
        return
    height, width = (360, 640) if args.size == "360p" else (720, 1280)
    torch.set_num_threads(1)
    if args.batches:
        batch_speed(args.preset, height, width, args.batches, args.rounds)
        return
    if args.compile:
        compile_speed(
            args.preset,
            height,
            width,
            args.frames,
            args.rounds,
            args.freezing,
            args.bf16,
            args.mode,
        )
        return
    compare(args.compare, args.preset, height, width, args.frames, args.rounds, args.part)


def run() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = [
            (preset, size, frames, profile_row(preset, height, width, frames))
            for preset, size, height, width, frames in ROWS
        ]
    finally:
        torch.set_num_threads(threads)
    print("ms per frame, CPU, fp32, 1 thread; deform attn and sampling lie within pixel decoder")
    print(f"{'preset':<17} {'input':>5} {'frames':>6} " + " ".join(f"{c:>13}" for c in COLUMNS))
    for preset, size, frames, row in rows:
        cells = " ".join(f"{row[name]:>13.1f}" for name in COLUMNS)
        print(f"{preset:<17} {size:>5} {frames:>6} {cells}")
    print("shares of total:")
    for preset, size, _, row in rows:
        shares = ", ".join(f"{name} {100 * row[name] / row['total']:.0f}%" for name in COLUMNS[:-1])
        print(f"  {preset} {size}: {shares}")


if __name__ == "__main__":
    main()
