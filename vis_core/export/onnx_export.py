"""The frame detector as an ONNX graph, for deployment outside the Python training code.

The graph takes normalised, zero-padded images `[N, 3, H, W]` (what `FrameDetector.
preprocess` gives: H and W multiples of the size divisibility, 32) and returns, in eval
mode, the tuple `OUTPUT_NAMES`:

- pred_logits `[N, Q, K+1]`: the last frame-decoder layer's class logits, no-object last;
- pred_masks `[N, Q, h, w]`: its mask logits at h x w = H/4 x W/4;
- frame_queries `[1, N, Q, C]`: the decoder-normed queries VITA consumes;
- clip_mask_features `[N, C', h, w]`: the stride-4 pixel-decoder map VITA's masks use.

N, H and W are dynamic. The exporter is torch.export's (`torch.onnx.export(dynamo=True)`):
it traces sizes symbolically, so the deformable-attention decoder's per-level shapes,
reference points and `grid_sample` calls follow the input size. The TorchScript exporter
(`dynamo=False`) bakes those sizes in as constants and gives wrong outputs at any other
frame size without a warning.

Dimension letters: N frames, Q frame queries, K classes, C channels, H x W the padded input.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from vis_core.modeling.frame_detector import FrameDetector
from vis_core.modeling.vita_model import VitaModel
from vis_core.storage import open_output

EXPORT_FORMAT = "vis-detector-onnx/1"
INPUT_NAME = "images"
OUTPUT_NAMES = ("pred_logits", "pred_masks", "frame_queries", "clip_mask_features")
# Metadata keys written into the graph (ONNX `metadata_props`).
META_FORMAT = "vis.format"
META_MODEL_DIGEST = "vis.model_digest"
META_MODEL = "vis.model"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OnnxExportSettings:
    """What decides the exported graph besides the model (part of the cache key).

    opset: the ONNX opset (`GridSample` needs >= 16); optimize: the exporter's graph
    optimisation (constant folding, dead-code removal; a little faster in ONNX Runtime);
    max_frames, max_side: the largest N and H, W the dynamic dimensions admit at export
    (the graph itself takes any size; these only bound torch.export's shape reasoning).
    """

    opset: int = 18
    optimize: bool = True
    max_frames: int = 4096
    max_side: int = 8192

    def __post_init__(self) -> None:
        if self.opset < 16:
            raise ValueError(f"opset must be >= 16 (GridSample), got {self.opset}")
        if self.max_frames < 2 or self.max_side < 64:
            raise ValueError("max_frames must be >= 2 and max_side >= 64")


@dataclass(frozen=True)
class OnnxExport:
    """A written export: where, how large, and how long the export took."""

    uri: str
    size_bytes: int
    seconds: float


class DetectorGraph(nn.Module):
    """The frame detector with a tuple of tensors as output (what an ONNX graph returns):
    `images [N, 3, H, W] -> (pred_logits, pred_masks, frame_queries, clip_mask_features)`."""

    def __init__(self, detector: FrameDetector):
        super().__init__()
        self.detector = detector

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        detections = self.detector(images)
        return (
            detections.pred_logits,
            detections.pred_masks,
            detections.frame_queries,
            detections.clip_mask_features,
        )


def export_detector_onnx(
    model: VitaModel,
    uri: str,
    settings: OnnxExportSettings | None = None,
    model_digest: str = "",
) -> OnnxExport:
    """Export `model.detector` (a CPU copy, in eval mode) to an ONNX file at `uri` (a path
    or fsspec URI). `model_digest` (see `onnx_cache.model_digest`) is recorded in the
    graph's metadata so a runtime can tell which model the file belongs to."""
    settings = settings or OnnxExportSettings()
    started = time.perf_counter()
    detector = model.detector
    if not isinstance(detector, FrameDetector):
        raise TypeError(f"only a PyTorch FrameDetector exports, got {type(detector).__name__}")
    if any(parameter.device.type != "cpu" for parameter in detector.parameters()):
        detector = copy.deepcopy(detector).cpu()  # the caller's model stays where it is
    graph = DetectorGraph(detector).eval()
    divisor = detector.size_divisibility
    # An example of 2 frames, 8 x 10 size units: no dimension is 0 or 1 (torch.export
    # would specialise those).
    example = torch.zeros(2, 3, 8 * divisor, 10 * divisor)
    frames = torch.export.Dim("frames", min=1, max=settings.max_frames)
    height = torch.export.Dim("height_units", min=1, max=settings.max_side // divisor)
    width = torch.export.Dim("width_units", min=1, max=settings.max_side // divisor)
    dynamic = {"images": {0: frames, 2: divisor * height, 3: divisor * width}}
    with torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(
            graph,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=dynamic,
            opset_version=settings.opset,
            optimize=settings.optimize,
            verbose=False,
        )
    program.model.metadata_props.update(
        {
            META_FORMAT: EXPORT_FORMAT,
            META_MODEL_DIGEST: model_digest,
            META_MODEL: model.config.name,
            "vis.settings": json.dumps(asdict(settings), sort_keys=True),
            "vis.size_divisibility": str(divisor),
            "vis.pixel_mean": json.dumps(list(model.config.input.pixel_mean)),
            "vis.pixel_std": json.dumps(list(model.config.input.pixel_std)),
            "vis.class_names": json.dumps(list(model.config.class_names)),
            "vis.torch_version": torch.__version__,
        }
    )
    size = _save(program, uri)
    seconds = time.perf_counter() - started
    logger.info("exported the detector to %s (%.1f MB) in %.0f s", uri, size / 1e6, seconds)
    return OnnxExport(uri=uri, size_bytes=size, seconds=seconds)


def _save(program: torch.onnx.ONNXProgram, uri: str) -> int:
    """Write the program as one self-contained file (weights inside) to a path or URI."""
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / "detector.onnx"
        program.save(local, external_data=False)
        data = local.read_bytes()
    with open_output(uri) as file:
        file.write(data)
    return len(data)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's chatter: a line per skipped constant fold, notes on
    torchvision ops the project never uses, deprecation notes from torch internals."""
    names = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._export", "torch.fx")
    loggers = [logging.getLogger(name) for name in names]
    levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for each, level in zip(loggers, levels, strict=True):
            each.setLevel(level)
