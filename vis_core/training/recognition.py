"""Does the frame detector recognise classes, or do its query slots stand for them?

Early in training, while the masks are still blobs, the Hungarian matching follows the
class term, so each query slot can take one class and be matched to objects of it: the
class loss falls with no recognition at all. Matching by the masks alone (class weight 0)
asks the real question: does the query that covers an object name the object's class?
Slot purity tells the two regimes apart: near 1 when every slot sticks to one class.

Dimension letters: N frames, Q queries, K classes (K+1 logits, no-object last).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from vis_core.data.targets import FrameTargets
from vis_core.losses.matcher import FrameMatcher
from vis_core.modeling.config import LossConfig
from vis_core.modeling.frame_decoder import FramePrediction
from vis_core.modeling.frame_detector import FrameDetector
from vis_core.training.batch import ClipBatch


@dataclass(frozen=True)
class Recognition:
    """accuracy: share of mask-matched queries whose top class (no-object aside) is their
    object's; slot_purity: share of the matched predictions that are their slot's most
    frequent class; matches: how many query-object pairs were counted."""

    accuracy: float
    slot_purity: float
    matches: int


class RecognitionCounter:
    """Accumulates `[Q, K]` counts of (slot, predicted class) and the correct ones over
    frames, matching by the masks alone."""

    def __init__(self, loss_config: LossConfig, num_queries: int, num_classes: int):
        # Point matching takes targets at any resolution (dense matching wants them resized).
        self.matcher = FrameMatcher(replace(loss_config, class_weight=0.0, dense_masks=False))
        self.slot_classes = np.zeros((num_queries, num_classes), dtype=np.int64)
        self.correct = 0

    def add(self, prediction: FramePrediction, targets: Sequence[FrameTargets]) -> None:
        """prediction: logits `[N, Q, K+1]`, masks `[N, Q, h, w]`; targets: the N frames'."""
        predicted = prediction.pred_logits[..., :-1].argmax(-1).cpu()  # [N, Q]
        for frame, matching in enumerate(self.matcher(prediction, targets)):
            slots = matching.prediction_index
            classes = predicted[frame, slots]
            labels = targets[frame].labels.cpu()[matching.target_index]
            np.add.at(self.slot_classes, (slots.numpy(), classes.numpy()), 1)
            self.correct += int((classes == labels).sum())

    def result(self) -> Recognition:
        matches = int(self.slot_classes.sum())
        if matches == 0:
            return Recognition(accuracy=float("nan"), slot_purity=float("nan"), matches=0)
        return Recognition(
            accuracy=self.correct / matches,
            slot_purity=float(self.slot_classes.max(axis=1).sum()) / matches,
            matches=matches,
        )


@torch.no_grad()
def measure_recognition(
    detector: FrameDetector,
    batches: Iterable[ClipBatch],
    loss_config: LossConfig,
    device: torch.device | str = "cpu",
) -> Recognition:
    """Recognition of `detector`'s final prediction over the frames of `batches`."""
    decoder = detector.frame_decoder
    counter = RecognitionCounter(
        loss_config, decoder.query_feat.num_embeddings, decoder.class_embed.out_features - 1
    )
    was_training = detector.training
    detector.eval()
    try:
        for batch in batches:
            images, targets = batch.to(device).model_inputs(detector.preprocess)
            detections = detector(images.flatten(0, 1))
            prediction = FramePrediction(detections.pred_logits, detections.pred_masks)
            frames = [clip.frame(t) for clip in targets for t in range(clip.num_frames)]
            counter.add(prediction, frames)
    finally:
        detector.train(was_training)
    return counter.result()
