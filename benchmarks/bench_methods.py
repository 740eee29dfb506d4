"""The temporal methods side by side on one detector: accuracy, speed and memory.

Every method of `vis_core.methods` whose head the model carries (the shipped model by
default) is measured on the same detector weights:

- **accuracy and speed**: `segment_dataset` + `evaluate_ytvis` (what `vis segment` and
  `vis eval` run) on the synthetic `val` and `val-long` splits of the data folder (made by
  `vis synth`, see the README; a missing split is skipped with the command that makes
  it): AP, AP50, AP75 in percent, and frames/s of that run (decoding included);
- **memory**: peak resident memory of one video of 100, 1,000 and 10,000 frames, each in a
  fresh subprocess. The detector's outputs on a real 100-frame synthetic clip are
  recorded once and replayed back and forth (0..99, 98..1, ...), so a 10,000-frame video
  costs minutes, not hours, while the temporal head, mask making and RLE run for real on
  every frame; the detector's own memory does not depend on the video's length.

    python -m benchmarks.bench_methods [--splits val val-long] [--lengths 100 1000 10000]
        [--methods vita per-frame ...] [--model FILE]

`make bench` runs it with the defaults (all of it: about 40 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_long_video import REPOSITORY, _peak_rss_mb

SPLITS = ("val", "val-long")
LENGTHS = (100, 1000, 10000)
REPLAYED_FRAMES = 100


def _methods_of(model, names: list[str] | None) -> tuple[list[str], dict[str, str]]:
    """The methods `model` can run, and why the others cannot."""
    from vis_core.methods import METHODS, build_segmenter

    usable, skipped = [], {}
    for name in names or list(METHODS):
        try:
            build_segmenter(name, model)
            usable.append(name)
        except ValueError as error:
            skipped[name] = str(error).splitlines()[0]
    return usable, skipped


def accuracy_table(model, methods: list[str], splits: list[str]) -> list[dict]:
    from vis_core.data.ytvis import YtvisDataset
    from vis_core.evaluation import evaluate_ytvis
    from vis_core.inference.dataset import segment_dataset
    from vis_core.methods import build_segmenter
    from vis_core.paths import data_dir

    rows = []
    for split in splits:
        annotations = data_dir() / "synth" / split / "annotations.json"
        if not annotations.is_file():
            print(
                f"({split}: no {annotations}; make it with `vis synth --out "
                f"{annotations.parent} --split {split} --seed 0`)"
            )
            continue
        dataset = YtvisDataset.load(str(annotations))
        frames = sum(video.length for video in dataset.videos)
        for method in methods:
            segmenter = build_segmenter(method, model)
            start = time.perf_counter()
            results = segment_dataset(segmenter, dataset, model.config)
            seconds = time.perf_counter() - start
            metrics = evaluate_ytvis(str(annotations), results)
            row = {
                "split": split,
                "method": method,
                "ap": 100 * metrics.ap,
                "ap50": 100 * metrics.ap50,
                "ap75": 100 * metrics.ap75,
                "frames_per_s": frames / seconds,
            }
            rows.append(row)
            print(
                f"{split:>9} {method:>11} {row['ap']:>6.2f} {row['ap50']:>6.2f} "
                f"{row['ap75']:>6.2f} {row['frames_per_s']:>9.1f}",
                flush=True,
            )
    return rows


class DetectorReplay:
    """The detector's outputs on a real clip, played back and forth for any length.

    Installed as `detector.forward`: each call returns the recorded per-frame outputs of
    the next frames in the ping-pong order, whatever images it is given (their count and
    size only). Recorded tensors: logits `[F, Q, K+1]`, masks `[F, Q, h, w]`, queries
    `[L, F, Q, C]`, features `[F, C, h, w]`, and the decoder's inputs (attended maps, its
    mask features) for heads that run the frame decoder themselves.
    """

    def __init__(self, model, frames: np.ndarray):
        from vis_core.inference.frames import FramePreparer

        detector = model.detector.eval()
        preparer = FramePreparer(detector, model.config.input, torch.device("cpu"))
        with torch.inference_mode():
            chunks = [detector(images) for images, _ in preparer.chunks(lambda: iter(frames), 8)]
        self.logits = torch.cat([chunk.pred_logits for chunk in chunks])
        self.masks = torch.cat([chunk.pred_masks for chunk in chunks])
        self.queries = torch.cat([chunk.frame_queries for chunk in chunks], dim=1)
        self.features = torch.cat([chunk.clip_mask_features for chunk in chunks])
        # What a head that runs the frame decoder itself reads (L2G).
        levels = zip(*(chunk.attended_maps for chunk in chunks), strict=True)
        self.maps = [torch.cat(level) for level in levels]
        self.decoder_features = torch.cat([chunk.decoder_mask_features for chunk in chunks])
        self.recorded = len(frames)
        self.next_frame = 0

    def _order(self, count: int) -> list[int]:
        period = 2 * self.recorded - 2
        indices = []
        for position in range(self.next_frame, self.next_frame + count):
            phase = position % period
            indices.append(phase if phase < self.recorded else period - phase)
        self.next_frame += count
        return indices

    def __call__(self, images: torch.Tensor):
        from vis_core.modeling.frame_detector import FrameDetections

        index = torch.tensor(self._order(images.shape[0]))
        return FrameDetections(
            pred_logits=self.logits[index],
            pred_masks=self.masks[index],
            aux_outputs=(),
            frame_queries=self.queries[:, index],
            clip_mask_features=self.features[index],
            attended_maps=tuple(level[index] for level in self.maps),
            decoder_mask_features=self.decoder_features[index],
        )


def _memory_child(model_file: str | None, method: str, frames: int) -> dict[str, float]:
    """Runs in the child process: one replayed video of `frames` frames."""
    from vis_core.methods import build_segmenter
    from vis_core.modeling.model_file import load_model
    from vis_core.synth.generate import synthesize_video
    from vis_core.synth.splits import preset

    torch.set_num_threads(1)
    model = load_model(model_file).eval()
    config = preset("val-long").replace(frames=(REPLAYED_FRAMES, REPLAYED_FRAMES))
    clip = synthesize_video(config, seed=0, index=0)[1].frames  # [T, H, W, 3]
    model.detector.forward = DetectorReplay(model, clip)
    segmenter = build_segmenter(method, model)
    blank = np.zeros_like(clip[0])
    segmenter.segment(lambda: iter([blank] * 2))  # warm-up
    start_mb = _peak_rss_mb()
    start = time.perf_counter()
    instances = segmenter.segment(lambda: (blank for _ in range(frames)))
    seconds = time.perf_counter() - start
    assert instances.num_frames == frames
    return {"seconds": seconds, "peak_mb": _peak_rss_mb(), "start_mb": start_mb}


def memory_table(model_file: str | None, methods: list[str], lengths: list[int]) -> list[dict]:
    rows = []
    for method in methods:
        for frames in lengths:
            command = [sys.executable, "-m", "benchmarks.bench_methods", "--child", method]
            command += ["--frames", str(frames)] + (["--model", model_file] if model_file else [])
            done = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{method}, {frames} frames:\n{done.stderr[-2000:]}")
            row = {"method": method, "frames": frames, **json.loads(done.stdout.splitlines()[-1])}
            rows.append(row)
            print(
                f"{method:>11} {frames:>7} {row['start_mb']:>9.0f} {row['peak_mb']:>8.0f} "
                f"{frames / row['seconds']:>9.1f}",
                flush=True,
            )
    return rows


def run(
    model_file: str | None = None,
    methods: list[str] | None = None,
    splits: list[str] | None = None,
    lengths: list[int] | None = None,
) -> dict:
    from vis_core.modeling.model_file import load_model

    torch.manual_seed(0)
    model = load_model(model_file).eval()
    usable, skipped = _methods_of(model, methods)
    print(f"model: {model_file or 'the shipped model'} ({model.config.name}), 1 process")
    for name, reason in skipped.items():
        print(f"({name}: skipped: {reason})")
    print(f"{'split':>9} {'method':>11} {'AP':>6} {'AP50':>6} {'AP75':>6} {'frames/s':>9}")
    accuracy = accuracy_table(model, usable, list(SPLITS if splits is None else splits))
    print(
        f"\nmemory: one video, detector outputs replayed (see the module doc), 1 thread\n"
        f"{'method':>11} {'frames':>7} {'start MB':>9} {'peak MB':>8} {'frames/s':>9}"
    )
    memory = memory_table(model_file, usable, list(LENGTHS if lengths is None else lengths))
    print("start MB: resident peak after loading the model, recording and a warm-up;")
    print("frames/s of the memory rows: without the detector (replayed), decode-free.")
    return {"accuracy": accuracy, "memory": memory, "skipped": skipped}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="vis model file (default: the shipped model)")
    parser.add_argument("--methods", nargs="+", help="default: every method the model has")
    parser.add_argument("--splits", nargs="*", default=list(SPLITS))
    parser.add_argument("--lengths", nargs="*", type=int, default=list(LENGTHS))
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_memory_child(args.model, args.child, args.frames)))
        return
    figures = run(args.model, args.methods, args.splits, args.lengths)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
