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
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from vis_core.data.augment import AugmentConfig
from vis_core.data.clip_stream import (
    ClipSource,
    ClipStream,
    PseudoVideoSource,
    VideoClipSource,
    labels_by_name,
)
from vis_core.data.coco import CocoDataset
from vis_core.data.frames import iter_frames
from vis_core.data.ytvis import Category, YtvisDataset
from vis_core.evaluation import YtvisMetrics, evaluate_ytvis
from vis_core.evaluation.metrics import SUMMARY_KEYS
from vis_core.inference.segmenter import VideoSegmenter
from vis_core.losses.criterion import VitaCriterion
from vis_core.modeling.config import ModelConfig
from vis_core.modeling.model_file import load_model, save_model
from vis_core.modeling.presets import get_preset
from vis_core.modeling.vita_model import VitaModel
from vis_core.paths import data_dir
from vis_core.training.batch import ClipBatch
from vis_core.training.optim import OptimConfig, build_optimizer, build_scheduler
from vis_core.training.step import train_step

if TYPE_CHECKING:
    from workflows.tracking import TrackingConfig, TrainingRun

STATE_FILE = "train_state.pt"
STATE_FORMAT = "vis-train-state/1"
MODEL_FILE = "model.vis.pt"
# The official recipe decays the learning rate once, at 75k of 140k iterations.
_OFFICIAL_DECAY_FRACTION = 75 / 140
logger = logging.getLogger(__name__)


class TrainConfigError(ValueError):
    """The training job is not runnable as configured."""


@dataclass(frozen=True)
class TrainJobConfig:
    """One training job. Paths may be local or fsspec URIs (storage: local or `s3://`).

    coco_weight: how often a COCO pseudo-video is drawn relative to a video clip (weight
        1); the official 1 : 0.75 COCO : YouTube-VIS ratio by default.
    storage_uri: Ray Train's storage; None for `<data_dir>/ray_results`. With `name` it
        identifies the training: a run with both unchanged resumes it.
    batch_size: clips per worker and step; num_frames: T, frames per clip;
        sampling_range: frames around the reference frame a clip is drawn from.
    augment: the clip augmentation (training sizes, flips, crops).
    lr_milestones: steps at which the learning rate is multiplied by 0.1; None for one
        decay at 75/140 of `steps`, as the official schedule.
    init_model: a vis model file (path, URI or `models:/NAME/VERSION`) whose weights start
        the training; it must be of the preset's architecture.
    tracking_uri / artifact_root / experiment: the MLflow store (see
        `workflows.tracking.TrackingConfig`); registered_model_name: register the final
        model under this name (None: no registration).
    loader_workers: DataLoader processes per worker (each worker asks 1 + this many CPUs).
    ray_address: the Ray cluster to use when Ray is not initialised yet (None: the
        `RAY_ADDRESS` environment variable, or a new local instance).
    """

    train_uri: str
    preset: str = "vita_small_synth"
    val_uri: str | None = None
    coco_uri: str | None = None
    coco_weight: float = 1 / 0.75
    storage_uri: str | None = None
    name: str | None = None
    workers: int = 1
    use_gpu: bool = False
    steps: int = 1000
    batch_size: int = 1
    num_frames: int = 5
    sampling_range: int = 20
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    lr: float = 1e-4
    backbone_multiplier: float = 0.1
    weight_decay: float = 0.05
    clip_grad_norm: float | None = 0.01
    warmup_steps: int = 0
    lr_milestones: tuple[int, ...] | None = None
    checkpoint_every: int = 500
    log_every: int = 20
    seed: int = 0
    freeze_detector: bool = False
    init_model: str | None = None
    tracking_uri: str | None = None
    artifact_root: str | None = None
    experiment: str = "vis-train"
    registered_model_name: str | None = None
    max_failures: int = 0
    loader_workers: int = 0
    ray_address: str | None = None

    def optim_config(self) -> OptimConfig:
        milestones = self.lr_milestones
        if milestones is None:
            milestones = (max(1, round(self.steps * _OFFICIAL_DECAY_FRACTION)),)
        return OptimConfig(
            lr=self.lr,
            weight_decay=self.weight_decay,
            backbone_multiplier=self.backbone_multiplier,
            clip_grad_norm=self.clip_grad_norm,
            steps=self.steps,
            lr_milestones=tuple(milestones),
            warmup_steps=self.warmup_steps,
        )


@dataclass(frozen=True)
class TrainResult:
    """What a finished training left behind.

    start_step: the step this run began at (> 0 when it resumed); final_step: `steps`.
    metrics: the last report's metrics (averaged over workers; `val/AP`... when validated).
    registered_model_uri: `models:/NAME/VERSION` when the model was registered.
    """

    name: str
    run_path: str
    checkpoint_path: str
    model_file: str
    start_step: int
    final_step: int
    metrics: Mapping[str, float]
    mlflow_run_id: str
    tracking_uri: str
    registered_model_uri: str | None


