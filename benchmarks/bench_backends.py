"""Detector speed by runtime: eager PyTorch, ONNX Runtime and torch.compile, side by side.

Frames per CPU-second of the frame detector alone (random weights: speed only) on one
chunk of normalised, padded frames; every runtime gets the same inputs and the same number
of threads (torch's), and runs in a process of its own beside eager PyTorch, in
interleaved rounds (each round runs both once; medians over the rounds). The process's CPU
seconds, not wall time: on a shared machine they hold while the wall clock moves with the
load. Ratios are to eager PyTorch in the same process.

- ONNX Runtime (CPU provider) runs the graph from the cache of exports
  (`vis_core.export.onnx_cache`): the first run exports it ("export s"; "cached" after).
- torch.compile is the `--backend compile` runtime (`compile_detector`: inductor with
  freezing), timed after its warm-up call, whose cost (the compilation) is the "compile s"
  column.

Rows: the small preset at the synthetic benchmark's 320x240 (padded to 320x256). The R-50
preset at 640x360 (padded to 640x384) only with `VIS_BENCH_R50=1`: its export takes about
3 minutes on a CPU (once, then cached), its compilation about 2, and eager R-50 runs at
under 1 frame/s there.
"""

from __future__ import annotations

import copy
import multiprocessing
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
    """Median CPU seconds of each callable over `rounds` rounds, each round calling every
    one once in turn (so a change of machine load falls on all of them alike), after one
    warm-up call each."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.process_time()
            run()
            times[name].append(time.process_time() - start)
    return {name: sorted(values)[len(values) // 2] for name, values in times.items()}


def runtime_seconds(
    preset: str, height: int, width: int, chunk: int, rounds: int, runtime: str
) -> tuple[dict[str, float], float | None, str]:
    """({"eager": s, runtime: s} median CPU seconds per chunk, the runtime's set-up seconds
    (None: the export was cached), a note), for "onnx" or "compile", in this process."""
    torch.manual_seed(0)  # the same random weights every run: the cached export is reused
    model = VitaModel(get_preset(preset)).eval()
    frames = torch.randint(0, 256, (chunk, height, width, 3), dtype=torch.uint8)
    images = model.detector.preprocess(frames)
    started = time.perf_counter()
    if runtime == "onnx":
        from vis_core.export.onnx_cache import cached_detector_onnx
        from vis_core.export.onnx_detector import OnnxFrameDetector
        from vis_core.paths import cache_dir

        cache = cache_dir() / "onnx"
        before = set(cache.glob("*.onnx")) if cache.is_dir() else set()
        onnx_file = cached_detector_onnx(model)
        setup_s = None if onnx_file in before else time.perf_counter() - started
        run_it: Callable[[], object] = OnnxFrameDetector(onnx_file, model.config.input)
    else:
        from vis_core.inference.compiled_detector import compile_detector

        try:
            compiled = compile_detector(copy.deepcopy(model)).detector
            with torch.inference_mode():
                compiled(images)  # the warm-up: tracing and inductor's code generation
        except Exception as error:  # a backend that cannot compile here is a note, not a crash
            return {}, None, f"torch.compile failed: {type(error).__name__}: {error}"[:200]
        setup_s, run_it = time.perf_counter() - started, compiled
    runs = {"eager": lambda: model.detector(images), runtime: lambda: run_it(images)}
    with torch.inference_mode():
        return _interleaved_medians(runs, rounds), setup_s, ""


def measure(preset: str, height: int, width: int, chunk: int, rounds: int) -> BackendRow:
    """Each runtime beside eager in a process of its own (ONNX Runtime's session in the
    process slowed the compiled detector's kernels by up to 1.7x); the eager column is the
    ONNX process's, each runtime's frames/s are that times its ratio to its own eager."""
    from concurrent.futures import ProcessPoolExecutor

    results = {}
    for runtime in ("onnx", "compile"):
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            job = (preset, height, width, chunk, rounds, runtime)
            results[runtime] = pool.submit(_in_child, torch.get_num_threads(), *job).result()
    (onnx, export_s, onnx_note), (compiled, compile_s, compile_note) = results.values()
    eager_fps = chunk / onnx["eager"]
    return BackendRow(
        preset=preset,
        size=f"{width}x{height}",
        chunk=chunk,
        eager_fps=eager_fps,
        onnx_fps=chunk / onnx["onnx"],
        compiled_fps=eager_fps * compiled["eager"] / compiled["compile"] if compiled else None,
        export_s=export_s,
        compile_s=compile_s,
        note=onnx_note or compile_note,
    )


def _in_child(threads: int, *job) -> tuple[dict[str, float], float | None, str]:
    torch.set_num_threads(threads)
    return runtime_seconds(*job)


def _ratio(fps: float | None, eager: float) -> str:
    return "-" if fps is None else f"{fps:.2f} ({fps / eager:.2f}x)"


def _seconds(value: float | None, missing: str) -> str:
    return missing if value is None else f"{value:.0f}"


def run() -> None:
    # (preset, height, width, chunk, rounds)
    rows = [("vita_small_synth", 240, 320, 8, 5)]
    if os.environ.get("VIS_BENCH_R50") == "1":
        rows.append(("vita_r50_ytvis19", 360, 640, 2, 3))
    header = ("preset", "size", "chunk", "eager fps", "onnxruntime fps", "compiled fps")
    print(
        "{:<18} {:>8} {:>5} {:>9} {:>17} {:>17} {:>9} {:>9}".format(
            *header, "export s", "compile s"
        )
    )
    for preset, height, width, chunk, rounds in rows:
        row = measure(preset, height, width, chunk, rounds)
        print(
            f"{row.preset:<18} {row.size:>8} {row.chunk:>5} {row.eager_fps:>9.2f} "
            f"{_ratio(row.onnx_fps, row.eager_fps):>17} "
            f"{_ratio(row.compiled_fps, row.eager_fps):>17} "
            f"{_seconds(row.export_s, 'cached'):>9} {_seconds(row.compile_s, '-'):>9}"
        )
        if row.note:
            print(f"  {row.note}")
    print(
        f"CPU, float32, {torch.get_num_threads()} threads for every runtime, frames per "
        "CPU-second; ratios to eager. "
        "R-50 at 640x360: VIS_BENCH_R50=1."
    )


if __name__ == "__main__":
    run()
