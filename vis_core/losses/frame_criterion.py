"""Mask2Former's frame-level set loss, with deep supervision.

Every frame-decoder prediction (the final one and each auxiliary one, the first of those
made from the learnable queries) is matched to the frame's targets on its own and scored
with class cross-entropy (no-object weight `no_object_weight`) and point-sampled BCE and
dice on the matched masks. Mask terms are normalised by the number of target masks in the
batch, averaged over workers.

The frame matchings of the predictions whose queries feed VITA (the last
`vita_last_layers` layers) are returned too: the similarity loss uses them.

Dimension letters: N frames, Q frame queries, K classes (K+1 logits, no-object last),
h x w the predicted masks, H x W the target masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vis_core.data.targets import FrameTargets
from vis_core.losses.class_loss import ClassLoss
from vis_core.losses.mask_losses import average_mask_count, mask_losses
from vis_core.losses.matcher import FrameMatcher, Matching
from vis_core.modeling.config import LossConfig
from vis_core.modeling.frame_decoder import FramePrediction
from vis_core.modeling.frame_detector import FrameDetections


@dataclass(frozen=True)
class FrameLossOutput:
    """terms: unweighted losses `loss_ce`, `loss_mask`, `loss_dice` (final prediction) and
    `loss_ce_i`, ... for auxiliary prediction i; empty when only matching was asked for.
    vita_matchings: for each of the last L predictions (oldest first, the final one last),
    one `Matching` per frame; entry l goes with `frame_queries[l]`."""

    terms: dict[str, Tensor]
    vita_matchings: tuple[tuple[Matching, ...], ...]


def all_predictions(detections: FrameDetections) -> tuple[FramePrediction, ...]:
    """The auxiliary predictions in order, then the final one."""
    final = FramePrediction(pred_logits=detections.pred_logits, pred_masks=detections.pred_masks)
    return (*detections.aux_outputs, final)


class FrameCriterion(nn.Module):
    """The frame-level losses of `FrameDetections` against per-frame targets."""

    def __init__(self, config: LossConfig, num_classes: int, vita_last_layers: int):
        super().__init__()
        if vita_last_layers < 1:
            raise ValueError(f"vita_last_layers must be >= 1, got {vita_last_layers}")
        self.config = config
        self.num_classes = num_classes
        self.vita_last_layers = vita_last_layers
        self.matcher = FrameMatcher(config)
        self.class_loss = ClassLoss(num_classes, config.no_object_weight)

    def forward(
        self,
        detections: FrameDetections,
        targets: Sequence[FrameTargets],
        *,
        compute_losses: bool = True,
    ) -> FrameLossOutput:
        """detections of N frames; targets: the N frames' visible instances.

        With `compute_losses=False` (frozen detector) only the last L predictions are
        matched, for the similarity loss, and no loss term is built.
        """
        predictions = all_predictions(detections)
        self._check(predictions, targets)
        first_fed = len(predictions) - self.vita_last_layers
        num_masks = 1.0
        if compute_losses:
            local = sum(len(target.labels) for target in targets)
            num_masks = average_mask_count(local, detections.pred_logits.device)
        final_terms: dict[str, Tensor] = {}
        aux_terms: dict[str, Tensor] = {}
        vita_matchings: list[tuple[Matching, ...]] = []
        for index, prediction in enumerate(predictions):
            final = index == len(predictions) - 1
            supervised = compute_losses and (final or self.config.deep_supervision)
            if not supervised and index < first_fed:
                continue
            matchings = self.matcher(prediction, targets)
            if index >= first_fed:
                vita_matchings.append(tuple(matchings))
            if supervised:
                losses = self._losses(prediction, targets, matchings, num_masks)
                if final:
                    final_terms.update(losses)
                else:
                    aux_terms.update({f"{name}_{index}": value for name, value in losses.items()})
        if compute_losses and detections.pilot_predictions:
            aux_terms.update(self._pilot_losses(detections.pilot_predictions, targets, num_masks))
        return FrameLossOutput(
            terms={**final_terms, **aux_terms}, vita_matchings=tuple(vita_matchings)
        )

    def _pilot_losses(
        self,
        predictions: Sequence[FramePrediction],
        targets: Sequence[FrameTargets],
        num_masks: float,
    ) -> dict[str, Tensor]:
        """Mask-piloted queries: slot m of a frame reconstructs the frame's m-th object
        (fixed assignment), padded slots are no-object; every prediction is supervised
        (`loss_pilot_ce`, ... for the final one, `loss_pilot_ce_i`, ... before it)."""
        assignment = [
            Matching(torch.arange(len(t.labels)), torch.arange(len(t.labels))) for t in targets
        ]
        terms: dict[str, Tensor] = {}
        last = len(predictions) - 1
        for index, prediction in enumerate(predictions):
            if index < last and not self.config.deep_supervision:
                continue
            suffix = "" if index == last else f"_{index}"
            losses = self._losses(prediction, targets, assignment, num_masks)
            terms.update(
                {name.replace("loss_", "loss_pilot_") + suffix: v for name, v in losses.items()}
            )
        return terms

    def _losses(
        self,
        prediction: FramePrediction,
        targets: Sequence[FrameTargets],
        matchings: Sequence[Matching],
        num_masks: float,
    ) -> dict[str, Tensor]:
        logits, masks = prediction.pred_logits, prediction.pred_masks
        device = logits.device
        frame_index = torch.cat(
            [torch.full((len(m),), n, dtype=torch.int64) for n, m in enumerate(matchings)]
        ).to(device)
        query_index = torch.cat([m.prediction_index for m in matchings]).to(device)
        matched = [
            (t, m.target_index.to(t.labels.device)) for t, m in zip(targets, matchings, strict=True)
        ]
        matched_labels = torch.cat([t.labels[index] for t, index in matched]).to(device)
        target_classes = torch.full(
            logits.shape[:2], self.num_classes, dtype=torch.int64, device=device
        )
        target_classes[frame_index, query_index] = matched_labels
        class_loss = self.class_loss(logits, target_classes)
        target_masks = torch.cat([t.masks[index] for t, index in matched]).to(device)  # [Nt, H, W]
        mask_terms = mask_losses(
            masks[frame_index, query_index][:, None],  # [Nt, 1, h, w]
            target_masks[:, None],
            num_masks,
            self.config,
        )
        return {
            "loss_ce": class_loss,
            "loss_mask": mask_terms.sigmoid_ce,
            "loss_dice": mask_terms.dice,
        }

    def _check(
        self, predictions: Sequence[FramePrediction], targets: Sequence[FrameTargets]
    ) -> None:
        # Prediction 0 comes from the learnable queries, which VITA never sees.
        if self.vita_last_layers > len(predictions) - 1:
            raise ValueError(
                f"vita_last_layers={self.vita_last_layers} but the detector has only "
                f"{len(predictions) - 1} decoder layers"
            )
        frames = predictions[-1].pred_logits.shape[0]
        if len(targets) != frames:
            raise ValueError(f"{len(targets)} frame targets for {frames} frames")
