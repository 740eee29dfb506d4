"""QueryTrack's contrastive track loss (reference 1.3, Eq. 5-7), with the frame losses when
the detector trains too.

The frame matcher assigns each frame's ground-truth instances to queries (the final
prediction, whose frame queries the head embeds). For each ordered pair of frames (key,
reference) of a clip, a key frame's matched query i, of ground-truth identity g, is scored
against the reference frame's matched queries, one per identity present there:

    logits = [0, e_i . e_1, ..., e_i . e_Kr]     (the fixed 0 is "matches nobody")
    p = softmax(logits); the positive entry is g's, or entry 0 when g is absent
    loss_i = sum over entries n of -alpha_t (1 - p*_n)^gamma log p*_n,
             p*_n = p_n on the positive entry, 1 - p_n elsewhere,
             alpha_t = focal_alpha on the positive entry, 1 - focal_alpha elsewhere.

No temperature and no normalisation: raw dot products, as the paper. Gradients reach both
sides. With `background_negatives` (not in the paper) the reference frame's unmatched
queries are extra entries, negatives for every key instance. `loss_track` is the mean
over every (key instance, reference frame) term of the batch; with 2-frame clips every
clip is scored key -> reference and reference -> key.
With `frozen_detector=False` the frame detector's own terms (`loss_ce`, ...) are added.

Dimension letters: B clips, T frames, Q frame queries, E embedding channels, M matched
key instances, R reference entries.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vis_core.data.targets import ClipTargets, FrameTargets
from vis_core.losses.criterion import Losses, term_weight
from vis_core.losses.frame_criterion import FrameCriterion
from vis_core.losses.mask_losses import downsample_targets
from vis_core.losses.matcher import Matching
from vis_core.modeling.config import LossConfig, ModelConfig
from vis_core.modeling.frame_decoder import FramePrediction
from vis_core.modeling.frame_detector import FrameDetections
from vis_core.modeling.head_config import QueryTrackConfig
from vis_core.modeling.vita_model import ClipPrediction


def softmax_focal_loss(logits: Tensor, positive: Tensor, alpha: float, gamma: float) -> Tensor:
    """Focal loss on every entry of a softmax: logits `[M, N]`, positive `[M]` int64 (the
    positive entry of each row) -> `[M]`, summed over the N entries (module docstring)."""
    entries = logits.shape[1]
    log_p = logits.log_softmax(dim=1)
    # log(1 - p_n) = log(sum of the other entries' exp) - log(sum of all): exact near p = 1.
    own = torch.eye(entries, dtype=torch.bool, device=logits.device)
    others = logits[:, None, :].masked_fill(own, float("-inf"))  # [M, N, N]
    log_not_p = others.logsumexp(dim=2) - logits.logsumexp(dim=1, keepdim=True)
    is_positive = F.one_hot(positive, entries).bool()
    log_p_star = torch.where(is_positive, log_p, log_not_p)
    alpha_t = torch.where(is_positive, alpha, 1.0 - alpha)
    loss = -alpha_t * (1.0 - log_p_star.exp()).pow(gamma) * log_p_star
    return loss.sum(dim=1)


def track_loss(
    track_embed: Tensor,
    frame_targets: Sequence[FrameTargets],
    matchings: Sequence[Matching],
    alpha: float,
    gamma: float,
    background_negatives: bool = False,
) -> Tensor:
    """`loss_track` (module docstring). track_embed `[B, T, Q, E]`; frame_targets and
    matchings: one per frame, clip-major (frame `b * T + t`). With `background_negatives`
    the reference frame's unmatched queries are extra entries, never positive."""
    batch, frames, queries = track_embed.shape[:3]
    embed = track_embed.float()
    terms: list[Tensor] = []
    for clip in range(batch):
        index = [clip * frames + t for t in range(frames)]
        ids = [_query_identities(frame_targets[i], matchings[i], queries) for i in index]
        matched = [torch.nonzero(frame_ids >= 0)[:, 0] for frame_ids in ids]
        entries = [torch.arange(queries) for _ in ids] if background_negatives else matched
        for key in range(frames):
            key_slots = matched[key]
            for ref in range(frames):
                ref_slots = entries[ref]
                if ref == key or len(key_slots) == 0 or len(ref_slots) == 0:
                    continue  # nothing to score against: only "nobody" is left
                key_embed = embed[clip, key, key_slots.to(embed.device)]  # [M, E]
                ref_embed = embed[clip, ref, ref_slots.to(embed.device)]  # [R, E]
                logits = F.pad(key_embed @ ref_embed.T, (1, 0))  # [M, 1 + R]: 0 is "nobody"
                key_ids, ref_ids = ids[key][key_slots], ids[ref][ref_slots]
                same = (key_ids[:, None] == ref_ids[None, :]) & (ref_ids[None, :] >= 0)
                positive = torch.where(same.any(dim=1), same.int().argmax(dim=1) + 1, 0)
                terms.append(softmax_focal_loss(logits, positive.to(embed.device), alpha, gamma))
    if not terms:
        return track_embed.sum() * 0.0  # nothing to contrast: a zero that keeps the graph
    return torch.cat(terms).mean()


