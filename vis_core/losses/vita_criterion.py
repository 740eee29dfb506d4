"""VITA's clip-level losses and the frame/clip similarity loss.

Each VITA decoder layer's output (L*B entries: every fed frame-decoder layer l of every
clip b is an independent entry `l * B + b`, with clip b's targets) is matched to the clip
instances on its own and scored with:
- `loss_vita_ce`: class cross-entropy over all entries' video queries (no-object weight
  `no_object_weight`);
- `loss_vita_mask`, `loss_vita_dice`: a matched query's masks over the T frames are
  importance-sampled frame by frame, then scored as one `[T*P]` row per instance;
  normalised by (number of clip instances) x L, averaged over workers.
Earlier decoder layers give `loss_vita_ce_i`, ... (i from 0).

`loss_vita_sim` (final layer only) pulls together the embeddings of one object: frame
side, `pred_fq_embed` at the frame queries that the frame matcher assigned to a target in
the last L frame-decoder layers; clip side, `pred_cq_embed` at the video queries VITA's
matcher assigned. Embeddings of the same (entry, track) are positives. The logits are raw
dot products E E^T; BCE-with-logits over every pair within one entry, the diagonal
included, summed and divided by the number of such pairs.

Dimension letters: L fed frame-decoder layers, B clips, T frames, fQ frame queries (fK
kept after token pruning), cQ video queries, C channels, K classes, h x w mask features,
H x W target masks, E embeddings in the similarity loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vis_core.data.targets import ClipTargets, FrameTargets
from vis_core.losses.class_loss import ClassLoss
from vis_core.losses.mask_losses import average_mask_count, mask_losses
from vis_core.losses.matcher import Matching
from vis_core.losses.vita_matcher import ClipMatcher
from vis_core.modeling.config import LossConfig
from vis_core.modeling.vita import Vita, VitaOutput


class ClipCriterion(nn.Module):
    """VITA's set losses per decoder layer plus the similarity loss (see module doc)."""

    def __init__(self, config: LossConfig, num_classes: int):
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        self.matcher = ClipMatcher(config)
        self.class_loss = ClassLoss(num_classes, config.no_object_weight)

    def forward(
        self,
        video: VitaOutput,
        mask_features: Tensor,
        targets: Sequence[ClipTargets],
        frame_targets: Sequence[FrameTargets],
        frame_matchings: Sequence[Sequence[Matching]],
    ) -> dict[str, Tensor]:
        """Unweighted loss terms.

        video: VITA's training output (pred_logits `[L, B, cQ, K+1]`, ...).
        mask_features `[B, T, C, h, w]`: `ClipPrediction.mask_features`.
        targets: the B clips' instances (each visible in at least one frame).
        frame_targets: the B*T frames' visible instances (clip-major, frame `b * T + t`).
        frame_matchings: for each of the L fed frame-decoder layers, one `Matching` per frame.
        """
        layers = video.pred_logits.shape[0]
        if len(frame_matchings) != layers:
            raise ValueError(f"{len(frame_matchings)} layers of frame matchings for L={layers}")
        local = sum(len(target.labels) for target in targets) * layers
        num_masks = average_mask_count(local, video.pred_logits.device)

        matchings = self.matcher(video.pred_logits, video.pred_mask_embed, mask_features, targets)
        terms = self._layer_losses(
            video.pred_logits, video.pred_mask_embed, mask_features, targets, matchings, num_masks
        )
        if self.config.deep_supervision:
            for index, aux in enumerate(video.aux_outputs):
                aux_matchings = self.matcher(
                    aux.pred_logits, aux.pred_mask_embed, mask_features, targets
                )
                aux_terms = self._layer_losses(
                    aux.pred_logits,
                    aux.pred_mask_embed,
                    mask_features,
                    targets,
                    aux_matchings,
                    num_masks,
                )
                terms.update({f"{name}_{index}": value for name, value in aux_terms.items()})
        terms["loss_vita_sim"] = self._similarity_loss(
            video, targets, frame_targets, frame_matchings, matchings
        )
        return terms

    def _layer_losses(
        self,
        class_logits: Tensor,
        mask_embed: Tensor,
        mask_features: Tensor,
        targets: Sequence[ClipTargets],
        matchings: Sequence[Matching],
        num_masks: float,
    ) -> dict[str, Tensor]:
        """One decoder layer: class_logits `[L, B, cQ, K+1]`, mask_embed `[L, B, cQ, C]`."""
        batch = class_logits.shape[1]
        device = class_logits.device
        logits = class_logits.flatten(0, 1).float()  # [LB, cQ, K+1]
        target_classes = torch.full(
            logits.shape[:2], self.num_classes, dtype=torch.int64, device=device
        )
        pred_masks, target_masks = [], []
        # Unbound once: indexing a clip per layer would cost a zero-filled gradient of the
        # whole batch's features for each (layer, clip) in backward.
        clip_features = mask_features.unbind(0)
        for entry, matching in enumerate(matchings):
            if len(matching) == 0:
                continue
            layer, clip = divmod(entry, batch)
            query = matching.prediction_index.to(device)
            instance = matching.target_index.to(targets[clip].labels.device)
            target_classes[entry, query] = targets[clip].labels[instance].to(device)
            # Only the matched queries' masks: [Nm, T, h, w]
            pred_masks.append(
                Vita.video_mask_logits(mask_embed[layer, clip][query], clip_features[clip])
            )
            target_masks.append(targets[clip].masks[instance].to(device))
        class_loss = self.class_loss(logits, target_classes)
        if pred_masks:
            mask_terms = mask_losses(
                torch.cat(pred_masks), torch.cat(target_masks), num_masks, self.config
            )
        else:  # no instance anywhere: zero terms that still reach the mask parameters
            empty = Vita.video_mask_logits(mask_embed[0, 0, :0], mask_features[0])
            mask_terms = mask_losses(empty, empty, num_masks, self.config)
        return {
            "loss_vita_ce": class_loss,
            "loss_vita_mask": mask_terms.sigmoid_ce,
            "loss_vita_dice": mask_terms.dice,
        }

    def _similarity_loss(
        self,
        video: VitaOutput,
        targets: Sequence[ClipTargets],
        frame_targets: Sequence[FrameTargets],
        frame_matchings: Sequence[Sequence[Matching]],
        clip_matchings: Sequence[Matching],
    ) -> Tensor:
        """`loss_vita_sim` over the frame and clip embeddings of matched instances."""
        fq_embed = video.pred_fq_embed  # [L, B, T, fK, C]
        batch, frames, slots = fq_embed.shape[1:4]
        kept = video.kept_frame_query_index
        kept = None if kept is None else kept.cpu()  # [L, B, T, fK]
        frame_track_ids = [target.track_ids.cpu() for target in frame_targets]
        rows: list[Tensor] = []  # flat row into fq_embed.flatten(0, 3)
        track_ids: list[Tensor] = []
        entries: list[Tensor] = []
        for layer, per_frame in enumerate(frame_matchings):
            if len(per_frame) != batch * frames:
                raise ValueError(f"{len(per_frame)} frame matchings for B*T={batch * frames}")
            for frame_index, matching in enumerate(per_frame):
                clip, frame = divmod(frame_index, frames)
                query = matching.prediction_index
                ids = frame_track_ids[frame_index][matching.target_index]
                if kept is not None:  # pruned frame queries have no embedding
                    found, query = _kept_slots(kept[layer, clip, frame], query)
                    ids = ids[found]
                base = ((layer * batch + clip) * frames + frame) * slots
                rows.append(base + query)
                track_ids.append(ids)
                entries.append(torch.full_like(ids, layer * batch + clip))
        embeddings = [fq_embed.flatten(0, 3)[torch.cat(rows).to(fq_embed.device)]]
        if video.pred_cq_embed is not None:
            cq_embed = video.pred_cq_embed.flatten(0, 1)  # [LB, cQ, C]
            for entry, matching in enumerate(clip_matchings):
                clip = entry % batch
                query = matching.prediction_index.to(cq_embed.device)
                embeddings.append(cq_embed[entry][query])
                track_ids.append(targets[clip].track_ids.cpu()[matching.target_index])
                entries.append(torch.full((len(matching),), entry, dtype=torch.int64))
        embedding = torch.cat(embeddings).float()  # [E, C]
        if embedding.shape[0] == 0:  # nothing matched: a zero that keeps the graph whole
            zero = fq_embed.sum() * 0.0
            # Both embedding heads, or DDP finds the clip one without a gradient.
            return zero if video.pred_cq_embed is None else zero + video.pred_cq_embed.sum() * 0.0
        track = torch.cat(track_ids).to(embedding.device)
        entry = torch.cat(entries).to(embedding.device)
        same_entry = (entry[:, None] == entry[None, :]).float()  # [E, E]
        same_object = (same_entry > 0) & (track[:, None] == track[None, :])
        logits = embedding @ embedding.T
        loss = F.binary_cross_entropy_with_logits(logits, same_object.float(), reduction="none")
        return (loss * same_entry).sum() / same_entry.sum()


def _kept_slots(kept: Tensor, queries: Tensor) -> tuple[Tensor, Tensor]:
    """Where frame queries `[m]` sit among one frame's kept queries `kept [fK]`: returns
    (found `[m]` bool, slots `[m']` of the found ones)."""
    hits = kept[None, :] == queries[:, None]  # [m, fK]
    found = hits.any(dim=1)
    return found, hits[found].int().argmax(dim=1)
