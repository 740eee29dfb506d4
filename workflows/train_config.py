"""Training job configuration and state shared by the Ray driver and its workers."""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vis_core.data.augment import AugmentConfig
from vis_core.training.optim import OptimConfig

if TYPE_CHECKING:
    from workflows.tracking import TrackingConfig

STATE_FILE = "train_state.pt"
STATE_FORMAT = "vis-train-state/1"
MODEL_FILE = "model.vis.pt"
# The official recipe decays the learning rate once, at 75k of 140k iterations.
_OFFICIAL_DECAY_FRACTION = 75 / 140


class TrainConfigError(ValueError):
    """The training job is not runnable as configured."""


class TrainStateError(TrainConfigError):
    """A checkpoint's training state cannot be read (the message names the file)."""


@dataclass(frozen=True)
class TrainJobConfig:
    """One training job. Paths may be local or fsspec URIs (storage: local or `s3://`).

    coco_weight: how often a COCO pseudo-video is drawn relative to a video clip (weight
        1); the official 1 : 0.75 COCO : YouTube-VIS ratio by default.
    long_uri: a second video split of long videos (OVIS-like: crowds, long occlusions),
        drawn `long_weight` times as often as a `train_uri` clip, its clips spread over
        `long_sampling_range` frames so that VITA sees objects across long occlusions.
    storage_uri: Ray Train's storage; None for `<data_dir>/ray_results`. With `name` it
        identifies the training: a run with both unchanged resumes it.
    batch_size: clips per worker and step; num_frames: T, frames per clip;
        sampling_range: frames around the reference frame a clip is drawn from.
    augment: the clip augmentation (training sizes, flips, crops).
    lr_milestones: steps at which the learning rate is multiplied by 0.1; None for one
        decay at 75/140 of `steps`, as the official schedule.
    init_model: a vis model file (path, URI or `models:/NAME/VERSION`) whose weights start
        the training; it must be of the preset's architecture (a head that `method` adds
        and it lacks starts from scratch).
    method: what trains (`vis_core.methods.TRAINABLE_METHODS`): "vita", or an online head
        such as "querytrack", added to the preset's config when it has none.
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
    long_uri: str | None = None
    long_weight: float = 1.0
    long_sampling_range: int = 60
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
    method: str = "vita"
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
        from vis_core.modeling.torch_file import load_weights_only

        path = Path(folder) / STATE_FILE
        payload = load_weights_only(path, str(path), TrainStateError)  # weights only: no code
        if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
            raise TrainStateError(f"{path} is not a {STATE_FORMAT} training state")
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in payload]
        if missing:
            raise TrainStateError(f"{path}: a training state without {', '.join(missing)}")
        return cls(**{f.name: payload[f.name] for f in dataclasses.fields(cls)})


# ---------------------------------------------------------------------------------------
# Driver


def format_progress(step: int, steps: int, metrics: Mapping[str, float]) -> str:
    """One console line: step/steps, loss, lr, clips/s and the time left."""
    eta = metrics.get("eta_s", math.nan)
    eta_text = "?" if not math.isfinite(eta) else str(datetime.timedelta(seconds=round(eta)))
    return (
        f"step {step}/{steps}  loss {metrics['loss']:.4f}  lr {metrics['lr']:.2e}  "
        f"clips/s {metrics['clips_per_s']:.2f}  ETA {eta_text}"
    )


def tracking_config(job: TrainJobConfig) -> TrackingConfig:
    from workflows.tracking import TrackingConfig

    return TrackingConfig(job.tracking_uri, job.artifact_root, job.experiment)
