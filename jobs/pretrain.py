"""`vis pretrain`: pretrain a preset's backbone as an instance classifier on a COCO-format
image set, and write a model file to start `vis train --init-model` from.

No ImageNet weights can be downloaded here; this is the project's stand-in (see
`vis_core.training.backbone_pretrain`). Only the backbone is trained; the rest of the
model keeps its random initialisation.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pretrain", help="pretrain a backbone by instance classification", description=__doc__
    )
    parser.add_argument("--preset", default="vita_small_synth", help="model preset")
    parser.add_argument("--coco", required=True, help="COCO-format annotation file (path, URI)")
    parser.add_argument("--out", required=True, help="model file to write")
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from vis_core.data.coco import CocoDataset
    from vis_core.data.labels import label_of_category
    from vis_core.modeling.model_file import save_model
    from vis_core.modeling.presets import get_preset
    from vis_core.modeling.vita_model import VitaModel
    from vis_core.training.backbone_pretrain import (
        PretrainConfig,
        extract_crops,
        pretrain_backbone,
        split_images,
    )

    config = PretrainConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed
    )
    try:
        model_config = get_preset(args.preset)
        images = CocoDataset.load(args.coco)
        label_of = label_of_category(
            images.categories, model_config.class_names, model_config.num_classes
        )
    except (KeyError, FileNotFoundError, ValueError) as error:
        print(f"vis pretrain: error: {error}", file=sys.stderr)
        return 2
    train_ids, holdout_ids = split_images(images, config.holdout, config.seed)
    train = extract_crops(images, label_of, config, train_ids)
    holdout = extract_crops(images, label_of, config, holdout_ids)
    print(f"{len(train)} training and {len(holdout)} held-out instance crops")
    torch.manual_seed(config.seed)
    model = VitaModel(model_config)
    result = pretrain_backbone(
        model.detector.backbone,
        model.detector.preprocess,
        train,
        holdout,
        model_config.num_classes,
        config,
    )
    save_model(
        args.out,
        model,
        {
            "pretrained": f"backbone by instance classification on {args.coco}",
            "holdout_accuracy": round(result.holdout_accuracy, 4),
            "steps": config.steps,
        },
    )
    print(
        f"held-out accuracy {result.holdout_accuracy:.3f} on {result.holdout_instances} "
        f"instances after {config.steps} steps ({result.seconds:.0f} s) -> {args.out}"
    )
    return 0
