"""AdamW with the backbone learning-rate multiplier, and the step schedule.

As in Mask2Former's recipe: no weight decay on normalisation layers and learned
embeddings (queries, level and position embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

_NO_DECAY_MODULES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d, nn.Embedding)


@dataclass(frozen=True)
class OptimConfig:
    """The official VITA R-50 values by default (reference section 2)."""

    lr: float = 5e-5
    weight_decay: float = 0.05
    backbone_multiplier: float = 0.1
    # Full-model gradient clipping: the L2 norm of all gradients together.
    clip_grad_norm: float | None = 0.01
    steps: int = 140_000
    lr_milestones: tuple[int, ...] = (75_000,)
    lr_gamma: float = 0.1
    warmup_steps: int = 0


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    """AdamW over trainable parameters: groups by (backbone or not) x (decay or not)."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    no_decay = _no_decay_parameters(model)
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        key = (".backbone." in f".{name}", id(parameter) in no_decay)
        groups.setdefault(key, []).append(parameter)
    return torch.optim.AdamW(
        [
            {
                "params": parameters,
                "lr": config.lr * (config.backbone_multiplier if backbone else 1.0),
                "weight_decay": 0.0 if without_decay else config.weight_decay,
            }
            for (backbone, without_decay), parameters in sorted(groups.items())
        ]
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: OptimConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then the learning rate times `lr_gamma` at each milestone."""

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
        return warm * config.lr_gamma ** sum(step >= m for m in config.lr_milestones)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _no_decay_parameters(model: nn.Module) -> set[int]:
    ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, _NO_DECAY_MODULES):
            ids.update(id(p) for p in module.parameters(recurse=False))
    for name, parameter in model.named_parameters():
        if name.endswith(("query_feat.weight", "query_embed.weight", "fq_pos.weight")) or (
            name.endswith("level_embed")
        ):
            ids.add(id(parameter))
    return ids