@dataclass(frozen=True)
class TrainState:
    """What a checkpoint restores: weights, optimiser, schedule, step, MLflow run."""

    step: int
    mlflow_run_id: str
    model: Mapping[str, Any]
    optimizer: Mapping[str, Any]
    scheduler: Mapping[str, Any]

    def save(self, folder: str | os.PathLike) -> None:
        payload = {"format": STATE_FORMAT, **dataclasses.asdict(self)}
        torch.save(payload, Path(folder) / STATE_FILE)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> TrainState:
        path = Path(folder) / STATE_FILE
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
            raise TrainConfigError(f"{path} is not a {STATE_FORMAT} training state")
        return cls(**{f.name: payload[f.name] for f in dataclasses.fields(cls)})


# ---------------------------------------------------------------------------------------
# Driver


def resolve_config(config: TrainJobConfig) -> TrainJobConfig:
    """Check the config and fill in what workers need explicit: the name, the storage, and
    absolute local paths (Ray Train workers run in their own working directory)."""
    _check(config)
    get_preset(config.preset)  # unknown presets fail here, not on the workers
    for uri in (config.train_uri, config.val_uri, config.coco_uri):
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
    model_config = get_preset(job.preset)
    tracking = TrainingRun.start_or_resume(
        _tracking_config(job), job.name, tags={"vis.preset": job.preset}
    )
    config_record = {"job": job, "model": model_config, "optim": job.optim_config()}
    tracking.log_params(config_record)
    tracking.log_json(_jsonable(config_record), "config/train_config.json")
    try:
        _ensure_ray(job.ray_address)
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


def format_progress(step: int, steps: int, metrics: Mapping[str, float]) -> str:
    """One console line: step/steps, loss, lr, clips/s and the time left."""
    eta = metrics.get("eta_s", math.nan)
    eta_text = "?" if not math.isfinite(eta) else str(datetime.timedelta(seconds=round(eta)))
    return (
        f"step {step}/{steps}  loss {metrics['loss']:.4f}  lr {metrics['lr']:.2e}  "
        f"clips/s {metrics['clips_per_s']:.2f}  ETA {eta_text}"
    )


def _ensure_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address)
    else:  # a local instance for this process only
        ray.init(include_dashboard=False)


def _check(config: TrainJobConfig) -> None:
    positive = {
        "workers": config.workers,
        "steps": config.steps,
        "batch_size": config.batch_size,
        "num_frames": config.num_frames,
        "sampling_range": config.sampling_range,
        "checkpoint_every": config.checkpoint_every,
        "log_every": config.log_every,
    }
    for name, value in positive.items():
        if value < 1:
            raise TrainConfigError(f"{name} must be >= 1, got {value}")
    if config.lr <= 0 or config.coco_weight < 0 or config.max_failures < 0:
        raise TrainConfigError("lr must be > 0, coco_weight and max_failures >= 0")
    if config.loader_workers < 0:
        raise TrainConfigError(f"loader_workers must be >= 0, got {config.loader_workers}")
    if config.name is not None and (not config.name or "/" in config.name):
        raise TrainConfigError(f"name must be a non-empty folder name, got {config.name!r}")


def _resolved_tracking(config: TrainJobConfig) -> dict[str, Any]:
    from workflows.tracking import TrackingConfig

    resolved = TrackingConfig(config.tracking_uri, config.artifact_root, config.experiment)
    resolved = resolved.resolved()
    return {"tracking_uri": resolved.tracking_uri, "artifact_root": resolved.artifact_root}


def _tracking_config(job: TrainJobConfig) -> TrackingConfig:
    from workflows.tracking import TrackingConfig

    return TrackingConfig(job.tracking_uri, job.artifact_root, job.experiment)


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


def label_map(categories: Sequence[Category], model_config: ModelConfig) -> dict[int, int]:
    """Dataset category id -> the model's contiguous label.

    By class name when the model has names; otherwise categories sorted by id take labels
    0..K-1 (the YouTube-VIS convention), which needs exactly K categories.
    """
    if model_config.class_names:
        mapping = labels_by_name(categories, model_config.class_names)
    elif len(categories) == model_config.num_classes:
        mapping = {c.id: label for label, c in enumerate(sorted(categories, key=lambda c: c.id))}
    else:
        raise TrainConfigError(
            f"model {model_config.name} has {model_config.num_classes} unnamed classes, the "
            f"dataset {len(categories)} categories"
        )
    if not mapping:
        raise TrainConfigError(f"no dataset category is a class of model {model_config.name}")
    return mapping


