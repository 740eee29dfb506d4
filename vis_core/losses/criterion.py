"""The training criterion of the whole model: frame-level, clip-level and similarity losses.

`VitaCriterion(prediction, targets) -> Losses` holds the unweighted terms and their
reference weights (section 2 of the spec):
- frame detector, on the final and every auxiliary prediction: ce 2, mask 5, dice 5
  (`loss_ce`, `loss_mask`, `loss_dice`, `loss_ce_0`, ...);
- VITA, on every decoder layer: ce 2, mask 5, dice 5 (`loss_vita_ce`, ..., `loss_vita_ce_0`,
  ...);
- `loss_vita_sim` 0.5.
With `frozen_detector=True` the frame terms are left out; the frame matching still runs
on the fed layers because the similarity loss needs it. VITA's losses still reach the
detector through the frame queries, so the trainer freezes the detector's parameters.

Dimension letters: B clips, T frames, L fed frame-decoder layers, H x W padded input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from torch import Tensor, nn

from vis_core.data.targets import ClipTargets
from vis_core.losses.frame_criterion import FrameCriterion
from vis_core.losses.mask_losses import downsample_targets
from vis_core.losses.vita_criterion import ClipCriterion
from vis_core.modeling.config import LossConfig, ModelConfig
from vis_core.modeling.vita_model import ClipPrediction

_AUX_SUFFIX = re.compile(r"_\d+$")


def term_weight(weights: Mapping[str, float], name: str, strip: Sequence[str] = ()) -> float:
    """The weight of loss term `name` in `weights` (keyed by base names): an auxiliary
    layer's term weighs as the last layer's (`loss_ce_3` as `loss_ce`), and a term of the
    groups in `strip` as the plain one (with "pilot": `loss_pilot_ce` as `loss_ce`)."""
    base = _AUX_SUFFIX.sub("", name)
    for group in strip:
        base = base.replace(f"loss_{group}_", "loss_", 1)
    if base not in weights:
        raise KeyError(f"unknown loss term {name!r}")
    return weights[base]


@dataclass(frozen=True)
class Losses:
    """Named loss terms (unweighted scalars) and the weight of each in the total."""

    terms: Mapping[str, Tensor]
    weights: Mapping[str, float]

    def __post_init__(self) -> None:
        if not self.terms:
            raise ValueError("Losses needs at least one term")
        if set(self.terms) != set(self.weights):
            raise ValueError(
                f"terms {sorted(self.terms)} and weights {sorted(self.weights)} differ"
            )
        object.__setattr__(self, "terms", MappingProxyType(dict(self.terms)))
        object.__setattr__(self, "weights", MappingProxyType(dict(self.weights)))

    def total(self) -> Tensor:
        """The weighted sum, the scalar to backpropagate."""
        return sum(self.weights[name] * term for name, term in self.terms.items())

    def detached(self) -> dict[str, float]:
        """The unweighted terms as floats, for logging."""
        return {name: float(term.detach()) for name, term in self.terms.items()}


class VitaCriterion(nn.Module):
    """Losses of a `ClipPrediction` (model in training mode) against B clips' targets."""

    def __init__(
        self,
        config: LossConfig,
        num_classes: int,
        vita_last_layers: int,
        *,
        frozen_detector: bool = False,
    ):
        super().__init__()
        self.config = config
        self.vita_last_layers = vita_last_layers
        self.frozen_detector = frozen_detector
        self.frame = FrameCriterion(config, num_classes, vita_last_layers)
        self.clip = ClipCriterion(config, num_classes)
        self._base_weights = {
            "loss_ce": config.class_weight,
            "loss_mask": config.mask_weight,
            "loss_dice": config.dice_weight,
            "loss_pilot_ce": config.class_weight,
            "loss_pilot_mask": config.mask_weight,
            "loss_pilot_dice": config.dice_weight,
            "loss_vita_ce": config.class_weight,
            "loss_vita_mask": config.mask_weight,
            "loss_vita_dice": config.dice_weight,
            "loss_vita_sim": config.sim_weight,
        }

    @classmethod
    def for_model(cls, config: ModelConfig, *, frozen_detector: bool = False) -> VitaCriterion:
        """The criterion of a model config (its loss config, classes and fed layers)."""
        return cls(
            config.loss,
            config.num_classes,
            config.frame_decoder.vita_last_layers,
            frozen_detector=frozen_detector,
        )

    def weight_of(self, name: str) -> float:
        """The reference weight of a term name (`loss_ce_3` weighs as `loss_ce`)."""
        return term_weight(self._base_weights, name)

    def forward(self, prediction: ClipPrediction, targets: Sequence[ClipTargets]) -> Losses:
        """prediction: the model's output on B clips of T frames, in training mode.
        targets: one `ClipTargets` per clip, masks at the padded input size `[N, T, H, W]`."""
        self._check(prediction, targets)
        device = prediction.video.pred_logits.device
        frames = prediction.mask_features.shape[1]
        # Instances absent from every frame of the sampled clip are not targets (official).
        clips = [_visible_instances(target.to(device)) for target in targets]
        if self.config.dense_masks:  # targets once at the predicted masks' resolution
            size = tuple(prediction.mask_features.shape[-2:])
            clips = [
                ClipTargets(clip.labels, downsample_targets(clip.masks, size), clip.track_ids)
                for clip in clips
            ]
        frame_targets = [clip.frame(t) for clip in clips for t in range(frames)]

        frame_output = self.frame(
            prediction.frames, frame_targets, compute_losses=not self.frozen_detector
        )
        clip_terms = self.clip(
            prediction.video,
            prediction.mask_features,
            clips,
            frame_targets,
            frame_output.vita_matchings,
        )
        terms = {**frame_output.terms, **clip_terms}
        return Losses(terms=terms, weights={name: self.weight_of(name) for name in terms})

    def _check(self, prediction: ClipPrediction, targets: Sequence[ClipTargets]) -> None:
        batch, frames = prediction.mask_features.shape[:2]
        layers = prediction.video.pred_fq_embed.shape[0]
        if layers != self.vita_last_layers:
            raise ValueError(
                f"VITA ran on L={layers} frame-decoder layers, the criterion expects "
                f"{self.vita_last_layers}: put the model in training mode"
            )
        if len(targets) != batch:
            raise ValueError(f"{len(targets)} clip targets for B={batch} clips")
        mask_h, mask_w = prediction.mask_features.shape[-2:]
        for index, target in enumerate(targets):
            if target.num_frames != frames:
                raise ValueError(
                    f"clip {index}: targets have {target.num_frames} frames, not {frames}"
                )
            height, width = target.masks.shape[-2:]
            # Targets and predicted masks must cover the same (padded) extent.
            if height * mask_w != width * mask_h:
                raise ValueError(
                    f"clip {index}: target masks {height}x{width} do not have the aspect of the "
                    f"{mask_h}x{mask_w} mask features (give masks at the padded input size)"
                )


def _visible_instances(targets: ClipTargets) -> ClipTargets:
    keep = targets.present.any(dim=1)
    if bool(keep.all()):
        return targets
    return ClipTargets(
        labels=targets.labels[keep], masks=targets.masks[keep], track_ids=targets.track_ids[keep]
    )
