"""`vis train`: distributed training with Ray Train, recorded in MLflow.

Example (the synthetic benchmark, 2 CPU workers):
    vis train --preset vita_small_synth --train data/synth/train/annotations.json \\
        --val data/synth/val/annotations.json --workers 2 --steps 2000 --register vis-small

Also a Ray job entrypoint:
    ray job submit -- python -m jobs.train --train s3://bucket/train/annotations.json ...

Re-running with the same --storage and --name resumes the training from its latest
checkpoint, in the same MLflow run.

An online temporal head trains alone on a trained model's frozen detector, in clips of
the frames the method wants (2 for QueryTrack); the model file written carries the
detector, VITA and the head:
    vis train --method querytrack --freeze-detector --init-model MODEL --train ... --steps 500
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from vis_core.methods import METHODS, TRAINABLE_METHODS
from vis_core.modeling.presets import PRESETS

if TYPE_CHECKING:
    from workflows.train_config import TrainResult


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model with Ray Train (DDP), recorded in MLflow",
        description=(
            "Train the model of a preset on YouTube-VIS-format videos (plus COCO pseudo-videos) "
            "with Ray Train workers, log params, metrics and the model to MLflow, measure AP "
            "on the validation split and register the model. Re-running with the same "
            "--storage and --name resumes. Exit code 2 on a bad configuration, 1 when "
            "training fails."
        ),
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="vita_small_synth")
    parser.add_argument("--train", required=True, help="training annotations (path or URI)")
    parser.add_argument("--val", help="validation annotations: AP is measured at the end")
    parser.add_argument("--coco", help="COCO-format images for pseudo-video clips")
    parser.add_argument(
        "--coco-weight",
        type=float,
        metavar="W",
        help="COCO clips drawn W times as often as video clips (default: the recipe's)",
    )
    parser.add_argument(
        "--long",
        help="a second split of long videos (e.g. `vis synth --split val-long` with an unseen "
        "seed): VITA learns associations across long occlusions from it",
    )
    parser.add_argument(
        "--long-weight",
        type=float,
        metavar="W",
        help="--long clips drawn W times as often as --train clips (default 1)",
    )
    parser.add_argument(
        "--long-sampling-range",
        type=int,
        metavar="R",
        help="a --long clip's frames lie within R frames of its reference frame (default 60)",
    )
    parser.add_argument("--storage", help="Ray Train storage (default <data dir>/ray_results)")
    parser.add_argument("--name", help="training name: same storage and name resume")
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers (1)")
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker, bf16 autocast")
    parser.add_argument("--steps", type=int, help="total steps (default: the recipe's)")
    parser.add_argument("--batch-size", type=int, help="clips per worker and step")
    parser.add_argument("--frames", type=int, metavar="T", help="frames per clip")
    parser.add_argument(
        "--sampling-range",
        type=int,
        metavar="R",
        help="a clip's frames lie within R frames of a random reference frame (default: the "
        "recipe's; longer clips from a wider range show VITA longer occlusions)",
    )
    parser.add_argument("--lr", type=float, help="learning rate")
    parser.add_argument(
        "--lr-milestones",
        type=int,
        nargs="+",
        metavar="STEP",
        help="steps at which the learning rate drops 10x (default: 75/140 of --steps)",
    )
    parser.add_argument(
        "--backbone-multiplier",
        type=float,
        metavar="M",
        help="backbone learning rate = M x lr (default: the recipe's; 0.1 keeps a pretrained "
        "backbone's features)",
    )
    parser.add_argument(
        "--method",
        choices=TRAINABLE_METHODS,
        default="vita",
        help="what trains: VITA, or an online head added to the model (default vita)",
    )
    parser.add_argument(
        "--freeze-detector",
        action="store_true",
        help="train VITA (or the --method head) only, detector frozen",
    )
    parser.add_argument("--init-model", help="start from this vis model file or models:/ URI")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: local store)")
    parser.add_argument("--artifact-root", help="artifact location of new MLflow experiments")
    parser.add_argument("--experiment", default="vis-train", help="MLflow experiment")
    parser.add_argument("--register", metavar="NAME", help="register the final model as NAME")
    parser.add_argument("--checkpoint-every", type=int, default=500, metavar="N")
    parser.add_argument("--log-every", type=int, default=20, metavar="N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-failures", type=int, default=0, help="worker failures retried")
    parser.add_argument(
        "--address",
        help="Ray cluster address (default: RAY_ADDRESS, else a local instance); a cluster "
        "started with `ray start` needs RAY_AUTH_MODE=token",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ray.train import TrainingFailedError

    from workflows.recipes import recipe
    from workflows.train import run_training
    from workflows.train_config import TrainConfigError, TrainJobConfig

    overrides = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "num_frames": args.frames or METHODS[args.method].clip_frames,
        "sampling_range": args.sampling_range,
        "lr": args.lr,
        "lr_milestones": tuple(args.lr_milestones) if args.lr_milestones else None,
        "backbone_multiplier": args.backbone_multiplier,
        "coco_weight": args.coco_weight,
        "long_weight": args.long_weight,
        "long_sampling_range": args.long_sampling_range,
    }
    config = TrainJobConfig(
        **{**recipe(args.preset), **{k: v for k, v in overrides.items() if v is not None}},
        train_uri=args.train,
        preset=args.preset,
        val_uri=args.val,
        coco_uri=args.coco,
        long_uri=args.long,
        storage_uri=args.storage,
        name=args.name,
        workers=args.workers,
        use_gpu=args.gpu,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
        seed=args.seed,
        freeze_detector=args.freeze_detector,
        method=args.method,
        init_model=args.init_model,
        tracking_uri=args.tracking_uri,
        artifact_root=args.artifact_root,
        experiment=args.experiment,
        registered_model_name=args.register,
        max_failures=args.max_failures,
        ray_address=args.address,
    )
    try:
        result = run_training(config)
    except TrainConfigError as error:
        print(f"vis train: error: {error}", file=sys.stderr)
        return 2
    except TrainingFailedError as error:
        message = " ".join(str(error).split())[:2000]
        print(f"vis train: training failed: {message}", file=sys.stderr)
        return 1
    print(format_summary(result))
    return 0


def format_summary(result: TrainResult) -> str:
    """The final report: steps, losses, where the outputs are, validation figures."""
    metrics = result.metrics
    lines = [f"training {result.name}: steps {result.start_step} -> {result.final_step}"]
    if "loss" in metrics:
        lines.append(f"  last loss       {metrics['loss']:.4f}")
    if "clips_per_s" in metrics:
        lines.append(f"  clips/s         {metrics['clips_per_s']:.2f}")
    validation = [(k.removeprefix("val/"), v) for k, v in metrics.items() if k.startswith("val/")]
    if validation:
        figures = "  ".join(f"{k} {100 * v:.1f}" if v >= 0 else f"{k} n/a" for k, v in validation)
        lines.append(f"  validation (%)  {figures}")
    lines.append(f"  checkpoint      {result.checkpoint_path}")
    lines.append(f"  model file      {result.model_file}")
    lines.append(f"  MLflow run      {result.mlflow_run_id} in {result.tracking_uri}")
    if result.registered_model_uri:
        lines.append(f"  registered      {result.registered_model_uri}")
    return "\n".join(lines)


if __name__ == "__main__":
    from jobs.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