def build_clip_stream(
    job: TrainJobConfig, model_config: ModelConfig, rank: int = 0, start_step: int = 0
) -> ClipStream:
    """The worker's clip stream: video clips and, with `coco_uri`, COCO pseudo-videos.

    The seed mixes the job seed and the step the run starts at, so a resumed run draws
    new clips instead of repeating the first run's.
    """

    videos = YtvisDataset.load(job.train_uri)
    sources: list[ClipSource] = [
        VideoClipSource(videos, label_map(videos.categories, model_config), job.sampling_range)
    ]
    weights = [1.0]
    if job.coco_uri is not None and job.coco_weight > 0:
        images = CocoDataset.load(job.coco_uri)
        sources.append(PseudoVideoSource(images, label_map(images.categories, model_config)))
        weights.append(job.coco_weight)
    seed = _derived_seed(job.seed, start_step)
    return ClipStream(sources, weights, job.num_frames, job.augment, seed=seed, rank=rank)


def _derived_seed(*entropy: int) -> int:
    return int(np.random.SeedSequence(list(entropy)).generate_state(1)[0])


def build_model(job: TrainJobConfig, model_config: ModelConfig) -> VitaModel:
    """The model of the preset, with the `init_model` weights and the frozen detector if
    asked (on the CPU; `prepare_model` moves it)."""
    torch.manual_seed(job.seed)  # equal initial weights on every worker
    model = VitaModel(model_config)
    if job.init_model is not None:
        from workflows.tracking import resolve_model_uri

        path = resolve_model_uri(job.init_model, job.tracking_uri)
        initial = load_model(str(path))
        try:
            model.load_state_dict(initial.state_dict())
        except RuntimeError as error:
            raise TrainConfigError(
                f"{job.init_model} ({initial.config.name}) does not fit preset {job.preset}: "
                f"{str(error).splitlines()[0]}"
            ) from None
    if job.freeze_detector:
        freeze_detector(model)
    return model


def freeze_detector(model: VitaModel) -> None:
    """Train VITA alone: detector parameters get no gradient and the detector stays in
    eval mode, re-applied before each forward since a training step calls `train()`.

    The frame decoder's own flag stays as the model's: in training it hands VITA its last
    `vita_last_layers` layers of frame queries, which the VITA losses are computed on.
    Its submodules (attention, dropout) are in eval mode like the rest of the detector.
    """
    detector = model.detector
    for parameter in detector.parameters():
        parameter.requires_grad_(False)

    def keep_eval(module: nn.Module, _inputs: Any) -> None:
        for submodule in module.modules():
            if submodule is not detector.frame_decoder:
                submodule.training = False

    detector.register_forward_pre_hook(keep_eval)
    keep_eval(detector, ())


def build_criterion(model_config: ModelConfig, frozen_detector: bool) -> VitaCriterion:
    return VitaCriterion.for_model(model_config, frozen_detector=frozen_detector)


def validate(
    model: VitaModel, val_uri: str, device: torch.device, dtype: torch.dtype = torch.float32
) -> YtvisMetrics:
    """YouTube-VIS metrics of `model` on every video of `val_uri`."""
    dataset = YtvisDataset.load(val_uri)
    category_of_label = [-1] * model.config.num_classes  # -1: not a category of this split
    for category_id, label in label_map(dataset.categories, model.config).items():
        category_of_label[label] = category_id
    segmenter = VideoSegmenter(model, device=device, dtype=dtype)
    results = []
    for video in dataset.videos:
        instances = segmenter.segment(lambda video=video: iter_frames(dataset, video))
        entries = instances.to_ytvis_results(video.id, category_of_label)
        results.extend(entry for entry in entries if entry["category_id"] != -1)
    return evaluate_ytvis(val_uri, results)


# ---------------------------------------------------------------------------------------
# Worker


@dataclass
class _Window:
    """Sums of step results since the last report."""

    steps: int = 0
    loss: float = 0.0
    grad_norm: float = 0.0
    terms: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def add(self, loss: float, grad_norm: float, terms: Mapping[str, float]) -> None:
        self.steps += 1
        self.loss += loss
        self.grad_norm += grad_norm
        for name, value in terms.items():
            self.terms[name] = self.terms.get(name, 0.0) + value


