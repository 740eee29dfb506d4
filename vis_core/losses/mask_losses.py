"""Mask losses and matching costs on point samples, shared by the frame and clip criteria.

Dimension letters: N masks (or mask groups), G masks per group (1 for frames, T for
clips), P points, Q predictions, M targets, H x W a map.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from vis_core.losses.point_sampling import point_sample, uncertain_point_coords_with_randomness
from vis_core.modeling.config import LossConfig


def sigmoid_ce_loss(point_logits: Tensor, point_labels: Tensor, num_masks: float) -> Tensor:
    """Binary cross-entropy, averaged over the P points of each mask and summed over
    masks, divided by `num_masks`. point_logits, point_labels: `[N, P]`."""
    loss = F.binary_cross_entropy_with_logits(point_logits, point_labels, reduction="none")
    return loss.mean(dim=1).sum() / num_masks


def dice_coefficient(probability: Tensor, point_labels: Tensor) -> Tensor:
    """`(2|p t| + 1) / (|p| + |t| + 1)` per mask (+1 smoothing): probability,
    point_labels `[N, P]` in [0, 1] -> `[N]`."""
    overlap = (probability * point_labels).sum(dim=1)
    total = probability.sum(dim=1) + point_labels.sum(dim=1)
    return (2.0 * overlap + 1.0) / (total + 1.0)


def dice_loss(point_logits: Tensor, point_labels: Tensor, num_masks: float) -> Tensor:
    """`1 - (2|p t| + 1) / (|p| + |t| + 1)` per mask (+1 smoothing), summed over masks and
    divided by `num_masks`. point_logits, point_labels: `[N, P]`."""
    return (1.0 - dice_coefficient(point_logits.sigmoid(), point_labels)).sum() / num_masks


def pairwise_sigmoid_ce_cost(point_logits: Tensor, point_labels: Tensor) -> Tensor:
    """Mean BCE of every prediction against every target: `[..., Q, P]` x `[..., M, P]` ->
    `[..., Q, M]` (the leading dimensions are a batch)."""
    # BCE(x, y) = softplus(x) - x * y, so the Q x M table is one matrix product.
    negative = F.softplus(point_logits).sum(dim=-1, keepdim=True)  # [..., Q, 1]
    agreement = point_logits @ point_labels.transpose(-1, -2)  # [..., Q, M]
    return (negative - agreement) / point_logits.shape[-1]


def pairwise_dice_coefficient(probability: Tensor, point_labels: Tensor) -> Tensor:
    """Dice coefficient (+1 smoothing) of every prediction against every target:
    probabilities `[..., Q, P]` x labels `[..., M, P]` -> `[..., Q, M]`."""
    overlap = probability @ point_labels.transpose(-1, -2)
    total = probability.sum(dim=-1)[..., :, None] + point_labels.sum(dim=-1)[..., None, :]
    return (2.0 * overlap + 1.0) / (total + 1.0)


def pairwise_dice_cost(point_logits: Tensor, point_labels: Tensor) -> Tensor:
    """Dice loss (+1 smoothing) of every prediction against every target: `[..., Q, P]` x
    `[..., M, P]` -> `[..., Q, M]`."""
    return 1.0 - pairwise_dice_coefficient(point_logits.sigmoid(), point_labels)


@dataclass(frozen=True)
class MaskLosses:
    """The two mask terms (scalars, already divided by the mask count)."""

    sigmoid_ce: Tensor
    dice: Tensor


def point_sampled_mask_losses(
    pred_masks: Tensor, target_masks: Tensor, num_masks: float, config: LossConfig
) -> MaskLosses:
    """BCE and dice of matched predictions on importance-sampled points.

    pred_masks `[N, G, h, w]` logits; target_masks `[N, G, H, W]` (bool or float), covering
    the same extent (h x w may be coarser). Every one of the N*G maps gets its own
    `config.num_points` points, chosen on the prediction's uncertainty; a group's points
    are then scored together as one `[G*P]` row (a clip's T frames count as one mask).
    """
    if pred_masks.dim() != 4 or pred_masks.shape[:2] != target_masks.shape[:2]:
        raise ValueError(
            f"pred_masks [N, G, h, w] {tuple(pred_masks.shape)} and target_masks [N, G, H, W] "
            f"{tuple(target_masks.shape)} must agree on N and G"
        )
    count, group = pred_masks.shape[:2]
    if count == 0:
        zero = pred_masks.sum() * 0.0  # keeps the graph connected (DDP sees every parameter)
        return MaskLosses(sigmoid_ce=zero, dice=zero)
    pred_maps = pred_masks.flatten(0, 1)  # [N*G, h, w]
    target_maps = target_masks.flatten(0, 1)[:, None].to(pred_maps.dtype)  # [N*G, 1, H, W]
    with torch.no_grad():
        coords = uncertain_point_coords_with_randomness(
            pred_maps,
            config.num_points,
            config.oversample_ratio,
            config.importance_sample_ratio,
        )
        point_labels = point_sample(target_maps, coords).reshape(count, group * config.num_points)
    point_logits = point_sample(pred_maps[:, None], coords).reshape(count, -1)  # [N, G*P]
    return MaskLosses(
        sigmoid_ce=sigmoid_ce_loss(point_logits, point_labels, num_masks),
        dice=dice_loss(point_logits, point_labels, num_masks),
    )


def dense_mask_losses(pred_masks: Tensor, target_masks: Tensor, num_masks: float) -> MaskLosses:
    """BCE and dice of matched predictions over every cell.

    pred_masks `[N, G, h, w]` logits; target_masks `[N, G, h, w]` in [0, 1] at the same
    resolution (area-resized: a cell's share of the object). A group scores as one row.
    """
    if pred_masks.shape != target_masks.shape:
        raise ValueError(
            f"dense targets {tuple(target_masks.shape)} must match the predictions "
            f"{tuple(pred_masks.shape)}"
        )
    logits = pred_masks.flatten(1)
    labels = target_masks.flatten(1).to(logits.dtype)
    return MaskLosses(
        sigmoid_ce=sigmoid_ce_loss(logits, labels, num_masks),
        dice=dice_loss(logits, labels, num_masks),
    )


def mask_losses(
    pred_masks: Tensor, target_masks: Tensor, num_masks: float, config: LossConfig
) -> MaskLosses:
    """The configured mask losses: dense (`config.dense_masks`, targets already at the
    predictions' resolution) or point-sampled (targets at any resolution)."""
    if config.dense_masks:
        return dense_mask_losses(pred_masks, target_masks, num_masks)
    return point_sampled_mask_losses(pred_masks, target_masks, num_masks, config)


def downsample_targets(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """Target masks `[..., H, W]` (bool) -> `[..., h, w]` float: each cell's covered share
    (area resizing), the dense losses' targets at the predicted masks' resolution."""
    leading = masks.shape[:-2]
    flat = masks.reshape(-1, 1, *masks.shape[-2:]).float()
    return F.interpolate(flat, size=size, mode="area").reshape(*leading, *size)


def average_mask_count(local_count: int, device: torch.device) -> float:
    """The loss normaliser: the mask count averaged over workers (all-reduced when
    torch.distributed is initialised), at least 1."""
    count = torch.tensor([float(local_count)], device=device)
    world_size = 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(count)
        world_size = torch.distributed.get_world_size()
    return max(count.item() / world_size, 1.0)
