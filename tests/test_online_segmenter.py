"""Online inference: `OnlineSegmenter` with the QueryTrack head on a tiny random-weight
detector (32-pixel frames): chunking does not change the instances, the head's state is
flat over 500 frames, and the output is well formed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vis_core import masks
from vis_core.inference.frames import FramePreparer
from vis_core.inference.instances import VideoInstances
from vis_core.inference.online import (
    DetectorChunk,
    HeadStep,
    OnlineSegmenter,
    TrackSummary,
    state_nbytes,
)
from vis_core.inference.querytrack_tracker import QueryTrackState, QueryTrackTracker
from vis_core.methods import build_segmenter
from vis_core.modeling.head_config import AssociationConfig, QueryTrackConfig
from vis_core.modeling.presets import vita_small_synth
from vis_core.modeling.vita_model import VitaModel

SIZE = 32
HIDDEN = 64  # vita_small_synth's frame-query channels


def tiny_config(association: AssociationConfig) -> object:
    config = vita_small_synth()
    head = QueryTrackConfig(embed_dim=HIDDEN, mlp_layers=1, association=association)
    return dataclasses.replace(
        config, input=dataclasses.replace(config.input, min_size_test=SIZE), querytrack=head
    )


# A random detector's masks all overlap (NMS would keep one query) and its confidences are
# low: the rule as the paper's related code has it, so that tracks start, match and end.
RANDOM_DETECTOR_RULE = dict(
    candidate_nms_iou=None, birth_score=0.2, match_threshold=0.5, min_matched_frames=1
)


def moving_box_frame(index: int, height: int = SIZE, width: int = 40) -> np.ndarray:
    """A bright box sliding right over a dark gradient: `[H, W, 3]` uint8."""
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[:] = np.linspace(20, 80, width, dtype=np.uint8)[None, :, None]
    size = max(4, height // 4)
    x = (3 * index) % max(1, width - size)
    frame[height // 3 : height // 3 + size, x : x + size] = (230, 60, 40)
    return frame


@pytest.fixture(scope="module")
def model() -> VitaModel:
    """Random weights, but a head whose embeddings tell query slots apart.

    A random detector's queries share one large component (their differences are ~7% of
    it), so a random MLP gives near-equal embeddings and nothing ever matches. The head
    here is `100 (q - mean q)`: the same slot matches itself from frame to frame, and
    tracks span chunks, end after their time-to-live and restart, as real ones do.
    """
    torch.manual_seed(0)
    model = VitaModel(tiny_config(AssociationConfig(time_to_live=3, **RANDOM_DETECTOR_RULE)))
    model.eval()
    preparer = FramePreparer(model.detector, model.config.input, torch.device("cpu"))
    frames = [moving_box_frame(index) for index in range(12)]
    with torch.no_grad():
        images, _ = next(preparer.chunks(frames, len(frames)))
        mean = model.detector(images).frame_queries[-1].mean(dim=(0, 1))
        linear = model.querytrack.embed.layers[0]
        linear.weight.copy_(torch.eye(HIDDEN) * 100.0)
        linear.bias.copy_(-100.0 * mean)
    return model


def assert_same_instances(a: VideoInstances, b: VideoInstances) -> None:
    assert (a.num_frames, a.height, a.width) == (b.num_frames, b.height, b.width)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)
    for track_a, track_b in zip(a.masks, b.masks, strict=True):
        assert (masks.decode(track_a) != masks.decode(track_b)).mean() < 1e-4


def test_streaming_over_chunks_equals_the_whole_clip_at_once(model: VitaModel) -> None:
    frames = [moving_box_frame(index) for index in range(24)]
    tracker = QueryTrackTracker.for_model(model)
    whole = OnlineSegmenter(model, tracker, chunk_frames=len(frames)).segment(frames)
    # Tracks that span chunks, tracks that end (time-to-live 3) and single-frame ones.
    lengths = whole.present().sum(axis=1)
    assert lengths.max() == 24 and (lengths < 24).any() and len(whole) > 3
    for chunk_frames in (1, 5, 7):
        chunked = OnlineSegmenter(model, tracker, chunk_frames=chunk_frames).segment(frames)
        assert_same_instances(whole, chunked)


def test_the_head_directly_equals_the_segmenter(model: VitaModel) -> None:
    """One `DetectorChunk` of every frame through start/step/finish by hand."""
    frames = [moving_box_frame(index) for index in range(10)]
    tracker = QueryTrackTracker.for_model(model)
    preparer = FramePreparer(model.detector, model.config.input, torch.device("cpu"))
    with torch.no_grad():
        images, _ = next(preparer.chunks(frames, len(frames)))
        chunk = DetectorChunk.from_detections(0, model.detector(images))
        state, step = tracker.step(tracker.start(), chunk)
    summaries = (*step.finished, *tracker.finish(state))
    assert state.next_frame == 10
    instances = OnlineSegmenter(model, tracker, chunk_frames=3).segment(frames)
    by_score = sorted(summaries, key=lambda summary: -summary.score)
    np.testing.assert_allclose(instances.scores, [s.score for s in by_score], rtol=1e-5)
    np.testing.assert_array_equal(instances.labels, [s.label for s in by_score])
    # Every (track, frame) mask the head gave is in the output, and nothing else.
    rows = {s.track_id: row for row, s in enumerate(by_score)}
    expected = np.zeros((len(by_score), 10), dtype=bool)
    expected[[rows[i] for i in step.masks.track_ids.tolist()], step.masks.frames.numpy()] = True
    present = instances.present()
    assert not (present & ~expected).any()
    with pytest.raises(ValueError, match="chunk starts at frame 3, not 0"):
        tracker.step(tracker.start(), dataclasses.replace(chunk, first_frame=3))


class RecordingHead:
    """An `OnlineHead` that hands everything to another and records its state's bytes
    after each frame count."""

    def __init__(self, head: QueryTrackTracker):
        self.head = head
        self.nbytes: dict[int, int] = {}
        self.tracks_seen = 0

    def start(self) -> QueryTrackState:
        return self.head.start()

    def step(self, state: QueryTrackState, chunk: DetectorChunk) -> tuple[object, HeadStep]:
        state, step = self.head.step(state, chunk)
        self.nbytes[state.next_frame] = state_nbytes(state)
        self.tracks_seen = state.memory.next_id
        return state, step

    def finish(self, state: QueryTrackState) -> tuple[TrackSummary, ...]:
        return self.head.finish(state)


def test_head_state_does_not_grow_with_the_number_of_frames() -> None:
    """500 frames with a random-weight head: confident detections that never match start
    tracks all the time, yet the state after 500 frames is no larger than after 50."""
    torch.manual_seed(0)
    association = AssociationConfig(time_to_live=10, candidates=10, **RANDOM_DETECTOR_RULE)
    model = VitaModel(tiny_config(association)).eval()
    head = RecordingHead(QueryTrackTracker.for_model(model))
    frames = [moving_box_frame(index) for index in range(500)]
    instances = OnlineSegmenter(model, head, chunk_frames=50).segment(lambda: iter(frames))
    assert instances.num_frames == 500
    assert head.tracks_seen > 1000  # about 3 births a frame: without expiry it would grow
    # Live tracks: ids, labels, last_seen, matched int64; embedding, box, score sum float32.
    bound = association.candidates * association.time_to_live * (4 * 8 + 4 * HIDDEN + 16 + 4)
    assert 0 < head.nbytes[50] <= bound
    assert head.nbytes[500] <= head.nbytes[50] * 1.5 <= bound * 1.5
    assert max(head.nbytes.values()) <= bound


def test_segment_via_the_method_registry_and_bad_input(model: VitaModel) -> None:
    segmenter = build_segmenter("querytrack", model)
    instances = segmenter.segment([moving_box_frame(index) for index in range(6)])
    assert instances.num_frames == 6 and (instances.height, instances.width) == (32, 40)
    assert np.all(np.diff(instances.scores) <= 0) and len(instances) <= 100
    assert np.all((instances.scores >= 0) & (instances.scores <= 1))
    assert instances.present().any(axis=1).all()  # a track has a mask where it was matched
    with pytest.raises(ValueError, match="no frames"):
        segmenter.segment([])
    plain = VitaModel(dataclasses.replace(model.config, querytrack=None))
    with pytest.raises(ValueError, match="no QueryTrack head"):
        build_segmenter("querytrack", plain)
    with pytest.raises(ValueError, match="unknown method"):
        build_segmenter("nope", model)
