"""`vis export-model`: the model's frame detector as an ONNX graph, for deployment.

The graph takes normalised images `[N, 3, H, W]` zero-padded to multiples of 32 (N, H and
W dynamic) and returns class logits `[N, Q, K+1]`, mask logits `[N, Q, H/4, W/4]`, frame
queries `[1, N, Q, C]` and the stride-4 clip mask features. VITA is not exported (see the
README). The file then runs in `vis segment --backend onnx --onnx FILE`. By default the
export is checked: ONNX Runtime and PyTorch run two frames at two sizes and the largest
output differences are printed.
"""

from __future__ import annotations

import argparse
import sys

# The check's inputs: frames x (height, width), each a multiple of 32.
_CHECK_SIZES = ((2, 256, 320), (1, 192, 416))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export-model", help="export the frame detector to ONNX", description=__doc__
    )
    parser.add_argument(
        "--model", help="vis model file or models:/NAME/VERSION (default: the shipped model)"
    )
    parser.add_argument("--format", choices=("onnx",), default="onnx")
    parser.add_argument("--out", required=True, help="the file to write (path or URI)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 16)")
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime check")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI for models:/ names")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vis_core.export.onnx_cache import model_digest
    from vis_core.export.onnx_export import OnnxExportSettings, export_detector_onnx
    from workflows.model_source import load_model_spec

    try:
        settings = OnnxExportSettings(opset=args.opset)
        model = load_model_spec(args.model, device="cpu", tracking_uri=args.tracking_uri)
    except (FileNotFoundError, ValueError) as error:
        print(f"vis export-model: error: {error}", file=sys.stderr)
        return 2
    digest = model_digest(model)
    export = export_detector_onnx(model, args.out, settings, model_digest=digest)
    print(
        f"{model.config.name} detector -> {export.uri} ({export.size_bytes / 1e6:.1f} MB, "
        f"opset {settings.opset}, {export.seconds:.0f} s)"
    )
    if not args.no_check:
        for line in check_lines(model, export.uri):
            print(line)
    return 0


def check_lines(model, onnx_uri: str) -> list[str]:
    """Largest |ONNX Runtime - PyTorch| per output on random images of `_CHECK_SIZES`."""
    import torch

    from vis_core.export.backend import DetectorBackend, onnx_detector_bytes
    from vis_core.export.onnx_detector import OnnxFrameDetector
    from vis_core.export.onnx_export import OUTPUT_NAMES

    data = onnx_detector_bytes(model, DetectorBackend("onnx", onnx_uri))
    runtime = OnnxFrameDetector(data, model.config.input)
    generator = torch.Generator().manual_seed(0)
    lines = []
    for frames, height, width in _CHECK_SIZES:
        images = torch.randn(frames, 3, height, width, generator=generator)
        with torch.inference_mode():
            expected, actual = model.detector(images), runtime(images)
        errors = ", ".join(
            f"{name} {float((getattr(expected, name) - getattr(actual, name)).abs().max()):.1e}"
            for name in OUTPUT_NAMES
        )
        lines.append(f"check {frames}x3x{height}x{width}: max |onnx - torch|: {errors}")
    return lines
