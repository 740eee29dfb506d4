"""The frame detector run by ONNX Runtime: a drop-in for `FrameDetector` at inference.

`OnnxFrameDetector` has the methods the segmenters and `FramePreparer` call on
`model.detector`: `preprocess` (the same code as the PyTorch detector's), `forward(images)
-> FrameDetections` and `mask_features(images)`. It holds no weights, only the session;
`use_onnx_detector(model, onnx)` puts it in place of `model.detector`, so `VideoSegmenter`
and `PerFrameSegmenter` run unchanged, with VITA and the mask heads still in PyTorch.

What it cannot give: the earlier decoder layers' predictions (`aux_outputs` is empty:
inference never reads them), more than the last layer's frame queries (eval mode's L = 1),
and mask-piloted training (the graph is inference only).

Dimension letters: N frames, Q frame queries, C channels, K classes, H x W the padded
input, h x w = H/4 x W/4.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from vis_core.export.onnx_export import (
    EXPORT_FORMAT,
    INPUT_NAME,
    META_FORMAT,
    META_MODEL_DIGEST,
    OUTPUT_NAMES,
)
from vis_core.modeling.config import InputConfig
from vis_core.modeling.frame_detector import FrameDetections, FrameDetector
from vis_core.modeling.mask_pilot import MaskPilot
from vis_core.modeling.vita_model import VitaModel


class OnnxModelMismatchError(ValueError):
    """The ONNX file is not an export of this model (or of no vis model at all)."""


class OnnxFrameDetector(nn.Module):
    """`FrameDetector`'s inference interface over an ONNX Runtime session.

    onnx_model: the exported graph (bytes or a local path); threads: ONNX Runtime's
    intra-op threads (default: torch's thread count, so a worker's CPU budget holds).
    Runs on the CPU provider, or CUDA where images are on a GPU and the installed ONNX
    Runtime has it; outputs come back on the images' device.
    """

    # The PyTorch detector's preprocessing, unchanged: it reads only the buffers below.
    preprocess = FrameDetector.preprocess

    def __init__(
        self, onnx_model: bytes | str | os.PathLike, input_config: InputConfig, threads: int = 0
    ):
        super().__init__()
        self.size_divisibility = input_config.size_divisibility
        mean = torch.tensor(input_config.pixel_mean).view(1, 3, 1, 1)
        std = torch.tensor(input_config.pixel_std).view(1, 3, 1, 1)
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)
        self._model = onnx_model if isinstance(onnx_model, bytes) else os.fspath(onnx_model)
        self._threads = threads or torch.get_num_threads()
        self._sessions: dict[str, object] = {}  # by provider, made on first use
        self.metadata = dict(self._session("cpu").get_modelmeta().custom_metadata_map)

    def train(self, mode: bool = True) -> OnnxFrameDetector:
        if mode:
            raise RuntimeError("the ONNX detector is for inference only; train the PyTorch one")
        return super().train(False)

    def forward(self, images: Tensor, pilot: MaskPilot | None = None) -> FrameDetections:
        """images: normalised, padded `[N, 3, H, W]` (see `preprocess`) -> the last layer's
        prediction, frame queries `[1, N, Q, C]` and clip mask features (no aux outputs)."""
        if pilot is not None:
            raise ValueError("mask piloting is training only; the ONNX detector cannot take it")
        logits, masks, queries, features = self._run(images, OUTPUT_NAMES)
        return FrameDetections(
            pred_logits=logits,
            pred_masks=masks,
            aux_outputs=(),
            frame_queries=queries,
            clip_mask_features=features,
        )

    def mask_features(self, images: Tensor) -> Tensor:
        """clip_mask_features `[N, C, h, w]`. ONNX Runtime runs the whole graph even for
        this one output, so unlike the PyTorch detector's this costs a full forward."""
        (features,) = self._run(images, ("clip_mask_features",))
        return features

    def _run(self, images: Tensor, outputs: tuple[str, ...]) -> list[Tensor]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W], got {tuple(images.shape)}")
        height, width = images.shape[-2:]
        if height % self.size_divisibility or width % self.size_divisibility:
            raise ValueError(
                f"images of {height}x{width} are not padded to a multiple of "
                f"{self.size_divisibility} (see preprocess)"
            )
        session = self._session(images.device.type)
        array = images.detach().float().cpu().contiguous().numpy()
        results = session.run(list(outputs), {INPUT_NAME: array})
        return [torch.from_numpy(result).to(images.device) for result in results]

    def _session(self, device_type: str):
        """The session for images on `device_type` (CUDA provider where it exists)."""
        import onnxruntime

        provider = "CPUExecutionProvider"
        cuda = "CUDAExecutionProvider"
        if device_type == "cuda" and cuda in onnxruntime.get_available_providers():
            provider = cuda
        if provider not in self._sessions:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = self._threads
            options.inter_op_num_threads = 1
            self._sessions[provider] = onnxruntime.InferenceSession(
                self._model, options, providers=[provider]
            )
        return self._sessions[provider]


def use_onnx_detector(
    model: VitaModel, onnx_model: bytes | str | os.PathLike, model_digest: str | None = None
) -> VitaModel:
    """Put an `OnnxFrameDetector` in place of `model.detector` (in place; returns `model`).

    When `model_digest` is given, the file must be a vis export of that model (its
    `vis.model_digest` metadata), else `OnnxModelMismatchError`.
    """
    try:
        detector = OnnxFrameDetector(onnx_model, model.config.input)
    except Exception as error:  # ONNX Runtime raises bare Exception subclasses (InvalidProtobuf)
        raise OnnxModelMismatchError(f"not a readable ONNX file: {error}") from None
    if detector.metadata.get(META_FORMAT) != EXPORT_FORMAT:
        raise OnnxModelMismatchError(
            f"not a vis detector export ({EXPORT_FORMAT}); write one with vis export-model"
        )
    exported_from = detector.metadata.get(META_MODEL_DIGEST)
    if model_digest is not None and exported_from != model_digest:
        raise OnnxModelMismatchError(
            f"the ONNX file was exported from another model (digest {exported_from}, this "
            f"model's is {model_digest}); export this model with vis export-model"
        )
    model.detector = detector
    return model.eval()
