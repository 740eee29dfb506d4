"""HF's training loss (reference 2.3, Eq. 6-9), with the frame losses when the detector
trains too.

Every frame t of a clip is a target frame (the head ran on it with its clip's previous
frames as references). Its slots are matched to the clip's instances by one Hungarian
assignment over the pair (t-1, t) (pairwise matching, "PM"; frame 0 of a clip, or every
frame without `pairwise_matching`, is matched alone), maximising

    Sim(i, k) = Dice([m_{t-1}^i, m_t^i], [g_{t-1}^k, g_t^k]) * sum_f p_f^i(c_k)

where m are the softmax-over-slots masks, the Dice coefficient runs over the 2-frame
tube, and the class sum over the frames of the pair where instance k is visible. The
loss on frame t (Eq. 9, MaX-DeepLab's PQ-style form) then takes the slots matched to an
instance visible at t as positives, every other slot as negative:

    loss_hitf_positive = sum_pos [ p(c) (1 - Dice(m, g)) + Dice(m, g) (-log p(c)) ] / Q
    loss_hitf_negative = sum_neg -log p(no object) / Q
    loss_hitf_mask_id  = mean over cells of the cross-entropy of the softmax over slots:
                         an instance's cells belong to its slot, background cells to the
                         negative slots together

with p(c) and Dice held constant where they weigh the other factor (stop-gradient, as
MaX-DeepLab); `1 - Dice` has the paper's gradient and keeps the term non-negative. Terms
are averaged over the target frames of the batch and weighted pq_weight * positive_weight,
pq_weight * (1 - positive_weight) and mask_id_weight. Masks are scored on every cell of
the stride-4 grid against area-resized targets (a cell's covered share).

With `frozen_detector=False` the frame detector's own terms (`loss_ce`, ...) are added.

Dimension letters: B clips, T frames, Q slots, K classes, M instances, P cells of the
stride-4 grid (h x w).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vis_core.data.targets import ClipTargets
from vis_core.losses.criterion import Losses, term_weight
from vis_core.losses.frame_criterion import FrameCriterion
from vis_core.losses.mask_losses import (
    dice_coefficient,
    downsample_targets,
    pairwise_dice_coefficient,
)
from vis_core.losses.matcher import Matching, solve_assignment
from vis_core.modeling.config import LossConfig, ModelConfig
from vis_core.modeling.frame_detector import FrameDetections
from vis_core.modeling.head_config import HitfConfig
from vis_core.modeling.hitf import HitfOutput
from vis_core.modeling.vita_model import ClipPrediction

HITF_TERMS = ("loss_hitf_positive", "loss_hitf_negative", "loss_hitf_mask_id")


def match_slots(
    class_logits: Tensor,
    mask_logits: Tensor,
    labels: Tensor,
    target_masks: Tensor,
    present: Tensor,
) -> Matching:
    """The slot of each instance over F frames (2 for a pair, 1 alone), maximising the
    summed Sim (module docstring).

    class_logits `[F, Q, K+1]`, mask_logits `[F, Q, P]` (softmax over Q), labels `[M]`,
    target_masks `[M, F, P]` in [0, 1], present `[M, F]` bool. Returns min(Q, M) pairs.
    """
    with torch.no_grad():
        frames, slots = class_logits.shape[:2]
        masks = mask_logits.float().softmax(dim=1).transpose(0, 1).flatten(1)  # [Q, F*P]
        dice = pairwise_dice_coefficient(masks, target_masks.float().flatten(1))  # [Q, M]
        probability = class_logits.float().softmax(dim=-1)  # [F, Q, K+1]
        index = labels[None, None, :].expand(frames, slots, -1)
        class_probability = probability.gather(2, index)  # [F, Q, M]
        class_sum = (class_probability * present.T[:, None, :]).sum(dim=0)  # [Q, M]
        return solve_assignment(-(dice * class_sum))


def frame_losses(
    class_logits: Tensor,
    mask_logits: Tensor,
    slots: Tensor,
    labels: Tensor,
    target_masks: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """The three unweighted terms of one target frame (module docstring).

    class_logits `[Q, K+1]`, mask_logits `[Q, P]`; slots `[M]` int64: the slot of each
    instance visible in the frame; labels `[M]`; target_masks `[M, P]` in [0, 1].
    Returns (positive, negative, mask_id) scalars.
    """
    num_slots = class_logits.shape[0]
    log_p = class_logits.float().log_softmax(dim=-1)  # [Q, K+1]
    log_m = mask_logits.float().log_softmax(dim=0)  # [Q, P]
    targets = target_masks.float()
    positive = torch.zeros(num_slots, dtype=torch.bool, device=log_p.device)
    positive[slots] = True

    log_class = log_p[slots, labels]  # [M]
    dice = dice_coefficient(log_m[slots].exp(), targets)  # [M]
    loss_positive = (
        log_class.exp().detach() * (1.0 - dice) - dice.detach() * log_class
    ).sum() / num_slots
    loss_negative = -log_p[~positive, -1].sum() / num_slots

    # Cells shared by overlapping instances split their weight; the rest is background.
    coverage = targets.sum(dim=0)  # [P]
    shares = targets / coverage.clamp(min=1.0)
    background = (1.0 - coverage).clamp(min=0.0)
    cross_entropy = -(shares * log_m[slots]).sum(dim=0)  # [P]
    if bool((~positive).any()):
        cross_entropy = cross_entropy - background * log_m[~positive].logsumexp(dim=0)
    return loss_positive, loss_negative, cross_entropy.mean()


def hitf_losses(output: HitfOutput, clips: Sequence[ClipTargets], pairwise: bool) -> list[Tensor]:
    """The three HF terms (`HITF_TERMS` order), averaged over every frame of B clips.

    output: leading `[B, T]`, mask logits `[B, T, Q, h, w]`; clips: targets with masks
    `[M, T, h, w]` at the mask logits' grid (area-resized)."""
    batch, frames = output.class_logits.shape[:2]
    if len(clips) != batch:
        raise ValueError(f"{len(clips)} clip targets for B={batch} clips")
    class_logits = output.class_logits
    mask_logits = output.mask_logits.flatten(3)  # [B, T, Q, P]
    sums = [class_logits.sum() * 0.0 for _ in HITF_TERMS]  # zeros that keep the graph
    expected = (frames, *output.mask_logits.shape[-2:])
    for clip, targets in enumerate(clips):
        if tuple(targets.masks.shape[1:]) != expected:
            raise ValueError(
                f"clip {clip}: target masks {tuple(targets.masks.shape)} are not [M, T, h, w] "
                f"with (T, h, w) = {expected}, the predicted masks' grid"
            )
        present = targets.present  # [M, T]
        flat = targets.masks.flatten(2)  # [M, T, P]
        for t in range(frames):
            first = t - 1 if pairwise and t > 0 else t
            window = slice(first, t + 1)
            # Instances seen in the window: one absent from both frames would take a slot.
            seen = torch.nonzero(present[:, window].any(dim=1))[:, 0]
            matching = match_slots(
                class_logits[clip, window],
                mask_logits[clip, window],
                targets.labels[seen],
                flat[seen, window],
                present[seen, window],
            )
            instances = seen[matching.target_index.to(seen.device)]
            visible = present[instances, t]
            slots = matching.prediction_index.to(seen.device)[visible]
            instances = instances[visible]
            terms = frame_losses(
                class_logits[clip, t],
                mask_logits[clip, t],
                slots.to(class_logits.device),
                targets.labels[instances],
                flat[instances, t],
            )
            sums = [total + term for total, term in zip(sums, terms, strict=True)]
    return [total / (batch * frames) for total in sums]


