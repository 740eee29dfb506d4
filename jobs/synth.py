"""`vis synth`: generate a split of the synthetic video instance segmentation benchmark.

Example:
    vis synth --out data/synth/train --split train --videos 1000 --seed 0 --coco-images 2000
"""

from __future__ import annotations

import argparse
import json
import logging
import os

from vis_core.synth.splits import DEFAULT_FPS, DEFAULT_HEIGHT, DEFAULT_WIDTH, PRESETS

logger = logging.getLogger(__name__)


def parse_size(text: str) -> tuple[int, int]:
    """`WIDTHxHEIGHT` -> (width, height)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"size must be WIDTHxHEIGHT, e.g. 320x240, got {text!r}"
        ) from None
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return width, height


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="generate the synthetic VIS benchmark (mp4 + YouTube-VIS json)",
        description=(
            "Generate a split of the synthetic video instance segmentation benchmark: "
            "H.264 videos under OUT/videos/, YouTube-VIS 2019 annotations in "
            "OUT/annotations.json and difficulty statistics in OUT/stats.json. "
            f"Default frame size {DEFAULT_WIDTH}x{DEFAULT_HEIGHT} at {DEFAULT_FPS:g} fps. "
            "Options override the split preset's fields."
        ),
    )
    parser.add_argument("--out", required=True, help="output folder or URI (s3://...)")
    parser.add_argument("--split", choices=sorted(PRESETS), default="train", help="preset")
    parser.add_argument("--videos", type=int, default=100, help="number of videos (100)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument(
        "--frames", type=int, nargs=2, metavar=("MIN", "MAX"), help="frames per video"
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        metavar="WIDTHxHEIGHT",
        help=f"frame size (default {DEFAULT_WIDTH}x{DEFAULT_HEIGHT})",
    )
    parser.add_argument(
        "--instances", type=int, nargs=2, metavar=("MIN", "MAX"), help="instances per video"
    )
    parser.add_argument("--fps", type=float, help=f"frame rate (default {DEFAULT_FPS:g})")
    parser.add_argument(
        "--coco-images",
        type=int,
        default=0,
        metavar="N",
        help="also write N still images as a COCO set under OUT/coco/",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="worker processes (output does not depend on it)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vis_core.synth.splits import SynthConfigError, preset
    from vis_core.synth.writer import generate_split

    overrides = {}
    if args.frames is not None:
        overrides["frames"] = tuple(args.frames)
    if args.instances is not None:
        overrides["instances"] = tuple(args.instances)
    if args.size is not None:
        overrides["width"], overrides["height"] = args.size
    if args.fps is not None:
        overrides["fps"] = args.fps
    try:
        config = preset(args.split).replace(**overrides)
    except SynthConfigError as error:
        logger.error("bad settings: %s", error)
        return 2
    for option, value in (("--videos", args.videos), ("--coco-images", args.coco_images)):
        if value < 0:
            logger.error("%s must be >= 0, got %d", option, value)
            return 2
    if args.seed < 0 or args.workers < 1:
        logger.error("--seed must be >= 0 and --workers >= 1")
        return 2
    summary = generate_split(
        args.out,
        config,
        num_videos=args.videos,
        seed=args.seed,
        coco_images=args.coco_images,
        workers=args.workers,
    )
    print(f"split {config.name} ({config.size_text}, seed {args.seed}) -> {args.out}")
    print(summary.stats.table())
    frames = summary.stats.num_frames
    print(f"{frames} frames in {summary.seconds:.1f} s ({frames / summary.seconds:.0f} frames/s)")
    logger.debug("stats: %s", json.dumps(summary.stats.to_json()))
    return 0
