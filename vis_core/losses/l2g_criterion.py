"""Local2Global's clip loss (reference 3.3, Eq. 4), with the frame losses when the
detector trains too.

Identity is the query index, so each clip's ground-truth instances are matched to the
global queries once: at the first clip frame where an instance is visible, Hungarian
matching (the frame matcher's costs on that frame's final prediction) among the queries
no earlier instance took. The instance keeps its query for the rest of the clip. In each
frame a taken query's target is its instance (class and mask) where the instance is
visible and no object where it is not (no mask loss there); queries never taken are no
object throughout. The same assignment scores every decoder prediction (deep
supervision). Terms, unweighted:

- `loss_l2g_ce`, `loss_l2g_mask`, `loss_l2g_dice`: class cross-entropy (no-object weight
  `no_object_weight`) and BCE and dice on the taken queries' masks, over the supervised
  frames of the final prediction; `loss_l2g_ce_i`, ... on decoder prediction i (prediction
  0 is the aligned queries' own, before any decoder layer). Weighted as the detector's
  class, mask and dice terms (the reference's choice on a pretrained Mask2Former).
- `loss_l2g_token`: the token class head that ranks the local queries, a sigmoid focal
  loss on every token of every frame against the class of the object covering it (more
  than half of the token's cell), divided by the number of such tokens.
- With `frozen_detector=False`, the detector's own frame terms (`loss_ce`, ...).

Reduced supervision (§3.2): per clip of T > 2 frames, the losses skip k frames, k drawn
from 1..T-2, chosen among the first T-1 (the last frame always counts); matching still
sees every frame. The paper's Eq. 4 has no separate alignment term: the aligner learns
through these per-frame losses alone.

Dimension letters: B clips, T frames, Q queries, K classes, M instances of a clip, S tokens
of a frame, h x w the predicted masks, H x W the padded input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vis_core.data.targets import ClipTargets, FrameTargets
from vis_core.losses.class_loss import ClassLoss
from vis_core.losses.criterion import Losses, term_weight
from vis_core.losses.frame_criterion import FrameCriterion
from vis_core.losses.mask_losses import average_mask_count, downsample_targets, mask_losses
from vis_core.losses.matcher import FrameMatcher
from vis_core.modeling.config import LossConfig, ModelConfig
from vis_core.modeling.frame_decoder import FramePrediction
from vis_core.modeling.head_config import L2gConfig
from vis_core.modeling.l2g import L2gOutput
from vis_core.modeling.vita_model import ClipPrediction


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float, gamma: float) -> Tensor:
    """RetinaNet's focal loss per entry: logits, targets `[...]` (targets in [0, 1])."""
    probability = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = probability * targets + (1 - probability) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * ce * (1 - p_t).pow(gamma)


def assign_queries(matcher: FrameMatcher, final: FramePrediction, clip: ClipTargets) -> Tensor:
    """Each instance's query for the whole clip (module docstring).

    final: one clip's final prediction, pred_logits `[T, Q, K+1]`, pred_masks `[T, Q, h, w]`;
    clip: its targets (masks at any size the matcher takes). Returns the query of each
    instance `[M]` int64 on the CPU; -1 where the instance is never visible, or no query
    was left when it first was.
    """
    frames, queries = final.pred_logits.shape[:2]
    query_of = torch.full((len(clip.labels),), -1, dtype=torch.int64)
    taken = torch.zeros(queries, dtype=torch.bool)
    present = clip.present.cpu()  # [M, T]
    for t in range(frames):
        new = torch.nonzero(present[:, t] & (query_of < 0))[:, 0]
        free = torch.nonzero(~taken)[:, 0]
        if len(new) == 0 or len(free) == 0:
            continue
        device = clip.labels.device
        targets = FrameTargets(
            labels=clip.labels[new.to(device)],
            masks=clip.masks[new.to(device), t],
            track_ids=clip.track_ids[new.to(device)],
        )
        candidates = free.to(final.pred_logits.device)
        prediction = FramePrediction(
            final.pred_logits[t, candidates][None], final.pred_masks[t, candidates][None]
        )
        (matching,) = matcher(prediction, [targets])
        chosen = free[matching.prediction_index]
        query_of[new[matching.target_index]] = chosen
        taken[chosen] = True
    return query_of


