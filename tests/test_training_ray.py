"""Training workflow: Ray Train on 2 CPU workers with MLflow tracking and resume; the
frozen-detector mode; the `vis train` command; the MLflow tracking module."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from jobs import train as train_job
from vis_core.data.augment import AugmentConfig
from vis_core.modeling.model_file import load_model
from vis_core.modeling.presets import get_preset
from vis_core.synth.splits import preset
from vis_core.synth.writer import generate_split
from vis_core.training.batch import ClipBatch
from vis_core.training.optim import build_optimizer
from vis_core.training.step import train_step
from workflows.tracking import (
    TrackingConfig,
    TrackingError,
    TrainingRun,
    flatten_params,
    resolve_model_uri,
)
from workflows.train import run_training
from workflows.train_config import TrainJobConfig, TrainState
from workflows.train_worker import build_clip_stream, build_criterion, build_model

TINY_AUGMENT = AugmentConfig(min_sizes=(48,), max_size=64)


@dataclass(frozen=True)
class Splits:
    train: str
    coco: str
    val: str


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> Splits:
    root = tmp_path_factory.mktemp("splits")
    tiny = {"width": 64, "height": 48, "frames": (4, 6)}
    train = generate_split(
        str(root / "train"), preset("train").replace(**tiny), num_videos=3, seed=0, coco_images=2
    )
    val = generate_split(str(root / "val"), preset("val").replace(**tiny), num_videos=2, seed=1)
    assert train.coco_annotations_uri is not None
    return Splits(train.annotations_uri, train.coco_annotations_uri, val.annotations_uri)


@pytest.fixture(scope="module")
def ray_address():
    import ray

    if ray.is_initialized():  # started by another test: use it, leave it running
        yield ray.get_runtime_context().gcs_address
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_TRAIN_V2_ENABLED", "1")
        # Test speed only (about 10 s a fit on 2 cores): the controller polls its workers
        # more often than every 2 s, and no preemption-watcher actor is started.
        patch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.3")
        patch.setenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        context = ray.init(num_cpus=2, include_dashboard=False)
        try:
            yield context.address_info["address"]
        finally:
            ray.shutdown()


def test_frozen_detector_trains_vita_only(splits):
    job = TrainJobConfig(
        train_uri=splits.train,
        coco_uri=splits.coco,
        num_frames=3,
        augment=TINY_AUGMENT,
        freeze_detector=True,
        lr=1e-3,
        clip_grad_norm=None,
    )
    model_config = get_preset(job.preset)
    model = build_model(job, model_config)
    detector_before = {k: v.clone() for k, v in model.detector.state_dict().items()}
    vita_before = {k: v.clone() for k, v in model.vita.state_dict().items()}
    optimizer = build_optimizer(model, job.optim_config())
    vita_parameters = {id(p) for p in model.vita.parameters()}
    assert all(id(p) in vita_parameters for g in optimizer.param_groups for p in g["params"])
    criterion = build_criterion(model_config, frozen_detector=True)
    loader = torch.utils.data.DataLoader(
        build_clip_stream(job, model_config), batch_size=1, collate_fn=ClipBatch.from_clips
    )
    batches = iter(loader)
    for _ in range(2):
        result = train_step(model, criterion, optimizer, next(batches))
        assert "loss_vita_ce" in result.terms and "loss_ce" not in result.terms

    for key, value in model.detector.state_dict().items():
        assert torch.equal(value, detector_before[key]), key
    changed = [k for k, v in model.vita.state_dict().items() if not torch.equal(v, vita_before[k])]
    assert len(changed) > len(vita_before) // 2
    # The detector stayed in eval mode through train_step's model.train(), except the frame
    # decoder's own flag, which hands VITA the last layers the VITA losses need.
    frame_decoder = model.detector.frame_decoder
    assert all(not m.training for m in model.detector.modules() if m is not frame_decoder)
    assert model.vita.training and frame_decoder.training


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vis")
    train_job.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["train", *argv])


def test_cli_maps_options_and_reports_bad_configs(splits, tmp_path, monkeypatch, capsys):
    import workflows.train
    import workflows.train_config

    captured = []

    def fake_run(config):
        captured.append(config)
        return workflows.train_config.TrainResult(
            name="n",
            run_path="r",
            checkpoint_path="c",
            model_file="c/model.vis.pt",
            start_step=0,
            final_step=7,
            metrics={"loss": 1.5, "clips_per_s": 2.0, "val/AP": 0.25, "val/APl": -1.0},
            mlflow_run_id="abc",
            tracking_uri="sqlite:///x.db",
            registered_model_uri="models:/m/1",
        )

    monkeypatch.setattr(workflows.train, "run_training", fake_run)
    argv = ["--train", splits.train, "--coco", splits.coco, "--coco-weight", "0.5"]
    argv += ["--workers", "2", "--steps", "7", "--frames", "3", "--lr", "0.001"]
    argv += ["--backbone-multiplier", "0.1", "--lr-milestones", "4", "6"]
    argv += ["--freeze-detector", "--register", "m", "--checkpoint-every", "3", "--gpu"]
    argv += ["--long", splits.val, "--long-weight", "2", "--long-sampling-range", "30"]
    args = _parse(argv)
    assert args.func(args) == 0
    (config,) = captured
    assert (config.long_uri, config.long_weight, config.long_sampling_range) == (splits.val, 2, 30)
    assert (config.workers, config.steps, config.num_frames, config.lr) == (2, 7, 3, 0.001)
    assert config.coco_weight == 0.5 and config.freeze_detector and config.use_gpu
    assert config.backbone_multiplier == 0.1
    assert config.optim_config().lr_milestones == (4, 6)
    assert config.registered_model_name == "m" and config.checkpoint_every == 3
    summary = capsys.readouterr().out
    assert "steps 0 -> 7" in summary and "AP 25.0" in summary and "APl n/a" in summary
    assert "models:/m/1" in summary

    args = _parse(["--train", splits.train])  # no overrides: the preset's recipe
    assert args.func(args) == 0
    from workflows.recipes import small_synth_recipe

    recipe_config = captured[-1]
    for field, value in small_synth_recipe().items():
        assert getattr(recipe_config, field) == value, field

    monkeypatch.undo()
    args = _parse(["--train", str(tmp_path / "missing.json"), "--steps", "3"])
    assert args.func(args) == 2
    assert "annotation file not found" in capsys.readouterr().err
    args = _parse(["--train", splits.train, "--steps", "0"])
    assert args.func(args) == 2
    assert "steps must be >= 1" in capsys.readouterr().err
    args = _parse(["--train", splits.train, "--long", str(tmp_path / "long.json")])
    assert args.func(args) == 2
    assert "annotation file not found" in capsys.readouterr().err


def test_a_long_split_adds_clips_spread_over_its_own_sampling_range(splits, tmp_path):
    """`long_uri`: a third source, drawn by its weight, whose clips span up to
    `long_sampling_range` frames of a long video (the short split's videos have 4 to 6)."""
    long_preset = preset("val-long").replace(width=64, height=48, frames=(40, 50))
    long = generate_split(str(tmp_path / "long"), long_preset, num_videos=2, seed=2)
    job = TrainJobConfig(
        train_uri=splits.train,
        coco_uri=splits.coco,
        long_uri=long.annotations_uri,
        long_weight=2.0,
        long_sampling_range=30,
        num_frames=4,
        augment=TINY_AUGMENT,
    )
    model_config = get_preset(job.preset)
    stream = build_clip_stream(job, model_config)
    short_source, long_source, _ = stream.sources
    assert (short_source.sampling_range, long_source.sampling_range) == (20, 30)
    weights = np.array([1.0, 2.0, job.coco_weight])
    np.testing.assert_allclose(stream.probabilities, weights / weights.sum())
    rng = np.random.default_rng(0)
    spans = [np.ptp(long_source.sample(4, rng).frame_indices) for _ in range(20)]
    assert max(spans) <= 30 and max(spans) > 6

    clips = itertools.islice(iter(stream), 30)
    assert any(clip.frame_indices.max() > 5 for clip in clips)  # a long video's clip
    stream = build_clip_stream(dataclasses.replace(job, long_weight=0.0), model_config)
    assert len(stream.sources) == 2


def test_tracking_runs_params_and_model_uris(tmp_path):
    config = TrackingConfig(f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "art"), "exp")
    run = TrainingRun.start_or_resume(config, "a")
    assert not run.resumed and run.artifact_uri.startswith(str(tmp_path / "art" / "exp"))
    params = {"group": {f"p{i:03d}": i for i in range(250)}, "nested": {"t": (1, 2)}}
    assert run.log_params(params) == ()  # 251 params: more than MLflow's 100 per call
    again = TrainingRun.start_or_resume(config, "a")
    assert again.resumed and again.run_id == run.run_id
    assert TrainingRun.start_or_resume(config, "b").run_id != run.run_id
    assert again.log_params({"group": {"p001": 1, "p002": "changed"}}) == ("group.p002",)
    stored = MlflowClient(config.tracking_uri).get_run(run.run_id).data
    assert len(stored.params) == 251 and stored.params["nested.t"] == "(1, 2)"
    assert stored.params["group.p002"] == "2" and stored.tags["vis.changed.group.p002"] == "changed"

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("a")
    run.log_artifact(tmp_path / "notes", "extra")
    run.log_json({"k": 1}, "config/c.json")
    artifacts = MlflowClient(config.tracking_uri).list_artifacts(run.run_id)
    assert sorted(a.path for a in artifacts) == ["config", "extra"]

    with pytest.raises(TrackingError, match="no model file"):
        run.register_model("m")
    model_file = tmp_path / "weights.pt"
    model_file.write_bytes(b"weights")
    run.register_model("m", run.log_model_file(model_file, "model/step-1"))
    assert resolve_model_uri("models:/m@candidate", config.tracking_uri).read_bytes() == b"weights"
    with pytest.raises(TrackingError, match="not models:/"):
        resolve_model_uri("models:/m", config.tracking_uri)
    with pytest.raises(TrackingError, match="cannot resolve"):
        resolve_model_uri("models:/m/9", config.tracking_uri)
    assert resolve_model_uri("/a/b.pt") == Path("/a/b.pt")


