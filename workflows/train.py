"""Distributed training of a VITA model with Ray Train (V2), recorded in MLflow.

`run_training(TrainJobConfig)` runs on the driver: it fills in the defaults, starts (or
finds again) the training's MLflow run and logs the whole config, then runs a
`TorchTrainer` whose workers each execute `train_worker`:

- the model of the preset (optionally initialised from a vis model file), wrapped in
  DistributedDataParallel by `prepare_model` (gloo on CPU, nccl on GPU); with
  `freeze_detector` only VITA trains (see `freeze_detector`);
- an endless `ClipStream` per worker (its world rank and the resume step in the seed),
  AdamW with the step schedule, bf16 autocast on GPU;
- every `log_every` steps the metrics, averaged over the workers, go to `ray.train.report`
  and, from world rank 0, to MLflow and the console; every `checkpoint_every` steps and at
  the end rank 0 writes the training state as the report's checkpoint. Every rank reports
  at the same steps, since `report` is a barrier;
- at the end rank 0 also writes the vis model file (fp32) into the last checkpoint, logs
  it to MLflow, measures YouTube-VIS AP on the validation split and registers the model.

Re-running with the same `storage_uri` and `name` resumes from the latest checkpoint: the
step count, optimiser, schedule and MLflow run continue.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from vis_core.methods import TRAINABLE_METHODS, get_method
from vis_core.modeling.config import ModelConfig
from vis_core.modeling.presets import get_preset
from vis_core.paths import data_dir
from workflows.ray_cluster import ensure_ray
from workflows.train_config import (
    MODEL_FILE,
    TrainConfigError,
    TrainJobConfig,
    TrainResult,
    tracking_config,
)
from workflows.train_worker import train_worker

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)


def resolve_config(config: TrainJobConfig) -> TrainJobConfig:
    """Check the config and fill in what workers need explicit: the name, the storage, and
    absolute local paths (Ray Train workers run in their own working directory)."""
    _check(config)
    get_preset(config.preset)  # unknown presets fail here, not on the workers
    for uri in (config.train_uri, config.long_uri, config.val_uri, config.coco_uri):
        if uri is not None and _is_local(uri) and not os.path.exists(_local_path(uri)):
            raise TrainConfigError(f"annotation file not found: {uri}")
    init_model = config.init_model
    if init_model is not None and not init_model.startswith("models:/"):
        init_model = _absolute(init_model)
        if _is_local(init_model) and not os.path.exists(init_model):
            raise TrainConfigError(f"init model file not found: {config.init_model}")
    name = config.name or f"{config.preset}_{datetime.datetime.now():%Y%m%d-%H%M%S}"
    storage = config.storage_uri or str(data_dir() / "ray_results")
    return dataclasses.replace(
        config,
        name=name,
        storage_uri=_absolute(storage),
        train_uri=_absolute(config.train_uri),
        val_uri=None if config.val_uri is None else _absolute(config.val_uri),
        coco_uri=None if config.coco_uri is None else _absolute(config.coco_uri),
        long_uri=None if config.long_uri is None else _absolute(config.long_uri),
        init_model=init_model,
        **_resolved_tracking(config),
    )


def run_training(config: TrainJobConfig) -> TrainResult:
    """Train on a Ray cluster (a local one unless Ray is initialised or an address is
    given) and return where the results are. Raises `TrainConfigError` on a bad config
    and `ray.train.TrainingFailedError` when the workers fail past `max_failures`."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from workflows.tracking import TrainingRun

    job = resolve_config(config)
    model_config = get_method(job.method).with_head(_with_initial_heads(job))
    tracking = TrainingRun.start_or_resume(
        tracking_config(job), job.name, tags={"vis.preset": job.preset}
    )
    config_record = {"job": job, "model": model_config, "optim": job.optim_config()}
    tracking.log_params(config_record)
    tracking.log_json(_jsonable(config_record), "config/train_config.json")
    try:
        ensure_ray(job.ray_address)
        trainer = TorchTrainer(
            train_worker,
            train_loop_config={
                "job": job,
                "model_config": model_config,
                "run_id": tracking.run_id,
            },
            scaling_config=ScalingConfig(
                num_workers=job.workers,
                use_gpu=job.use_gpu,
                resources_per_worker={"CPU": 1 + job.loader_workers},
            ),
            run_config=RunConfig(
                storage_path=job.storage_uri,
                name=job.name,
                failure_config=FailureConfig(max_failures=job.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=2),
            ),
        )
        result = trainer.fit()
    except BaseException:
        tracking.finish(failed=True)
        raise
    checkpoint_uri = _storage_uri(job.storage_uri, result.checkpoint.path)
    # The training state stays in Ray's storage; MLflow keeps a pointer to it.
    tracking.set_tags({"vis.checkpoint": checkpoint_uri})
    tracking.finish()
    # No report at all when the checkpoint had already reached `steps`.
    reported = result.metrics or {}
    metrics = {k: float(v) for k, v in reported.items() if isinstance(v, int | float)}
    version = metrics.pop("registered_version", None)
    return TrainResult(
        name=job.name,
        run_path=_storage_uri(job.storage_uri, result.path),
        checkpoint_path=checkpoint_uri,
        model_file=f"{checkpoint_uri}/{MODEL_FILE}",
        start_step=int(metrics.get("start_step", job.steps)),
        final_step=int(metrics.get("step", job.steps)),
        metrics=metrics,
        mlflow_run_id=tracking.run_id,
        tracking_uri=tracking.config.tracking_uri,
        registered_model_uri=(
            None if version is None else f"models:/{job.registered_model_name}/{int(version)}"
        ),
    )


