"""Which model a job runs: the shipped default, a vis model file, or an MLflow model."""

from __future__ import annotations

import torch

from vis_core.modeling.model_file import load_model
from vis_core.modeling.vita_model import VitaModel


def load_model_spec(
    spec: str | None, device: str | torch.device = "cpu", tracking_uri: str | None = None
) -> VitaModel:
    """`None`: the shipped model; `models:/NAME/VERSION` or `models:/NAME@alias`: a
    registered MLflow version; anything else: a vis model file path or fsspec URI."""
    if spec is not None and spec.startswith("models:/"):
        from workflows.tracking import resolve_model_uri

        spec = str(resolve_model_uri(spec, tracking_uri=tracking_uri))
    return load_model(spec, device=device)
