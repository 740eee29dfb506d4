"""QueryTrack's association rule on hand-made embeddings: births, deaths after the
time-to-live, crossings, returns after occlusion, the class gate, the EMA memory."""

from __future__ import annotations

import pytest
import torch

from vis_core.inference.association import (
    Candidates,
    TrackMemory,
    associate,
    bi_softmax,
    expire,
)
from vis_core.modeling.boxes import box_iou, mask_to_box
from vis_core.modeling.head_config import AssociationConfig

EMBED_DIM = 8
CONFIG = AssociationConfig(time_to_live=4)


def identity(index: int, scale: float = 6.0) -> torch.Tensor:
    """A well separated embedding per object: a scaled unit vector."""
    return torch.nn.functional.one_hot(torch.tensor(index), EMBED_DIM).float() * scale


def box(cx: float, cy: float = 0.5, size: float = 0.2) -> list[float]:
    return [cx, cy, size, size]


def candidates(*objects: tuple[int, list[float], int, float]) -> Candidates:
    """Objects as (identity, box, label, score); a little noise on each embedding."""
    generator = torch.Generator().manual_seed(len(objects))
    if not objects:
        return Candidates(torch.zeros(0, EMBED_DIM), torch.zeros(0, 4), torch.zeros(0).long(),
                          torch.zeros(0))  # fmt: skip
    embeddings = torch.stack([identity(obj[0]) for obj in objects])
    embeddings = embeddings + 0.3 * torch.randn(embeddings.shape, generator=generator)
    return Candidates(
        embeddings=embeddings,
        boxes=torch.tensor([obj[1] for obj in objects]),
        labels=torch.tensor([obj[2] for obj in objects]),
        scores=torch.tensor([obj[3] for obj in objects]),
    )


class Tracker:
    """The rule run frame by frame as an online tracker does: expire, then associate."""

    def __init__(self, config: AssociationConfig = CONFIG):
        self.config = config
        self.memory = TrackMemory.empty(EMBED_DIM)
        self.ended: list[int] = []
        self.frame = 0

    def __call__(self, frame_candidates: Candidates) -> list[int]:
        self.memory, ended = expire(self.memory, self.frame, self.config.time_to_live)
        self.ended.extend(ended.ids.tolist())
        association = associate(self.memory, frame_candidates, self.frame, self.config)
        self.memory = association.memory
        self.frame += 1
        return association.track_ids.tolist()


def test_bi_softmax_averages_both_directions() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.0, 3.0]])
    expected = (logits.softmax(1) + logits.softmax(0)) / 2
    torch.testing.assert_close(bi_softmax(logits), expected)
    assert bi_softmax(torch.zeros(0, 3)).shape == (0, 3)


def test_a_new_object_starts_a_track_and_unsure_ones_do_not() -> None:
    track = Tracker()
    assert track(candidates((0, box(0.3), 1, 0.9))) == [0]
    # Object 0 continues; object 1 is new and confident; object 2 is below birth_score.
    ids = track(candidates((0, box(0.31), 1, 0.8), (1, box(0.7), 1, 0.6), (2, box(0.5), 1, 0.1)))
    assert ids == [0, 1, -1]
    assert track.memory.ids.tolist() == [0, 1] and track.memory.next_id == 2
    assert track.memory.matched.tolist() == [2, 1]
    assert track.memory.score_sum.tolist() == pytest.approx([1.7, 0.6])
    assert track(candidates()) == [] and len(track.memory) == 2  # an empty frame


def test_an_object_leaving_ends_its_track_after_the_time_to_live() -> None:
    track = Tracker()
    assert track(candidates((0, box(0.3), 1, 0.9), (1, box(0.7), 2, 0.9))) == [0, 1]
    for _ in range(CONFIG.time_to_live - 1):  # object 0 leaves, object 1 stays
        assert track(candidates((1, box(0.7), 2, 0.9))) == [1]
    assert track.ended == [] and track.memory.ids.tolist() == [0, 1]  # still matchable
    assert track(candidates((1, box(0.7), 2, 0.9))) == [1]
    assert track.ended == [0] and track.memory.ids.tolist() == [1]
    # Coming back later is a new track.
    assert track(candidates((1, box(0.7), 2, 0.9), (0, box(0.3), 1, 0.9))) == [1, 2]


def test_two_crossing_objects_keep_their_identities() -> None:
    """Same class, moving towards each other; their boxes swap places from one frame to
    the next (box IoU then favours the wrong pairs): the embeddings decide."""
    track = Tracker()
    first = track(candidates((0, box(0.2), 3, 0.9), (1, box(0.8), 3, 0.7)))
    assert first == [0, 1]
    positions = [0.35, 0.5, 0.65, 0.8]
    for step, x in enumerate(positions):
        # Candidates arrive in either order; object 1 mirrors object 0.
        objects = [(0, box(x), 3, 0.9), (1, box(1.0 - x), 3, 0.7)]
        if step % 2:
            objects.reverse()
        ids = track(candidates(*objects))
        assert dict(zip([obj[0] for obj in objects], ids, strict=True)) == {0: 0, 1: 1}
    # Now at 0.8 and 0.2, they jump across: each lands where the other was.
    assert track(candidates((0, box(0.2), 3, 0.9), (1, box(0.8), 3, 0.7))) == [0, 1]
    assert len(track.memory) == 2 and track.memory.matched.tolist() == [6, 6]


