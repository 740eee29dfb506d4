"""Class recognition under mask-only matching, and the purity of query slots."""

import math

import numpy as np
import torch

from vis_core.data.clips import Clip
from vis_core.data.targets import FrameTargets
from vis_core.modeling.config import LossConfig
from vis_core.modeling.frame_decoder import FramePrediction
from vis_core.modeling.presets import vita_small_synth
from vis_core.modeling.vita_model import VitaModel
from vis_core.training.batch import ClipBatch
from vis_core.training.recognition import RecognitionCounter, measure_recognition

QUERIES, CLASSES, SIZE = 4, 3, 8


def _mask(rows: slice, cols: slice) -> torch.Tensor:
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    mask[rows, cols] = True
    return mask


def _prediction(covers: dict[int, torch.Tensor], classes: dict[int, int]) -> FramePrediction:
    """One frame: query q's mask logits +10 on `covers[q]` (-10 elsewhere, all -10 for the
    others) and class logit +5 on `classes[q]`."""
    masks = torch.full((1, QUERIES, SIZE, SIZE), -10.0)
    logits = torch.zeros(1, QUERIES, CLASSES + 1)
    for query, mask in covers.items():
        masks[0, query][mask] = 10.0
    for query, label in classes.items():
        logits[0, query, label] = 5.0
    return FramePrediction(pred_logits=logits, pred_masks=masks)


def _targets(masks: list[torch.Tensor], labels: list[int]) -> list[FrameTargets]:
    return [
        FrameTargets(
            labels=torch.tensor(labels),
            masks=torch.stack(masks),
            track_ids=torch.arange(len(labels)),
        )
    ]


def test_counts_follow_the_masks_not_the_class_scores():
    left, right = _mask(slice(None), slice(0, 4)), _mask(slice(None), slice(4, 8))
    counter = RecognitionCounter(LossConfig(num_points=64), QUERIES, CLASSES)
    # Query 0 names class 2 confidently but covers nothing: a class-aware matching would
    # pick it for the class-2 object; the mask-only matching takes query 3, which covers it.
    counter.add(
        _prediction({1: left, 3: right}, {0: 2, 1: 0, 3: 1}),
        _targets([left, right], [0, 2]),
    )
    first = counter.result()
    assert first.matches == 2 and first.accuracy == 0.5 and first.slot_purity == 1.0

    # Slot 1 now names another class, correctly: right 2 of 3, slot 1 split over 2 classes.
    counter.add(_prediction({1: right}, {1: 2}), _targets([right], [2]))
    second = counter.result()
    assert second.matches == 3
    assert math.isclose(second.accuracy, 2 / 3) and math.isclose(second.slot_purity, 2 / 3)


def test_no_object_is_never_the_predicted_class():
    whole = _mask(slice(None), slice(None))
    prediction = _prediction({0: whole}, {0: 1})
    prediction.pred_logits[0, 0, CLASSES] = 50.0  # no-object dominates the softmax
    counter = RecognitionCounter(LossConfig(num_points=64), QUERIES, CLASSES)
    counter.add(prediction, _targets([whole], [1]))
    assert counter.result().accuracy == 1.0


def test_empty_input_has_no_rates():
    result = RecognitionCounter(LossConfig(), QUERIES, CLASSES).result()
    assert result.matches == 0 and math.isnan(result.accuracy)


def test_measure_recognition_counts_every_visible_instance_and_restores_the_mode():
    torch.manual_seed(0)
    config = vita_small_synth()
    detector = VitaModel(config).detector.train()
    rng = np.random.default_rng(0)
    frames, height, width = 2, 64, 64
    masks = np.zeros((2, frames, height, width), bool)
    masks[0, :, 8:30, 8:30] = True
    masks[1, 0, 35:60, 30:60] = True  # instance 1 is absent from frame 1
    clip = Clip(
        frames=rng.integers(0, 255, (frames, height, width, 3), dtype=np.uint8),
        masks=masks,
        labels=np.array([3, 5]),
        track_ids=np.array([1, 2]),
        frame_indices=np.arange(frames),
    )
    batches = [ClipBatch.from_clips([clip]), ClipBatch.from_clips([clip])]
    result = measure_recognition(detector, batches, config.loss)
    assert result.matches == 2 * 3  # 2 batches x (2 instances in frame 0 + 1 in frame 1)
    assert 0.0 <= result.accuracy <= 1.0 and 0.0 < result.slot_purity <= 1.0
    assert detector.training
