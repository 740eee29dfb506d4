"""`vis segment`: segment every video of an annotation file into YouTube-VIS results.

The results JSON goes to `vis eval`. `--method` picks how per-frame detections become
video instances (the registry in `vis_core/methods.py`): `vita` (default), `per-frame`
(greedy mask-IoU linking, the heuristic baseline), `querytrack` (online contrastive
association; the model file must carry a QueryTrack head, see `vis train --method`).
"""

from __future__ import annotations

import argparse
import sys
import time

from jobs import detector_backend, method_option
from vis_core.methods import build_segmenter


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment", help="segment a dataset's videos into YouTube-VIS results", description=__doc__
    )
    parser.add_argument("--data", required=True, help="YouTube-VIS annotation file (path or URI)")
    parser.add_argument("--out", required=True, help="results JSON to write")
    parser.add_argument(
        "--model", help="vis model file or models:/NAME/VERSION (default: the shipped model)"
    )
    method_option.add_argument(parser)
    parser.add_argument("--device", default=None, help="cpu, cuda... (default: cuda if present)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (GPU)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI for models:/ names")
    detector_backend.add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    import torch

    from vis_core.data.ytvis import YtvisDataset
    from vis_core.export.backend import apply_detector_backend
    from vis_core.inference.dataset import segment_dataset
    from vis_core.storage import open_fs
    from workflows.model_source import load_model_spec

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    try:
        backend = detector_backend.backend_from_args(args)
        model = load_model_spec(args.model, device=device, tracking_uri=args.tracking_uri)
        dataset = YtvisDataset.load(args.data)
        model = apply_detector_backend(model, backend)
        segmenter = build_segmenter(args.method, model, device=device, dtype=dtype)
    except (FileNotFoundError, ValueError) as error:
        print(f"vis segment: error: {error}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    frames = sum(video.length for video in dataset.videos)

    def progress(done: int, total: int) -> None:
        elapsed = time.perf_counter() - start
        print(f"\r{done}/{total} videos, {elapsed:.0f} s", end="", file=sys.stderr, flush=True)

    results = segment_dataset(segmenter, dataset, model.config, progress)
    seconds = time.perf_counter() - start
    print(file=sys.stderr)
    fs, path = open_fs(args.out)
    with fs.open(path, "w") as file:
        json.dump(results, file)
    print(
        f"{len(results)} instances from {len(dataset)} videos ({frames} frames, "
        f"{frames / seconds:.1f} frames/s, {args.method}, {args.backend}) -> {args.out}"
    )
    return 0
