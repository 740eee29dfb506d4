"""Fixed-budget training trials: which recipe learns the most per CPU-hour.

Every arm starts from the same state (the pretrained backbone of `--init-model`, every
other weight initialised with the same seed), draws the same clips, and trains in one
process until its own CPU time reaches `--cpu-minutes` (`time.process_time`, so other work
on the machine does not bias a trial). The learning rate warms up over `--warmup` steps and
drops 10x at 90% of the budget, so every arm decays at the same fraction. Then the arm's
model is evaluated on a validation split: VITA's AP, the per-frame baseline's AP on the
same detector, and class recognition (`vis_core/training/recognition.py`).

    python -m benchmarks.convergence --arm fpn --cpu-minutes 30 \\
        --train DATA/train/annotations.json --coco DATA/train/coco/annotations.json \\
        --val DATA/val/annotations.json --init-model PRETRAINED.vis.pt --out trials/

writes `trials/<arm>.json` (figures) and `trials/<arm>.vis.pt` (the model).
`--report trials/` prints the table of every arm found there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from vis_core.modeling.config import ModelConfig
from vis_core.modeling.presets import get_preset

# Each arm: the base preset with some fields changed (the recipe stays the preset's).
ARMS: dict[str, Callable[[ModelConfig], ModelConfig]] = {}


def arm(function: Callable[[ModelConfig], ModelConfig]) -> Callable[[ModelConfig], ModelConfig]:
    ARMS[function.__name__] = function
    return function


def _options(
    config: ModelConfig,
    pixel_decoder: str = "fpn",
    strides: tuple[int, int, int] = (32, 16, 8),
    piloting: bool = False,
    dense: bool = False,
) -> ModelConfig:
    """`config` with the four options the trials compare set explicitly (whatever the
    preset's own choices), so every arm stays reproducible when the preset changes."""
    return dataclasses.replace(
        config,
        pixel_decoder=dataclasses.replace(config.pixel_decoder, kind=pixel_decoder),
        frame_decoder=dataclasses.replace(
            config.frame_decoder, attention_strides=strides, mask_piloting=piloting
        ),
        loss=dataclasses.replace(config.loss, dense_masks=dense),
    )


@arm
def baseline(config: ModelConfig) -> ModelConfig:
    """The earlier preset: deformable pixel decoder, queries at strides 32/16/8, points."""
    return _options(config, pixel_decoder="msdeform")


@arm
def fpn(config: ModelConfig) -> ModelConfig:
    """An FPN pixel decoder instead of the deformable encoder."""
    return _options(config)


@arm
def fpn_s4(config: ModelConfig) -> ModelConfig:
    """FPN, and the decoder's masked attention reads strides 16/8/4 (small objects)."""
    return _options(config, strides=(16, 8, 4))


@arm
def fpn_s4_mp(config: ModelConfig) -> ModelConfig:
    """fpn_s4 with mask-piloted training (MP-Former: one group, label noise 0.2)."""
    return _options(config, strides=(16, 8, 4), piloting=True)


@arm
def fpn_s4_mp_dense(config: ModelConfig) -> ModelConfig:
    """fpn_s4_mp with dense matching and mask losses on the stride-4 grid (the preset)."""
    return _options(config, strides=(16, 8, 4), piloting=True, dense=True)


@arm
def fpn_mp_dense(config: ModelConfig) -> ModelConfig:
    """FPN, mask piloting and dense losses, queries at the official strides 32/16/8."""
    return _options(config, piloting=True, dense=True)


def train_arm(args: argparse.Namespace) -> dict:
    from vis_core.modeling.model_file import load_model, save_model
    from vis_core.modeling.vita_model import VitaModel
    from vis_core.training.batch import ClipBatch
    from vis_core.training.optim import build_optimizer
    from vis_core.training.step import train_step
    from workflows.recipes import recipe
    from workflows.train_config import TrainJobConfig
    from workflows.train_worker import build_clip_stream, build_criterion

    torch.set_num_threads(args.threads)
    config = ARMS[args.arm](get_preset(args.preset))
    overrides = recipe(args.preset)
    overrides["backbone_multiplier"] = args.backbone_multiplier
    job = TrainJobConfig(
        train_uri=args.train, coco_uri=args.coco, preset=args.preset, seed=args.seed, **overrides
    )
    torch.manual_seed(args.seed)
    model = VitaModel(config)
    if args.init_model:
        backbone = load_model(args.init_model).detector.backbone
        model.detector.backbone.load_state_dict(backbone.state_dict())
    optim = job.optim_config()
    optimizer = build_optimizer(model, optim)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    criterion = build_criterion(config, frozen_detector=False)
    clips = iter(build_clip_stream(job, config))
    budget = args.cpu_minutes * 60.0
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    curve: list[dict] = []
    window: dict[str, float] = {}
    step = 0
    while (used := time.process_time() - cpu_start) < budget:
        factor = min(1.0, (step + 1) / args.warmup) * (0.1 if used >= 0.9 * budget else 1.0)
        for group, lr in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = lr * factor
        batch = ClipBatch.from_clips([next(clips) for _ in range(job.batch_size)])
        result = train_step(
            model,
            criterion,
            optimizer,
            batch,
            optim.clip_grad_norm,
            mask_piloting=config.frame_decoder.mask_piloting,
        )
        step += 1
        for name in ("loss_ce", "loss_dice", "loss_vita_ce", "loss_vita_dice"):
            window[name] = window.get(name, 0.0) + result.terms[name]
        if step % args.log_every == 0:
            point = {name: value / args.log_every for name, value in window.items()}
            point.update(step=step, cpu_s=round(used, 1))
            curve.append(point)
            print(json.dumps(point), flush=True)
            window = {}
    cpu_s = time.process_time() - cpu_start
    wall_s = time.perf_counter() - wall_start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_file = out / f"{args.arm}.vis.pt"
    save_model(str(model_file), model, {"trial": args.arm, "step": step})
    frames = step * job.batch_size * job.num_frames
    return {
        "arm": args.arm,
        "description": (ARMS[args.arm].__doc__ or "").strip(),
        "cpu_minutes": args.cpu_minutes,
        "threads": args.threads,
        "steps": step,
        "cpu_s": round(cpu_s, 1),
        "wall_s": round(wall_s, 1),
        "train_frames_per_cpu_s": round(frames / cpu_s, 3),
        "curve": curve,
        "model_file": str(model_file),
    }


def evaluate_arm(model_file: str, val: str, recognition_clips: int) -> dict:
    """VITA AP, per-frame AP and class recognition of a model file on `val`."""
    from vis_core.data.augment import AugmentConfig
    from vis_core.data.clip_stream import ClipStream, VideoClipSource
    from vis_core.data.ytvis import YtvisDataset
    from vis_core.evaluation import evaluate_ytvis
    from vis_core.evaluation.track_recall import track_recall
    from vis_core.inference.dataset import segment_dataset
    from vis_core.inference.per_frame import PerFrameSegmenter
    from vis_core.inference.segmenter import VideoSegmenter
    from vis_core.modeling.model_file import load_model
    from vis_core.training.batch import ClipBatch
    from vis_core.training.recognition import measure_recognition
    from workflows.train_worker import label_map

    model = load_model(model_file).eval()
    dataset = YtvisDataset.load(val)
    figures: dict[str, float] = {}
    for method, segmenter in (
        ("vita", VideoSegmenter(model, device="cpu")),
        ("per_frame", PerFrameSegmenter(model, device="cpu")),
    ):
        results = segment_dataset(segmenter, dataset, model.config)
        metrics = evaluate_ytvis(val, results)
        figures[f"{method}_track_recall"] = round(track_recall(val, results), 3)
        figures[f"{method}_ap"] = round(100 * metrics.ap, 2)
        figures[f"{method}_ap50"] = round(100 * metrics.ap50, 2)
        figures[f"{method}_ap75"] = round(100 * metrics.ap75, 2)
    source = VideoClipSource(dataset, label_map(dataset.categories, model.config), 10)
    augment = AugmentConfig(min_sizes=(model.config.input.min_size_test,), flip_prob=0.0)
    stream = iter(ClipStream([source], [1.0], 3, augment, seed=0))
    batches = (ClipBatch.from_clips([next(stream)]) for _ in range(recognition_clips))
    recognition = measure_recognition(model.detector, batches, model.config.loss)
    figures["class_recognition"] = round(recognition.accuracy, 3)
    figures["slot_purity"] = round(recognition.slot_purity, 3)
    return figures


def report(folder: str) -> None:
    rows = [json.loads(path.read_text()) for path in sorted(Path(folder).glob("*.json"))]
    header = (
        f"{'arm':<12} {'CPU min':>7} {'steps':>6} {'frames/CPU-s':>12} {'VITA AP':>8} "
        f"{'AP50':>6} {'per-frame AP':>12} {'recognition':>11} {'track recall':>12}"
    )
    print(header)
    for row in rows:
        print(
            f"{row['arm']:<12} {row['cpu_minutes']:>7g} {row['steps']:>6} "
            f"{row['train_frames_per_cpu_s']:>12.2f} {row.get('vita_ap', math.nan):>8.2f} "
            f"{row.get('vita_ap50', math.nan):>6.2f} {row.get('per_frame_ap', math.nan):>12.2f} "
            f"{row.get('class_recognition', math.nan):>11.3f} "
            f"{row.get('vita_track_recall', math.nan):>12.3f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arm", choices=sorted(ARMS))
    parser.add_argument("--preset", default="vita_small_synth")
    parser.add_argument("--train", help="YouTube-VIS annotation file of the training split")
    parser.add_argument("--coco", help="COCO-format images drawn as pseudo-videos")
    parser.add_argument("--val", help="validation split (YouTube-VIS annotation file)")
    parser.add_argument("--init-model", help="model file whose backbone starts every arm")
    parser.add_argument("--out", default="trials", help="folder of the arms' figures and models")
    parser.add_argument("--cpu-minutes", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument(
        "--backbone-multiplier", type=float, default=0.1, help="backbone lr factor (pretrained)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=20)
    parser.add_argument("--recognition-clips", type=int, default=100)
    parser.add_argument("--report", metavar="FOLDER", help="print the table of FOLDER's arms")
    args = parser.parse_args(argv)
    if args.report:
        report(args.report)
        return
    if not (args.arm and args.train and args.val):
        parser.error("--arm, --train and --val are required to run a trial")
    figures = train_arm(args)
    figures.update(evaluate_arm(figures["model_file"], args.val, args.recognition_clips))
    path = Path(args.out) / f"{args.arm}.json"
    path.write_text(json.dumps(figures, indent=1))
    print(json.dumps({k: v for k, v in figures.items() if k != "curve"}))


if __name__ == "__main__":
    main()
