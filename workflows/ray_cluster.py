"""Connecting to Ray: the cluster a job was given, or a local instance for this process."""

from __future__ import annotations

import os
from typing import Any


def ensure_ray(address: str | None = None, runtime_env: dict[str, Any] | None = None) -> None:
    """Initialise Ray unless it is: at `address` (or `RAY_ADDRESS`, as `ray job submit`
    sets it), else a new local instance without the dashboard (never another process's
    local instance, which `ray.init()` would join)."""
    import ray

    if ray.is_initialized():
        return
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, runtime_env=runtime_env)
    else:
        ray.init(address="local", include_dashboard=False, runtime_env=runtime_env)
