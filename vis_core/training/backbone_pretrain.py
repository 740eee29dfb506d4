"""Backbone pre-training by instance classification: the project's stand-in for ImageNet.

The official recipe starts from a backbone pretrained on ImageNet; none can be downloaded
here. Trained from scratch, the Mask2Former detector learns masks long before it tells
categories apart: on the synthetic benchmark its class loss stayed at chance for 2,600
CPU steps while dice fell from 0.97 to 0.45. So the backbone first learns the categories
directly, as an image classifier: windows centred on annotated instances of a COCO-format
image set, at about their native scale, classified from the pooled res5 features.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vis_core import masks
from vis_core.data.coco import CocoDataset
from vis_core.modeling.backbone import ResNet

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainConfig:
    """window: side of the square crops the backbone classifies (pixels);
    context: the window spans this many times the instance's longer box side (at least
    `min_extent` pixels of the source image), then is resized to `window`, so small
    instances keep about their native scale; jitter: the extracted window is this much
    larger than `window`, for random shifts; holdout: share of images kept for accuracy."""

    steps: int = 1500
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    window: int = 96
    context: float = 1.5
    min_extent: int = 64
    jitter: float = 1.25
    holdout: float = 0.1
    seed: int = 0
    log_every: int = 100


@dataclass(frozen=True)
class InstanceCrops:
    """Windows around instances: images `[N, S, S, 3]` uint8 RGB, labels `[N]` int64."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class PretrainResult:
    """Accuracy of the classifier on held-out instances, and the curve of the training
    loss and accuracy (one entry per `log_every` steps)."""

    holdout_accuracy: float
    holdout_instances: int
    curve: tuple[tuple[int, float, float], ...]  # (step, loss, accuracy)
    seconds: float


def extract_crops(
    dataset: CocoDataset,
    label_of: Mapping[int, int],
    config: PretrainConfig,
    image_ids: set[int] | None = None,
) -> InstanceCrops:
    """One window per non-crowd instance of the images in `image_ids` (all by default),
    at side `window * jitter`; parts outside the image are black."""
    side = round(config.window * config.jitter)
    images, labels = [], []
    for entry in dataset.images:
        if image_ids is not None and entry.id not in image_ids:
            continue
        instance_masks, instances = dataset.instance_masks(entry)
        if not instances:
            continue
        picture = dataset.read_image(entry)
        for mask, instance in zip(instance_masks, instances, strict=True):
            box = masks.mask_bbox(mask)
            if instance.category_id not in label_of or box is None:
                continue
            x, y, w, h = box
            extent = max(config.min_extent, config.context * max(w, h)) * config.jitter
            images.append(_window(picture, x + w / 2, y + h / 2, extent, side))
            labels.append(label_of[instance.category_id])
    if not labels:
        raise ValueError("no labelled instance to pretrain on")
    return InstanceCrops(np.stack(images), np.asarray(labels, np.int64))


def _window(picture: np.ndarray, cx: float, cy: float, extent: float, side: int) -> np.ndarray:
    """The square of `extent` pixels centred on (cx, cy), resized to `side`: `[S, S, 3]`."""
    height, width = picture.shape[:2]
    x0, y0 = round(cx - extent / 2), round(cy - extent / 2)
    size = max(1, round(extent))
    canvas = np.zeros((size, size, 3), np.uint8)
    src_x0, src_y0 = max(0, x0), max(0, y0)
    src_x1, src_y1 = min(width, x0 + size), min(height, y0 + size)
    if src_x1 > src_x0 and src_y1 > src_y0:
        canvas[src_y0 - y0 : src_y1 - y0, src_x0 - x0 : src_x1 - x0] = picture[
            src_y0:src_y1, src_x0:src_x1
        ]
    tensor = torch.from_numpy(canvas).permute(2, 0, 1)[None].float()
    resized = F.interpolate(tensor, size=(side, side), mode="area" if size > side else "bilinear")
    return resized[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


class InstanceClassifier(nn.Module):
    """A backbone and a linear head on its average-pooled res5: `[B, 3, S, S] -> [B, K]`."""

    def __init__(self, backbone: ResNet, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_channels[-1], num_classes)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images).res5.mean(dim=(2, 3)))


