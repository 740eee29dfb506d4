"""Model configuration: frozen dataclasses, one per module, built by preset functions.

Every module is built from explicit sizes, so a tiny instance (hidden 64, 4 heads, 8
frame queries, window 3) is as valid as the official R-50 one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, get_args, get_type_hints

from vis_core.modeling.head_config import HitfConfig, L2gConfig, QueryTrackConfig


@dataclass(frozen=True)
class BackboneConfig:
    """A ResNet: stem, then stages res2..res5 at strides 4, 8, 16, 32.

    `block="bottleneck"` with `stage_blocks=(3, 4, 6, 3)` and `stem_channels=64` is
    R-50 (bottleneck width = out channels / 4, stride in the 3x3 conv).

    norm: "frozen_bn" (`FrozenBatchNorm2d`, as in detectron2's pretrained checkpoints; a
    randomly initialised one is the identity, so a network trained from scratch has no
    normalisation) or "group_norm" (`group_norm_groups` groups, for training from scratch).
    """

    block: str = "bottleneck"  # "bottleneck" or "basic"
    stage_blocks: tuple[int, int, int, int] = (3, 4, 6, 3)
    stem_channels: int = 64
    out_channels: tuple[int, int, int, int] = (256, 512, 1024, 2048)
    bottleneck_ratio: int = 4
    norm: str = "frozen_bn"
    group_norm_groups: int = 32


@dataclass(frozen=True)
class PixelDecoderConfig:
    """The pixel decoder: "msdeform" (Mask2Former's multi-scale deformable-attention
    encoder, the official one) or "fpn" (MaskFormer's FPN, no encoder: `heads`, `ffn_dim`,
    `encoder_layers`, `points` and `dropout` are unused)."""

    kind: str = "msdeform"
    conv_dim: int = 256
    mask_dim: int = 256
    heads: int = 8
    ffn_dim: int = 1024
    encoder_layers: int = 6
    points: int = 4
    group_norm_groups: int = 32
    dropout: float = 0.0


@dataclass(frozen=True)
class FrameDecoderConfig:
    """Mask2Former's masked-attention transformer decoder, run on each frame."""

    hidden_dim: int = 256
    heads: int = 8
    ffn_dim: int = 2048
    layers: int = 9  # the official DEC_LAYERS 10 means 9 layers, 10 predictions
    num_queries: int = 100
    pre_norm: bool = False
    enforce_input_project: bool = False
    # Frame queries of the last `vita_last_layers` layers feed VITA in training (1 in eval).
    vita_last_layers: int = 3
    # Strides of the three pixel-decoder maps the layers attend in turn, coarse first. The
    # official (32, 16, 8); (16, 8, 4) lets queries read small objects' outlines.
    attention_strides: tuple[int, int, int] = (32, 16, 8)
    # Mask-piloted training (MP-Former): ground-truth masks as extra training-only queries,
    # told their class with this chance of a random one instead (`mask_pilot.py`).
    mask_piloting: bool = False
    pilot_label_noise: float = 0.2


@dataclass(frozen=True)
class VitaConfig:
    """VITA: object tokens from frame queries, windowed temporal encoder, object decoder."""

    hidden_dim: int = 256
    heads: int = 8
    ffn_dim: int = 2048
    encoder_layers: int = 6
    decoder_layers: int = 3
    window_size: int = 6  # 0 means full attention over all frames
    num_queries: int = 100  # video queries
    pre_norm: bool = False
    enforce_input_project: bool = True
    sim_use_clip: bool = True
    aux_loss: bool = True
    # Keep this share of each frame's queries, ranked by foreground probability (1 = all).
    token_keep_ratio: float = 1.0


@dataclass(frozen=True)
class InputConfig:
    """Frame preprocessing, on the 0-255 RGB scale."""

    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    min_size_test: int = 360
    max_size_test: int = 1333
    size_divisibility: int = 32


@dataclass(frozen=True)
class InferenceConfig:
    """Video inference: top-k (query, class) pairs and chunk sizes."""

    top_k: int = 10
    detector_chunk_frames: int = 18
    mask_chunk_frames: int = 5
    # Past this many frames the mask features are not kept between the two passes: the
    # second pass recomputes them chunk by chunk, so memory does not grow with length.
    long_video_frames: int = 120


@dataclass(frozen=True)
class LossConfig:
    """Matching costs and loss weights (the official values; reference section 2)."""

    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    sim_weight: float = 0.5
    # Points sampled per mask for matching costs and mask losses (PointRend-style).
    num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    # Match and score masks on every cell of the predicted (stride-4) masks against
    # area-resized targets instead of on sampled points: for small frames (a 320x240 frame
    # has 4,800 cells) cheaper than importance sampling, and no small object is missed.
    dense_masks: bool = False
    deep_supervision: bool = True


@dataclass(frozen=True)
class ModelConfig:
    """The whole model: frame detector and VITA."""

    name: str
    num_classes: int
    class_names: tuple[str, ...] = ()
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    pixel_decoder: PixelDecoderConfig = field(default_factory=PixelDecoderConfig)
    frame_decoder: FrameDecoderConfig = field(default_factory=FrameDecoderConfig)
    vita: VitaConfig = field(default_factory=VitaConfig)
    input: InputConfig = field(default_factory=InputConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    # Online temporal heads beside VITA (`head_config.py`); None: the model has none.
    querytrack: QueryTrackConfig | None = None
    hitf: HitfConfig | None = None
    l2g: L2gConfig | None = None

    def __post_init__(self) -> None:
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")
        if self.vita.num_queries * self.num_classes < self.inference.top_k:
            raise ValueError("top_k exceeds the number of (video query, class) pairs")


def config_to_dict(config: ModelConfig) -> dict[str, Any]:
    """A JSON-ready dict of the whole config (for model files and MLflow params)."""
    return dataclasses.asdict(config)


def config_from_dict(data: Mapping[str, Any]) -> ModelConfig:
    """Inverse of `config_to_dict`; unknown keys raise, missing ones take their defaults."""
    return _build(ModelConfig, data)


def _build(cls: type, data: Mapping[str, Any]) -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    values = {}
    for name, value in data.items():
        hint = _optional_dataclass(hints[name])
        if value is not None and dataclasses.is_dataclass(hint):
            value = _build(hint, value)
        elif isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return cls(**values)


def _optional_dataclass(hint: Any) -> Any:
    """`X | None` -> X when X is a dataclass (an optional head's config), else `hint`."""
    options = [arg for arg in get_args(hint) if arg is not type(None)]
    if len(options) == 1 and dataclasses.is_dataclass(options[0]):
        return options[0]
    return hint
