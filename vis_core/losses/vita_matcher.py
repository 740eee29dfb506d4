"""The clip-level Hungarian matcher (VITA's): video queries to clip instances.

A clip instance is one object over all T frames of the clip (its mask is empty in frames
where it is absent). Per matching problem, one set of `num_points` uniform points is
shared by every prediction, every target and every frame: masks `[N, T, H, W]` are
sampled with T as channels and flattened to `[N, T*P]`, so the BCE cost is a mean over
T*P values and the dice cost (+1 smoothing) compares whole clips. The cost is
`mask_weight * BCE + class_weight * (-p[target class]) + dice_weight * dice`.

Dimension letters: L frame-decoder layers fed to VITA, B clips, cQ video queries, K
classes (K+1 logits, no-object last), C channels, T frames, M clip instances, P points,
h x w the mask features, H x W the target masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from vis_core.data.targets import ClipTargets
from vis_core.losses.matcher import Matching, matching_cost, solve_assignment
from vis_core.losses.point_sampling import point_sample
from vis_core.modeling.config import LossConfig
from vis_core.modeling.vita import Vita


class ClipMatcher:
    """Hungarian matching of video queries to clip instances (see module doc)."""

    def __init__(self, config: LossConfig):
        if config.num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {config.num_points}")
        self.config = config

    @torch.no_grad()
    def match_clip(
        self,
        class_logits: Tensor,
        mask_logits: Tensor,
        targets: ClipTargets,
        point_coords: Tensor | None = None,
    ) -> Matching:
        """One matching problem.

        class_logits `[cQ, K+1]`, mask_logits `[cQ, T, h, w]`, targets with masks
        `[M, T, H, W]`; point_coords `[P, 2]` in [0, 1] (uniform random when not given).
        """
        queries, frames = mask_logits.shape[:2]
        if class_logits.shape[0] != queries:
            raise ValueError(
                f"class_logits {tuple(class_logits.shape)} and mask_logits "
                f"{tuple(mask_logits.shape)} disagree on cQ"
            )
        if targets.num_frames != frames:
            raise ValueError(f"targets have {targets.num_frames} frames, predictions {frames}")
        count = len(targets.labels)
        if count == 0:
            return Matching.empty()
        device = mask_logits.device
        target_masks = targets.masks.to(device=device, dtype=torch.float32)
        if self.config.dense_masks:  # every cell; targets at the masks' resolution
            point_logits, target_points = mask_logits.float().flatten(1), target_masks.flatten(1)
        else:
            if point_coords is None:
                point_coords = torch.rand(self.config.num_points, 2, device=device)
            point_coords = point_coords.to(device)
            # [cQ, T, h, w] with T as channels -> [cQ, T, P] -> [cQ, T*P]
            point_logits = point_sample(
                mask_logits.float(), point_coords.expand(queries, -1, -1)
            ).flatten(1)
            target_points = point_sample(target_masks, point_coords.expand(count, -1, -1)).flatten(
                1
            )  # [M, T*P]
        cost = matching_cost(
            class_logits.float().softmax(-1),
            point_logits,
            targets.labels.to(device),
            target_points,
            self.config,
        )
        return solve_assignment(cost)

    @torch.no_grad()
    def __call__(
        self,
        class_logits: Tensor,
        mask_embed: Tensor,
        mask_features: Tensor,
        targets: Sequence[ClipTargets],
    ) -> list[Matching]:
        """Match one VITA decoder layer's output for every (L, B) entry.

        class_logits `[L, B, cQ, K+1]`, mask_embed `[L, B, cQ, C]`, mask_features
        `[B, T, C, h, w]` (`ClipPrediction.mask_features`), targets: B clips (each is the
        target of its clip for all L entries). Returns L*B matchings, entry `l * B + b`.
        The masks of one entry at a time are computed here, so the full
        `[L, B, cQ, T, h, w]` tensor is never held.
        """
        layers, batch = class_logits.shape[:2]
        if mask_embed.shape[:2] != (layers, batch) or mask_features.shape[0] != batch:
            raise ValueError(
                f"class_logits {tuple(class_logits.shape)}, mask_embed "
                f"{tuple(mask_embed.shape)} and mask_features {tuple(mask_features.shape)} "
                "disagree on L and B"
            )
        if len(targets) != batch:
            raise ValueError(f"{len(targets)} clip targets for B={batch} clips")
        matchings = []
        for layer in range(layers):
            for clip in range(batch):
                if len(targets[clip].labels) == 0:
                    matchings.append(Matching.empty())
                    continue
                mask_logits = Vita.video_mask_logits(
                    mask_embed[layer, clip], mask_features[clip]
                )  # [cQ, T, h, w]
                matchings.append(
                    self.match_clip(class_logits[layer, clip], mask_logits, targets[clip])
                )
        return matchings
