"""Official (detectron2-style) checkpoints to the project's modules, and back.

The project's modules use the official parameter names below each prefix, so converting
is a prefix mapping (see `PREFIXES`), one legacy rename (`static_query` -> `query_feat`),
and dropping the criterions' `empty_weight` buffers, which belong to the losses.

Accepted files: a `.pth`/`.pt` with a `model` key or a bare state dict (read with
`torch.load(weights_only=True)`), and a detectron2 `.pkl` of numpy arrays (read with an
unpickler that admits only numpy arrays and plain containers).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from vis_core.modeling.torch_file import load_weights_only

# (official prefix, project prefix), one per module of the whole model.
PREFIXES: tuple[tuple[str, str], ...] = (
    ("backbone.", "detector.backbone."),
    ("sem_seg_head.pixel_decoder.", "detector.pixel_decoder."),
    ("sem_seg_head.predictor.", "detector.frame_decoder."),
    ("vita_module.", "vita."),
)
PARTS = {"backbone": 0, "pixel_decoder": 1, "frame_decoder": 2, "vita": 3}
# Official keys that have no place in the model: loss buffers.
IGNORED_KEYS = ("criterion.empty_weight", "vita_criterion.empty_weight")
LEGACY_RENAMES = (("static_query.", "query_feat."),)


class CheckpointError(ValueError):
    """The checkpoint cannot be read or does not fit the model."""


@dataclass(frozen=True)
class LoadReport:
    """What a load left out: model keys with no value, checkpoint keys with no place."""

    missing: tuple[str, ...]
    unexpected: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return not self.missing and not self.unexpected

    def summary(self) -> str:
        lines = [f"missing keys: {len(self.missing)}, unexpected keys: {len(self.unexpected)}"]
        lines += [f"  missing    {key}" for key in self.missing]
        lines += [f"  unexpected {key}" for key in self.unexpected]
        return "\n".join(lines)


def strip_prefix(state_dict: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries under `prefix`, with the prefix removed."""
    return {
        key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)
    }


def read_official(path: str | Path) -> dict[str, Tensor]:
    """Read an official checkpoint file into a flat `{official key: tensor}` dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".pkl":
        with path.open("rb") as file:
            try:
                data = _NumpyUnpickler(file).load()
            except (pickle.UnpicklingError, EOFError, AttributeError) as error:
                raise CheckpointError(f"{path}: not a readable .pkl checkpoint ({error})") from None
    else:
        data = load_weights_only(path, str(path), CheckpointError)
    state = data.get("model", data) if isinstance(data, Mapping) else None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: expected a state dict or a dict with a 'model' key")
    tensors = {}
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if isinstance(value, Tensor):
            tensors[_strip_module(key)] = value
    return tensors


def official_to_project(
    official: Mapping[str, Tensor], part: str | None = None
) -> tuple[dict[str, Tensor], tuple[str, ...]]:
    """Map official keys to the project's: the whole model, or one `part` (see `PARTS`).

    For a part, keys come out relative to that module and the other parts' keys are left
    out, so a whole checkpoint loads into one module. Returns the mapped state dict and
    the official keys that belong to no known module (loss buffers excluded).
    """
    wanted = None if part is None else PREFIXES[_part_index(part)]
    mapped: dict[str, Tensor] = {}
    unplaced: list[str] = []
    for key, value in official.items():
        if key in IGNORED_KEYS:
            continue
        prefixes = _prefixes_of(key)
        if prefixes is None:
            unplaced.append(key)
        elif wanted is None:
            mapped[prefixes[1] + _rename_legacy(key[len(prefixes[0]) :])] = value
        elif prefixes == wanted:
            mapped[_rename_legacy(key[len(prefixes[0]) :])] = value
    return mapped, tuple(unplaced)


def project_to_official(project: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The inverse mapping, for a whole-model state dict (e.g. to share a checkpoint)."""
    official = {}
    for key, value in project.items():
        for official_prefix, project_prefix in PREFIXES:
            if key.startswith(project_prefix):
                official[official_prefix + key[len(project_prefix) :]] = value
                break
        else:
            raise CheckpointError(f"project key {key!r} is outside every known module")
    return official


def load_official(
    module: nn.Module, official: Mapping[str, Tensor], part: str | None = None
) -> LoadReport:
    """Load an official state dict into the whole model, or into one part's module.

    Shape mismatches (e.g. an 81-class COCO head into a 40-class model) are skipped and
    reported as missing, as detectron2's checkpointer does. Raises CheckpointError when
    nothing at all fits.
    """
    mapped, unplaced = official_to_project(official, part)
    own = module.state_dict()
    fitting = {k: v for k, v in mapped.items() if k in own and own[k].shape == v.shape}
    misfits = tuple(
        f"{k} (checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)})"
        for k, v in mapped.items()
        if k in own and own[k].shape != v.shape
    )
    if own and not fitting:
        raise CheckpointError("no checkpoint tensor fits the model: wrong part or preset?")
    result = module.load_state_dict(fitting, strict=False)
    missing = tuple(sorted(result.missing_keys)) + misfits
    unexpected = tuple(sorted(k for k in mapped if k not in own)) + unplaced
    return LoadReport(missing=missing, unexpected=unexpected)


def _prefixes_of(key: str) -> tuple[str, str] | None:
    for official_prefix, project_prefix in PREFIXES:
        if key.startswith(official_prefix):
            return official_prefix, project_prefix
    return None


def _rename_legacy(relative_key: str) -> str:
    for old, new in LEGACY_RENAMES:
        if relative_key.startswith(old):
            return new + relative_key[len(old) :]
    return relative_key


def _part_index(part: str) -> int:
    try:
        return PARTS[part]
    except KeyError:
        raise CheckpointError(f"unknown part {part!r}; choose from {sorted(PARTS)}") from None


def _strip_module(key: str) -> str:
    """DistributedDataParallel's `module.` prefix, which fvcore strips too."""
    return key[len("module.") :] if key.startswith("module.") else key


class _NumpyUnpickler(pickle.Unpickler):
    """Admits only what a detectron2 `.pkl` of weights holds: numpy arrays in containers."""

    _ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a checkpoint")
        return super().find_class(module, name)
