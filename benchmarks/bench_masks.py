"""Masks at the cost of reading the frame: the segmenter at 720p against 240p, side by side.

The shipped model segments the first 16 frames of a real 1280x720 clip
(`05_default_juggle.mp4`, or `VIS_BENCH_VIDEO`) at their size and resized to 427x240 by
the decoder: the network sees the same 240x427 input either way, so what a 720p frame
costs more is batching and resizing it for the network and making its masks at 1280x720.
The goal is that extra at most 3x decoding the frame (PyAV, rgb24). Rows:
- decode: PyAV ms per 720p frame;
- the segmenter (with the areas and boxes the tables need) at 720p and 240p, as it was
  (float resize; masks by upsampling every pixel, pycocotools, areas and boxes decoded
  back from the RLE) and as it is (uint8 resize, `vis_core.inference.mask_upsampling`):
  whole, and the parts that depend on the frame size (batching, resizing, masks) timed
  inside the same runs; the whole run's extra swings with the network's ~100 ms a frame,
  the parts' does not;
- the mask paths alone on the clip's own logits (10 instances), and pycocotools' `encode`
  against `vis_core.rle_encode` on the same masks.
Times are CPU time of the process (decoder threads included) with one torch thread, best
of rounds: the cost of a frame, and the figure least disturbed on a shared machine (wall
times of threads racing other work for 2 cores swing by tens of percent).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from vis_core import masks
from vis_core.inference import frames as frames_module
from vis_core.inference import segmenter as segmenter_module
from vis_core.inference.frames import FramePreparer, InputGeometry
from vis_core.inference.mask_upsampling import upsampled_masks
from vis_core.inference.segmenter import VideoSegmenter
from vis_core.rle_encode import EncodedMasks, encode_masks
from vis_core.video.decode import open_video

_REAL_VIDEO = Path("/work/shared/videos/05_default_juggle.mp4")
_FRAMES = 16
_ROUNDS = 3
_SHORTEST_EDGE = 240
_PARTS = ("batching", "resize", "masks")


def old_masks(logits: Tensor, height: int, width: int) -> EncodedMasks:
    """The mask path before `mask_upsampling`: every pixel upsampled and thresholded,
    pycocotools' encode, areas and boxes read back from the RLE."""
    original = F.interpolate(
        logits[:, None].float(), size=(height, width), mode="bilinear", align_corners=False
    )[:, 0]
    rles = masks.encode((original > 0).cpu().numpy())
    return EncodedMasks(
        height=height,
        width=width,
        counts=[masks.to_bytes(rle) for rle in rles],
        areas=masks.area(rles),
        boxes=masks.bbox(rles),
    )


