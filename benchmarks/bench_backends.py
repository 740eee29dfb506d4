"""Detector speed by runtime: eager PyTorch, ONNX Runtime and torch.compile, side by side.

Frames per second of the frame detector alone (random weights: speed only) on one chunk
of normalised, padded frames; every runtime gets the same inputs and the same number of
threads (torch's), in one process, in interleaved rounds (each round runs every runtime
once; medians over the rounds). Ratios are to eager PyTorch.

- ONNX Runtime (CPU provider) runs the graph from the cache of exports
  (`vis_core.export.onnx_cache`): the first run exports it ("export s"; "cached" after).
- torch.compile (inductor, default mode, static shapes) is timed after its warm-up call,
  whose cost (the compilation) is the "compile s" column.

Rows: the small preset at the synthetic benchmark's 320x240 (padded to 320x256). The R-50
preset at 640x360 (padded to 640x384) only with `VIS_BENCH_R50=1`, and without
torch.compile: its export takes about 3 minutes on a CPU (once, then cached), and eager
R-50 runs at under 1 frame/s there.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from vis_core.modeling.presets import get_preset
from vis_core.modeling.vita_model import VitaModel


@dataclass(frozen=True)
class BackendRow:
    """Frames per second of each runtime for one preset and size (None: not run)."""

    preset: str
    size: str
    chunk: int
    eager_fps: float
    onnx_fps: float | None
    compiled_fps: float | None
    export_s: float | None  # None: the export was cached
    compile_s: float | None
    note: str = ""


def _interleaved_medians(runs: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds of each callable over `rounds` rounds, each round calling every one
    once in turn (so a change of machine load falls on all of them alike), after one
    warm-up call each."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: sorted(values)[len(values) // 2] for name, values in times.items()}


def measure(
    preset: str, height: int, width: int, chunk: int, rounds: int, compile_too: bool = True
) -> BackendRow:
    from vis_core.export.onnx_cache import cached_detector_onnx
    from vis_core.export.onnx_detector import OnnxFrameDetector
    from vis_core.paths import cache_dir

    torch.manual_seed(0)  # the same random weights every run: the cached export is reused
    model = VitaModel(get_preset(preset)).eval()
    frames = torch.randint(0, 256, (chunk, height, width, 3), dtype=torch.uint8)
    images = model.detector.preprocess(frames)

    started = time.perf_counter()
    cache = cache_dir() / "onnx"
    before = set(cache.glob("*.onnx")) if cache.is_dir() else set()
    onnx_file = cached_detector_onnx(model)
    export_s = None if onnx_file in before else time.perf_counter() - started
    runtime = OnnxFrameDetector(onnx_file, model.config.input)
    runs = {"eager": lambda: model.detector(images), "onnx": lambda: runtime(images)}

    compile_s, note = None, ""
    if compile_too:
        try:
            compiled = torch.compile(model.detector)
            with torch.inference_mode():
                started = time.perf_counter()
                compiled(images)  # the warm-up: tracing and inductor's code generation
                compile_s = time.perf_counter() - started
            runs["compiled"] = lambda: compiled(images)
        except Exception as error:  # a backend that cannot compile here is a note, not a crash
            note = f"torch.compile failed: {type(error).__name__}: {error}"[:200]
    with torch.inference_mode():
        seconds = _interleaved_medians(runs, rounds)
    return BackendRow(
        preset=preset,
        size=f"{width}x{height}",
        chunk=chunk,
        eager_fps=chunk / seconds["eager"],
        onnx_fps=chunk / seconds["onnx"],
        compiled_fps=chunk / seconds["compiled"] if "compiled" in seconds else None,
        export_s=export_s,
        compile_s=compile_s,
        note=note,
    )


def _ratio(fps: float | None, eager: float) -> str:
    return "-" if fps is None else f"{fps:.2f} ({fps / eager:.2f}x)"


def _seconds(value: float | None, missing: str) -> str:
    return missing if value is None else f"{value:.0f}"


def run() -> None:
    # (preset, height, width, chunk, rounds, torch.compile too)
    rows = [("vita_small_synth", 240, 320, 8, 5, True)]
    if os.environ.get("VIS_BENCH_R50") == "1":
        rows.append(("vita_r50_ytvis19", 360, 640, 2, 3, False))
    header = ("preset", "size", "chunk", "eager fps", "onnxruntime fps", "compiled fps")
    print(
        "{:<18} {:>8} {:>5} {:>9} {:>17} {:>17} {:>9} {:>9}".format(
            *header, "export s", "compile s"
        )
    )
    for preset, height, width, chunk, rounds, compile_too in rows:
        row = measure(preset, height, width, chunk, rounds, compile_too)
        print(
            f"{row.preset:<18} {row.size:>8} {row.chunk:>5} {row.eager_fps:>9.2f} "
            f"{_ratio(row.onnx_fps, row.eager_fps):>17} "
            f"{_ratio(row.compiled_fps, row.eager_fps):>17} "
            f"{_seconds(row.export_s, 'cached'):>9} {_seconds(row.compile_s, '-'):>9}"
        )
        if row.note:
            print(f"  {row.note}")
        if not compile_too:
            print("  torch.compile: not run for R-50 (its CPU warm-up would take many minutes)")
    print(
        f"CPU, float32, {torch.get_num_threads()} threads for every runtime; ratios to eager. "
        "R-50 at 640x360: VIS_BENCH_R50=1."
    )


if __name__ == "__main__":
    run()