def _query_identities(targets: FrameTargets, matching: Matching, queries: int) -> Tensor:
    """`[Q]` int64 on the CPU: the identity of the instance each query is matched to, -1
    where it is matched to none."""
    identities = torch.full((queries,), -1, dtype=torch.int64)
    track_ids = targets.track_ids.cpu()[matching.target_index]
    if bool((track_ids < 0).any()):
        raise ValueError("track ids must be >= 0")
    identities[matching.prediction_index] = track_ids
    return identities


class QueryTrackCriterion(nn.Module):
    """`loss_track` of a `ClipPrediction` with `track_embed` against B clips' targets, plus
    the frame losses unless the detector is frozen."""

    def __init__(
        self,
        config: LossConfig,
        head: QueryTrackConfig,
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
        self._frame_weights = {
            "loss_ce": config.class_weight,
            "loss_mask": config.mask_weight,
            "loss_dice": config.dice_weight,
        }

    @classmethod
    def for_model(
        cls, config: ModelConfig, *, frozen_detector: bool = False
    ) -> QueryTrackCriterion:
        if config.querytrack is None:
            raise ValueError(f"model config {config.name} has no QueryTrack head")
        return cls(
            config.loss,
            config.querytrack,
            config.num_classes,
            config.frame_decoder.vita_last_layers,
            frozen_detector=frozen_detector,
        )

    def weight_of(self, name: str) -> float:
        """The weight of a term (`loss_ce_3` and `loss_pilot_ce` weigh as `loss_ce`)."""
        if name == "loss_track":
            return self.head.loss_weight
        return term_weight(self._frame_weights, name, strip=("pilot",))

    def forward(self, prediction: ClipPrediction, targets: Sequence[ClipTargets]) -> Losses:
        """prediction: the model's output on B clips of T frames (training mode).
        targets: one `ClipTargets` per clip, masks at the padded input size."""
        if prediction.track_embed is None:
            raise ValueError("the prediction has no track embeddings: the model has no head")
        return self.losses(prediction.frames, prediction.track_embed, targets)

    def losses(
        self, detections: FrameDetections, track_embed: Tensor, targets: Sequence[ClipTargets]
    ) -> Losses:
        """The terms from what the head reads: the detector's output on the B*T frames
        (clip-major) and their track embeddings `[B, T, Q, E]`."""
        if len(targets) != track_embed.shape[0]:
            raise ValueError(f"{len(targets)} clip targets for B={track_embed.shape[0]} clips")
        frame_targets = self.frame_targets(detections, targets)
        if self.frozen_detector:
            matchings = self.match(detections, frame_targets)
            terms: dict[str, Tensor] = {}
        else:
            output = self.frame(detections, frame_targets)
            matchings, terms = list(output.vita_matchings[-1]), dict(output.terms)
        terms["loss_track"] = track_loss(
            track_embed,
            frame_targets,
            matchings,
            self.head.focal_alpha,
            self.head.focal_gamma,
            self.head.background_negatives,
        )
        return Losses(terms=terms, weights={name: self.weight_of(name) for name in terms})

    def frame_targets(
        self, detections: FrameDetections, targets: Sequence[ClipTargets]
    ) -> list[FrameTargets]:
        """The B*T frames' visible instances (clip-major), on the predictions' device and,
        with `dense_masks`, at the predicted masks' resolution."""
        device = detections.pred_logits.device
        clips = [target.to(device) for target in targets]
        if self.config.dense_masks:  # targets once at the predicted masks' resolution
            size = tuple(detections.pred_masks.shape[-2:])
            clips = [
                ClipTargets(clip.labels, downsample_targets(clip.masks, size), clip.track_ids)
                for clip in clips
            ]
        return [clip.frame(t) for clip in clips for t in range(clip.num_frames)]

    def match(
        self, detections: FrameDetections, frame_targets: Sequence[FrameTargets]
    ) -> list[Matching]:
        """The final prediction's queries assigned to each frame's instances (the queries
        the head embeds: `frame_queries[-1]`)."""
        final = FramePrediction(detections.pred_logits, detections.pred_masks)
        return self.frame.matcher(final, frame_targets)
