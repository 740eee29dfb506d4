"""Video inference: VITA's segmenter (short and two-pass paths), the per-frame baseline,
`VideoInstances` and its YouTube-VIS results, on a random-weight `vita_small_synth`."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from vis_core import masks
from vis_core.evaluation import evaluate_ytvis
from vis_core.inference import (
    FrameDetection,
    FrameSourceError,
    PerFrameConfig,
    PerFrameSegmenter,
    VideoInstances,
    VideoSegmenter,
    link_detections,
    resized_input_size,
    tracks_to_instances,
)
from vis_core.modeling.config import ModelConfig
from vis_core.modeling.presets import vita_small_synth
from vis_core.modeling.vita_model import VitaModel

NUM_CLASSES = 8  # vita_small_synth


def small_config(min_size_test: int) -> ModelConfig:
    """The small preset with a small test-time input size, so tests run fast."""
    config = vita_small_synth()
    return dataclasses.replace(
        config, input=dataclasses.replace(config.input, min_size_test=min_size_test)
    )


@pytest.fixture(scope="module")
def model() -> VitaModel:
    """Shortest side 64: 48x64 frames become 64x85, 50x70 frames 64x90 (padded 64x96)."""
    torch.manual_seed(0)
    return VitaModel(small_config(64)).eval()


def random_frames(count: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def moving_box_frame(index: int, height: int, width: int) -> np.ndarray:
    """A bright box sliding right over a dark gradient: `[H, W, 3]` uint8."""
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[:] = np.linspace(20, 80, width, dtype=np.uint8)[None, :, None]
    size = max(4, height // 4)
    x = (3 * index) % max(1, width - size)
    frame[height // 3 : height // 3 + size, x : x + size] = (230, 60, 40)
    return frame


def segmenter(model: VitaModel, **inference) -> VideoSegmenter:
    return VideoSegmenter(model, dataclasses.replace(model.config.inference, **inference))


def assert_same_instances(a: VideoInstances, b: VideoInstances) -> None:
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    for track_a, track_b in zip(a.masks, b.masks, strict=True):
        differing = (masks.decode(track_a) != masks.decode(track_b)).mean()
        assert differing < 1e-4


def test_resized_input_size_follows_resize_shortest_edge() -> None:
    assert resized_input_size(480, 640, 360, 1333) == (360, 480)
    assert resized_input_size(720, 1280, 360, 1333) == (360, 640)
    assert resized_input_size(50, 70, 64, 1333) == (64, 90)  # 89.6 rounds up
    assert resized_input_size(1000, 100, 360, 1333) == (1333, 133)  # longest side capped
    assert resized_input_size(240, 320, 240, 1333) == (240, 320)


def test_frames_are_resized_as_pil_does(model: VitaModel, monkeypatch) -> None:
    from PIL import Image

    from vis_core.inference.frames import FramePreparer

    monkeypatch.setattr(model.detector, "preprocess", lambda batch: batch)  # the resized
    preparer = FramePreparer(model.detector, model.config.input, torch.device("cpu"))
    frames = np.stack(random_frames(2, 150, 203))
    geometry = preparer.geometry(150, 203)  # shortest side 64: 64x87
    resized = preparer._prepare(frames, geometry).numpy()
    assert resized.shape == (2, 64, 87, 3) and resized.dtype == np.uint8
    size = (geometry.resized_width, geometry.resized_height)
    pil = np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in frames])
    difference = np.abs(resized.astype(int) - pil)
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01


def test_segment_output_shapes_odd_size(model: VitaModel) -> None:
    frames = random_frames(20, 50, 70)
    instances = segmenter(model).segment(frames)
    top_k = model.config.inference.top_k
    assert (instances.num_frames, instances.height, instances.width) == (20, 50, 70)
    assert len(instances) == top_k
    assert instances.scores.shape == (top_k,) and instances.labels.shape == (top_k,)
    assert np.all((instances.scores >= 0) & (instances.scores <= 1))
    assert np.all((instances.labels >= 0) & (instances.labels < NUM_CLASSES))
    assert all(len(track) == 20 for track in instances.masks)
    assert instances.instance_masks(0).shape == (20, 50, 70)
    assert instances.frame_masks(19).shape == (top_k, 50, 70)
    assert instances.areas().shape == (top_k, 20) and instances.boxes().shape == (top_k, 20, 4)
    assert instances.areas().sum() > 0  # random weights still give some foreground


def dense_reference(model: VitaModel, frames: list[np.ndarray], top_k: int) -> VideoInstances:
    """Reference section 3 on the whole clip at once with dense masks (no resize: the
    frames' shortest side already is `min_size_test`)."""
    with torch.inference_mode():
        images = model.detector.preprocess(torch.from_numpy(np.stack(frames)))
        prediction = model(images[None])  # [B=1, T, 3, H', W']
        logits = prediction.video.pred_logits[-1, 0]  # [cQ, K+1]
        scores, index = logits.softmax(-1)[:, :-1].flatten().topk(top_k)
        labels, queries = index % NUM_CLASSES, index // NUM_CLASSES
        embed = prediction.video.pred_mask_embed[-1, 0, queries]  # [k, C]
        mask_logits = model.vita.video_mask_logits(embed, prediction.mask_features[0])
        mask_logits = F.interpolate(
            mask_logits, size=images.shape[-2:], mode="bilinear", align_corners=False
        )
        height, width = frames[0].shape[:2]
        mask_logits = mask_logits[:, :, :height, :width]
        soft = mask_logits.sigmoid()
        hard = soft > 0.5
        mask_scores = (soft * hard).flatten(1).sum(1) / (hard.flatten(1).sum(1) + 1e-6)
        dense = (mask_logits > 0).numpy()
    return VideoInstances(
        num_frames=len(frames),
        height=height,
        width=width,
        scores=(scores * mask_scores).numpy(),
        labels=labels.numpy(),
        masks=tuple(tuple(masks.encode(track)) for track in dense),
    )


def test_segment_matches_dense_reference() -> None:
    torch.manual_seed(1)
    model = VitaModel(small_config(48)).eval()
    frames = [moving_box_frame(index, 48, 64) for index in range(12)]
    expected = dense_reference(model, frames, top_k=10)
    assert_same_instances(segmenter(model, detector_chunk_frames=12).segment(frames), expected)
    # The two-pass path with several chunks too.
    got = segmenter(
        model, long_video_frames=4, detector_chunk_frames=5, mask_chunk_frames=3
    ).segment(frames)
    assert_same_instances(got, expected)


class CountingSource:
    """A frame source callable that counts how often the video is read."""

    def __init__(self, frames: list[np.ndarray]):
        self.frames = frames
        self.reads = 0

    def __call__(self) -> Iterator[np.ndarray]:
        self.reads += 1
        return iter(self.frames)


def test_two_pass_path_equals_short_path(model: VitaModel, monkeypatch: pytest.MonkeyPatch) -> None:
    frames = random_frames(14, 48, 64, seed=3)
    recomputed: list[int] = []
    original = type(model.detector).mask_features

    def counting_mask_features(detector, images):
        recomputed.append(images.shape[0])
        return original(detector, images)

    monkeypatch.setattr(type(model.detector), "mask_features", counting_mask_features)
    short_source, long_source = CountingSource(frames), CountingSource(frames)
    short = segmenter(model, detector_chunk_frames=6).segment(short_source)
    assert short_source.reads == 1 and recomputed == []
    long = segmenter(model, detector_chunk_frames=6, long_video_frames=4).segment(long_source)
    assert long_source.reads == 2
    assert recomputed == [6, 6, 2]  # the second pass, chunk by chunk
    assert_same_instances(short, long)


def test_long_path_threshold_is_inclusive(model: VitaModel) -> None:
    source = CountingSource(random_frames(8, 48, 64))
    segmenter(model, detector_chunk_frames=4, long_video_frames=8).segment(source)
    assert source.reads == 1
    source = CountingSource(random_frames(9, 48, 64))
    segmenter(model, detector_chunk_frames=4, long_video_frames=8).segment(source)
    assert source.reads == 2


def test_chunk_sizes_do_not_change_the_result(model: VitaModel) -> None:
    frames = random_frames(12, 50, 70, seed=4)
    reference = segmenter(model, detector_chunk_frames=12, mask_chunk_frames=12).segment(frames)
    for detector_chunk, mask_chunk in ((3, 2), (5, 1)):
        got = segmenter(
            model, detector_chunk_frames=detector_chunk, mask_chunk_frames=mask_chunk
        ).segment(frames)
        assert_same_instances(reference, got)


def test_inputs_list_callable_and_one_shot_iterator(model: VitaModel) -> None:
    frames = random_frames(6, 48, 64, seed=5)
    from_list = segmenter(model).segment(frames)
    from_callable = segmenter(model).segment(lambda: (frame for frame in frames))
    assert_same_instances(from_list, from_callable)
    with pytest.raises(TypeError, match="one-shot iterator"):
        segmenter(model).segment(iter(frames))


def test_single_frame_video(model: VitaModel) -> None:
    instances = segmenter(model).segment(random_frames(1, 50, 70))
    assert (instances.num_frames, instances.height, instances.width) == (1, 50, 70)
    assert len(instances) == model.config.inference.top_k
    assert all(len(track) == 1 for track in instances.masks)


def test_bfloat16_autocast_runs(model: VitaModel) -> None:
    frames = random_frames(4, 48, 64, seed=6)
    instances = VideoSegmenter(model, dtype=torch.bfloat16).segment(frames)
    assert len(instances) == model.config.inference.top_k
    assert instances.scores.dtype == np.float32
    assert np.all((instances.scores >= 0) & (instances.scores <= 1))
    with pytest.raises(ValueError, match="dtype"):
        VideoSegmenter(model, dtype=torch.float64)


def test_bad_frame_sources_raise_clear_errors(model: VitaModel) -> None:
    with pytest.raises(FrameSourceError, match="no frames"):
        segmenter(model).segment([])
    with pytest.raises(FrameSourceError, match="frame 2 is 40x64"):
        segmenter(model).segment(random_frames(2, 48, 64) + random_frames(1, 40, 64))
    with pytest.raises(FrameSourceError, match="uint8"):
        segmenter(model).segment([np.zeros((48, 64, 3), dtype=np.float32)])
    with pytest.raises(FrameSourceError, match=r"RGB \[H, W, 3\]"):
        segmenter(model).segment([np.zeros((48, 64), dtype=np.uint8)])

    frames = random_frames(6, 48, 64)
    reads = iter([frames, frames[:5]])
    with pytest.raises(FrameSourceError, match="6 frames on the first pass and 5"):
        segmenter(model, long_video_frames=2).segment(lambda: iter(next(reads)))


def test_config_is_checked(model: VitaModel) -> None:
    with pytest.raises(ValueError, match="mask_chunk_frames"):
        segmenter(model, mask_chunk_frames=0)
    with pytest.raises(ValueError, match="top_k"):
        segmenter(model, top_k=16 * NUM_CLASSES + 1)


def box_mask(height: int, width: int, top: int, left: int, size_h: int, size_w: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[max(top, 0) : top + size_h, max(left, 0) : left + size_w] = True
    return mask


def test_to_ytvis_results_maps_categories_and_keeps_every_frame() -> None:
    track = [box_mask(10, 12, 2, t, 3, 3) for t in range(4)]
    track[2][:] = False  # absent in frame 2: still one (empty) RLE
    instances = VideoInstances(
        num_frames=4,
        height=10,
        width=12,
        scores=np.array([0.9, 0.4], dtype=np.float32),
        labels=np.array([0, 2]),
        masks=(tuple(masks.encode(np.stack(track))), tuple(masks.encode(np.stack(track)))),
    )
    results = instances.to_ytvis_results(video_id=7, category_ids=[11, 12, 13])
    assert [r["category_id"] for r in results] == [11, 13]
    assert [r["video_id"] for r in results] == [7, 7]
    assert results[0]["score"] == pytest.approx(0.9)
    assert all(isinstance(r["score"], float) for r in results)
    assert all(len(r["segmentations"]) == 4 for r in results)
    assert all(isinstance(rle["counts"], str) for rle in results[0]["segmentations"])
    np.testing.assert_array_equal(masks.decode(results[0]["segmentations"]), np.stack(track))
    np.testing.assert_array_equal(instances.present()[0], [True, True, False, True])
    np.testing.assert_array_equal(instances.boxes()[0, 1], [1, 2, 3, 3])
    with pytest.raises(ValueError, match="no dataset id"):
        instances.to_ytvis_results(video_id=7, category_ids=[11, 12])


def test_video_instances_validates_its_fields() -> None:
    rle = masks.encode_one(np.zeros((4, 5), dtype=bool))
    with pytest.raises(ValueError, match="2 frame masks for 3 frames"):
        VideoInstances(3, 4, 5, np.zeros(1), np.zeros(1, dtype=np.int64), ((rle, rle),))
    with pytest.raises(ValueError, match="size is not"):
        VideoInstances(1, 4, 6, np.zeros(1), np.zeros(1, dtype=np.int64), ((rle,),))
    with pytest.raises(ValueError, match="one per instance"):
        VideoInstances(1, 4, 5, np.zeros(2), np.zeros(1, dtype=np.int64), ((rle,),))
    empty = VideoInstances.empty(3, 4, 5)
    assert len(empty) == 0 and empty.areas().shape == (0, 3)
    assert empty.to_ytvis_results(1, [1]) == []


def detection(mask: np.ndarray, label: int = 0, score: float = 0.8) -> FrameDetection:
    return FrameDetection(label=label, score=score, mask=masks.encode_one(mask))


def test_linking_two_crossing_objects_and_one_disappearing() -> None:
    """A moves right, B moves left on overlapping rows and crosses A; C (another class,
    overlapping A's start) vanishes after frame 3; D appears later where C was."""
    height, width, frames = 30, 40, 12
    per_frame = []
    for t in range(frames):
        dets = [
            detection(box_mask(height, width, 10, 30 - 2 * t, 12, 10), score=0.6),  # B
            detection(box_mask(height, width, 4, 2 * t, 12, 10), score=0.9),  # A
        ]
        if t <= 3:
            dets.append(detection(box_mask(height, width, 4, 2 * t, 12, 10), label=1, score=0.5))
        if t >= 8:  # D: C's class and place, after a gap longer than max_gap
            dets.append(detection(box_mask(height, width, 4, 6, 12, 10), label=1, score=0.7))
        per_frame.append(dets)
    tracks = link_detections(per_frame, iou_threshold=0.3, max_gap=2)
    assert len(tracks) == 4
    a, b = sorted((track for track in tracks if track.label == 0), key=lambda t: -t.score)
    c, d = sorted((track for track in tracks if track.label == 1), key=lambda t: t.frames[0])
    assert a.frames == tuple(range(frames)) and a.label == 0 and a.score == pytest.approx(0.9)
    assert b.frames == tuple(range(frames)) and b.label == 0 and b.score == pytest.approx(0.6)
    # Identities survive the crossing: each track's masks keep moving one way.
    assert [masks.bbox([rle])[0, 0] for rle in a.masks] == [2 * t for t in range(frames)]
    assert [masks.bbox([rle])[0, 0] for rle in b.masks] == [30 - 2 * t for t in range(frames)]
    assert c.label == 1 and c.frames == (0, 1, 2, 3)
    assert d.label == 1 and d.frames == tuple(range(8, frames))

    instances = tracks_to_instances(tracks, frames, height, width, max_tracks=3)
    np.testing.assert_allclose(instances.scores, [0.9, 0.7, 0.6])  # best first, C dropped
    np.testing.assert_array_equal(instances.labels, [0, 1, 0])
    np.testing.assert_array_equal(instances.present()[1], np.arange(frames) >= 8)


def test_linking_bridges_short_gaps_only() -> None:
    mask = box_mask(20, 20, 5, 5, 8, 8)
    frames = [[detection(mask)], [], [], [detection(mask)], [], [], [], [detection(mask)]]
    tracks = link_detections(frames, iou_threshold=0.3, max_gap=2)
    assert [track.frames for track in tracks] == [(0, 3), (7,)]
    far = box_mask(20, 20, 12, 12, 8, 8)  # IoU 4/124 with `mask`: below the threshold
    tracks = link_detections([[detection(mask)], [detection(far)]], iou_threshold=0.3)
    assert len(tracks) == 2


def test_per_frame_segmenter_output(model: VitaModel) -> None:
    frames = [moving_box_frame(index, 50, 70) for index in range(10)]
    config = PerFrameConfig(score_threshold=0.0, detections_per_frame=5, detector_chunk_frames=4)
    instances = PerFrameSegmenter(model, config).segment(frames)
    assert (instances.num_frames, instances.height, instances.width) == (10, 50, 70)
    assert 1 <= len(instances) <= config.max_tracks
    assert np.all(np.diff(instances.scores) <= 0)  # best first
    assert np.all((instances.scores >= 0) & (instances.scores <= 1))
    present = instances.present()
    assert present.any(axis=1).all()  # every track is detected somewhere
    assert present.sum(axis=0).max() <= config.detections_per_frame
    # A threshold above every score leaves no track.
    none = PerFrameSegmenter(model, PerFrameConfig(score_threshold=1.01)).segment(frames)
    assert len(none) == 0 and none.num_frames == 10


def ground_truth_for(frames: int, height: int, width: int) -> tuple[dict, list[np.ndarray]]:
    """One-video YouTube-VIS ground truth: the moving box as category 2 (contiguous 1)."""
    gt_masks = [
        np.all(moving_box_frame(index, height, width) == (230, 60, 40), axis=-1)
        for index in range(frames)
    ]
    rles = masks.encode(np.stack(gt_masks))
    ground_truth = {
        "videos": [{"id": 1, "height": height, "width": width, "length": frames}],
        "categories": [{"id": c + 1, "name": f"class{c}"} for c in range(NUM_CLASSES)],
        "annotations": [
            {
                "id": 1,
                "video_id": 1,
                "category_id": 2,
                "iscrowd": 0,
                "segmentations": rles,
                "areas": [int(m.sum()) for m in gt_masks],
                "bboxes": masks.bbox(rles).tolist(),
            }
        ],
    }
    return ground_truth, gt_masks


def test_evaluate_ytvis_accepts_segmenter_results(model: VitaModel) -> None:
    frames, height, width = 8, 48, 64
    ground_truth, gt_masks = ground_truth_for(frames, height, width)
    category_ids = list(range(1, NUM_CLASSES + 1))
    video = [moving_box_frame(index, height, width) for index in range(frames)]
    results = segmenter(model).segment(video).to_ytvis_results(1, category_ids)
    metrics = evaluate_ytvis(ground_truth, results)
    assert all(-1.0 <= value <= 1.0 for value in metrics.stats)
    baseline = PerFrameSegmenter(model, PerFrameConfig(score_threshold=0.0)).segment(video)
    metrics = evaluate_ytvis(ground_truth, baseline.to_ytvis_results(1, category_ids))
    assert all(-1.0 <= value <= 1.0 for value in metrics.stats)
    # The ground truth written back through VideoInstances scores AP 1: masks, frame
    # order and the contiguous -> dataset category mapping are right.
    perfect = VideoInstances(
        num_frames=frames,
        height=height,
        width=width,
        scores=np.array([0.5], dtype=np.float32),
        labels=np.array([1]),
        masks=(tuple(masks.encode(np.stack(gt_masks))),),
    )
    perfect_metrics = evaluate_ytvis(ground_truth, perfect.to_ytvis_results(1, category_ids))
    assert perfect_metrics.ap == pytest.approx(1.0)


@pytest.mark.slow
def test_two_thousand_frame_video_on_cpu() -> None:
    """A 2,000-frame 320x240 video through the small preset, frames made lazily."""
    torch.manual_seed(0)
    model = VitaModel(vita_small_synth()).eval()
    frames, height, width = 2000, 240, 320
    source = CountingSource([])

    def lazy_frames() -> Iterator[np.ndarray]:
        source.reads += 1
        return (moving_box_frame(index, height, width) for index in range(frames))

    instances = VideoSegmenter(model).segment(lazy_frames)
    assert source.reads == 2  # past long_video_frames: the two-pass path
    assert (instances.num_frames, instances.height, instances.width) == (frames, height, width)
    assert len(instances) == model.config.inference.top_k
    assert all(len(track) == frames for track in instances.masks)
    assert np.all((instances.scores >= 0) & (instances.scores <= 1))
    results = instances.to_ytvis_results(1, list(range(1, NUM_CLASSES + 1)))
    assert all(len(result["segmentations"]) == frames for result in results)
