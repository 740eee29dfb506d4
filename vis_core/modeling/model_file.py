"""The project's model files: the whole config and the weights, in one torch file.

`{"format": "vis-model/1", "config": {...}, "model": state_dict, "metadata": {...},
"weights_sha256": ...}`, read with `torch.load(weights_only=True)` only, so opening a model
file runs no code. A file that is truncated, corrupt or altered (pickled objects, a config
or weights that do not fit, weights that differ from their digest) is a `ModelFileError`
naming it. Files saved before the digest load without that check.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from vis_core.modeling.config import config_from_dict, config_to_dict
from vis_core.modeling.torch_file import load_weights_only, weights_digest
from vis_core.modeling.vita_model import VitaModel
from vis_core.storage import open_fs, open_output

FORMAT = "vis-model/1"
# The model shipped in the package (see vis_core/weights/README.md).
DEFAULT_MODEL_FILE = Path(__file__).resolve().parents[1] / "weights" / "vita_small_synth.vis.pt"


class ModelFileError(ValueError):
    """The file is not a readable vis model file (the message names it and says why)."""


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
        "weights_sha256": weights_digest(state),
    }
    torch.save(payload, buffer)
    with open_output(uri) as file:
        file.write(buffer.getvalue())


def load_model(uri: str | None = None, device: str | torch.device = "cpu") -> VitaModel:
    """Rebuild the model saved at `uri` (default: the shipped model), in eval mode."""
    return model_from_bytes(read_model_bytes(uri), uri or "the shipped model", device)


def read_model_metadata(uri: str | None = None) -> dict[str, Any]:
    """The metadata saved with the model file at `uri` (default: the shipped model)."""
    payload = load_weights_only(read_model_bytes(uri), uri or "the shipped model", ModelFileError)
    metadata = payload.get("metadata") if isinstance(payload, dict) else None
    return dict(metadata) if isinstance(metadata, dict) else {}


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
    payload = load_weights_only(data, name, ModelFileError, map_location=device)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{name} is not a {FORMAT} model file")
    state = payload.get("model")
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ModelFileError(f"{name}: its weights are not a state dict of tensors")
    expected = payload.get("weights_sha256")
    if expected is not None and weights_digest(state) != expected:
        raise ModelFileError(
            f"{name}: its weights differ from the digest saved with them (corrupt or altered)"
        )
    try:
        model = VitaModel(config_from_dict(payload["config"]))
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        # A config or weights edited after saving: name the file rather than a key.
        raise ModelFileError(
            f"{name}: its config or weights do not make a model: "
            f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
        ) from None
    return model.to(device).eval()
