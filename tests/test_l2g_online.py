"""Local2Global's online inference: `OnlineSegmenter` with `L2gTracker` on a tiny
random-weight model (32-pixel frames) streams chunk by chunk exactly as over the whole
clip at once, with a state that does not grow over 500 frames; and its identity rule on
hand-made per-query predictions (a stand-in head): new objects, objects leaving,
crossing, and returning after an occlusion."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from vis_core import masks
from vis_core.inference.instances import VideoInstances
from vis_core.inference.l2g_tracker import L2gTracker, L2gTrackState, frame_masks, top_pairs
from vis_core.inference.online import (
    DetectorChunk,
    HeadStep,
    OnlineSegmenter,
    TrackSummary,
    state_nbytes,
)
from vis_core.methods import build_segmenter
from vis_core.modeling.boxes import mask_to_box
from vis_core.modeling.frame_decoder import FramePrediction
from vis_core.modeling.head_config import L2gConfig
from vis_core.modeling.l2g import L2gFrame, L2gState
from vis_core.modeling.presets import vita_small_synth
from vis_core.modeling.vita_model import VitaModel

SIZE = 32
HIDDEN, QUERIES, CLASSES = 64, 16, 8  # vita_small_synth


def tiny_config(**head: object) -> object:
    config = vita_small_synth()
    return dataclasses.replace(
        config, input=dataclasses.replace(config.input, min_size_test=SIZE), l2g=L2gConfig(**head)
    )


def moving_box_frame(index: int, height: int = SIZE, width: int = 40) -> np.ndarray:
    """A bright box sliding right over a dark gradient: `[H, W, 3]` uint8."""
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[:] = np.linspace(20, 80, width, dtype=np.uint8)[None, :, None]
    x = (3 * index) % (width - 8)
    frame[10:18, x : x + 8] = (230, 60, 40)
    return frame


@pytest.fixture(scope="module")
def model() -> VitaModel:
    torch.manual_seed(0)
    return VitaModel(tiny_config()).eval()


def assert_same_instances(a: VideoInstances, b: VideoInstances) -> None:
    assert (a.num_frames, a.height, a.width) == (b.num_frames, b.height, b.width)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)
    for track_a, track_b in zip(a.masks, b.masks, strict=True):
        assert (masks.decode(track_a) != masks.decode(track_b)).mean() < 1e-4


class RestartingHead:
    """An L2G tracker that forgets the propagated queries at every chunk (a broken
    stream), to show the equality test would see one."""

    def __init__(self, tracker: L2gTracker):
        self.tracker = tracker

    def start(self) -> L2gTrackState:
        return self.tracker.start()

    def step(self, state: L2gTrackState, chunk: DetectorChunk) -> tuple[L2gTrackState, HeadStep]:
        return self.tracker.step(dataclasses.replace(state, propagation=None), chunk)

    def finish(self, state: L2gTrackState) -> tuple[TrackSummary, ...]:
        return self.tracker.finish(state)


def test_streaming_over_chunks_equals_the_whole_clip_at_once(model: VitaModel) -> None:
    frames = [moving_box_frame(index) for index in range(16)]
    tracker = L2gTracker.for_model(model)
    whole = OnlineSegmenter(model, tracker, chunk_frames=len(frames)).segment(frames)
    assert len(whole) == 10 and whole.present().any()  # top_k (query, class) pairs
    for chunk_frames in (1, 5, 7):
        chunked = OnlineSegmenter(model, tracker, chunk_frames=chunk_frames).segment(frames)
        assert_same_instances(whole, chunked)
    broken = OnlineSegmenter(model, RestartingHead(tracker), chunk_frames=5).segment(frames)
    assert not np.allclose(broken.scores, whole.scores, rtol=1e-5)
    # The first chunk must start at frame 0.
    with pytest.raises(ValueError, match="chunk starts at frame 3, not 0"):
        chunk = DetectorChunk(3, *(torch.zeros(1, 1),) * 4)
        tracker.step(tracker.start(), chunk)


class RecordingHead:
    """An `OnlineHead` that hands everything to another and records its state's bytes
    after each frame count."""

    def __init__(self, head: L2gTracker):
        self.head = head
        self.nbytes: dict[int, int] = {}

    def start(self) -> L2gTrackState:
        return self.head.start()

    def step(self, state: L2gTrackState, chunk: DetectorChunk) -> tuple[object, HeadStep]:
        state, step = self.head.step(state, chunk)
        self.nbytes[state.next_frame] = state_nbytes(state)
        return state, step

    def finish(self, state: L2gTrackState) -> tuple[TrackSummary, ...]:
        return self.head.finish(state)


def test_head_state_does_not_grow_with_the_number_of_frames() -> None:
    """The state after 500 frames is the state after 50: the global queries, their boxes
    and the probability sums, float32, nothing per frame. (A shallow decoder and aligner
    and square frames, for speed: the state does not depend on depth.)"""
    config = tiny_config(aligner_layers=1)
    decoder = dataclasses.replace(config.frame_decoder, layers=2, vita_last_layers=1)
    torch.manual_seed(0)
    model = VitaModel(dataclasses.replace(config, frame_decoder=decoder)).eval()
    head = RecordingHead(L2gTracker.for_model(model))
    frames = [moving_box_frame(index, width=SIZE) for index in range(500)]
    instances = OnlineSegmenter(model, head, chunk_frames=50).segment(lambda: iter(frames))
    assert instances.num_frames == 500
    flat = QUERIES * (HIDDEN + 4 + CLASSES) * 4
    assert head.nbytes[50] == head.nbytes[500] == flat
    assert set(head.nbytes.values()) == {flat}


def test_segment_via_the_method_registry_and_bad_input(model: VitaModel) -> None:
    segmenter = build_segmenter("l2g", model)
    instances = segmenter.segment([moving_box_frame(index) for index in range(4)])
    assert instances.num_frames == 4 and (instances.height, instances.width) == (32, 40)
    assert np.all(np.diff(instances.scores) <= 0) and len(instances) == model.config.l2g.top_k
    assert np.all((instances.scores >= 0) & (instances.scores <= 1))
    with pytest.raises(ValueError, match="no frames"):
        segmenter.segment([])
    plain = VitaModel(dataclasses.replace(model.config, l2g=None))
    with pytest.raises(ValueError, match=r"no L2G head.*vis train --method l2g"):
        build_segmenter("l2g", plain)
    # A detector that gives no attended maps (the ONNX one): a clear error.
    tracker = L2gTracker.for_model(model)
    bare = DetectorChunk(0, *(torch.zeros(1, 1),) * 4)
    with pytest.raises(ValueError, match="attended maps"):
        tracker.step(tracker.start(), bare)


# ---------------------------------------------------------------------------------------
# The identity rule on hand-made per-query predictions

K, Q, GRID = 3, 5, 8  # classes, queries, mask grid


class ScriptedHead(nn.Module):
    """Stands in for `L2gHead`: in frame t each query predicts what the script says,
    whatever it is given (the chunk's mask features carry t)."""

    def __init__(self, frames: int):
        super().__init__()
        self.num_queries, self.num_classes = Q, K
        self.logits = torch.zeros(frames, Q, K + 1)
        self.logits[..., K] = 6.0  # no object
        self.masks = torch.full((frames, Q, GRID, GRID), -6.0)
        self.anchor = nn.Parameter(torch.zeros(1))  # the tracker finds the device here

    def place(self, query: int, frames: range, label: int, x: int, y: int = 2) -> None:
        """`query` sees an object of class `label` (a 3x3 square at (x, y)) in `frames`."""
        for t in frames:
            self.logits[t, query] = 0.0
            self.logits[t, query, label] = 6.0
            self.masks[t, query, y : y + 3, x : x + 3] = 6.0

    def forward(self, decoder, maps, mask_features, previous) -> L2gFrame:
        t = int(mask_features.flatten()[0])
        prediction = FramePrediction(self.logits[t][None], self.masks[t][None])
        state = L2gState(torch.zeros(1, Q, 4), mask_to_box(self.masks[t][None] > 0))
        return L2gFrame((prediction,), torch.zeros(1, 1, K), ((1, 1),), state)


def run(head: ScriptedHead, top_k: int = 10, chunk: int = 3):
    """The tracker over the script in chunks: {track: frames with a mask}, {track: the
    columns its mask covers in each of those frames}, the output pairs."""
    frames = head.logits.shape[0]
    tracker = L2gTracker(head, decoder=None, config=L2gConfig(top_k=top_k))
    state = tracker.start()
    given: dict[int, list[int]] = {}
    columns: dict[int, list[int]] = {}
    for first in range(0, frames, chunk):
        count = min(chunk, frames - first)
        index = torch.arange(first, first + count, dtype=torch.float32).view(-1, 1, 1, 1)
        dummy = torch.zeros(count, 1)
        piece = DetectorChunk(first, dummy, dummy, dummy, dummy, (dummy,), index)
        state, step = tracker.step(state, piece)
        for frame, track, logits in zip(
            step.masks.frames.tolist(), step.masks.track_ids.tolist(), step.masks.mask_logits,
            strict=True,
        ):  # fmt: skip
            given.setdefault(track, []).append(frame)
            columns.setdefault(track, []).append(int(torch.nonzero(logits > 0)[0, 1]))
    return given, columns, tracker.finish(state)


def test_a_new_object_is_taken_up_by_a_free_query_and_keeps_it() -> None:
    """Query 0 holds an object all along; in frame 30 of 40 a new one enters and query 3,
    free until then, takes it: track 3 from that frame on. Its mean probability over the
    video is low (the paper's score counts every frame), but its masks are all given:
    the probability in the frame reaches the floor even when the running mean does not."""
    head = ScriptedHead(40)
    head.place(0, range(40), label=1, x=0)
    head.place(3, range(30, 40), label=2, x=4)
    given, _, pairs = run(head)
    assert given == {0: list(range(40)), 3: list(range(30, 40))}
    assert [(p.track_id, p.label) for p in pairs[:2]] == [(0, 1), (3, 2)]
    assert pairs[0].score == pytest.approx(1.0, abs=0.01)
    assert pairs[1].score == pytest.approx(0.25, abs=0.01)  # 10 of 40 frames
    # The other pairs are unsure ones: every query's other classes, at ~0.
    assert len(pairs) == 10 and all(p.score < 0.01 for p in pairs[2:])


def test_an_object_leaving_ends_its_masks_not_its_track() -> None:
    """Query 1's object leaves after frame 4 of 10: no masks after it, and no death either
    (the rule has none): the track is an output with a lower score, masks empty after."""
    head = ScriptedHead(10)
    head.place(0, range(10), label=1, x=0)
    head.place(1, range(5), label=1, x=4)
    given, _, pairs = run(head, top_k=2)
    assert given == {0: list(range(10)), 1: list(range(5))}
    assert [(p.track_id, p.label) for p in pairs] == [(0, 1), (1, 1)]
    assert pairs[1].score == pytest.approx(0.5, abs=0.01)


def test_two_objects_crossing_keep_their_queries() -> None:
    """Two same-class objects swap sides: each track is its query's, wherever its mask
    goes. The rule never looks at positions; that a query keeps its object through the
    crossing is the learned propagation's part (`test_l2g_training`'s overfit test)."""
    head = ScriptedHead(6)
    for t in range(6):
        head.place(0, range(t, t + 1), label=2, x=t)  # left to right
        head.place(1, range(t, t + 1), label=2, x=5 - t)  # right to left
    given, columns, pairs = run(head, top_k=2)
    assert given == {0: list(range(6)), 1: list(range(6))}
    assert columns == {0: [0, 1, 2, 3, 4, 5], 1: [5, 4, 3, 2, 1, 0]}
    assert {p.track_id for p in pairs} == {0, 1}


def test_an_occluded_object_returns_to_its_track_only_through_its_query() -> None:
    """Occluded in frames 3-5 of 10: back in the same query, the same track, with no
    masks while hidden (the queries are the whole memory, for any length of occlusion).
    Back in another query, a new track: the rule has no re-identification (the paper's
    own failure case)."""
    head = ScriptedHead(10)
    head.place(2, [*range(3), *range(6, 10)], label=0, x=1)
    given, _, pairs = run(head, top_k=1)
    assert given == {2: [0, 1, 2, 6, 7, 8, 9]}
    assert (pairs[0].track_id, pairs[0].label) == (2, 0)

    head = ScriptedHead(10)
    head.place(2, range(3), label=0, x=1)
    head.place(4, range(6, 10), label=0, x=1)
    given, _, pairs = run(head, top_k=2)
    assert given == {2: [0, 1, 2], 4: [6, 7, 8, 9]}
    assert [p.track_id for p in pairs] == [4, 2]


def test_masks_below_the_floor_and_empty_masks_are_not_given() -> None:
    probability = torch.tensor([[0.9, 0.0], [0.01, 0.02], [0.01, 0.02], [0.5, 0.1]])
    mean = torch.tensor([[0.5, 0.0], [0.2, 0.0], [0.01, 0.02], [0.3, 0.0]])
    logits = torch.full((4, 2, 2), 1.0)
    logits[3] = -1.0  # empty
    given = frame_masks(probability, mean, logits, floor=0.05)
    assert given.queries.tolist() == [0, 1]  # 1 by its running mean; 2 by neither
    pairs = top_pairs(torch.tensor([[0.1, 0.7], [0.3, 0.05]]), top_k=3)
    assert [(p.track_id, p.label) for p in pairs] == [(0, 1), (1, 0), (0, 0)]
    assert [p.score for p in pairs] == pytest.approx([0.7, 0.3, 0.1])
