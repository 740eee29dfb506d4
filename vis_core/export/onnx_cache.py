"""Exports on first use: the detector's ONNX graph cached per model and export settings.

The cache lives in the per-user cache folder (`vis_core.paths.cache_dir()/onnx`), one file
per key. The key is a digest of what decides the graph: the model (its config and
weights, `model_digest`), the export settings, the export format and the torch version
(another exporter may write another graph). A file is written under a temporary name and
renamed, so processes exporting the same key at once never read a partial file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from vis_core.export.onnx_export import EXPORT_FORMAT, OnnxExportSettings, export_detector_onnx
from vis_core.modeling.config import config_to_dict
from vis_core.modeling.vita_model import VitaModel
from vis_core.paths import cache_dir

logger = logging.getLogger(__name__)


def model_digest(model: VitaModel) -> str:
    """A digest of the model's config and weights (in float32, as a model file loads them,
    so a float16 file and its loaded model agree): 16 hex digits."""
    digest = hashlib.sha256(json.dumps(config_to_dict(model.config), sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        value = tensor.detach().cpu()
        value = value.float() if value.is_floating_point() else value
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def export_cache_key(digest: str, settings: OnnxExportSettings) -> str:
    """The cache key of the export of the model with `digest` under `settings`."""
    parts = {
        "format": EXPORT_FORMAT,
        "model": digest,
        "settings": asdict(settings),
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def cached_detector_onnx(
    model: VitaModel,
    settings: OnnxExportSettings | None = None,
    root: Path | None = None,
    digest: str | None = None,
) -> Path:
    """The cached ONNX export of `model.detector`, exported first when missing (about a
    minute for the small preset on a CPU). root: the cache folder (default
    `cache_dir()/onnx`); digest: `model_digest(model)` when already known."""
    settings = settings or OnnxExportSettings()
    digest = digest or model_digest(model)
    folder = Path(root) if root is not None else cache_dir() / "onnx"
    path = folder / f"{model.config.name}-{export_cache_key(digest, settings)}.onnx"
    if path.is_file():
        logger.info("using the cached ONNX export %s", path)
        return path
    folder.mkdir(parents=True, exist_ok=True)
    logger.info("exporting the detector to ONNX (first use of this model): %s", path)
    handle, temporary = tempfile.mkstemp(dir=folder, suffix=".onnx.part")
    os.close(handle)
    try:
        export_detector_onnx(model, temporary, settings, model_digest=digest)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path
