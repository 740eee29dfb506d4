"""The project's model files: the whole config and the weights, in one torch file.

`{"format": "vis-model/1", "config": {...}, "model": state_dict, "metadata": {...}}`,
readable with `torch.load(weights_only=True)`, so opening a model file runs no code.
"""

from __future__ import annotations

import io
from typing import Any

import torch

from vis_core.modeling.config import config_from_dict, config_to_dict
from vis_core.modeling.vita_model import VitaModel
from vis_core.storage import open_fs

FORMAT = "vis-model/1"


class ModelFileError(ValueError):
    """The file is not a readable vis model file."""


def save_model(uri: str, model: VitaModel, metadata: dict[str, Any] | None = None) -> None:
    """Write `model` (config and weights) to a local path or fsspec URI."""
    buffer = io.BytesIO()
    payload = {
        "format": FORMAT,
        "config": config_to_dict(model.config),
        "model": model.state_dict(),
        "metadata": metadata or {},
    }
    torch.save(payload, buffer)
    fs, path = open_fs(uri)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "wb") as file:
        file.write(buffer.getvalue())


def load_model(uri: str, device: str | torch.device = "cpu") -> VitaModel:
    """Rebuild the model saved at `uri`, in eval mode."""
    fs, path = open_fs(uri)
    if not fs.exists(path):
        raise ModelFileError(f"model file not found: {uri}")
    with fs.open(path, "rb") as file:
        payload = torch.load(io.BytesIO(file.read()), map_location=device, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{uri} is not a {FORMAT} model file")
    model = VitaModel(config_from_dict(payload["config"]))
    model.load_state_dict(payload["model"])
    return model.to(device).eval()