def _history(client: MlflowClient, run_id: str, key: str) -> list:
    return sorted(client.get_metric_history(run_id, key), key=lambda metric: metric.step)


# Last in the file: the module's Ray instance then stops right after it.
def test_two_workers_train_resume_and_track_in_mlflow(splits, ray_address, tmp_path, monkeypatch):
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)  # nothing may be written to the working directory
    monkeypatch.setenv("VIS_HOME", str(tmp_path / "vis_home"))
    tracking_uri = f"sqlite:///{tmp_path}/mlflow.db"
    config = TrainJobConfig(
        train_uri=splits.train,
        coco_uri=splits.coco,
        storage_uri=str(tmp_path / "ray"),
        name="tiny",
        workers=2,
        steps=3,
        batch_size=1,
        num_frames=3,
        augment=TINY_AUGMENT,
        checkpoint_every=2,
        log_every=1,
        tracking_uri=tracking_uri,
        artifact_root=str(tmp_path / "artifacts"),
        registered_model_name="vis-tiny",
        ray_address=ray_address,
    )

    first = run_training(config)

    assert (first.start_step, first.final_step) == (0, 3)
    checkpoint = Path(first.checkpoint_path)
    assert checkpoint.is_relative_to(tmp_path / "ray" / "tiny")
    state = TrainState.load(checkpoint)
    assert state.step == 3 and state.mlflow_run_id == first.mlflow_run_id
    assert state.optimizer["state"], "the optimiser state is in the checkpoint"
    trained = load_model(first.model_file)
    assert trained.config == get_preset("vita_small_synth")
    first_model_bytes = Path(first.model_file).read_bytes()

    client = MlflowClient(tracking_uri, tracking_uri)
    run = client.get_run(first.mlflow_run_id)
    expected_params = flatten_params(
        {"job": config, "model": get_preset(config.preset), "optim": config.optim_config()}
    )
    assert set(run.data.params) == set(expected_params)  # the whole config
    assert run.data.params["job.steps"] == "3"
    assert run.data.params["job.augment.min_sizes"] == "(48,)"
    assert run.data.params["model.vita.num_queries"] == "16"
    assert run.data.params["job.storage_uri"] == str(tmp_path / "ray")
    assert run.info.status == "FINISHED"
    assert [m.step for m in _history(client, run.info.run_id, "loss")] == [1, 2, 3]
    lr = [m.value for m in _history(client, run.info.run_id, "lr")]
    assert lr == pytest.approx([1e-4, 1e-4, 1e-5])  # decayed at round(3 * 75 / 140) = 2
    assert run.data.tags["vis.checkpoint"] == first.checkpoint_path
    for key in ("lr", "grad_norm", "clips_per_s", "frames_per_s", "loss_vita_sim", "loss_ce"):
        assert key in run.data.metrics, key
    version = client.get_model_version_by_alias("vis-tiny", "candidate")
    assert str(version.version) == "1" and version.run_id == first.mlflow_run_id
    assert first.registered_model_uri == "models:/vis-tiny/1"
    registered_file = resolve_model_uri("models:/vis-tiny@candidate", tracking_uri)
    assert registered_file.read_bytes() == first_model_bytes

    second = run_training(dataclasses.replace(config, steps=5, val_uri=splits.val))

    assert (second.start_step, second.final_step) == (3, 5)  # resumed, the count continues
    assert second.mlflow_run_id == first.mlflow_run_id
    assert TrainState.load(second.checkpoint_path).step == 5
    experiment = client.get_experiment_by_name("vis-train")
    assert len(client.search_runs([experiment.experiment_id])) == 1
    run = client.get_run(first.mlflow_run_id)
    history = _history(client, run.info.run_id, "loss")
    assert [m.step for m in history] == [1, 2, 3, 4, 5]
    lr = [m.value for m in _history(client, run.info.run_id, "lr")]
    assert lr == pytest.approx([1e-4, 1e-4, 1e-5, 1e-5, 1e-5])  # the schedule resumed
    assert run.data.tags["vis.changed.job.steps"] == "5"  # a param may not change: a tag
    assert run.data.params["job.steps"] == "3"
    for key in ("val/AP", "val/AP50", "val/AP75", "val/AR10"):
        assert -1.0 <= run.data.metrics[key] <= 1.0 and key in second.metrics
    for key in ("val/class_recognition", "val/slot_purity"):
        assert 0.0 <= run.data.metrics[key] <= 1.0 and key in second.metrics
    assert second.registered_model_uri == "models:/vis-tiny/2"
    assert str(client.get_model_version_by_alias("vis-tiny", "candidate").version) == "2"
    # Version 1 still holds the step-3 model: the versions' artifacts are kept apart.
    assert resolve_model_uri("models:/vis-tiny/1", tracking_uri).read_bytes() == first_model_bytes
    assert resolve_model_uri("models:/vis-tiny/latest", tracking_uri).read_bytes() == (
        Path(second.model_file).read_bytes()
    )
    assert list(workdir.iterdir()) == []


