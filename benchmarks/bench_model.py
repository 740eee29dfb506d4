"""Model speed: frames per second of the frame detector and of VITA, measured separately.

CPU: the small preset at the synthetic benchmark's 320x240. With CUDA: also
`vita_r50_ytvis19` at 360p (640x360) in bf16 (random weights: speed only).
"""

from __future__ import annotations

import time

import torch

from vis_core.modeling.presets import get_preset
from vis_core.modeling.vita_model import VitaModel


def _timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of `fn()` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def measure(
    preset: str,
    height: int,
    width: int,
    device: torch.device,
    dtype: torch.dtype,
    chunk: int,
    video_frames: int,
    repeats: int,
) -> tuple[float, float]:
    """(detector fps, VITA fps) for one preset on random frames."""
    model = VitaModel(get_preset(preset)).to(device).eval()
    frames = torch.randint(0, 256, (chunk, height, width, 3), dtype=torch.uint8, device=device)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    with torch.inference_mode(), autocast:
        images = model.detector.preprocess(frames)
        detector_s = _timed(lambda: model.detector(images), device, repeats)
        queries = model.detector(images).frame_queries[-1:]  # [1, chunk, Q, C]
        repeat = -(-video_frames // chunk)
        video = queries.repeat(1, repeat, 1, 1)[:, :video_frames].unsqueeze(1)  # [1, 1, T, Q, C]
        vita_s = _timed(lambda: model.vita(video), device, repeats)
    return chunk / detector_s, video_frames / vita_s


def run() -> None:
    rows = [("vita_small_synth", "cpu", 240, 320, torch.float32, 8, 200, 5)]
    if torch.cuda.is_available():
        rows.append(("vita_r50_ytvis19", "cuda", 360, 640, torch.bfloat16, 32, 1000, 10))
    header = ("preset", "device", "size", "dtype", "detector fps", "VITA fps")
    print("{:<18} {:<6} {:>8} {:>9} {:>13} {:>10}".format(*header))
    for preset, device, height, width, dtype, chunk, video_frames, repeats in rows:
        detector_fps, vita_fps = measure(
            preset, height, width, torch.device(device), dtype, chunk, video_frames, repeats
        )
        size = f"{width}x{height}"
        dtype_name = str(dtype).removeprefix("torch.")
        print(
            f"{preset:<18} {device:<6} {size:>8} {dtype_name:>9} "
            f"{detector_fps:>13.1f} {vita_fps:>10.1f}"
        )
    print("VITA fps: frames of one video per second through VITA alone (T=200 CPU, 1000 GPU).")
