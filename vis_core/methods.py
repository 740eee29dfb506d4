"""The ways of turning per-frame detections into video instances: `--method` picks one.

The single registry behind `vis segment --method`, `vis train --method` and training
validation. Each method says how to build its segmenter for a model, and, when it can be
trained, its criterion, the head it adds to a model config (an online head is an optional
`ModelConfig` field, so the model file carries its weights) and its training clip length.

- `vita` (the method of record): VITA over all frame queries, offline (`VideoSegmenter`).
- `per-frame`: the detector per frame, linked by greedy mask IoU (`PerFrameSegmenter`).
- `querytrack`: QueryTrack-style contrastive embeddings, online association with a
  memory of live tracks (`OnlineSegmenter` with `QueryTrackTracker`).
- `hitf`: hybrid instance-code temporal fusion (HF): slots fused with the previous
  frames', identity by slot index and mask IoU (`OnlineSegmenter` with `HitfTracker`).
- `l2g`: Local2Global, queries propagated from frame to frame through the detector's frame
  decoder after the L2G aligner; identity is the query (`OnlineSegmenter` with `L2gTracker`).

Importing this module is cheap (the CLI lists the names): the factories import the
model code when called.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vis_core.modeling.config import ModelConfig
from vis_core.modeling.head_config import HitfConfig, L2gConfig, QueryTrackConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

    from vis_core.inference.dataset import Segmenter
    from vis_core.modeling.vita_model import VitaModel


@dataclass(frozen=True)
class Method:
    """One method. segmenter(model, device, dtype); criterion(model_config,
    frozen_detector), None when there is nothing to train; with_head(model_config): the
    config with the method's head (unchanged when it has one or needs none);
    clip_frames: the training clip length it is made for (None: the recipe's)."""

    name: str
    summary: str
    segmenter: Callable[[VitaModel, Any, torch.dtype], Segmenter]
    criterion: Callable[[ModelConfig, bool], nn.Module] | None = None
    with_head: Callable[[ModelConfig], ModelConfig] = lambda config: config
    clip_frames: int | None = None

    @property
    def trainable(self) -> bool:
        return self.criterion is not None


def _vita_segmenter(model: VitaModel, device: Any, dtype: torch.dtype) -> Segmenter:
    from vis_core.inference.segmenter import VideoSegmenter

    return VideoSegmenter(model, device=device, dtype=dtype)


def _vita_criterion(config: ModelConfig, frozen_detector: bool) -> nn.Module:
    from vis_core.losses.criterion import VitaCriterion

    return VitaCriterion.for_model(config, frozen_detector=frozen_detector)


def _per_frame_segmenter(model: VitaModel, device: Any, dtype: torch.dtype) -> Segmenter:
    from vis_core.inference.per_frame import PerFrameSegmenter

    return PerFrameSegmenter(model, device=device, dtype=dtype)


def _querytrack_segmenter(model: VitaModel, device: Any, dtype: torch.dtype) -> Segmenter:
    from vis_core.inference.online import OnlineSegmenter
    from vis_core.inference.querytrack_tracker import QueryTrackTracker

    return OnlineSegmenter(model, QueryTrackTracker.for_model(model), device=device, dtype=dtype)


def _querytrack_criterion(config: ModelConfig, frozen_detector: bool) -> nn.Module:
    from vis_core.losses.querytrack_criterion import QueryTrackCriterion

    return QueryTrackCriterion.for_model(config, frozen_detector=frozen_detector)


def _with_querytrack(config: ModelConfig) -> ModelConfig:
    if config.querytrack is not None:
        return config
    return dataclasses.replace(config, querytrack=QueryTrackConfig())


def _hitf_segmenter(model: VitaModel, device: Any, dtype: torch.dtype) -> Segmenter:
    from vis_core.inference.hitf_tracker import HitfTracker
    from vis_core.inference.online import OnlineSegmenter

    return OnlineSegmenter(model, HitfTracker.for_model(model), device=device, dtype=dtype)


def _hitf_criterion(config: ModelConfig, frozen_detector: bool) -> nn.Module:
    from vis_core.losses.hitf_criterion import HitfCriterion

    return HitfCriterion.for_model(config, frozen_detector=frozen_detector)


def _with_hitf(config: ModelConfig) -> ModelConfig:
    if config.hitf is not None:
        return config
    return dataclasses.replace(config, hitf=HitfConfig())


def _l2g_segmenter(model: VitaModel, device: Any, dtype: torch.dtype) -> Segmenter:
    from vis_core.inference.l2g_tracker import L2gTracker
    from vis_core.inference.online import OnlineSegmenter

    return OnlineSegmenter(model, L2gTracker.for_model(model), device=device, dtype=dtype)


def _l2g_criterion(config: ModelConfig, frozen_detector: bool) -> nn.Module:
    from vis_core.losses.l2g_criterion import L2gCriterion

    return L2gCriterion.for_model(config, frozen_detector=frozen_detector)


def _with_l2g(config: ModelConfig) -> ModelConfig:
    if config.l2g is not None:
        return config
    return dataclasses.replace(config, l2g=L2gConfig())


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method(
            "vita", "VITA over every frame's queries (offline)", _vita_segmenter, _vita_criterion
        ),
        Method("per-frame", "the detector per frame, greedy mask-IoU links", _per_frame_segmenter),
        Method(
            "querytrack",
            "contrastive track embeddings, online association (QueryTrack)",
            _querytrack_segmenter,
            _querytrack_criterion,
            with_head=_with_querytrack,
            clip_frames=2,  # a key frame and a reference frame (reference 1.3)
        ),
        Method(
            "hitf",
            "instance codes fused with the previous frames, slot identities (HF)",
            _hitf_segmenter,
            _hitf_criterion,
            with_head=_with_hitf,
            clip_frames=5,  # a target frame, its 3 references and t-1's first (reference 2.3)
        ),
        Method(
            "l2g",
            "queries propagated frame to frame through the L2G aligner, online (Local2Global)",
            _l2g_segmenter,
            _l2g_criterion,
            with_head=_with_l2g,
            clip_frames=4,  # the paper's training clips (reference 3.3)
        ),
    )
}
TRAINABLE_METHODS = tuple(name for name, method in METHODS.items() if method.trainable)


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose from {sorted(METHODS)}") from None


def build_segmenter(
    name: str, model: VitaModel, device: Any = None, dtype: torch.dtype | None = None
) -> Segmenter:
    """The segmenter of method `name` for `model` (float32 unless `dtype`); a ValueError
    when the model lacks the method's head."""
    import torch

    return get_method(name).segmenter(model, device, dtype or torch.float32)
