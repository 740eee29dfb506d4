"""A timed training sitting on one GPU, without Ray or MLflow (the lent device machine).

`vis train` is the product's training job (Ray Train, MLflow). A lent GPU machine has
neither and only minutes of time, so this script trains the same model, criterion, clip
stream and step for a wall-clock budget instead of a step count, with the learning rate
warmed up and dropped 10x at `--decay-at` of the budget, writes the model (fp32) every
`--save-every` seconds so a sitting cut short still returns weights, then reports the
method's AP on `--val` (when given) next to per-frame linking's. `--method M
--freeze-detector` trains an online head alone on the model's frozen detector, as
`vis train` does; on a CPU the same script is a Ray-free background run (`--threads`).

    python -m infra.device_train --init-model M.vis.pt --train D/train/annotations.json \\
        --coco D/train/coco/annotations.json --val D/val/annotations.json \\
        --seconds 360 --out OUT
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path

import torch

from vis_core.data.augment import AugmentConfig
from vis_core.methods import TRAINABLE_METHODS, get_method
from vis_core.modeling.model_file import load_model, save_model
from vis_core.training.batch import ClipBatch
from vis_core.training.optim import build_optimizer
from vis_core.training.step import train_step
from workflows.recipes import recipe
from workflows.train_config import TrainJobConfig
from workflows.train_worker import build_clip_stream, build_criterion, build_model, validate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--init-model", required=True, help="model file the sitting starts from")
    parser.add_argument("--train", required=True, help="YouTube-VIS annotations of the split")
    parser.add_argument("--coco", help="COCO-format still images drawn as pseudo-videos")
    parser.add_argument("--long", help="a second split of long videos (see `vis train --long`)")
    parser.add_argument("--long-weight", type=float, default=1.0, help="its clips' weight (1)")
    parser.add_argument(
        "--long-sampling-range", type=int, default=60, help="frames its clips are drawn from (60)"
    )
    parser.add_argument("--val", help="validation split: VITA's AP after training")
    parser.add_argument("--out", required=True, help="folder of model.vis.pt and sitting.json")
    parser.add_argument("--seconds", type=float, required=True, help="training wall-clock budget")
    parser.add_argument("--batch-size", type=int, default=12, help="clips per step (12)")
    parser.add_argument(
        "--num-frames", type=int, help="frames per clip (default: the method's, else 5)"
    )
    parser.add_argument(
        "--sampling-range", type=int, help="frames a clip is drawn from (the recipe's)"
    )
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--backbone-multiplier", type=float, default=0.1)
    parser.add_argument("--warmup", type=int, default=100, help="warm-up steps (100)")
    parser.add_argument("--decay-at", type=float, default=0.85, help="budget share (0.85)")
    parser.add_argument("--loader-workers", type=int, default=12)
    parser.add_argument("--save-every", type=float, default=60.0, help="seconds (60)")
    parser.add_argument("--log-every", type=int, default=25, help="steps (25)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--method", choices=TRAINABLE_METHODS, default="vita", help="what trains (vita)"
    )
    parser.add_argument(
        "--freeze-detector", action="store_true", help="train the method's head alone"
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument(
        "--min-sizes", type=int, nargs="+", help="training shortest edges (the recipe's)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    method = get_method(args.method)
    config = method.with_head(load_model(args.init_model).config)
    overrides = recipe(config.name) | {
        "batch_size": args.batch_size,
        "num_frames": args.num_frames or method.clip_frames or 5,
        **({"sampling_range": args.sampling_range} if args.sampling_range else {}),
        "lr": args.lr,
        "backbone_multiplier": args.backbone_multiplier,
        "loader_workers": args.loader_workers,
    }
    if args.min_sizes:
        augment = overrides.get("augment", AugmentConfig())
        overrides["augment"] = dataclasses.replace(augment, min_sizes=tuple(args.min_sizes))
    job = TrainJobConfig(
        train_uri=args.train,
        coco_uri=args.coco,
        long_uri=args.long,
        long_weight=args.long_weight,
        long_sampling_range=args.long_sampling_range,
        preset=config.name,
        seed=args.seed,
        method=args.method,
        freeze_detector=args.freeze_detector,
        init_model=args.init_model,
        **overrides,
    )
    model = build_model(job, config).to(device)
    optim = job.optim_config()
    optimizer = build_optimizer(model, optim)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    criterion = build_criterion(config, args.freeze_detector, args.method).to(device)
    loader = torch.utils.data.DataLoader(
        build_clip_stream(job, config),
        batch_size=job.batch_size,
        collate_fn=ClipBatch.from_clips,
        num_workers=job.loader_workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if job.loader_workers else None,
        persistent_workers=job.loader_workers > 0,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_file = out / "model.vis.pt"

    def save(step: int) -> None:
        save_model(str(model_file), copy.deepcopy(model).cpu(), {"sitting": "device", "step": step})

    batches = iter(loader)
    started = last_save = window_start = time.perf_counter()
    step, window, curve = 0, {}, []
    while (elapsed := time.perf_counter() - started) < args.seconds:
        factor = min(1.0, (step + 1) / args.warmup)
        factor *= 0.1 if elapsed >= args.decay_at * args.seconds else 1.0
        for group, lr in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = lr * factor
        batch = next(batches).to(device)
        result = train_step(
            model,
            criterion,
            optimizer,
            batch,
            optim.clip_grad_norm,
            # A frozen detector learns nothing from pilot queries.
            mask_piloting=config.frame_decoder.mask_piloting and not args.freeze_detector,
        )
        step += 1
        window["loss"] = window.get("loss", 0.0) + result.loss
        for name, value in result.terms.items():
            if not name[-1].isdigit():  # the last layer's terms, not the auxiliary ones
                window[name] = window.get(name, 0.0) + value
        if step % args.log_every == 0:
            now = time.perf_counter()
            point = {name: round(value / args.log_every, 4) for name, value in window.items()}
            point.update(
                step=step,
                s=round(now - started, 1),
                clips_per_s=round(args.log_every * job.batch_size / (now - window_start), 1),
                lr=round(max(group["lr"] for group in optimizer.param_groups), 7),
            )
            curve.append(point)
            print(json.dumps(point), flush=True)
            window, window_start = {}, now
        if time.perf_counter() - last_save >= args.save_every:
            save(step)
            last_save = time.perf_counter()
    save(step)
    long_split = {
        "long_split": args.long,
        "long_weight": args.long_weight,
        "long_sampling_range": args.long_sampling_range,
    }
    summary = {
        "steps": step,
        "clips": step * job.batch_size,
        "train_s": round(time.perf_counter() - started, 1),
        "batch_size": job.batch_size,
        "num_frames": job.num_frames,
        "sampling_range": job.sampling_range,
        **(long_split if args.long else {}),
        "lr": args.lr,
        "method": args.method,
        "freeze_detector": args.freeze_detector,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "curve": curve,
    }
    (out / "sitting.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "curve"}), flush=True)
    if args.val:
        model.eval()
        # Per-frame linking, the baseline, changes only with the detector.
        methods = (args.method,) if args.freeze_detector else (args.method, "per-frame")
        for method in methods:
            started = time.perf_counter()
            metrics = validate(model, args.val, device, method=method)
            summary[f"val_{method}_ap"] = round(100 * metrics.ap, 2)
            summary[f"val_{method}_ap50"] = round(100 * metrics.ap50, 2)
            print(
                f"val {method}: AP {100 * metrics.ap:.2f} AP50 {100 * metrics.ap50:.2f} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
            (out / "sitting.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
