"""The training loop that runs in each Ray Train worker, and the pieces it is built from.

The pieces (`build_model`, `freeze_detector`, `build_criterion`, `build_clip_stream`,
`validate`) also run without Ray, in tests and notebooks.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
)
from vis_core.data.coco import CocoDataset
from vis_core.data.labels import label_of_category
from vis_core.data.ytvis import Category, YtvisDataset
from vis_core.evaluation import YtvisMetrics, evaluate_ytvis
from vis_core.evaluation.metrics import SUMMARY_KEYS
from vis_core.inference.dataset import segment_dataset
from vis_core.methods import build_segmenter, get_method
from vis_core.modeling.config import ModelConfig
from vis_core.modeling.model_file import load_model, save_model
from vis_core.modeling.vita_model import OPTIONAL_HEADS, VitaModel
from vis_core.training.batch import ClipBatch
from vis_core.training.optim import build_optimizer, build_scheduler
from vis_core.training.recognition import Recognition, measure_recognition
from vis_core.training.step import train_step
from workflows.train_config import (
    MODEL_FILE,
    TrainConfigError,
    TrainJobConfig,
    TrainState,
    TrainStateError,
    format_progress,
    tracking_config,
)

if TYPE_CHECKING:
    from workflows.tracking import TrainingRun

logger = logging.getLogger(__name__)

# Validation clips for the class-recognition metrics (3 frames each by default: seconds).
RECOGNITION_CLIPS = 32


def label_map(categories: Sequence[Category], model_config: ModelConfig) -> dict[int, int]:
    """Dataset category id -> the model's contiguous label (see `label_of_category`)."""
    try:
        return label_of_category(categories, model_config.class_names, model_config.num_classes)
    except ValueError as error:
        raise TrainConfigError(f"model {model_config.name}: {error}") from None


def build_clip_stream(
    job: TrainJobConfig, model_config: ModelConfig, rank: int = 0, start_step: int = 0
) -> ClipStream:
    """The worker's clip stream: video clips and, with `long_uri` and `coco_uri`, long
    videos' clips and COCO pseudo-videos.

    The seed mixes the job seed and the step the run starts at, so a resumed run draws
    new clips instead of repeating the first run's.
    """

    sources: list[ClipSource] = []
    weights: list[float] = []
    video_splits = [(job.train_uri, 1.0, job.sampling_range)]
    if job.long_uri is not None and job.long_weight > 0:
        video_splits.append((job.long_uri, job.long_weight, job.long_sampling_range))
    for uri, weight, sampling_range in video_splits:
        videos = YtvisDataset.load(uri)
        labels = label_map(videos.categories, model_config)
        sources.append(VideoClipSource(videos, labels, sampling_range))
        weights.append(weight)
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
        # A head the method adds and the initial model lacks starts from scratch.
        fresh = {k: v for k, v in model.state_dict().items() if k.split(".")[0] in OPTIONAL_HEADS}
        state = {**fresh, **initial.state_dict()}
        try:
            model.load_state_dict(state)
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


def build_criterion(
    model_config: ModelConfig, frozen_detector: bool, method: str = "vita"
) -> nn.Module:
    """The training criterion of `method` (`vis_core.methods`)."""
    criterion = get_method(method).criterion
    if criterion is None:
        raise TrainConfigError(f"method {method!r} has nothing to train")
    return criterion(model_config, frozen_detector)


def validate(
    model: VitaModel,
    val_uri: str,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    method: str = "vita",
) -> YtvisMetrics:
    """YouTube-VIS metrics of `model`, segmenting with `method`, on every video of `val_uri`."""
    segmenter = build_segmenter(method, model, device=device, dtype=dtype)
    results = segment_dataset(segmenter, YtvisDataset.load(val_uri), model.config)
    return evaluate_ytvis(val_uri, results)


