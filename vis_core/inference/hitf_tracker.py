"""HF's online inference as an `OnlineHead` (reference 2.4).

For each chunk, the model's `HitfHead` reads the chunk's frames (frame queries and
pooled mask features) and fuses each with its R previous frames: those of the chunk,
and before them the last R frames of earlier chunks, which the state keeps (the raw
inputs, never a fused output, so the result does not depend on the chunking). Then, frame
by frame:
1. a slot whose class is not no-object is an object slot; its binary mask is the cells
   where, of the softmax over slots, it has the largest probability of the object slots,
   more than the background (the no-object slots' probability together) and at least
   `pixel_threshold`; a slot is non-empty when it is an object slot with a non-empty mask;
2. the identity rule (`slot_identity.py`) gives each non-empty slot an identity;
3. a non-empty slot gives its identity's mask in the frame. As "mask logits" the head
   hands out a margin that is positive exactly on the slot's cells (`slot_mask_margins`);
   the margins of two slots sum to at most 0 everywhere, so the masks the segmenter
   resizes and thresholds at 0 never overlap.

An identity's summary, once it ends, is the argmax of its mean class probability over
its frames and that mean as the score (reference [default]).

The state: the last R frames' codes and pixel maps (`R * (Q + p*q) * C` values; codes
only without `reference_pixels`), one entry per slot and the previous frame's slot masks.
None of it grows with the video.

Dimension letters: t frames of a chunk, R references, Q slots, C channels, K classes,
h x w the stride-4 mask grid, p x q the pixel map's grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vis_core.inference.online import DetectorChunk, HeadStep, TrackMasks, TrackSummary
from vis_core.inference.slot_identity import (
    EndedIdentity,
    SlotIdentities,
    assign_identities,
    ended_identities,
)
from vis_core.modeling.head_config import SlotIdentityConfig
from vis_core.modeling.hitf import HitfFrames, HitfHead, reference_index
from vis_core.modeling.vita_model import VitaModel

MARGIN = 100.0  # the margins' bound, far beyond any real logit difference


@dataclass(frozen=True)
class HitfState:
    """history: the last (up to R) frames as the head read them, None before the first
    frame; identities: the slots' identities; next_frame: the index of the next frame."""

    history: HitfFrames | None
    identities: SlotIdentities
    next_frame: int = 0


def slot_mask_margins(mask_logits: Tensor, foreground: Tensor, pixel_threshold: float) -> Tensor:
    """Softmax-over-slots mask logits `[..., Q, h, w]` and the slots whose class is an object,
    foreground `[..., Q]` bool -> margins `[..., Q, h, w]` in [-MARGIN, MARGIN], positive
    exactly where a foreground slot's probability is the largest of the foreground slots',
    above the background's (the no-object slots' together, as the mask-ID loss trains
    it) and at least `pixel_threshold`. Other slots' margins are -MARGIN.

    Slot i's margin is the least of `l_i - max_{j != i} l_j` over foreground j (positive
    only for one slot), `log m_i - log m_background` and `log m_i - log pixel_threshold`.
    """
    blocked = ~foreground[..., None, None]  # [..., Q, 1, 1]
    log_m = mask_logits.log_softmax(dim=-3)
    candidates = log_m.masked_fill(blocked, float("-inf"))
    top = candidates.topk(min(2, candidates.shape[-3]), dim=-3).values
    best, second = top.narrow(-3, 0, 1), top.narrow(-3, top.shape[-3] - 1, 1)
    runner_up = torch.where(candidates >= best, second, best)
    if top.shape[-3] == 1:  # a single slot has no competitor
        runner_up = torch.full_like(best, float("-inf"))
    background = log_m.masked_fill(~blocked, float("-inf")).logsumexp(dim=-3, keepdim=True)
    margins = torch.minimum(candidates - runner_up, log_m - background)
    if pixel_threshold > 0.0:
        margins = torch.minimum(margins, log_m - math.log(pixel_threshold))
    # Finite, for resizing; clamping keeps two slots' margins summing to at most 0.
    margins = margins.nan_to_num(nan=-MARGIN).clamp(-MARGIN, MARGIN)
    return margins.masked_fill(blocked, -MARGIN)