def _train_worker_pids() -> list[int]:
    """Processes of Ray Train workers (their title names the actor class)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"RayTrainWorker" in command:
                pids.append(int(entry.name))
    return pids


@pytest.mark.slow  # about a minute idle: two worker-group starts
def test_a_killed_worker_is_retried_from_the_last_checkpoint(splits, ray_address, tmp_path):
    import os
    import signal
    import threading
    import time

    storage = tmp_path / "ray"
    config = TrainJobConfig(
        train_uri=splits.train,
        storage_uri=str(storage),
        name="killed",
        workers=1,
        steps=8,
        batch_size=1,
        num_frames=2,
        augment=TINY_AUGMENT,
        checkpoint_every=2,
        log_every=1,
        max_failures=1,
        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        artifact_root=str(tmp_path / "artifacts"),
        ray_address=ray_address,
    )
    killed: list[int] = []

    def kill_after_the_first_checkpoint() -> None:
        # Once the second is written, the first is registered (the controller polls).
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if len(list((storage / "killed").glob("checkpoint_*/train_state.pt"))) >= 2:
                for pid in _train_worker_pids():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_after_the_first_checkpoint, daemon=True)
    killer.start()
    result = run_training(config)
    killer.join()

    assert killed, "no worker was killed"
    assert result.final_step == 8
    assert 2 <= result.start_step < 8 and result.start_step % 2 == 0  # from a checkpoint
    assert TrainState.load(result.checkpoint_path).step == 8
