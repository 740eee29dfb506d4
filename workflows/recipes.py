"""Training recipes: the `TrainJobConfig` fields that go with a model preset.

`vis train --preset NAME` starts from the preset's recipe; explicit options override it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vis_core.data.augment import AugmentConfig


def official_r50_recipe() -> dict[str, Any]:
    """VITA's R-50 recipe (reference section 2): fine-tuning from COCO-pretrained weights,
    AdamW 5e-5, backbone x0.1, full-model clipping at 0.01, clips of 5 frames within 20,
    COCO : YouTube-VIS pseudo-video ratio 1 : 0.75, 140k steps with a decay at 75k."""
    return {
        "steps": 140_000,
        "batch_size": 1,
        "num_frames": 5,
        "sampling_range": 20,
        "lr": 5e-5,
        "backbone_multiplier": 0.1,
        "weight_decay": 0.05,
        "clip_grad_norm": 0.01,
        "coco_weight": 1 / 0.75,
        "augment": AugmentConfig(
            min_sizes=(288, 320, 352, 392, 416, 448, 480, 512), max_size=768, crop_prob=0.3
        ),
    }


def small_synth_recipe() -> dict[str, Any]:
    """The shipped model's recipe: the small preset from scratch on the synthetic benchmark.

    No pretrained weights exist here, so the learning rate is higher than the official
    fine-tuning one, the backbone learns at the full rate, clipping is looser (0.01 stalls
    a randomly initialised model), and a short warm-up keeps the first steps stable.
    """
    return {
        "steps": 8000,
        "batch_size": 2,
        "num_frames": 3,
        "sampling_range": 10,
        "lr": 3e-4,
        "backbone_multiplier": 1.0,
        "weight_decay": 0.05,
        "clip_grad_norm": 1.0,
        "warmup_steps": 200,
        "coco_weight": 0.5,
        "augment": AugmentConfig(min_sizes=(208, 224, 240, 256, 272), max_size=480, crop_prob=0.3),
    }


RECIPES: dict[str, Callable[[], dict[str, Any]]] = {
    "vita_r50_ytvis19": official_r50_recipe,
    "vita_small_synth": small_synth_recipe,
}


def recipe(preset: str) -> dict[str, Any]:
    """The recipe of `preset`, or no overrides for a preset without one."""
    return RECIPES[preset]() if preset in RECIPES else {}