def validate_recognition(
    job: TrainJobConfig, model: VitaModel, device: torch.device, clips: int = RECOGNITION_CLIPS
) -> Recognition:
    """Class recognition of the detector on `clips` clips of `job.val_uri`, sampled as in
    training but at the test size, unflipped (see `vis_core.training.recognition`)."""
    videos = YtvisDataset.load(job.val_uri)
    source = VideoClipSource(videos, label_map(videos.categories, model.config), job.sampling_range)
    augment = AugmentConfig(min_sizes=(model.config.input.min_size_test,), flip_prob=0.0)
    stream = iter(ClipStream([source], [1.0], job.num_frames, augment, seed=job.seed))
    batches = (ClipBatch.from_clips([next(stream)]) for _ in range(clips))
    return measure_recognition(model.detector, batches, model.config.loss, device)


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
    _quiet_report_log()
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    autocast_dtype = torch.bfloat16 if device.type == "cuda" else None

    model = build_model(job, model_config)
    checkpoint = ray.train.get_checkpoint()
    state = restore_state(checkpoint) if checkpoint is not None else None
    if state is not None:
        model.load_state_dict(state.model)
    # A batch whose clips hold no instance leaves some heads without a gradient (seen as a
    # DDP reduction error in the first long run), so DDP must look for unused parameters.
    model = ray.train.torch.prepare_model(
        model, parallel_strategy_kwargs={"find_unused_parameters": True}
    )
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
    criterion = build_criterion(model_config, job.freeze_detector, job.method).to(device)
    # Point sampling and augmentation draw differently on each rank and after a resume.
    torch.manual_seed(_derived_seed(job.seed, rank, start_step))
    tracking = None
    if rank == 0:
        from workflows.tracking import TrainingRun  # MLflow only where it is used

        tracking = TrainingRun(tracking_config(job), run_id)

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
    # A frozen detector learns nothing from pilot queries.
    mask_piloting = model_config.frame_decoder.mask_piloting and not job.freeze_detector
    window, run_started = _Window(), time.perf_counter()
    for step in range(start_step, job.steps):
        batch = next(batches).to(device)
        result = train_step(
            model,
            criterion,
            optimizer,
            batch,
            optim.clip_grad_norm,
            autocast_dtype,
            mask_piloting=mask_piloting,
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


def restore_state(checkpoint: Any) -> TrainState:
    """The training state of Ray Train's `checkpoint`, or, when its file is damaged (an
    upload cut short, a truncated file), of the newest earlier checkpoint of the same run
    that loads: the run goes on from there, its step count continuing. Raises
    `TrainStateError` when none loads."""
    from pyarrow import fs as pafs
    from ray.train import Checkpoint

    candidates = [checkpoint]
    parent, name = os.path.split(checkpoint.path.rstrip("/"))
    listing = checkpoint.filesystem.get_file_info(pafs.FileSelector(parent))
    earlier = (info.base_name for info in listing if info.type == pafs.FileType.Directory)
    earlier = sorted((n for n in earlier if n.startswith("checkpoint_") and n < name), reverse=True)
    candidates += [Checkpoint(f"{parent}/{n}", checkpoint.filesystem) for n in earlier]
    errors = []
    for candidate in candidates:
        try:
            with candidate.as_directory() as folder:
                state = TrainState.load(folder)
        except TrainStateError as error:
            logger.warning("skipping a damaged checkpoint: %s", error)
            errors.append(str(error))
            continue
        return state
    raise TrainStateError("no checkpoint of the run loads:\n" + "\n".join(errors))


def _quiet_report_log() -> None:
    """Silence Ray Train's INFO line per `ray.train.report` (every metric, from every rank):
    the progress line of rank 0 says what a user needs. Its logger is named by file path."""
    try:
        from ray.train.v2._internal.execution import context as ray_train_context
    except ImportError:  # another Ray Train version: keep its logging
        return
    logging.getLogger(ray_train_context.__file__).setLevel(logging.WARNING)


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
        evaluation = validate(model, job.val_uri, device, dtype, job.method)
        extra = {f"val/{key}": float(getattr(evaluation, name)) for key, name in SUMMARY_KEYS}
        recognition = validate_recognition(job, model, device)
        extra["val/class_recognition"] = recognition.accuracy
        extra["val/slot_purity"] = recognition.slot_purity
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