def pretrain_backbone(
    backbone: ResNet,
    normalize: Callable[[Tensor], Tensor],
    train: InstanceCrops,
    holdout: InstanceCrops,
    num_classes: int,
    config: PretrainConfig,
) -> PretrainResult:
    """Train `backbone` in place as an instance classifier.

    normalize: uint8 RGB `[B, S, S, 3]` -> the backbone's input `[B, 3, S, S]` (the
    detector's `preprocess`, so the backbone sees what it will see in the detector).
    """
    generator = torch.Generator().manual_seed(config.seed)
    classifier = InstanceClassifier(backbone, num_classes)
    optimizer = torch.optim.AdamW(
        classifier.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.steps, pct_start=0.1
    )
    curve: list[tuple[int, float, float]] = []
    loss_sum = correct = seen = 0.0
    started = time.perf_counter()
    batches = _augmented_batches(train, config, generator)
    classifier.train()
    for step in range(1, config.steps + 1):
        images, labels = next(batches)
        logits = classifier(normalize(images))
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        loss_sum += float(loss.detach()) * len(labels)
        correct += float((logits.argmax(-1) == labels).sum())
        seen += len(labels)
        if step % config.log_every == 0 or step == config.steps:
            curve.append((step, loss_sum / seen, correct / seen))
            logger.info(
                "pretrain step %d/%d  loss %.3f  accuracy %.3f",
                step,
                config.steps,
                loss_sum / seen,
                correct / seen,
            )
            loss_sum = correct = seen = 0.0
    accuracy = _accuracy(classifier, normalize, holdout, config)
    return PretrainResult(accuracy, len(holdout), tuple(curve), time.perf_counter() - started)


def _augmented_batches(
    crops: InstanceCrops, config: PretrainConfig, generator: torch.Generator
) -> Iterator[tuple[Tensor, Tensor]]:
    """Random windows of `window` pixels inside the jittered crops, randomly flipped."""
    images = torch.from_numpy(crops.images)
    labels = torch.from_numpy(crops.labels)
    slack = images.shape[1] - config.window
    while True:
        index = torch.randint(len(labels), (config.batch_size,), generator=generator)
        dx, dy = torch.randint(slack + 1, (2,), generator=generator).tolist()
        batch = images[index, dy : dy + config.window, dx : dx + config.window]
        flip = torch.rand(config.batch_size, generator=generator) < 0.5
        batch[flip] = batch[flip].flip(2)
        yield batch, labels[index]


@torch.no_grad()
def _accuracy(
    classifier: InstanceClassifier,
    normalize: Callable[[Tensor], Tensor],
    crops: InstanceCrops,
    config: PretrainConfig,
) -> float:
    if len(crops) == 0:
        return float("nan")
    classifier.eval()
    margin = (crops.images.shape[1] - config.window) // 2
    images = torch.from_numpy(crops.images)[
        :, margin : margin + config.window, margin : margin + config.window
    ]
    labels = torch.from_numpy(crops.labels)
    correct = 0
    for start in range(0, len(crops), 256):
        logits = classifier(normalize(images[start : start + 256]))
        correct += int((logits.argmax(-1) == labels[start : start + 256]).sum())
    return correct / len(crops)


def split_images(dataset: CocoDataset, holdout: float, seed: int) -> tuple[set[int], set[int]]:
    """Image ids for training and for holding out."""
    ids = np.array([entry.id for entry in dataset.images])
    np.random.default_rng(seed).shuffle(ids)
    cut = round(len(ids) * holdout)
    return set(ids[cut:].tolist()), set(ids[:cut].tolist())
