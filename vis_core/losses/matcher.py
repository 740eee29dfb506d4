"""The frame-level Hungarian matcher (Mask2Former's), batched over frames.

For each frame, every prediction is paired with at most one target (and each target with
exactly one prediction while there are enough predictions) by minimising

    C = class_weight * (-p[target class]) + mask_weight * BCE + dice_weight * dice,

where BCE and dice compare the mask logits and the target mask on `num_points` uniform
random points drawn once per frame and shared by its predictions and targets.

Dimension letters: N frames, Q predictions per frame, K classes (K+1 logits, no-object
last), M targets in a frame (M' the most in any frame), P points, h x w the prediction
masks, H x W the target masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from vis_core.data.targets import FrameTargets
from vis_core.losses.mask_losses import pairwise_dice_cost, pairwise_sigmoid_ce_cost
from vis_core.losses.point_sampling import point_sample
from vis_core.modeling.config import LossConfig
from vis_core.modeling.frame_decoder import FramePrediction

# Bound on frames x queries x points sampled at once (64 MB in float32), so a large batch
# of frames is matched in chunks instead of one huge tensor.
MAX_SAMPLED_VALUES = 1 << 24


@dataclass(frozen=True)
class Matching:
    """One-to-one pairs of predictions and targets: `prediction_index[i]` is matched to
    `target_index[i]`. Both `[M]` int64 on the CPU, ordered by prediction index."""

    prediction_index: Tensor
    target_index: Tensor

    def __len__(self) -> int:
        return self.prediction_index.shape[0]

    @staticmethod
    def empty() -> Matching:
        none = torch.zeros(0, dtype=torch.int64)
        return Matching(prediction_index=none, target_index=none)


def solve_assignment(cost: Tensor) -> Matching:
    """Minimum-cost one-to-one assignment of a `[Q, M]` cost table (scipy's Hungarian
    solver). Returns min(Q, M) pairs."""
    if cost.shape[0] == 0 or cost.shape[1] == 0:
        return Matching.empty()
    table = cost.detach().float().cpu()
    if not bool(torch.isfinite(table).all()):
        raise ValueError("the matching cost has NaN or infinite entries (diverged predictions?)")
    rows, cols = linear_sum_assignment(table.numpy())
    return Matching(
        prediction_index=torch.as_tensor(rows, dtype=torch.int64),
        target_index=torch.as_tensor(cols, dtype=torch.int64),
    )


def matching_cost(
    class_probability: Tensor,
    point_logits: Tensor,
    target_labels: Tensor,
    target_points: Tensor,
    config: LossConfig,
) -> Tensor:
    """The weighted cost table `[..., Q, M]`.

    class_probability `[..., Q, K+1]` (softmax), point_logits `[..., Q, P]`,
    target_labels `[..., M]` int64, target_points `[..., M, P]` in [0, 1]; the leading
    dimensions are a batch.
    """
    index = target_labels[..., None, :].expand(*class_probability.shape[:-1], -1)
    class_cost = -class_probability.gather(-1, index)  # [..., Q, M]
    mask_cost = pairwise_sigmoid_ce_cost(point_logits, target_points)
    dice_cost = pairwise_dice_cost(point_logits, target_points)
    return (
        config.class_weight * class_cost
        + config.mask_weight * mask_cost
        + config.dice_weight * dice_cost
    )


class FrameMatcher:
    """Hungarian matching of each frame's predictions to its targets (see module doc)."""

    def __init__(self, config: LossConfig):
        if config.num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {config.num_points}")
        self.config = config

    @torch.no_grad()
    def __call__(
        self,
        prediction: FramePrediction,
        targets: Sequence[FrameTargets],
        point_coords: Tensor | None = None,
    ) -> list[Matching]:
        """Match N frames at once.

        prediction: pred_logits `[N, Q, K+1]`, pred_masks `[N, Q, h, w]`.
        targets: N frames' targets (masks `[M, H, W]`, any M including 0).
        point_coords `[N, P, 2]` in [0, 1]: the points of each frame; uniform random
        (`config.num_points` per frame) when not given.
        Returns one `Matching` per frame.
        """
        logits, masks = prediction.pred_logits, prediction.pred_masks
        frames, queries = logits.shape[:2]
        if masks.shape[:2] != (frames, queries) or len(targets) != frames:
            raise ValueError(
                f"pred_logits {tuple(logits.shape)}, pred_masks {tuple(masks.shape)} and "
                f"{len(targets)} targets disagree on N frames and Q queries"
            )
        if self.config.dense_masks:
            point_coords = None
            num_points = masks.shape[-2] * masks.shape[-1]
        else:
            if point_coords is None:
                point_coords = torch.rand(frames, self.config.num_points, 2, device=masks.device)
            elif point_coords.dim() != 3 or point_coords.shape[0] != frames:
                raise ValueError(f"point_coords must be [N={frames}, P, 2]")
            point_coords = point_coords.to(masks.device)
            num_points = point_coords.shape[1]
        chunk = max(1, MAX_SAMPLED_VALUES // max(1, queries * num_points))
        matchings: list[Matching] = []
        for start in range(0, frames, chunk):
            stop = min(start + chunk, frames)
            coords = None if point_coords is None else point_coords[start:stop]
            cost = self._cost(logits[start:stop], masks[start:stop], targets[start:stop], coords)
            cost = cost.cpu()
            for frame, target in enumerate(targets[start:stop]):
                matchings.append(solve_assignment(cost[frame, :, : len(target.labels)]))
        return matchings

    def _cost(
        self,
        logits: Tensor,
        masks: Tensor,
        targets: Sequence[FrameTargets],
        point_coords: Tensor | None,
    ) -> Tensor:
        """Cost tables `[n, Q, M']` of a chunk of n frames; columns past a frame's own M
        are padding. With no `point_coords` (dense masks) every cell is a point and the
        target masks are at the predictions' resolution."""
        frames = logits.shape[0]
        dense = point_coords is None
        num_points = masks.shape[-2] * masks.shape[-1] if dense else point_coords.shape[1]
        most = max((len(target.labels) for target in targets), default=0)
        labels = torch.zeros(frames, most, dtype=torch.int64, device=logits.device)
        target_points = torch.zeros(frames, most, num_points, device=logits.device)
        for frame, target in enumerate(targets):
            count = len(target.labels)
            if count == 0:
                continue
            labels[frame, :count] = target.labels
            target_maps = target.masks[:, None].to(device=logits.device, dtype=torch.float32)
            if dense:
                target_points[frame, :count] = target_maps.flatten(1)
            else:
                coords = point_coords[frame : frame + 1].expand(count, -1, -1)
                target_points[frame, :count] = point_sample(target_maps, coords)[:, 0]
        if dense:
            point_logits = masks.float().flatten(2)  # [n, Q, h*w]
        else:
            point_logits = point_sample(masks.float(), point_coords)  # [n, Q, P]
        return matching_cost(
            logits.float().softmax(-1), point_logits, labels, target_points, self.config
        )
