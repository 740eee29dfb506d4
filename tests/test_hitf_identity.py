"""HF's identity rule on hand-made slot masks (`slot_identity.py`): a new object, an object
leaving, two objects crossing (with and without the detector swapping their slots), an
occluded object returning within the memory and after it; and the slot-mask margins the
online head hands out (`hitf_tracker.slot_mask_margins`)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from vis_core.inference.hitf_tracker import MARGIN, slot_mask_margins
from vis_core.inference.mask_overlap import mask_iou
from vis_core.inference.slot_identity import (
    EndedIdentity,
    SlotIdentities,
    assign_identities,
    ended_identities,
)
from vis_core.modeling.head_config import SlotIdentityConfig

SLOTS, CLASSES, GRID = 4, 2, 12
RULE = SlotIdentityConfig(iou_threshold=0.5, memory_frames=5)


def box(x: int, y: int = 4, size: int = 4) -> torch.Tensor:
    """A `size` x `size` square at column x, row y of the grid: `[h, w]` bool."""
    mask = torch.zeros(GRID, GRID, dtype=torch.bool)
    mask[y : y + size, x : x + size] = True
    return mask


class Video:
    """Feeds frames of {slot: mask} to the rule; records each frame's slot identities."""

    def __init__(self, config: SlotIdentityConfig = RULE):
        self.config = config
        self.state = SlotIdentities.empty(SLOTS, CLASSES)
        self.frame = 0
        self.ended: dict[int, int] = {}  # identity -> the frame it ended in
        self.summaries: dict[int, EndedIdentity] = {}

    def step(self, objects: dict[int, torch.Tensor], label: int = 0) -> list[int]:
        masks = torch.zeros(SLOTS, GRID, GRID, dtype=torch.bool)
        for slot, mask in objects.items():
            masks[slot] = mask
        probabilities = torch.zeros(SLOTS, CLASSES)
        probabilities[:, label] = 0.9
        nonempty = masks.flatten(1).any(dim=1)
        step = assign_identities(
            self.state, masks, nonempty, probabilities, self.frame, self.config
        )
        for ended in step.ended:
            assert ended.identity not in self.ended, "an identity ended twice"
            self.ended[ended.identity] = self.frame
            self.summaries[ended.identity] = ended
        self.state = step.state
        self.frame += 1
        return step.ids.tolist()


def test_mask_iou() -> None:
    a = torch.stack((box(0), box(1), torch.zeros(GRID, GRID, dtype=torch.bool)))
    iou = mask_iou(a, a[:2])
    torch.testing.assert_close(iou[:, 0], torch.tensor([1.0, 12 / 20, 0.0]))


def test_a_new_object_gets_a_new_identity_and_the_old_one_keeps_its_own() -> None:
    video = Video()
    assert video.step({0: box(0)}) == [0, -1, -1, -1]
    assert video.step({0: box(1), 2: box(7)}) == [0, -1, 1, -1]
    assert video.step({0: box(2), 2: box(7)}) == [0, -1, 1, -1]
    assert video.state.next_id == 2 and not video.ended


def test_an_object_leaving_ends_its_identity_once_the_memory_is_over() -> None:
    video = Video()
    for x in range(3):  # frames 0-2
        video.step({0: box(x), 1: box(8)}, label=1)
    for _ in range(4):  # frames 3-6: slot 0 empty, its identity still held
        assert video.step({1: box(8)}, label=1) == [-1, 1, -1, -1]
    assert 0 not in video.ended and int(video.state.ids[0]) == 0
    video.step({1: box(8)}, label=1)  # frame 7: 5 frames since it was last seen
    assert video.ended == {0: 7} and int(video.state.ids[0]) == -1
    # Its summary: the class probabilities summed over its 3 frames.
    summary = video.summaries[0]
    assert summary.frame_count == 3
    torch.testing.assert_close(summary.probability_sum, torch.tensor([0.0, 0.9 * 3]))
    # After the last frame, the identities still held are the rest.
    (last,) = ended_identities(video.state)
    assert last.identity == 1 and last.frame_count == 8


