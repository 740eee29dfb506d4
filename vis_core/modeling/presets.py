"""Model presets: functions returning frozen `ModelConfig`s. `PRESETS` maps names to them."""

from __future__ import annotations

from collections.abc import Callable

from vis_core.modeling.config import (
    BackboneConfig,
    FrameDecoderConfig,
    InferenceConfig,
    InputConfig,
    LossConfig,
    ModelConfig,
    PixelDecoderConfig,
    VitaConfig,
)

YTVIS19_CLASS_COUNT = 40


def vita_r50_ytvis19() -> ModelConfig:
    """The official VITA R-50 architecture and hyper-parameters for YouTube-VIS 2019."""
    return ModelConfig(
        name="vita_r50_ytvis19",
        num_classes=YTVIS19_CLASS_COUNT,
        backbone=BackboneConfig(),
        pixel_decoder=PixelDecoderConfig(),
        frame_decoder=FrameDecoderConfig(),
        vita=VitaConfig(),
        input=InputConfig(),
        inference=InferenceConfig(top_k=10),
    )


def vita_small_synth() -> ModelConfig:
    """A small model for CPU training and tests on the synthetic benchmark (320x240)."""
    from vis_core.synth.shapes import CATEGORIES

    return ModelConfig(
        name="vita_small_synth",
        num_classes=len(CATEGORIES),
        class_names=tuple(category.name for category in CATEGORIES),
        backbone=BackboneConfig(
            block="basic",
            stage_blocks=(1, 1, 1, 1),
            stem_channels=32,
            out_channels=(32, 64, 96, 128),
            # Trained from scratch: frozen BN would leave the backbone unnormalised.
            norm="group_norm",
            group_norm_groups=8,
        ),
        # The fixed-budget trials' winner (README, Training): an FPN pixel decoder, masked
        # attention down to stride 4, mask-piloted training, dense stride-4 mask losses.
        pixel_decoder=PixelDecoderConfig(
            kind="fpn", conv_dim=64, mask_dim=64, group_norm_groups=16
        ),
        frame_decoder=FrameDecoderConfig(
            hidden_dim=64,
            heads=4,
            ffn_dim=256,
            layers=6,
            num_queries=16,
            vita_last_layers=3,
            attention_strides=(16, 8, 4),
            mask_piloting=True,
        ),
        vita=VitaConfig(
            hidden_dim=64,
            heads=4,
            ffn_dim=256,
            encoder_layers=3,
            decoder_layers=3,
            window_size=6,
            num_queries=16,
        ),
        # Above the middle of the training scales: the 20-60 pixel objects read better
        # enlarged (the shipped model: AP 20.1 on val at 272 against 17.7 at 240).
        input=InputConfig(min_size_test=272),
        inference=InferenceConfig(top_k=10, detector_chunk_frames=16, mask_chunk_frames=8),
        # Stride-4 masks of a 320x240 frame have 4,800 cells: score them all.
        loss=LossConfig(num_points=2048, dense_masks=True),
    )


PRESETS: dict[str, Callable[[], ModelConfig]] = {
    "vita_r50_ytvis19": vita_r50_ytvis19,
    "vita_small_synth": vita_small_synth,
}


def get_preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}") from None
