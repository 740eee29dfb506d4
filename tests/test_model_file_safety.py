"""Model files, training states and checkpoints load weights only, and a truncated or
altered file is a typed error that names it."""

from __future__ import annotations

import ast
import io
import os
from pathlib import Path

import pytest
import torch

from vis_core.modeling.checkpoint import CheckpointError, read_official
from vis_core.modeling.model_file import (
    DEFAULT_MODEL_FILE,
    FORMAT,
    ModelFileError,
    load_model,
)
from workflows.train_config import TrainState, TrainStateError

REPO = Path(__file__).resolve().parents[1]


class RunsCode:
    """A pickled object whose loading would run a shell command (writes a marker file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def payload(path: str | Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def save(path: Path, data: dict) -> str:
    torch.save(data, path)
    return str(path)


def test_every_torch_load_of_the_project_is_weights_only():
    calls = []
    for folder in ("vis_core", "workflows", "jobs"):
        for source in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(source.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "torch"
                ):
                    safe = any(
                        k.arg == "weights_only" and getattr(k.value, "value", None) is True
                        for k in node.keywords
                    )
                    calls.append((f"{source.relative_to(REPO)}:{node.lineno}", safe))
    assert calls and all(safe for _, safe in calls), calls


def test_a_saved_model_records_its_weights_digest_and_loads(tiny_model):
    assert payload(tiny_model)["weights_sha256"]
    assert load_model(tiny_model).config.name


@pytest.mark.parametrize("size", [0, 100, "half"])
def test_a_truncated_model_file_names_the_file(tmp_path, size):
    data = DEFAULT_MODEL_FILE.read_bytes()
    cut = tmp_path / "cut.vis.pt"
    cut.write_bytes(data[: len(data) // 2 if size == "half" else size])
    with pytest.raises(ModelFileError, match=r"cut\.vis\.pt: not a readable torch file"):
        load_model(str(cut))


def test_text_is_not_a_model_file(tmp_path):
    text = tmp_path / "notes.vis.pt"
    text.write_text("not a model\n")
    with pytest.raises(ModelFileError, match=r"notes\.vis\.pt: not a readable torch file"):
        load_model(str(text))


def test_a_model_file_with_pickled_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    evil = save(tmp_path / "evil.vis.pt", {"format": FORMAT, "config": RunsCode(marker)})
    with pytest.raises(ModelFileError, match=r"evil\.vis\.pt: refused"):
        load_model(evil)
    assert not marker.exists()


def test_weights_altered_after_saving_are_caught(tmp_path, tiny_model):
    data = payload(tiny_model)
    key = next(k for k, v in data["model"].items() if v.is_floating_point())
    data["model"][key] = data["model"][key] + 1
    altered = save(tmp_path / "altered.vis.pt", data)
    with pytest.raises(ModelFileError, match=r"altered\.vis\.pt: its weights differ"):
        load_model(altered)


def test_a_config_or_weights_that_do_not_fit_name_the_file(tmp_path, tiny_model):
    data = payload(tiny_model)
    del data["config"]["vita"]
    broken = save(tmp_path / "config.vis.pt", data)
    with pytest.raises(ModelFileError, match=r"config\.vis\.pt: its config or weights"):
        load_model(broken)

    data = payload(tiny_model)
    data["model"].pop(next(iter(data["model"])))
    data.pop("weights_sha256")  # a file from before the digest: the shapes still count
    missing = save(tmp_path / "missing.vis.pt", data)
    with pytest.raises(ModelFileError, match=r"missing\.vis\.pt: its config or weights"):
        load_model(missing)

    data = payload(tiny_model)
    data["model"] = {"weights": "not tensors"}
    strings = save(tmp_path / "strings.vis.pt", data)
    with pytest.raises(ModelFileError, match=r"strings\.vis\.pt: its weights are not"):
        load_model(strings)


def test_a_training_state_loads_weights_only_and_names_a_bad_file(tmp_path):
    state = TrainState(3, "run", {"w": torch.ones(2)}, {"state": {}}, {"last_epoch": 3})
    state.save(tmp_path)
    assert TrainState.load(tmp_path).step == 3
    file = tmp_path / "train_state.pt"
    file.write_bytes(file.read_bytes()[:64])
    with pytest.raises(TrainStateError, match=r"train_state\.pt: not a readable torch file"):
        TrainState.load(tmp_path)
    marker = tmp_path / "ran"
    save(file, {"format": "vis-train-state/1", "step": RunsCode(marker)})
    with pytest.raises(TrainStateError, match=r"train_state\.pt: refused"):
        TrainState.load(tmp_path)
    assert not marker.exists()
    with pytest.raises(TrainStateError, match="no such file"):
        TrainState.load(tmp_path / "nowhere")


def test_an_official_checkpoint_that_is_truncated_names_the_file(tmp_path):
    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.ones(3)}}, buffer)
    cut = tmp_path / "model_final.pth"
    cut.write_bytes(buffer.getvalue()[:50])
    with pytest.raises(CheckpointError, match=r"model_final\.pth: not a readable torch file"):
        read_official(cut)
