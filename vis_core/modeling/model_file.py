"""The project's model files: the whole config and the weights, in one torch file.

`{"format": "vis-model/1", "config": {...}, "model": state_dict, "metadata": {...}}`,
readable with `torch.load(weights_only=True)`, so opening a model file runs no code.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from vis_core.modeling.config import config_from_dict, config_to_dict
from vis_core.modeling.vita_model import VitaModel
from vis_core.storage import open_fs, open_output

FORMAT = "vis-model/1"
# The model shipped in the package (see vis_core/weights/README.md).
DEFAULT_MODEL_FILE = Path(__file__).resolve().parents[1] / "weights" / "vita_small_synth.vis.pt"


class ModelFileError(ValueError):
    """The file is not a readable vis model file."""


def save_model(
    uri: str,
    model: VitaModel,
    metadata: dict[str, Any] | None = None,
    weights_dtype: torch.dtype | None = None,
) -> None:
    """Write `model` (config and weights) to a local path or fsspec URI.

    weights_dtype: store floating-point tensors in this type (e.g. float16 halves a
    shipped file); loading casts them back to the model's type.
    """
    buffer = io.BytesIO()
    state = model.state_dict()
    if weights_dtype is not None:
        state = {k: v.to(weights_dtype) if v.is_floating_point() else v for k, v in state.items()}
    payload = {
        "format": FORMAT,
        "config": config_to_dict(model.config),
        "model": state,
        "metadata": metadata or {},
    }
    torch.save(payload, buffer)
    with open_output(uri) as file:
        file.write(buffer.getvalue())


def load_model(uri: str | None = None, device: str | torch.device = "cpu") -> VitaModel:
    """Rebuild the model saved at `uri` (default: the shipped model), in eval mode."""
    return model_from_bytes(read_model_bytes(uri), uri or "the shipped model", device)


def read_model_bytes(uri: str | None = None) -> bytes:
    """The bytes of the model file at `uri` (default: the shipped model)."""
    if uri is None:
        if not DEFAULT_MODEL_FILE.is_file():
            raise ModelFileError(f"the shipped model is missing: {DEFAULT_MODEL_FILE}")
        uri = str(DEFAULT_MODEL_FILE)
    fs, path = open_fs(uri)
    if not fs.exists(path):
        raise ModelFileError(f"model file not found: {uri}")
    with fs.open(path, "rb") as file:
        return file.read()


def model_from_bytes(
    data: bytes, name: str = "model file", device: str | torch.device = "cpu"
) -> VitaModel:
    """Rebuild a model from the bytes of a model file (`name` is for error messages)."""
    payload = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{name} is not a {FORMAT} model file")
    model = VitaModel(config_from_dict(payload["config"]))
    model.load_state_dict(payload["model"])
    return model.to(device).eval()
