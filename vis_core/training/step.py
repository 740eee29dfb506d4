"""One optimisation step: forward, criterion, backward, clipping, update.

Plain PyTorch, so the same step runs in a test, a notebook, or a Ray Train worker
(where `model` is wrapped in DistributedDataParallel).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from vis_core.data.targets import ClipTargets
from vis_core.modeling.config import ModelConfig
from vis_core.modeling.mask_pilot import MaskPilot
from vis_core.training.batch import ClipBatch


@dataclass(frozen=True)
class StepResult:
    """Weighted total loss, the unweighted terms, the gradient norm before clipping."""

    loss: float
    terms: dict[str, float]
    grad_norm: float


def train_step(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: ClipBatch,
    clip_grad_norm: float | None = None,
    autocast_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    mask_piloting: bool = False,
) -> StepResult:
    """Run one step on `batch` (already on the model's device).

    autocast_dtype: bf16 or fp16 mixed precision (fp16 wants a GradScaler); None for fp32.
    mask_piloting: feed the frames' ground truth to the detector as pilot queries (the
    model must be built with `mask_piloting`; see `vis_core/modeling/mask_pilot.py`).
    """
    core = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    device = next(core.parameters()).device
    images, targets = batch.model_inputs(core.detector.preprocess)
    autocast = (
        torch.autocast(device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else nullcontext()
    )
    model.train()
    with autocast:
        pilot = frame_pilot(targets, core.config) if mask_piloting else None
        prediction = model(images, pilot=pilot)
        losses = criterion(prediction, targets)
        total = losses.total()
    if not torch.isfinite(total):
        raise FloatingPointError(f"non-finite loss {total.item()}: {losses.detached()}")
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(total).backward()
        scaler.unscale_(optimizer)
    else:
        total.backward()
    parameters = [p for p in core.parameters() if p.grad is not None]
    max_norm = clip_grad_norm if clip_grad_norm is not None else float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return StepResult(
        loss=float(total.detach()), terms=losses.detached(), grad_norm=float(grad_norm)
    )


def frame_pilot(targets: tuple[ClipTargets, ...], config: ModelConfig) -> MaskPilot:
    """The pilot of B clips' T frames (clip-major), each frame's visible objects in the
    order the criterion's frame targets take them."""
    frames = [clip.frame(t) for clip in targets for t in range(clip.num_frames)]
    return MaskPilot.from_frames(
        [frame.labels for frame in frames],
        [frame.masks for frame in frames],
        config.num_classes,
        config.frame_decoder.pilot_label_noise,
    )