def test_an_occluded_object_returning_within_the_memory_gets_its_track_back() -> None:
    track = Tracker(AssociationConfig(time_to_live=10))
    for _ in range(3):
        assert track(candidates((0, box(0.3), 1, 0.9), (1, box(0.7), 1, 0.8))) == [0, 1]
    for _ in range(5):  # object 0 hidden behind something for 5 frames
        assert track(candidates((1, box(0.7), 1, 0.8))) == [1]
    # It comes back elsewhere (no box overlap), next to a newcomer of its class.
    ids = track(candidates((2, box(0.5, 0.2), 1, 0.9), (0, box(0.1, 0.8), 1, 0.6),
                           (1, box(0.7), 1, 0.8)))  # fmt: skip
    assert ids == [2, 0, 1]
    assert track.memory.matched.tolist() == [4, 9, 1]


def test_the_class_gate_and_the_similarity_gate() -> None:
    track = Tracker()
    assert track(candidates((0, box(0.3), 1, 0.9))) == [0]
    # Same embedding and place, another class: not a match (the paper's delta).
    assert track(candidates((0, box(0.3), 2, 0.9))) == [1]
    ungated = Tracker(AssociationConfig(class_gate=False))
    ungated(candidates((0, box(0.3), 1, 0.9)))
    assert ungated(candidates((0, box(0.3), 2, 0.9))) == [0]
    # Same class and place, a different object: the bi-softmax gate keeps them apart.
    assert track(candidates((0, box(0.3), 1, 0.9), (5, box(0.3), 1, 0.9))) == [0, 2]


def test_a_match_updates_the_track_memory() -> None:
    config = AssociationConfig(momentum=0.8)
    memory = TrackMemory.empty(EMBED_DIM)
    first = candidates((0, box(0.3), 1, 0.9))
    memory = associate(memory, first, 0, config).memory
    second = candidates((0, box(0.4), 1, 0.5))
    updated = associate(memory, second, 3, config).memory
    expected = 0.2 * first.embeddings[0] + 0.8 * second.embeddings[0]
    torch.testing.assert_close(updated.embeddings[0], expected)
    torch.testing.assert_close(updated.boxes[0], torch.tensor(box(0.4)))
    assert updated.last_seen.tolist() == [3] and updated.labels.tolist() == [1]
    assert updated.score_sum.tolist() == pytest.approx([1.4])
    live, ended = expire(updated, 3 + config.time_to_live, config.time_to_live)
    assert len(live) == 0 and ended.ids.tolist() == [0]


def test_memory_stays_bounded_with_many_births() -> None:
    """Ten new confident objects a frame: at most candidates x time_to_live live tracks."""
    track = Tracker(AssociationConfig(candidates=10, time_to_live=3))
    generator = torch.Generator().manual_seed(0)
    for frame in range(30):
        frame_candidates = Candidates(
            embeddings=torch.randn(10, EMBED_DIM, generator=generator) * 5,
            boxes=torch.rand(10, 4, generator=generator) * 0.5,
            labels=torch.arange(10) + 10 * frame,  # fresh classes: nothing can match
            scores=torch.full((10,), 0.9),
        )
        track(frame_candidates)
        assert len(track.memory) <= 30
    # ids, labels, last_seen, matched int64; embeddings, boxes, score_sum float32
    assert len(track.memory) == 30
    assert track.memory.nbytes() == 30 * (4 * 8 + 4 * EMBED_DIM + 4 * 4 + 4)


def test_mask_to_box_and_box_iou() -> None:
    masks = torch.zeros(3, 4, 8, dtype=torch.bool)
    masks[0, 1, 2] = True  # one cell
    masks[1, 0:2, 0:8] = True  # the top half
    boxes = mask_to_box(masks)
    torch.testing.assert_close(boxes[0], torch.tensor([2.5 / 8, 1.5 / 4, 1 / 8, 1 / 4]))
    torch.testing.assert_close(boxes[1], torch.tensor([0.5, 0.25, 1.0, 0.5]))
    assert boxes[2].tolist() == [0.0, 0.0, 0.0, 0.0]  # empty mask, zero box
    iou = box_iou(boxes, boxes)
    torch.testing.assert_close(iou.diagonal(), torch.tensor([1.0, 1.0, 0.0]))
    assert iou[0, 1].item() == pytest.approx(1 / 16)
