"""The `--backend` and `--onnx` options shared by `vis segment` and `vis process`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=("torch", "compile", "onnx"),
        default="torch",
        help="what runs the frame detector: PyTorch, PyTorch compiled by torch.compile "
        "(its first call compiles: minutes on a CPU, seconds with inductor's disk cache), "
        "or ONNX Runtime (VITA and the masks stay in PyTorch)",
    )
    parser.add_argument(
        "--onnx",
        metavar="FILE",
        help="the detector's ONNX export (from vis export-model) for --backend onnx "
        "(default: exported on first use into the cache folder)",
    )


def backend_from_args(args: argparse.Namespace):
    """The `DetectorBackend` of the parsed options (ValueError on --onnx without onnx)."""
    from vis_core.export.backend import DetectorBackend

    if args.onnx is not None and args.backend != "onnx":
        raise ValueError("--onnx is read only with --backend onnx")
    return DetectorBackend(kind=args.backend, onnx_file=args.onnx)