def supervised_frames(
    frames: int, reduced: bool, generator: torch.Generator | None = None
) -> Tensor:
    """`[T]` bool: the frames whose losses count (reduced supervision, module docstring)."""
    keep = torch.ones(frames, dtype=torch.bool)
    if reduced and frames > 2:
        skipped = int(torch.randint(1, frames - 1, (1,), generator=generator))
        keep[torch.randperm(frames - 1, generator=generator)[:skipped]] = False
    return keep


@dataclass(frozen=True)
class ClipAssignment:
    """Where the clip-level targets land, over B clips: for each (instance, frame) pair
    with a mask loss, clip, frame, query `[P]` int64 and its target mask `[P, h', w']`;
    target_classes `[B, T, Q]` (K = no object); supervised `[B, T]` bool."""

    clips: Tensor
    frames: Tensor
    queries: Tensor
    target_masks: Tensor
    target_classes: Tensor
    supervised: Tensor


class L2gCriterion(nn.Module):
    """The L2G terms of a `ClipPrediction` with `l2g` against B clips' targets, plus the
    frame losses unless the detector is frozen (module docstring)."""

    def __init__(
        self,
        config: LossConfig,
        head: L2gConfig,
        num_classes: int,
        vita_last_layers: int,
        *,
        frozen_detector: bool = False,
    ):
        super().__init__()
        self.config = config
        self.head = head
        self.num_classes = num_classes
        self.frozen_detector = frozen_detector
        self.frame = FrameCriterion(config, num_classes, vita_last_layers)
        self.matcher = self.frame.matcher
        self.class_loss = ClassLoss(num_classes, config.no_object_weight)
        self._weights = {
            "loss_ce": config.class_weight,
            "loss_mask": config.mask_weight,
            "loss_dice": config.dice_weight,
        }

    @classmethod
    def for_model(cls, config: ModelConfig, *, frozen_detector: bool = False) -> L2gCriterion:
        if config.l2g is None:
            raise ValueError(f"model config {config.name} has no L2G head")
        return cls(
            config.loss,
            config.l2g,
            config.num_classes,
            config.frame_decoder.vita_last_layers,
            frozen_detector=frozen_detector,
        )

    def weight_of(self, name: str) -> float:
        """The weight of a term (`loss_l2g_ce_3` weighs as `loss_ce`)."""
        if name == "loss_l2g_token":
            return self.head.token_class_weight
        return term_weight(self._weights, name, strip=("pilot", "l2g"))

    def forward(self, prediction: ClipPrediction, targets: Sequence[ClipTargets]) -> Losses:
        """prediction: the model's output on B clips of T frames (training mode).
        targets: one `ClipTargets` per clip, masks at the padded input size."""
        if prediction.l2g is None:
            raise ValueError("the prediction has no L2G output: the model has no L2G head")
        output = prediction.l2g
        batch, frames = output.token_logits.shape[:2]
        if len(targets) != batch:
            raise ValueError(f"{len(targets)} clip targets for B={batch} clips")
        device = output.token_logits.device
        clips = [target.to(device) for target in targets]
        scored = self._scored_targets(clips, output)
        terms: dict[str, Tensor] = {}
        if not self.frozen_detector:
            frame_targets = [clip.frame(t) for clip in scored for t in range(frames)]
            terms.update(self.frame(prediction.frames, frame_targets).terms)
        terms.update(self.l2g_terms(output, scored))
        terms["loss_l2g_token"] = self.token_loss(output, clips)
        return Losses(terms=terms, weights={name: self.weight_of(name) for name in terms})

    def l2g_terms(self, output: L2gOutput, clips: Sequence[ClipTargets]) -> dict[str, Tensor]:
        """`loss_l2g_ce`, `loss_l2g_mask`, `loss_l2g_dice` and their `_i` (deep
        supervision); clips: targets at the resolution the mask losses take."""
        assignment = self.assign(output.predictions[-1], clips)
        count = average_mask_count(len(assignment.queries), output.token_logits.device)
        terms: dict[str, Tensor] = {}
        last = len(output.predictions) - 1
        for index, prediction in enumerate(output.predictions):
            if index < last and not self.config.deep_supervision:
                continue
            suffix = "" if index == last else f"_{index}"
            for name, value in self._losses(prediction, assignment, count).items():
                terms[name + suffix] = value
        return terms

    def assign(self, final: FramePrediction, clips: Sequence[ClipTargets]) -> ClipAssignment:
        """The targets of every (clip, frame, query) from the clip-level matching."""
        batch, frames, queries = final.pred_logits.shape[:3]
        device = final.pred_logits.device
        target_classes = torch.full(
            (batch, frames, queries), self.num_classes, dtype=torch.int64, device=device
        )
        supervised = torch.stack(
            [supervised_frames(frames, self.head.reduced_supervision) for _ in range(batch)]
        ).to(device)
        where: list[tuple[int, int, int, int]] = []  # (clip, frame, query, instance)
        masks: list[Tensor] = []
        for b, clip in enumerate(clips):
            clip_final = FramePrediction(final.pred_logits[b], final.pred_masks[b])
            query_of = assign_queries(self.matcher, clip_final, clip)
            present = clip.present.cpu()
            for instance, query in enumerate(query_of.tolist()):
                if query < 0:
                    continue
                for t in torch.nonzero(present[instance])[:, 0].tolist():
                    target_classes[b, t, query] = clip.labels[instance]
                    if bool(supervised[b, t]):
                        where.append((b, t, query, instance))
                        masks.append(clip.masks[instance, t])
        index = torch.tensor(where, dtype=torch.int64).reshape(-1, 4).to(device)
        mask_size = tuple(clips[0].masks.shape[-2:]) if clips else (0, 0)
        target_masks = torch.stack(masks) if masks else torch.zeros(0, *mask_size, device=device)
        return ClipAssignment(
            clips=index[:, 0],
            frames=index[:, 1],
            queries=index[:, 2],
            target_masks=target_masks,
            target_classes=target_classes,
            supervised=supervised,
        )

    def token_loss(self, output: L2gOutput, clips: Sequence[ClipTargets]) -> Tensor:
        """`loss_l2g_token` (module docstring); clips: targets at the padded input size."""
        logits = output.token_logits.float()  # [B, T, S, K]
        targets = torch.zeros_like(logits)
        for b, clip in enumerate(clips):
            targets[b] = token_targets(clip, output.token_sizes, self.num_classes)
        loss = sigmoid_focal_loss(
            logits, targets, self.head.token_focal_alpha, self.head.token_focal_gamma
        )
        positives = average_mask_count(int(targets.sum().item()), logits.device)
        return loss.sum() / positives

    def _scored_targets(self, clips: Sequence[ClipTargets], output: L2gOutput) -> list[ClipTargets]:
        """With `dense_masks`, the targets once at the predicted masks' resolution."""
        if not self.config.dense_masks:
            return list(clips)
        size = tuple(output.predictions[-1].pred_masks.shape[-2:])
        return [
            ClipTargets(clip.labels, downsample_targets(clip.masks, size), clip.track_ids)
            for clip in clips
        ]

    def _losses(
        self, prediction: FramePrediction, assignment: ClipAssignment, count: float
    ) -> dict[str, Tensor]:
        supervised = assignment.supervised
        logits = prediction.pred_logits[supervised]  # [n, Q, K+1]
        class_loss = self.class_loss(logits, assignment.target_classes[supervised])
        predicted = prediction.pred_masks[assignment.clips, assignment.frames, assignment.queries]
        mask_terms = mask_losses(
            predicted[:, None], assignment.target_masks[:, None], count, self.config
        )
        return {
            "loss_l2g_ce": class_loss,
            "loss_l2g_mask": mask_terms.sigmoid_ce,
            "loss_l2g_dice": mask_terms.dice,
        }


def token_targets(clip: ClipTargets, sizes: Sequence[tuple[int, int]], num_classes: int) -> Tensor:
    """`[T, S, K]`: 1 at (token, class) where an instance of that class covers more than
    half of the token's cell; tokens level by level in `sizes` order, row-major."""
    levels = []
    for size in sizes:
        covered = downsample_targets(clip.masks, size) > 0.5  # [M, T, h, w]
        labels = F.one_hot(clip.labels, num_classes).to(torch.float32)  # [M, K]
        # [M, T, h*w] x [M, K] -> [T, h*w, K]
        levels.append(torch.einsum("mts,mk->tsk", covered.flatten(2).float(), labels))
    return torch.cat(levels, dim=1).clamp_max(1.0)