def train_worker(loop_config: Mapping[str, Any]) -> None:
    """Ray Train's per-worker loop (see the module docstring)."""
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    job: TrainJobConfig = loop_config["job"]
    model_config: ModelConfig = loop_config["model_config"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    autocast_dtype = torch.bfloat16 if device.type == "cuda" else None

    model = build_model(job, model_config)
    state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = TrainState.load(folder)
        model.load_state_dict(state.model)
    model = ray.train.torch.prepare_model(model)
    core: VitaModel = (
        model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    )
    optim = job.optim_config()
    optimizer = build_optimizer(core, optim)
    scheduler = build_scheduler(optimizer, optim)
    start_step, run_id = 0, loop_config["run_id"]
    if state is not None:
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        start_step, run_id = state.step, state.mlflow_run_id
    criterion = build_criterion(model_config, job.freeze_detector).to(device)
    # Point sampling and augmentation draw differently on each rank and after a resume.
    torch.manual_seed(_derived_seed(job.seed, rank, start_step))
    tracking = None
    if rank == 0:
        from workflows.tracking import TrainingRun  # MLflow only where it is used

        tracking = TrainingRun(_tracking_config(job), run_id)

    if start_step >= job.steps:  # every rank returns: no report is left unmatched
        logger.info("already trained to step %d of %d: nothing to do", start_step, job.steps)
        return
    loader = torch.utils.data.DataLoader(
        build_clip_stream(job, model_config, rank, start_step),
        batch_size=job.batch_size,
        collate_fn=ClipBatch.from_clips,
        num_workers=job.loader_workers,
    )
    batches = iter(loader)
    window, run_started = _Window(), time.perf_counter()
    for step in range(start_step, job.steps):
        batch = next(batches).to(device)
        result = train_step(
            model, criterion, optimizer, batch, optim.clip_grad_norm, autocast_dtype
        )
        lr = max(group["lr"] for group in optimizer.param_groups)  # this step's
        scheduler.step()
        window.add(result.loss, result.grad_norm, result.terms)
        done = step + 1
        final = done == job.steps
        if not (final or done % job.log_every == 0 or done % job.checkpoint_every == 0):
            continue
        metrics = _window_metrics(window, device, world, job)
        metrics["lr"] = lr
        elapsed = time.perf_counter() - run_started
        metrics["eta_s"] = elapsed / (done - start_step) * (job.steps - done)
        if tracking is not None:
            tracking.log_metrics(metrics, step=done)
            # Not print: Ray Train tees print to its logger and to a wrapped stdout (twice).
            logger.info(format_progress(done, job.steps, metrics))
        metrics.update(step=done, start_step=start_step)
        with tempfile.TemporaryDirectory() as folder:
            saved = None
            if rank == 0 and (final or done % job.checkpoint_every == 0):
                TrainState(
                    step=done,
                    mlflow_run_id=run_id,
                    model=core.state_dict(),
                    optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict(),
                ).save(folder)
                if final:
                    model_file = os.path.join(folder, MODEL_FILE)
                    # Autocast leaves the parameters in fp32: the file is fp32.
                    save_model(model_file, core, {"training": job.name, "step": done})
                    metrics.update(_finish(job, core, model_file, tracking, device))
                saved = Checkpoint.from_directory(folder)
            ray.train.report(metrics, checkpoint=saved)
        window = _Window()


def _window_metrics(
    window: _Window, device: torch.device, world: int, job: TrainJobConfig
) -> dict[str, float]:
    """Means over the window's steps and over the workers; throughput of all workers."""
    names = sorted(window.terms)
    values = torch.tensor(
        [window.loss, window.grad_norm, *(window.terms[n] for n in names)],
        dtype=torch.float64,
        device=device,
    ) / max(1, window.steps)
    if world > 1 and torch.distributed.is_initialized():
        torch.distributed.all_reduce(values)
        values /= world
    seconds = max(time.perf_counter() - window.started, 1e-9)
    clips_per_s = window.steps * job.batch_size * world / seconds
    metrics = {"loss": float(values[0]), "grad_norm": float(values[1])}
    metrics.update({name: float(v) for name, v in zip(names, values[2:], strict=True)})
    metrics.update(clips_per_s=clips_per_s, frames_per_s=clips_per_s * job.num_frames)
    return metrics


def _finish(
    job: TrainJobConfig,
    model: VitaModel,
    model_file: str,
    tracking: TrainingRun,
    device: torch.device,
) -> dict[str, float]:
    """Rank 0 after the last step: log the model file, validate, register. Returns the
    validation metrics (`val/AP`...) and the registered version."""
    extra: dict[str, float] = {}
    artifact_path = tracking.log_model_file(model_file, f"model/step-{job.steps}")
    if job.val_uri is not None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        evaluation = validate(model, job.val_uri, device, dtype)
        extra = {f"val/{key}": float(getattr(evaluation, name)) for key, name in SUMMARY_KEYS}
        tracking.log_metrics(extra, step=job.steps)
        tracking.log_json(evaluation.to_json_dict(), "validation/metrics.json")
        logger.info("validation: %s", json.dumps({k: round(v, 4) for k, v in extra.items()}))
    if job.registered_model_name:
        registered = tracking.register_model(
            job.registered_model_name,
            artifact_path,
            tags={"preset": job.preset, "training": job.name or "", "step": str(job.steps)},
        )
        extra["registered_version"] = float(registered.version)
    return extra
