"""Which runtime runs the frame detector at inference: PyTorch (eager), PyTorch compiled by
`torch.compile` (`vis_core.inference.compiled_detector`) or ONNX Runtime.

`DetectorBackend` travels from the command line to wherever the model is built (the
`vis segment` process, or each corpus job worker); VITA and the masks run in PyTorch
either way. With ONNX Runtime the graph comes from `onnx_file` or, when it is None, from
the cache of exports (`onnx_cache.cached_detector_onnx`, exported on first use).
"""

from __future__ import annotations

from dataclasses import dataclass

from vis_core.export.onnx_cache import cached_detector_onnx, model_digest
from vis_core.export.onnx_detector import use_onnx_detector
from vis_core.inference.compiled_detector import compile_detector
from vis_core.modeling.vita_model import VitaModel
from vis_core.storage import open_fs

BACKENDS = ("torch", "compile", "onnx")


@dataclass(frozen=True)
class DetectorBackend:
    """kind: "torch", "compile" or "onnx"; onnx_file: an export of the model (path or fsspec URI)
    for "onnx", None for the cached export."""

    kind: str = "torch"
    onnx_file: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.kind!r}")
        if self.onnx_file is not None and self.kind != "onnx":
            raise ValueError("an ONNX file is only read by the onnx backend")


def onnx_detector_bytes(
    model: VitaModel, backend: DetectorBackend, digest: str | None = None
) -> bytes:
    """The ONNX graph the onnx backend runs for `model` (its PyTorch detector still in
    place): `backend.onnx_file`, or the cached export, exported first when missing.
    digest: `model_digest(model)` when already known."""
    if backend.onnx_file is None:
        return cached_detector_onnx(model, digest=digest).read_bytes()
    fs, path = open_fs(backend.onnx_file)
    if not fs.exists(path):
        raise FileNotFoundError(f"ONNX file not found: {backend.onnx_file}")
    with fs.open(path, "rb") as file:
        return file.read()


def apply_detector_backend(
    model: VitaModel, backend: DetectorBackend, onnx_bytes: bytes | None = None
) -> VitaModel:
    """`model` with its detector run by `backend` (in place). For "onnx", `onnx_bytes` is
    the graph when the caller already has it (`onnx_detector_bytes`); the graph must be an
    export of this very model (`OnnxModelMismatchError` otherwise)."""
    if backend.kind == "torch":
        return model
    if backend.kind == "compile":
        return compile_detector(model)
    digest = model_digest(model)
    if onnx_bytes is None:
        onnx_bytes = onnx_detector_bytes(model, backend, digest)
    return use_onnx_detector(model, onnx_bytes, model_digest=digest)
