"""Training the HF head with the training workflow's pieces (no Ray): a trained model
without the head gains one, which trains alone on the frozen detector; the model file
then carries it to `vis segment --method hitf`, and `vis train --method hitf` maps onto
the job with the method's 5-frame clips."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest
import torch

from jobs import train as train_job
from jobs.cli import main
from vis_core.data.augment import AugmentConfig
from vis_core.methods import get_method
from vis_core.modeling.config import ModelConfig
from vis_core.modeling.model_file import load_model, save_model
from vis_core.modeling.presets import get_preset
from vis_core.modeling.vita_model import VitaModel
from vis_core.storage import open_fs
from vis_core.synth.splits import preset
from vis_core.synth.writer import generate_split
from vis_core.training.batch import ClipBatch
from vis_core.training.optim import build_optimizer
from vis_core.training.step import train_step
from workflows.train_config import TrainJobConfig
from workflows.train_worker import build_clip_stream, build_criterion, build_model, validate

TINY = {"width": 64, "height": 48, "frames": (4, 6)}


def small_config() -> ModelConfig:
    """The small preset at the tiny videos' size (inference at 48 pixels: fast)."""
    config = get_preset("vita_small_synth")
    return dataclasses.replace(config, input=dataclasses.replace(config.input, min_size_test=48))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """A tiny train and val split, and a model file without an HF head."""
    root = tmp_path_factory.mktemp("hitf")
    train = generate_split(str(root / "train"), preset("train").replace(**TINY), 2, seed=0)
    val = generate_split(str(root / "val"), preset("val").replace(**TINY), 2, seed=1)
    torch.manual_seed(0)
    model_file = str(root / "vita.vis.pt")
    save_model(model_file, VitaModel(small_config()))
    return train.annotations_uri, val.annotations_uri, model_file


def test_the_head_trains_alone_and_its_model_file_segments(data, tmp_path, capsys) -> None:
    train_uri, val_uri, vita_file = data
    job = TrainJobConfig(
        train_uri=train_uri,
        num_frames=get_method("hitf").clip_frames,
        augment=AugmentConfig(min_sizes=(48,), max_size=64),
        freeze_detector=True,
        method="hitf",
        init_model=vita_file,
        lr=1e-3,
    )
    model_config = get_method("hitf").with_head(small_config())
    model = build_model(job, model_config)
    initial = load_model(vita_file)
    assert initial.hitf is None and model.hitf is not None
    before = {name: value.clone() for name, value in model.state_dict().items()}
    for name, value in initial.state_dict().items():
        assert torch.equal(before[name], value), name  # detector and VITA from the file
    criterion = build_criterion(model_config, job.freeze_detector, job.method)
    optimizer = build_optimizer(model, job.optim_config())
    stream = torch.utils.data.DataLoader(
        build_clip_stream(job, model_config), batch_size=1, collate_fn=ClipBatch.from_clips
    )
    batches = iter(stream)
    for _ in range(2):
        batch = next(batches)
        assert batch.frames[0].shape[0] == 5
        result = train_step(model, criterion, optimizer, batch)
        assert set(result.terms) == {
            "loss_hitf_positive",
            "loss_hitf_negative",
            "loss_hitf_mask_id",
        }
    changed = {n for n, v in model.state_dict().items() if not torch.equal(v, before[n])}
    assert changed and all(name.startswith("hitf.") for name in changed)

    model_file = str(tmp_path / "hitf.vis.pt")
    save_model(model_file, model)
    metrics = validate(load_model(model_file), val_uri, torch.device("cpu"), method="hitf")
    assert -1.0 <= metrics.ap <= 1.0

    results = tmp_path / "results.json"
    args = ["segment", "--data", val_uri, "--out", str(results), "--method", "hitf"]
    assert main([*args, "--model", model_file]) == 0
    fs, path = open_fs(val_uri)
    lengths = {v["id"]: v["length"] for v in json.loads(fs.cat_file(path))["videos"]}
    entries = json.loads(results.read_text())
    assert all(len(entry["segmentations"]) == lengths[entry["video_id"]] for entry in entries)
    assert "hitf" in capsys.readouterr().out
    # A model file without the head: a clear error, exit code 2.
    assert main([*args, "--model", vita_file]) == 2
    assert "has no HF head" in capsys.readouterr().err


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vis")
    train_job.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["train", *argv])


def test_train_cli_method_option(data, monkeypatch) -> None:
    import workflows.train

    captured = []
    monkeypatch.setattr(workflows.train, "run_training", lambda config: captured.append(config))
    monkeypatch.setattr(train_job, "format_summary", lambda result: "")
    args = _parse(["--train", data[0], "--method", "hitf", "--freeze-detector"])
    assert args.func(args) == 0
    job = captured[-1]
    assert job.method == "hitf" and job.num_frames == 5 and job.freeze_detector
    args = _parse(["--train", data[0], "--method", "hitf", "--frames", "3"])
    assert args.func(args) == 0 and captured[-1].num_frames == 3