def test_two_objects_crossing_keep_their_identities() -> None:
    """A moves right in slot 0, B left in slot 1, on the same rows: A passes in front of B,
    which is hidden for a frame and then seen on A's other side."""
    video = Video()
    for x in range(9):
        front, back = box(x), box(8 - x) & ~box(x)
        objects = {0: front, 1: back} if back.any() else {0: front}
        expected = [0, 1, -1, -1] if back.any() else [0, -1, -1, -1]
        assert video.step(objects) == expected
    assert not video.ended


def test_two_objects_crossing_whose_slots_swap_keep_their_identities_by_iou() -> None:
    """The detector swaps the two objects' slots as they pass each other: the IoU rule
    follows the masks, not the slot index, and nothing ends."""
    video = Video()
    for x in range(4):  # A on the upper rows, B on the lower ones, passing each other
        assert video.step({0: box(x, y=1), 1: box(8 - x, y=7)}) == [0, 1, -1, -1]
    for x in range(4, 8):  # slot 0 now finds B, slot 1 finds A
        assert video.step({0: box(8 - x, y=7), 1: box(x, y=1)}) == [1, 0, -1, -1]
    assert not video.ended and video.state.next_id == 2


def test_an_identity_taken_by_iou_is_not_also_kept_by_its_slot() -> None:
    """A moves from slot 0 to slot 2 (IoU link); slot 0 finds a new object far away: it
    cannot keep A's identity, so that object is new."""
    video = Video()
    video.step({0: box(0)})
    assert video.step({0: box(8), 2: box(1)}) == [1, -1, 0, -1]
    assert not video.ended


def test_an_occluded_object_returns_within_the_memory() -> None:
    """Occluded for 3 frames, A reappears elsewhere (no IoU with anything) in its slot."""
    video = Video()
    video.step({0: box(0), 1: box(8)})
    video.step({0: box(0), 1: box(8)})
    for _ in range(3):
        video.step({1: box(8)})
    assert video.step({0: box(4, y=0), 1: box(8)}) == [0, 1, -1, -1]
    assert not video.ended
    state = video.state
    assert int(state.frame_count[0]) == 3 and int(state.last_seen[0]) == 5


def test_an_object_returning_after_the_memory_is_new() -> None:
    video = Video()
    video.step({0: box(0)})
    for _ in range(5):
        video.step({})
    assert video.ended == {0: 5}
    assert video.step({0: box(0)}) == [1, -1, -1, -1]  # a new identity


@pytest.mark.parametrize("threshold", [0.0, 0.4])
def test_slot_mask_margins_are_the_winning_foreground_slots(threshold: float) -> None:
    torch.manual_seed(0)
    logits = 3.0 * torch.randn(2, 6, 8, 8)  # [t, Q, h, w]
    foreground = torch.tensor([[True, True, False, True, False, True]] * 2)
    foreground[1, 3] = False
    margins = slot_mask_margins(logits, foreground, threshold)
    probability = logits.softmax(dim=1)
    fg = probability.masked_fill(~foreground[..., None, None], -1.0)
    winner = fg.argmax(dim=1, keepdim=True)
    background = (probability * ~foreground[..., None, None]).sum(dim=1, keepdim=True)
    best = fg.gather(1, winner)
    expected = torch.zeros_like(logits, dtype=torch.bool).scatter(1, winner, True)
    expected &= (best > background) & (best >= threshold)
    assert torch.equal(margins > 0, expected)
    assert (margins[~foreground] == -MARGIN).all() and margins.abs().max() <= MARGIN
    # Resized like the segmenter resizes mask logits, no two masks overlap.
    resized = F.interpolate(margins, size=(29, 31), mode="bilinear", align_corners=False)
    assert ((resized > 0).sum(dim=1) <= 1).all()


def test_slot_mask_margins_with_one_or_no_foreground_slot_are_finite() -> None:
    logits = torch.randn(1, 3, 4, 4)
    only = slot_mask_margins(logits, torch.tensor([[True, False, False]]), 0.0)
    assert torch.isfinite(only).all()
    alone = slot_mask_margins(logits, torch.tensor([[True, True, True]]), 0.0)
    assert torch.isfinite(alone).all() and ((alone > 0).sum(dim=1) == 1).all()
    none = slot_mask_margins(logits, torch.tensor([[False, False, False]]), 0.0)
    assert (none == -MARGIN).all()