def _check(config: TrainJobConfig) -> None:
    positive = {
        "workers": config.workers,
        "steps": config.steps,
        "batch_size": config.batch_size,
        "num_frames": config.num_frames,
        "sampling_range": config.sampling_range,
        "long_sampling_range": config.long_sampling_range,
        "checkpoint_every": config.checkpoint_every,
        "log_every": config.log_every,
    }
    for name, value in positive.items():
        if value < 1:
            raise TrainConfigError(f"{name} must be >= 1, got {value}")
    if config.lr <= 0 or min(config.coco_weight, config.long_weight, config.max_failures) < 0:
        raise TrainConfigError("lr must be > 0, coco_weight, long_weight and max_failures >= 0")
    if config.method not in TRAINABLE_METHODS:
        raise TrainConfigError(f"method must be one of {TRAINABLE_METHODS}, got {config.method!r}")
    if config.loader_workers < 0:
        raise TrainConfigError(f"loader_workers must be >= 0, got {config.loader_workers}")
    if config.name is not None and (not config.name or "/" in config.name):
        raise TrainConfigError(f"name must be a non-empty folder name, got {config.name!r}")


def _resolved_tracking(config: TrainJobConfig) -> dict[str, Any]:
    from workflows.tracking import TrackingConfig

    resolved = TrackingConfig(config.tracking_uri, config.artifact_root, config.experiment)
    resolved = resolved.resolved()
    return {"tracking_uri": resolved.tracking_uri, "artifact_root": resolved.artifact_root}


def _storage_uri(storage_uri: str, path: str) -> str:
    """Ray reports paths in remote storage without their scheme (`bucket/key`)."""
    scheme, separator, _ = storage_uri.partition("://")
    if separator and scheme != "file" and "://" not in path:
        return f"{scheme}://{path}"
    return str(path)


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _local_path(uri: str) -> str:
    return uri.removeprefix("file://")


def _absolute(uri: str) -> str:
    return os.path.abspath(uri) if "://" not in uri else uri


def _with_initial_heads(job: TrainJobConfig) -> ModelConfig:
    """The preset's config with the online heads the initial model carries (their
    weights come with it and stay), so training one head keeps the others."""
    config = get_preset(job.preset)
    if job.init_model is None:
        return config
    from vis_core.modeling.model_file import load_model
    from vis_core.modeling.vita_model import OPTIONAL_HEADS
    from workflows.tracking import resolve_model_uri

    initial = load_model(str(resolve_model_uri(job.init_model, job.tracking_uri))).config
    heads = {name: getattr(initial, name) for name in OPTIONAL_HEADS}
    return dataclasses.replace(config, **{k: v for k, v in heads.items() if v is not None})


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------
# Worker pieces (plain PyTorch: usable without Ray)
