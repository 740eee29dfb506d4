"""`vis register-model`: a model file trained elsewhere becomes a registered MLflow
version that jobs load by name, with its config, metadata and metrics on its run."""

from __future__ import annotations

import json

import torch
from mlflow import MlflowClient

from jobs.cli import main
from vis_core.modeling.model_file import load_model, save_model
from vis_core.modeling.presets import get_preset
from vis_core.modeling.vita_model import VitaModel
from workflows.model_source import load_model_spec


def test_a_file_is_registered_with_its_metrics_and_loads_by_alias(tmp_path, capsys) -> None:
    torch.manual_seed(0)
    model_file = tmp_path / "trained.vis.pt"
    save_model(str(model_file), VitaModel(get_preset("vita_small_synth")), {"training": "2 runs"})
    metrics_file = tmp_path / "m.json"
    metrics_file.write_text(json.dumps({"AP": 0.25, "AP50": 0.5, "per_category": {"1": 0.1}}))
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    argv = ["register-model", "--model", str(model_file), "--name", "small", "--alias", "shipped"]
    argv += ["--metrics", f"val={metrics_file}", "--tracking-uri", tracking]

    assert main(argv) == 0
    assert "models:/small/1 (models:/small@shipped) with 2 metrics" in capsys.readouterr().out
    registered = load_model_spec("models:/small@shipped", tracking_uri=tracking)
    expected = load_model(str(model_file)).state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in registered.state_dict().items())
    client = MlflowClient(tracking, registry_uri=tracking)
    version = client.get_model_version_by_alias("small", "shipped")
    run = client.get_run(version.run_id)
    assert run.data.metrics == {"val/AP": 0.25, "val/AP50": 0.5}
    assert run.data.params["metadata.training"] == "2 runs"
    assert run.data.params["config.name"] == "vita_small_synth"
    assert run.info.status == "FINISHED"
    assert main(argv) == 0  # registering again adds a version
    assert str(client.get_model_version_by_alias("small", "shipped").version) == "2"


def test_bad_inputs_are_refused_before_anything_is_recorded(tmp_path, capsys) -> None:
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    base = ["register-model", "--name", "m", "--tracking-uri", tracking]
    assert main([*base, "--metrics", "val"]) == 2
    assert "SPLIT=FILE" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{")
    assert main([*base, "--metrics", f"val={tmp_path / 'bad.json'}"]) == 2
    assert "not a metrics JSON file" in capsys.readouterr().err
    assert main([*base, "--model", str(tmp_path / "missing.vis.pt")]) == 2
    assert "model file not found" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()
