"""A damaged last checkpoint (a truncated state file) falls back to the newest earlier
checkpoint of the run that loads; none loading is a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from workflows.train_config import STATE_FILE, TrainState, TrainStateError
from workflows.train_worker import restore_state


def write_state(folder: Path, step: int) -> None:
    folder.mkdir(parents=True)
    weights = {"weight": torch.full((3,), float(step))}
    TrainState(step, "run", weights, {"state": {}}, {"last_epoch": step}).save(folder)


def truncate(folder: Path) -> None:
    data = (folder / STATE_FILE).read_bytes()
    (folder / STATE_FILE).write_bytes(data[: len(data) // 2])


def test_a_truncated_last_checkpoint_falls_back_to_the_one_before(tmp_path: Path) -> None:
    from ray.train import Checkpoint

    run = tmp_path / "run"
    names = [f"checkpoint_2026-12-04_10-0{minute}-00.000000" for minute in range(3)]
    for step, name in zip((2, 4, 6), names, strict=True):
        write_state(run / name, step)
    (run / "checkpoint_tmp_unrelated").mkdir()  # not a checkpoint older than the last
    latest = Checkpoint.from_directory(str(run / names[-1]))

    assert restore_state(latest).step == 6
    truncate(run / names[-1])
    state = restore_state(latest)
    assert state.step == 4 and torch.equal(state.model["weight"], torch.full((3,), 4.0))
    truncate(run / names[1])
    assert restore_state(latest).step == 2
    truncate(run / names[0])
    with pytest.raises(TrainStateError, match="no checkpoint of the run loads"):
        restore_state(latest)
