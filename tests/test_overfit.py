"""The small model overfits one synthetic clip: the loss falls by 90%, masks reach IoU 0.8.

This exercises the whole training and inference path together: clip targets, the
criterion, the training step, then the video segmenter on the same frames.
"""

import numpy as np
import pytest
import torch

from vis_core import masks
from vis_core.data.clips import Clip
from vis_core.inference.segmenter import VideoSegmenter
from vis_core.losses import VitaCriterion
from vis_core.modeling.config import InputConfig
from vis_core.modeling.presets import vita_small_synth
from vis_core.modeling.vita_model import VitaModel
from vis_core.synth.generate import synthesize_video
from vis_core.synth.splits import preset
from vis_core.training.batch import ClipBatch
from vis_core.training.optim import OptimConfig, build_optimizer
from vis_core.training.step import train_step

HEIGHT, WIDTH, FRAMES = 96, 128, 4


def _one_clip(instances: int, seed: int, repeat_category_prob: float) -> Clip:
    config = preset("val").replace(
        width=WIDTH, height=HEIGHT, frames=(FRAMES, FRAMES), instances=(instances, instances),
        occluders=(0, 0), radius=(0.2, 0.3), noise_sigma=(1.0, 1.0),
        repeat_category_prob=repeat_category_prob,
    )  # fmt: skip
    scene, rendered = synthesize_video(config, seed=seed, index=0)
    ids = [k for k in range(1, len(scene.objects) + 1) if (rendered.labels == k).any()]
    return Clip(
        frames=rendered.frames,
        masks=np.stack([rendered.labels == k for k in ids]),
        labels=np.array([scene.objects[k - 1].category.id - 1 for k in ids]),
        track_ids=np.array(ids),
        frame_indices=np.arange(FRAMES),
    )


def _video_iou(prediction: tuple, truth: np.ndarray) -> float:
    dense = masks.decode(list(prediction))
    union = (dense | truth).sum()
    return float((dense & truth).sum() / union) if union else 0.0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("instances", "seed", "repeat_category_prob", "labels"),
    [
        (2, 11, 0.4, [5, 5]),  # two instances of one class: association must tell them apart
        (3, 12, 0.0, [0, 5, 4]),  # three classes: each label must land on its own instance
    ],
)
def test_small_model_overfits_one_clip(instances, seed, repeat_category_prob, labels):
    torch.manual_seed(0)
    base = vita_small_synth()
    config = type(base)(**{**base.__dict__, "input": InputConfig(min_size_test=HEIGHT)})
    model = VitaModel(config)
    criterion = VitaCriterion.for_model(config)
    optimizer = build_optimizer(
        model, OptimConfig(lr=1e-3, weight_decay=0.0, backbone_multiplier=1.0)
    )
    clip = _one_clip(instances, seed, repeat_category_prob)
    assert clip.labels.tolist() == labels
    batch = ClipBatch.from_clips([clip])
    losses = [train_step(model, criterion, optimizer, batch, clip_grad_norm=1.0).loss]
    for _ in range(299):
        losses.append(train_step(model, criterion, optimizer, batch, clip_grad_norm=1.0).loss)
        if np.mean(losses[-5:]) < 0.1 * losses[0]:
            break
    assert np.mean(losses[-5:]) < 0.1 * losses[0], f"loss {losses[0]:.2f} -> {losses[-5:]}"

    instances = VideoSegmenter(model.eval()).segment(list(clip.frames))
    assert instances.num_frames == FRAMES and (instances.height, instances.width) == (HEIGHT, WIDTH)
    # One-to-one: each instance needs its own confident prediction of its class.
    confident = [k for k in np.argsort(-instances.scores) if instances.scores[k] >= 0.5]
    unused = set(confident)
    for truth, label in zip(clip.masks, clip.labels, strict=True):
        candidates = [k for k in confident if k in unused and instances.labels[k] == label]
        assert candidates, f"no confident prediction of class {label} left"
        best = max(candidates, key=lambda k: _video_iou(instances.masks[k], truth))
        unused.discard(best)
        iou = _video_iou(instances.masks[best], truth)
        assert iou > 0.8, f"class {label}: IoU {iou:.3f} (score {instances.scores[best]:.2f})"
