"""Per-user folders for what the tools write: never inside the repository.

`VIS_HOME` overrides the root; otherwise the XDG data and cache folders are used.
"""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """Where lasting outputs go (MLflow store, demo corpus, trained models): created on use."""
    root = os.environ.get("VIS_HOME") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share", "vis"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Where regenerable data goes (generated benchmark splits): created on use."""
    root = os.environ.get("VIS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "vis"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
