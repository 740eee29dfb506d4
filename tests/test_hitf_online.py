"""HF's online inference: `OnlineSegmenter` with `HitfTracker` on a tiny random-weight
model (32-pixel frames): chunking does not change the instances, the head's state is
the same size after 500 frames as after 50, and the method registry builds it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vis_core import masks
from vis_core.inference.hitf_tracker import HitfState, HitfTracker
from vis_core.inference.instances import VideoInstances
from vis_core.inference.online import (
    DetectorChunk,
    HeadStep,
    OnlineSegmenter,
    TrackSummary,
    state_nbytes,
)
from vis_core.methods import build_segmenter
from vis_core.modeling.config import ModelConfig
from vis_core.modeling.head_config import HitfConfig
from vis_core.modeling.presets import vita_small_synth
from vis_core.modeling.vita_model import VitaModel

HEIGHT, WIDTH = 32, 40
QUERIES, CHANNELS, NUM_CLASSES = 16, 64, 8  # vita_small_synth


def tiny_config(hitf: HitfConfig | None = None) -> ModelConfig:
    config = vita_small_synth()
    return dataclasses.replace(
        config,
        input=dataclasses.replace(config.input, min_size_test=HEIGHT),
        hitf=hitf or HitfConfig(),
    )


def two_boxes_frame(index: int) -> np.ndarray:
    """Two bright boxes crossing over a dark gradient: `[H, W, 3]` uint8."""
    frame = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
    frame[:] = np.linspace(20, 80, WIDTH, dtype=np.uint8)[None, :, None]
    x = (2 * index) % (WIDTH - 8)
    frame[4:12, x : x + 8] = (230, 60, 40)
    frame[16:26, WIDTH - 10 - x : WIDTH - x] = (40, 200, 90)
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


def test_streaming_over_chunks_equals_the_whole_clip_at_once(model: VitaModel) -> None:
    """Chunks shorter than the R = 3 references (1, 2) and longer ones (5, 7): the
    references come from the state across chunk borders exactly as within one chunk."""
    frames = [two_boxes_frame(index) for index in range(24)]
    tracker = HitfTracker.for_model(model)
    whole = OnlineSegmenter(model, tracker, chunk_frames=len(frames)).segment(frames)
    # Identities that span chunks and ones that end before the video does.
    lengths = whole.present().sum(axis=1)
    assert lengths.max() == 24 and (lengths < 24).any() and len(whole) > 3
    for chunk_frames in (1, 2, 5, 7):
        chunked = OnlineSegmenter(model, tracker, chunk_frames=chunk_frames).segment(frames)
        assert_same_instances(whole, chunked)


def test_the_head_directly_equals_the_segmenter(model: VitaModel) -> None:
    """One `DetectorChunk` of every frame through start/step/finish by hand."""
    frames = [two_boxes_frame(index) for index in range(10)]
    tracker = HitfTracker.for_model(model)
    segmenter = OnlineSegmenter(model, tracker, chunk_frames=3)
    with torch.no_grad():
        images, _ = next(segmenter.frames.chunks(frames, len(frames)))
        chunk = DetectorChunk.from_detections(0, model.detector(images))
        state, step = tracker.step(tracker.start(), chunk)
    summaries = (*step.finished, *tracker.finish(state))
    assert state.next_frame == 10 and len(state.history) == 3
    instances = segmenter.segment(frames)
    by_score = sorted(summaries, key=lambda summary: -summary.score)
    np.testing.assert_allclose(instances.scores, [s.score for s in by_score], rtol=1e-5)
    np.testing.assert_array_equal(instances.labels, [s.label for s in by_score])
    # One mask per (identity, frame), and no two identities share a pixel.
    pairs = list(zip(step.masks.track_ids.tolist(), step.masks.frames.tolist(), strict=True))
    assert len(set(pairs)) == len(pairs)
    for frame in range(10):
        assert instances.frame_masks(frame).sum(axis=0).max() <= 1
    with pytest.raises(ValueError, match="chunk starts at frame 3, not 0"):
        tracker.step(tracker.start(), dataclasses.replace(chunk, first_frame=3))


class RecordingHead:
    """An `OnlineHead` that hands everything to another and records its state's bytes
    after each frame count, and how many identities it started and ended."""

    def __init__(self, head: HitfTracker):
        self.head = head
        self.nbytes: dict[int, int] = {}
        self.started = self.ended = 0

    def start(self) -> HitfState:
        return self.head.start()

    def step(self, state: HitfState, chunk: DetectorChunk) -> tuple[HitfState, HeadStep]:
        state, step = self.head.step(state, chunk)
        self.nbytes[state.next_frame] = state_nbytes(state)
        self.started = state.identities.next_id
        self.ended += len(step.finished)
        return state, step

    def finish(self, state: HitfState) -> tuple[TrackSummary, ...]:
        return self.head.finish(state)


@pytest.mark.parametrize(
    ("reference_pixels", "num_frames", "chunk_frames"), [(True, 500, 50), (False, 100, 10)]
)
def test_head_state_does_not_grow_with_the_number_of_frames(
    reference_pixels: bool, num_frames: int, chunk_frames: int
) -> None:
    """500 frames: identities start and end all along (a short memory), yet the state
    after 500 frames is the same size as after 50: R frames of codes (and pixel maps,
    unless the references are read as codes only), one entry per slot and the last
    frame's slot masks."""
    torch.manual_seed(0)
    hitf = HitfConfig(reference_pixels=reference_pixels)
    hitf = dataclasses.replace(hitf, identity=dataclasses.replace(hitf.identity, memory_frames=1))
    model = VitaModel(tiny_config(hitf)).eval()
    head = RecordingHead(HitfTracker.for_model(model))
    frames = [two_boxes_frame(index) for index in range(num_frames)]
    segmenter = OnlineSegmenter(model, head, chunk_frames=chunk_frames)
    instances = segmenter.segment(lambda: iter(frames))
    assert instances.num_frames == num_frames
    assert head.ended > num_frames // 2 and head.started > head.ended  # they come and go
    references, grid = hitf.references, (HEIGHT // 4, 64 // 4)  # width padded to 64
    pixels = CHANNELS * (grid[0] // 4) * (grid[1] // 4) if reference_pixels else 0
    history = references * (QUERIES * CHANNELS + pixels) * 4  # float32
    slots = QUERIES * (3 * 8 + NUM_CLASSES * 4) + QUERIES * grid[0] * grid[1]  # + bool masks
    assert head.nbytes[chunk_frames] == head.nbytes[num_frames] == history + slots
    assert set(head.nbytes.values()) == {history + slots}


def test_segment_via_the_method_registry_and_bad_input(model: VitaModel) -> None:
    segmenter = build_segmenter("hitf", model)
    instances = segmenter.segment([two_boxes_frame(index) for index in range(6)])
    assert instances.num_frames == 6 and (instances.height, instances.width) == (HEIGHT, WIDTH)
    assert np.all(np.diff(instances.scores) <= 0) and len(instances) <= 100
    assert np.all((instances.scores >= 0) & (instances.scores <= 1))
    with pytest.raises(ValueError, match="no frames"):
        segmenter.segment([])
    plain = VitaModel(dataclasses.replace(model.config, hitf=None))
    with pytest.raises(ValueError, match=r"no HF head.*vis train --method hitf"):
        build_segmenter("hitf", plain)
