"""Reading torch files as weights only: opening one runs no code, and a file that cannot
be read (truncated, corrupt, or holding pickled objects other than tensors and plain
containers) is a typed error that names it.

Model files, training states and official checkpoints all load through here, so no
`torch.load` of the project ever unpickles arbitrary objects.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

_READ_ERRORS = (RuntimeError, EOFError, ValueError, KeyError, IndexError, zipfile.BadZipFile)


def load_weights_only(
    source: bytes | str | Path,
    name: str,
    error: type[Exception],
    map_location: str | torch.device = "cpu",
) -> Any:
    """`torch.load(source, weights_only=True)`; a failure raises `error` naming `name`."""
    if isinstance(source, (str, Path)) and not Path(source).is_file():
        raise error(f"{name}: no such file")
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        return torch.load(stream, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as failure:
        reason = _unpickler_reason(failure)
        if "GLOBAL" in reason:  # a class or function to import: what pickled code needs
            raise error(
                f"{name}: refused: it holds pickled objects other than tensors and plain "
                f"containers, whose loading could run code (altered, or not a weights "
                f"file): {reason}"
            ) from None
        raise error(f"{name}: not a readable torch file (truncated or corrupt): {reason}") from None
    except _READ_ERRORS as failure:
        raise error(
            f"{name}: not a readable torch file (truncated or corrupt): "
            f"{type(failure).__name__}: {_first_line(failure)}"
        ) from None


def weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and values, in key order: a
    model file records it, so weights changed after saving are caught on loading."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _unpickler_reason(error: BaseException) -> str:
    """The weights-only unpickler's reason, without torch's advice around it (which
    suggests `weights_only=False`: never for a file that failed this check)."""
    advice = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [line.strip() for line in str(error).splitlines()]
    reasons = [line for line in lines if line and not line.startswith(advice)]
    return reasons[0][:300] if reasons else "rejected by the weights-only unpickler"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else "(no message)"