class HitfCriterion(nn.Module):
    """HF's terms of a `ClipPrediction` with `hitf` against B clips' targets, plus the
    frame losses unless the detector is frozen."""

    def __init__(
        self,
        config: LossConfig,
        head: HitfConfig,
        num_classes: int,
        vita_last_layers: int,
        *,
        frozen_detector: bool = False,
    ):
        super().__init__()
        self.config = config
        self.head = head
        self.frozen_detector = frozen_detector
        self.frame = FrameCriterion(config, num_classes, vita_last_layers)
        self._weights = {
            "loss_hitf_positive": head.pq_weight * head.positive_weight,
            "loss_hitf_negative": head.pq_weight * (1.0 - head.positive_weight),
            "loss_hitf_mask_id": head.mask_id_weight,
            "loss_ce": config.class_weight,
            "loss_mask": config.mask_weight,
            "loss_dice": config.dice_weight,
        }

    @classmethod
    def for_model(cls, config: ModelConfig, *, frozen_detector: bool = False) -> HitfCriterion:
        if config.hitf is None:
            raise ValueError(f"model config {config.name} has no HF head")
        return cls(
            config.loss,
            config.hitf,
            config.num_classes,
            config.frame_decoder.vita_last_layers,
            frozen_detector=frozen_detector,
        )

    def weight_of(self, name: str) -> float:
        """The weight of a term (`loss_ce_3` and `loss_pilot_ce` weigh as `loss_ce`)."""
        return term_weight(self._weights, name, strip=("pilot",))

    def forward(self, prediction: ClipPrediction, targets: Sequence[ClipTargets]) -> Losses:
        """prediction: the model's output on B clips of T frames (training mode).
        targets: one `ClipTargets` per clip, masks at the padded input size."""
        if prediction.hitf is None:
            raise ValueError("the prediction has no HF output: the model has no HF head")
        return self.losses(prediction.frames, prediction.hitf, targets)

    def losses(
        self,
        detections: FrameDetections | None,
        output: HitfOutput,
        targets: Sequence[ClipTargets],
    ) -> Losses:
        """The terms from the detector's output on the B*T frames (clip-major; read only
        when the detector trains, may be None when it is frozen) and the head's output
        (leading `[B, T]`)."""
        device = output.class_logits.device
        grid = tuple(output.mask_logits.shape[-2:])
        clips = [target.to(device) for target in targets]
        # Targets once at the stride-4 grid (the head's masks are scored on every cell).
        dense = [
            ClipTargets(clip.labels, downsample_targets(clip.masks, grid), clip.track_ids)
            for clip in clips
        ]
        terms: dict[str, Tensor] = {}
        if not self.frozen_detector:
            if detections is None:
                raise ValueError("the frame losses need the detector's output")
            frame_clips = dense if self.config.dense_masks else clips
            frame_targets = [clip.frame(t) for clip in frame_clips for t in range(clip.num_frames)]
            terms.update(self.frame(detections, frame_targets).terms)
        values = hitf_losses(output, dense, self.head.pairwise_matching)
        terms.update(zip(HITF_TERMS, values, strict=True))
        return Losses(terms=terms, weights={name: self.weight_of(name) for name in terms})