def old_prepare(preparer: FramePreparer, frames: np.ndarray, geometry: InputGeometry) -> Tensor:
    """The frame resize before the uint8 kernel: float antialiased, rounded back."""
    batch = torch.from_numpy(frames).to(preparer.device)
    resized = (geometry.resized_height, geometry.resized_width)
    if resized != (geometry.height, geometry.width):
        images = F.interpolate(
            batch.permute(0, 3, 1, 2).float(),
            size=resized,
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        batch = images.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return preparer.detector.preprocess(batch)


class _PartTimer:
    """CPU seconds spent in the size-dependent parts of the segmenter, by part."""

    def __init__(self, segmenter: VideoSegmenter):
        self.seconds = dict.fromkeys(_PARTS, 0.0)
        self.mask_path: Callable[[Tensor, int, int], EncodedMasks] = upsampled_masks
        self.old_resize = False
        batches, prepare = frames_module._frame_batches, segmenter.frames._prepare

        def timed_batches(*args: object) -> Iterator[np.ndarray]:
            iterator = batches(*args)
            while True:
                start = time.process_time()
                batch = next(iterator, None)
                self.seconds["batching"] += time.process_time() - start
                if batch is None:
                    return
                yield batch

        def timed_prepare(frames: np.ndarray, geometry: InputGeometry) -> Tensor:
            start = time.process_time()
            if self.old_resize:
                images = old_prepare(segmenter.frames, frames, geometry)
            else:
                images = prepare(frames, geometry)
            self.seconds["resize"] += time.process_time() - start
            return images

        def timed_masks(logits: Tensor, height: int, width: int) -> EncodedMasks:
            start = time.process_time()
            encoded = self.mask_path(logits, height, width)
            self.seconds["masks"] += time.process_time() - start
            return encoded

        frames_module._frame_batches = timed_batches
        segmenter.frames._prepare = timed_prepare
        segmenter_module.upsampled_masks = timed_masks
        self._restore = lambda: (
            setattr(frames_module, "_frame_batches", batches),
            setattr(segmenter_module, "upsampled_masks", upsampled_masks),
            delattr(segmenter.frames, "_prepare"),
        )

    def close(self) -> None:
        self._restore()


def _decode_ms(path: str) -> float:
    """PyAV (AUTO threads) decode + rgb24 conversion, CPU ms per frame over the clip."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start = time.process_time()
        count = 0
        for frame in container.decode(stream):
            frame.to_ndarray(format="rgb24")
            count += 1
    return 1000 * (time.process_time() - start) / count


def _frames(path: str, shortest_edge: int | None) -> list[np.ndarray]:
    with open_video(path) as video:
        return [frame.image for frame in video.frames(shortest_edge, max_output_frames=_FRAMES)]


def _best_ms(fn: Callable[[], object], per: int, rounds: int = _ROUNDS) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return 1000 * best / per


def run() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _run()
    finally:
        torch.set_num_threads(threads)


def _run() -> None:
    from workflows.model_source import load_model_spec

    path = os.environ.get("VIS_BENCH_VIDEO") or str(_REAL_VIDEO)
    full, small = _frames(path, None), _frames(path, _SHORTEST_EDGE)
    height, width = full[0].shape[:2]
    segmenter = VideoSegmenter(load_model_spec(None))
    captured: list[Tensor] = []

    def capturing(logits: Tensor, out_height: int, out_width: int) -> EncodedMasks:
        captured.append(logits.clone())
        return upsampled_masks(logits, out_height, out_width)

    paths = {"old": old_masks, "new": upsampled_masks}
    labels = {"old": "as it was", "new": "as it is"}
    whole: dict[tuple[str, str], float] = {}
    parts: dict[tuple[str, str], dict[str, float]] = {}
    decode = float("inf")
    timer = _PartTimer(segmenter)
    try:
        timer.mask_path = capturing
        segmenter.segment(full)  # warm-up, the arithmetic check, the clip's 720p logits
        for _ in range(2):
            decode = min(decode, _decode_ms(path))
            for name, mask_path in paths.items():
                timer.mask_path, timer.old_resize = mask_path, name == "old"
                for size, frames in (("720p", full), ("240p", small)):
                    timer.seconds = dict.fromkeys(_PARTS, 0.0)
                    start = time.process_time()
                    instances = segmenter.segment(frames)
                    instances.areas(), instances.boxes()  # what the tables read
                    ms = 1000 * (time.process_time() - start) / _FRAMES
                    if ms < whole.get((name, size), float("inf")):
                        whole[name, size] = ms
                        parts[name, size] = {
                            part: 1000 * spent / _FRAMES for part, spent in timer.seconds.items()
                        }
    finally:
        timer.close()

    frames_captured = sum(logits.shape[0] for logits in captured) // segmenter.config.top_k
    mask_ms = {
        name: _best_ms(
            lambda fn=fn: [fn(logits, height, width) for logits in captured], frames_captured
        )
        for name, fn in paths.items()
    }
    upsampled = F.interpolate(captured[0][:, None], size=(height, width), mode="bilinear")
    stacks = {"1280x720": (upsampled[:, 0] > 0).numpy(), "427x240": (captured[0] > 0).numpy()}
    encode_ms = {
        (name, label): _best_ms(lambda fn=fn, stack=stack: fn(stack), stack.shape[0])
        for label, stack in stacks.items()
        for name, fn in (("pycocotools", masks.encode), ("rle_encode", encode_masks))
    }

    print(
        f"{Path(path).name}: {_FRAMES} frames at {width}x{height} and {small[0].shape[1]}x"
        f"{small[0].shape[0]}, shipped model, top {segmenter.config.top_k}; CPU ms per "
        f"frame, {torch.get_num_threads()} torch thread"
    )
    print(f"PyAV decode at 720p: {decode:.2f} ms/frame")
    header = f"{'':<10} {'720p':>7} {'240p':>7} {'extra':>7} {'/decode':>8}"
    print(f"{header}   size-dependent parts at 720p / 240p ({', '.join(_PARTS)})")
    for name in paths:
        for label, big, little in (
            (labels[name], whole[name, "720p"], whole[name, "240p"]),
            ("  parts", sum(parts[name, "720p"].values()), sum(parts[name, "240p"].values())),
        ):
            extra = big - little
            row = f"{label:<10} {big:>7.1f} {little:>7.1f} {extra:>7.1f} {extra / decode:>7.1f}x"
            if label == "  parts":
                row += "   " + " / ".join(
                    ", ".join(f"{parts[name, size][part]:.2f}" for part in _PARTS)
                    for size in ("720p", "240p")
                )
            print(row)
    print(
        f"mask path alone, 720p, {segmenter.config.top_k} instances: old {mask_ms['old']:.2f} "
        f"ms/frame, new {mask_ms['new']:.2f} ({mask_ms['old'] / mask_ms['new']:.1f}x)"
    )
    for label in stacks:
        coco, ours = encode_ms["pycocotools", label], encode_ms["rle_encode", label]
        print(
            f"encode {label} masks of the clip: pycocotools {coco:.3f} ms/mask, rle_encode "
            f"{ours:.3f} ({coco / ours:.1f}x)"
        )


if __name__ == "__main__":
    run()
