"""HF's identity rule on plain tensors: identity is the slot index, overridden by mask IoU
(reference 2.4, steps 3 to 5).

A slot is non-empty in a frame when its class is not "no object" and its binary mask is
not empty (the masks come from the head: `hitf_tracker.slot_mask_margins`). Frame by
frame:
1. non-empty slots of this frame and of the previous one are paired greedily, best mask
   IoU first, while IoU > `iou_threshold` (the paper's rule, across slot indices): a
   paired slot takes the identity of its partner;
2. an unpaired slot keeps its own identity if it was non-empty within the last
   `memory_frames` frames and no slot took that identity in step 1;
3. any other non-empty slot starts a new identity.
An identity is then over (it can never come back) when it was displaced from its slot,
or its slot stayed empty `memory_frames` frames; it leaves the state as a summary of its
class probabilities (sum over its frames, without no-object) and frame count.

The state is one entry per slot and the previous frame's masks: its size does not
depend on the frames seen.

Dimension letters: Q slots, K classes, h x w the mask grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vis_core.inference.mask_overlap import mask_iou
from vis_core.modeling.head_config import SlotIdentityConfig


@dataclass(frozen=True)
class SlotIdentities:
    """The identity each slot holds and its running sums.

    ids `[Q]` int64 (-1: none); last_seen `[Q]` int64: the last frame the slot was
    non-empty; probability_sum `[Q, K]` float32 and frame_count `[Q]` int64: the sums of
    the identity the slot holds; masks `[Q, h, w]` bool: the slots' masks in the previous
    frame (empty where a slot was empty), or None before the first frame; next_id: the
    next new identity.
    """

    ids: Tensor
    last_seen: Tensor
    probability_sum: Tensor
    frame_count: Tensor
    masks: Tensor | None = None
    next_id: int = 0

    @classmethod
    def empty(cls, slots: int, classes: int, device: torch.device | None = None) -> SlotIdentities:
        return cls(
            ids=torch.full((slots,), -1, dtype=torch.int64, device=device),
            last_seen=torch.full((slots,), -1, dtype=torch.int64, device=device),
            probability_sum=torch.zeros(slots, classes, device=device),
            frame_count=torch.zeros(slots, dtype=torch.int64, device=device),
        )


@dataclass(frozen=True)
class EndedIdentity:
    """An identity that can take no more frames: its class probabilities summed over its
    frames `[K]` and the number of those frames."""

    identity: int
    probability_sum: Tensor
    frame_count: int


@dataclass(frozen=True)
class IdentityStep:
    """state: after the frame; ids `[Q]` int64: each slot's identity in the frame (-1
    where the slot is empty); ended: the identities over with this frame."""

    state: SlotIdentities
    ids: Tensor
    ended: tuple[EndedIdentity, ...]


def assign_identities(
    state: SlotIdentities,
    masks: Tensor,
    nonempty: Tensor,
    probabilities: Tensor,
    frame: int,
    config: SlotIdentityConfig,
) -> IdentityStep:
    """One frame of the rule (module docstring).

    masks `[Q, h, w]` bool: each slot's binary mask; nonempty `[Q]` bool; probabilities
    `[Q, K]`: each slot's class probabilities without no-object; frame: its index, after
    every frame `state` has seen.
    """
    slots = nonempty.shape[0]
    nonempty = nonempty.cpu()
    old_ids, last_seen = state.ids.cpu(), state.last_seen.cpu()
    source = torch.full((slots,), -1, dtype=torch.int64)  # the slot whose identity each takes
    taken: set[int] = set()
    if state.masks is not None:
        previous = torch.nonzero(last_seen == frame - 1)[:, 0]
        current = torch.nonzero(nonempty)[:, 0]
        if len(previous) and len(current):
            iou = mask_iou(masks[current], state.masks[previous].to(masks.device)).cpu()
            order = torch.argsort(iou.flatten(), descending=True, stable=True).tolist()
            used_current, used_previous = set(), set()
            for flat in order:
                row, col = divmod(flat, len(previous))
                if float(iou[row, col]) <= config.iou_threshold:
                    break
                if row in used_current or col in used_previous:
                    continue
                used_current.add(row)
                used_previous.add(col)
                source[current[row]] = previous[col]
                taken.add(int(old_ids[previous[col]]))
    next_id = state.next_id
    ids = torch.full((slots,), -1, dtype=torch.int64)
    for slot in torch.nonzero(nonempty)[:, 0].tolist():
        if source[slot] >= 0:
            ids[slot] = old_ids[source[slot]]
            continue
        own = int(old_ids[slot])
        if own >= 0 and own not in taken and frame - int(last_seen[slot]) <= config.memory_frames:
            ids[slot] = own
            taken.add(own)
            source[slot] = slot
        else:
            ids[slot] = next_id
            next_id += 1

    # Identities no slot carries on: displaced from their slot, or waited out the memory.
    kept = ~nonempty & (old_ids >= 0) & (frame - last_seen < config.memory_frames)
    kept &= torch.tensor([int(i) not in taken for i in old_ids.tolist()], dtype=torch.bool)
    ended = tuple(
        EndedIdentity(
            identity=int(old_ids[slot]),
            probability_sum=state.probability_sum[slot].cpu(),
            frame_count=int(state.frame_count[slot]),
        )
        for slot in range(slots)
        if old_ids[slot] >= 0 and int(old_ids[slot]) not in taken and not kept[slot]
    )

    # The new state: carried sums move with their identity, new ones start at zero.
    device = state.probability_sum.device
    carried = source.clamp(min=0).to(device)
    moved = (source >= 0).to(device)
    probability_sum = torch.where(moved[:, None], state.probability_sum[carried], 0.0)
    frame_count = torch.where(moved, state.frame_count[carried], 0)
    present = nonempty.to(device)
    probability_sum = torch.where(
        present[:, None], probability_sum + probabilities.float().to(device), probability_sum
    )
    frame_count = frame_count + present.long()
    kept_device = kept.to(device)
    probability_sum = torch.where(kept_device[:, None], state.probability_sum, probability_sum)
    frame_count = torch.where(kept_device, state.frame_count, frame_count)
    new_ids = torch.where(kept, old_ids, ids)
    new_last_seen = torch.where(nonempty, frame, torch.where(kept, last_seen, -1))
    next_state = SlotIdentities(
        ids=new_ids.to(state.ids.device),
        last_seen=new_last_seen.to(state.ids.device),
        probability_sum=probability_sum,
        frame_count=frame_count,
        masks=masks & nonempty.to(masks.device)[:, None, None],
        next_id=next_id,
    )
    return IdentityStep(state=next_state, ids=ids, ended=ended)


def ended_identities(state: SlotIdentities) -> tuple[EndedIdentity, ...]:
    """Every identity the state still holds (after the last frame)."""
    return tuple(
        EndedIdentity(
            identity=int(state.ids[slot]),
            probability_sum=state.probability_sum[slot].cpu(),
            frame_count=int(state.frame_count[slot]),
        )
        for slot in range(state.ids.shape[0])
        if int(state.ids[slot]) >= 0
    )
