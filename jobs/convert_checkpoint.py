"""`vis convert-checkpoint`: an official VITA/Mask2Former checkpoint to a vis model file."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert-checkpoint",
        help="convert an official (detectron2-style) checkpoint to a vis model file",
        description=__doc__,
    )
    parser.add_argument("--src", required=True, help=".pth (with or without 'model') or .pkl")
    parser.add_argument("--preset", required=True, help="the architecture, e.g. vita_r50_ytvis19")
    parser.add_argument("--out", required=True, help="the vis model file to write")
    parser.add_argument(
        "--part",
        choices=("backbone", "pixel_decoder", "frame_decoder", "vita"),
        help="load only this module's weights (the rest keep their initialisation)",
    )
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="write the model even when some of its weights are not in the checkpoint",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vis_core.modeling.checkpoint import CheckpointError, load_official, read_official
    from vis_core.modeling.model_file import save_model
    from vis_core.modeling.presets import get_preset
    from vis_core.modeling.vita_model import VitaModel

    try:
        model = VitaModel(get_preset(args.preset))
        target = model
        if args.part == "vita":
            target = model.vita
        elif args.part is not None:
            target = getattr(model.detector, args.part)
        report = load_official(target, read_official(args.src), part=args.part)
    except (CheckpointError, KeyError) as error:
        print(f"vis convert-checkpoint: {error}", file=sys.stderr)
        return 2
    print(report.summary())
    if report.missing and not (args.allow_missing or args.part):
        print(
            "vis convert-checkpoint: the checkpoint lacks some weights; nothing written "
            "(pass --allow-missing to write anyway)",
            file=sys.stderr,
        )
        return 1
    save_model(args.out, model.eval(), metadata={"converted_from": args.src, "part": args.part})
    print(f"wrote {args.out}")
    return 0
