"""Training the QueryTrack head with the training workflow's pieces (no Ray): a trained
model without the head gains one, which trains alone on the frozen detector in 2-frame
clips; the model file then carries it to `vis segment --method querytrack`, and the
`vis train --method` options map onto the job."""

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
from vis_core.modeling.model_file import DEFAULT_MODEL_FILE, load_model, save_model
from vis_core.modeling.presets import get_preset
from vis_core.modeling.vita_model import VitaModel
from vis_core.storage import open_fs
from vis_core.synth.splits import preset
from vis_core.synth.writer import generate_split
from vis_core.training.batch import ClipBatch
from vis_core.training.optim import build_optimizer
from vis_core.training.step import train_step
from workflows.train import resolve_config
from workflows.train_config import TrainConfigError, TrainJobConfig
from workflows.train_worker import build_clip_stream, build_criterion, build_model, validate

TINY = {"width": 64, "height": 48, "frames": (4, 6)}


def small_config() -> ModelConfig:
    """The small preset at the tiny videos' size (inference at 48 pixels: fast)."""
    config = get_preset("vita_small_synth")
    return dataclasses.replace(config, input=dataclasses.replace(config.input, min_size_test=48))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """A tiny train and val split, and a model file without a QueryTrack head."""
    root = tmp_path_factory.mktemp("querytrack")
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
        num_frames=2,
        augment=AugmentConfig(min_sizes=(48,), max_size=64),
        freeze_detector=True,
        method="querytrack",
        init_model=vita_file,
        lr=1e-3,
    )
    model_config = get_method("querytrack").with_head(small_config())
    model = build_model(job, model_config)
    initial = load_model(vita_file)
    assert initial.querytrack is None and model.querytrack is not None
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
        result = train_step(model, criterion, optimizer, next(batches))
        assert set(result.terms) == {"loss_track"}
    changed = {n for n, v in model.state_dict().items() if not torch.equal(v, before[n])}
    assert changed and all(name.startswith("querytrack.") for name in changed)

    model_file = str(tmp_path / "querytrack.vis.pt")
    save_model(model_file, model)
    metrics = validate(load_model(model_file), val_uri, torch.device("cpu"), method="querytrack")
    assert -1.0 <= metrics.ap <= 1.0

    results = tmp_path / "results.json"
    args = ["segment", "--data", val_uri, "--out", str(results), "--method", "querytrack"]
    assert main([*args, "--model", model_file]) == 0
    fs, path = open_fs(val_uri)
    lengths = {v["id"]: v["length"] for v in json.loads(fs.cat_file(path))["videos"]}
    entries = json.loads(results.read_text())
    assert all(len(entry["segmentations"]) == lengths[entry["video_id"]] for entry in entries)
    assert "querytrack" in capsys.readouterr().out
    # A model file without the head: a clear error, exit code 2.
    assert main([*args, "--model", vita_file]) == 2
    assert "has no QueryTrack head" in capsys.readouterr().err


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vis")
    train_job.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["train", *argv])


def test_train_cli_method_option(data, monkeypatch) -> None:
    import workflows.train

    captured = []
    monkeypatch.setattr(workflows.train, "run_training", lambda config: captured.append(config))
    monkeypatch.setattr(train_job, "format_summary", lambda result: "")
    train_uri = data[0]
    args = _parse(["--train", train_uri, "--method", "querytrack", "--freeze-detector"])
    assert args.func(args) == 0
    assert captured[-1].method == "querytrack" and captured[-1].num_frames == 2
    args = _parse(["--train", train_uri, "--method", "querytrack", "--frames", "3"])
    assert args.func(args) == 0 and captured[-1].num_frames == 3
    args = _parse(["--train", train_uri])
    assert args.func(args) == 0 and captured[-1].method == "vita"
    assert captured[-1].num_frames == 3  # the small recipe's
    assert captured[-1].sampling_range == 10
    args = _parse(["--train", train_uri, "--frames", "12", "--sampling-range", "40"])
    assert args.func(args) == 0
    assert (captured[-1].num_frames, captured[-1].sampling_range) == (12, 40)
    with pytest.raises(SystemExit):
        _parse(["--train", train_uri, "--method", "per-frame"])  # nothing to train
    with pytest.raises(TrainConfigError, match="method must be one of"):
        resolve_config(TrainJobConfig(train_uri=train_uri, method="per-frame"))


@pytest.mark.skipif(not DEFAULT_MODEL_FILE.is_file(), reason="no shipped model")
def test_querytrack_on_the_shipped_model_segments_or_says_how_to_train_the_head() -> None:
    """With a head in the shipped file, `--method querytrack` needs no --model; without one
    (a new detector ships before its head is retrained) it is a clear error."""
    from vis_core.methods import build_segmenter
    from vis_core.synth.generate import synthesize_video

    model = load_model()
    if model.querytrack is None:
        with pytest.raises(ValueError, match="vis train --method querytrack"):
            build_segmenter("querytrack", model)
        return
    _, rendered = synthesize_video(preset("val").replace(**TINY), seed=0, index=0)
    instances = build_segmenter("querytrack", model).segment(list(rendered.frames[:3]))
    assert instances.num_frames == 3 and (instances.height, instances.width) == (48, 64)


def test_training_another_head_keeps_the_heads_the_initial_model_carries(data, tmp_path) -> None:
    from workflows.train import _with_initial_heads

    train, _, plain_file = data
    with_querytrack = get_method("querytrack").with_head(small_config())
    model_file = str(tmp_path / "qt.vis.pt")
    carrier = VitaModel(with_querytrack)
    torch.nn.init.constant_(carrier.querytrack.embed.layers[0].weight, 0.5)  # not a fresh init
    save_model(model_file, carrier)
    job = TrainJobConfig(train_uri=train, init_model=model_file, method="hitf")
    config = get_method("hitf").with_head(_with_initial_heads(job))
    assert config.querytrack == with_querytrack.querytrack and config.hitf is not None
    plain = _with_initial_heads(dataclasses.replace(job, init_model=plain_file))
    assert plain.querytrack is None
    built = build_model(dataclasses.replace(job, freeze_detector=True), config).state_dict()
    assert (built["querytrack.embed.layers.0.weight"] == 0.5).all()  # the carried head's