def summary(ended: EndedIdentity) -> TrackSummary:
    """An ended identity's class (argmax of the mean probability) and score (that mean)."""
    score, label = (ended.probability_sum / max(ended.frame_count, 1)).max(dim=0)
    return TrackSummary(track_id=ended.identity, label=int(label), score=float(score))


class HitfTracker:
    """The `OnlineHead` of a model with an HF head (module docstring).

    `config` defaults to the identity settings in the model's config.
    """

    def __init__(self, head: HitfHead, config: SlotIdentityConfig | None = None):
        self.head = head
        self.config = config or head.config.identity

    @classmethod
    def for_model(cls, model: VitaModel, config: SlotIdentityConfig | None = None) -> HitfTracker:
        """The tracker of `model`'s HF head; a clear error when it has none."""
        if model.hitf is None:
            raise ValueError(
                f"model {model.config.name} has no HF head: train one on its frozen detector "
                "with `vis train --method hitf --freeze-detector --init-model MODEL`"
            )
        return cls(model.hitf, config)

    def start(self) -> HitfState:
        device = next(self.head.parameters()).device
        identities = SlotIdentities.empty(self.head.num_queries, self.head.num_classes, device)
        return HitfState(history=None, identities=identities)

    def step(self, state: HitfState, chunk: DetectorChunk) -> tuple[HitfState, HeadStep]:
        if chunk.first_frame != state.next_frame:
            raise ValueError(f"chunk starts at frame {chunk.first_frame}, not {state.next_frame}")
        references = self.head.config.references
        targets = self.head.read(chunk.frame_queries, chunk.mask_features)
        kept = targets
        if not self.head.config.reference_pixels:  # references are read as codes only
            kept = HitfFrames(targets.codes, targets.pixels[..., :0, :0])
        held = 0 if state.history is None else len(state.history)
        sequence = kept if state.history is None else HitfFrames.cat([state.history, kept])
        index = reference_index(held, chunk.num_frames, references).to(kept.codes.device)
        output = self.head.fuse(targets, sequence[index], chunk.mask_features)

        probabilities = output.class_logits.float().softmax(dim=-1)  # [t, Q, K+1]
        foreground = probabilities.argmax(dim=-1) != probabilities.shape[-1] - 1  # [t, Q]
        margins = slot_mask_margins(
            output.mask_logits.float(), foreground, self.config.pixel_threshold
        )
        masks = margins > 0
        nonempty = foreground & masks.flatten(2).any(dim=2)
        identities = state.identities
        rows: list[tuple[Tensor, Tensor, Tensor]] = []
        finished: list[TrackSummary] = []
        for offset in range(chunk.num_frames):
            frame = chunk.first_frame + offset
            step = assign_identities(
                identities,
                masks[offset],
                nonempty[offset],
                probabilities[offset, :, :-1],
                frame,
                self.config,
            )
            identities = step.state
            finished.extend(summary(ended) for ended in step.ended)
            slots = torch.nonzero(nonempty[offset].cpu())[:, 0]
            frame_ids = torch.full((len(slots),), frame, dtype=torch.int64)
            rows.append((frame_ids, step.ids[slots], margins[offset, slots.to(margins.device)]))
        masks_out = TrackMasks(
            frames=torch.cat([row[0] for row in rows]),
            track_ids=torch.cat([row[1] for row in rows]),
            mask_logits=torch.cat([row[2] for row in rows]),
        )
        # The last R inputs, copied so the chunk's tensors are not kept alive through them.
        history = HitfFrames(
            sequence.codes[-references:].clone(), sequence.pixels[-references:].clone()
        )
        next_state = HitfState(history, identities, chunk.first_frame + chunk.num_frames)
        return next_state, HeadStep(masks=masks_out, finished=tuple(finished))

    def finish(self, state: HitfState) -> tuple[TrackSummary, ...]:
        return tuple(summary(ended) for ended in ended_identities(state.identities))
