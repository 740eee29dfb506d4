"""Backbone pretraining by instance classification: crops, mask pooling, training, CLI."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from jobs.cli import main
from vis_core.data.coco import CocoDataset
from vis_core.data.labels import label_of_category
from vis_core.modeling.backbone import ResNet
from vis_core.modeling.model_file import load_model
from vis_core.modeling.presets import vita_small_synth
from vis_core.modeling.vita_model import VitaModel
from vis_core.synth.splits import preset
from vis_core.synth.writer import generate_split
from vis_core.training.backbone_pretrain import (
    InstanceCrops,
    PretrainConfig,
    _mask_pool,
    extract_crops,
    pretrain_backbone,
    split_images,
)


@pytest.fixture(scope="module")
def coco_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("coco")
    config = preset("train").replace(width=128, height=96)
    generate_split(str(root), config, num_videos=0, seed=5, coco_images=12)
    return str(root / "coco" / "annotations.json")


def test_crops_are_centred_on_their_instance_with_its_mask(coco_uri: str) -> None:
    images = CocoDataset.load(coco_uri)
    model_config = vita_small_synth()
    label_of = label_of_category(images.categories, model_config.class_names, 8)
    config = PretrainConfig(window=32, min_extent=16)
    crops = extract_crops(images, label_of, config)
    expected = sum(len(images.instance_masks(entry)[1]) for entry in images.images)
    assert 0 < len(crops) <= expected
    side = round(32 * config.jitter)
    assert crops.images.shape == (len(crops), side, side, 3)
    assert crops.masks.shape == (len(crops), side, side) and crops.masks.dtype == bool
    assert set(crops.labels.tolist()) <= set(label_of.values())
    # Each window is centred on its instance's box: the mask covers the centre region.
    centre = crops.masks[:, side // 2 - 4 : side // 2 + 4, side // 2 - 4 : side // 2 + 4]
    assert centre.any(axis=(1, 2)).mean() > 0.8
    train_ids, holdout_ids = split_images(images, 0.25, seed=0)
    assert train_ids.isdisjoint(holdout_ids) and len(holdout_ids) == 3


def test_mask_pooling_averages_inside_the_mask() -> None:
    features = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, :2, :2] = True  # exactly cell (0, 0)
    masks[1, 4:, :] = True  # the bottom half
    pooled = _mask_pool(features, masks)
    torch.testing.assert_close(pooled[0], features[0, :, 0, 0], atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(pooled[1], features[1, :, 2:].mean(dim=(1, 2)), atol=1e-3, rtol=1e-4)


def test_pretraining_fits_a_few_crops() -> None:
    """Two classes told apart by where the object is: learnable in a few steps."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 60, (16, 40, 40, 3), dtype=np.uint8)
    masks = np.zeros((16, 40, 40), bool)
    labels = np.arange(16) % 2
    for index, label in enumerate(labels):
        masks[index, 8:32, 8:32] = True
        images[index, 8:32, 8:32] = 220 if label else 120
    crops = InstanceCrops(images, masks, labels)
    config = PretrainConfig(steps=40, batch_size=16, lr=3e-3, window=32, log_every=10)
    torch.manual_seed(0)
    backbone = ResNet(vita_small_synth().backbone)
    detector = VitaModel(vita_small_synth()).detector
    result = pretrain_backbone(backbone, detector.preprocess, crops, crops, 2, config)
    assert [step for step, _, _ in result.curve] == [10, 20, 30, 40]
    assert result.curve[-1][1] < result.curve[0][1]
    assert result.holdout_accuracy == 1.0


def test_cli_writes_a_model_file_with_a_trained_backbone(coco_uri: str, tmp_path) -> None:
    out = tmp_path / "pretrained.vis.pt"
    argv = ["pretrain", "--coco", coco_uri, "--out", str(out), "--steps", "3", "--batch-size", "8"]
    assert main(argv) == 0
    model = load_model(str(out))
    torch.manual_seed(0)
    fresh = VitaModel(dataclasses.replace(model.config))
    trained, initial = model.state_dict(), fresh.state_dict()
    changed = {k for k in trained if not torch.equal(trained[k], initial[k])}
    assert changed and all(k.startswith("detector.backbone.") for k in changed)
    assert main(["pretrain", "--coco", str(tmp_path / "missing.json"), "--out", str(out)]) == 2
