"""ResNet backbone with detectron2's module layout (R-50 for the official model).

Keys below the `backbone.` prefix: `stem.conv1.{weight,norm.*}`, then stages `res2..res5`
of blocks `res{s}.{b}` holding `conv1..conv3` (bottleneck) or `conv1..conv2` (basic) and,
where the block changes the channel count, a `shortcut` projection. Every norm is a
`FrozenBatchNorm2d` (pretrained checkpoints) or a `GroupNorm` (training from scratch, see
`BackboneConfig.norm`). Strides are in the 3x3 convolutions (detectron2 `STRIDE_IN_1X1 False`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn
from torch.nn import functional as F

from vis_core.modeling.config import BackboneConfig
from vis_core.modeling.conv import ConvNormAct, FrozenBatchNorm2d, msra_fill

STAGE_NAMES = ("res2", "res3", "res4", "res5")
STAGE_STRIDES = (4, 8, 16, 32)
BACKBONE_NORMS = ("frozen_bn", "group_norm")

NormFactory = Callable[[int], nn.Module]


@dataclass(frozen=True)
class BackboneFeatures:
    """The four ResNet stage outputs of N images.

    res2 `[N, C2, H/4, W/4]`, res3 `[N, C3, H/8, W/8]`, res4 `[N, C4, H/16, W/16]`,
    res5 `[N, C5, H/32, W/32]`; each size is rounded up (a 40x72 image gives 10x18, 5x9,
    3x5, 2x3).
    """

    res2: Tensor
    res3: Tensor
    res4: Tensor
    res5: Tensor


def norm_factory(config: BackboneConfig) -> NormFactory:
    """The backbone's norm layer for a channel count."""
    if config.norm == "frozen_bn":
        return FrozenBatchNorm2d
    if config.norm == "group_norm":
        return lambda channels: nn.GroupNorm(config.group_norm_groups, channels)
    raise ValueError(f"unknown backbone norm {config.norm!r}; use one of {BACKBONE_NORMS}")


def _conv_norm(
    norm: NormFactory,
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
) -> ConvNormAct:
    conv = ConvNormAct(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=padding,
        bias=False,
        norm=norm(out_channels),
    )
    msra_fill(conv)
    return conv


class BasicStem(nn.Module):
    """7x7/2 conv + norm + ReLU, then 3x3/2 max pool: `[N, 3, H, W] -> [N, C, H/4, W/4]`."""

    def __init__(self, norm: NormFactory, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = _conv_norm(norm, in_channels, out_channels, 7, stride=2, padding=3)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class BottleneckBlock(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand, plus the identity or a 1x1 projection."""

    def __init__(
        self, norm: NormFactory, in_channels: int, out_channels: int, width: int, stride: int
    ):
        super().__init__()
        self.shortcut = (
            _conv_norm(norm, in_channels, out_channels, 1, stride=stride)
            if in_channels != out_channels
            else None
        )
        self.conv1 = _conv_norm(norm, in_channels, width, 1)
        self.conv2 = _conv_norm(norm, width, width, 3, stride=stride, padding=1)
        self.conv3 = _conv_norm(norm, width, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        out = self.conv3(out)
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + identity)


class BasicBlock(nn.Module):
    """Two 3x3 convs (the first strided), plus the identity or a 1x1 projection."""

    def __init__(self, norm: NormFactory, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.shortcut = (
            _conv_norm(norm, in_channels, out_channels, 1, stride=stride)
            if in_channels != out_channels
            else None
        )
        self.conv1 = _conv_norm(norm, in_channels, out_channels, 3, stride=stride, padding=1)
        self.conv2 = _conv_norm(norm, out_channels, out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.conv1(x))
        out = self.conv2(out)
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + identity)


class ResNet(nn.Module):
    """ResNet from a `BackboneConfig`: `forward(images [N, 3, H, W]) -> BackboneFeatures`.

    `images` are already normalised. `out_channels` gives the channels of res2..res5.
    """

    def __init__(self, config: BackboneConfig, in_channels: int = 3):
        super().__init__()
        if config.block not in ("bottleneck", "basic"):
            raise ValueError(f"unknown ResNet block {config.block!r}; use 'bottleneck' or 'basic'")
        if len(config.stage_blocks) != 4 or len(config.out_channels) != 4:
            raise ValueError("a ResNet needs block counts and out channels for 4 stages")
        if min(config.stage_blocks) < 1:
            raise ValueError(f"every stage needs at least one block: {config.stage_blocks}")
        self.out_channels: tuple[int, int, int, int] = tuple(config.out_channels)
        norm = norm_factory(config)
        self.stem = BasicStem(norm, in_channels, config.stem_channels)
        stage_in = config.stem_channels
        for index, (name, blocks, stage_out) in enumerate(
            zip(STAGE_NAMES, config.stage_blocks, config.out_channels, strict=True)
        ):
            first_stride = 1 if index == 0 else 2  # res2 is already at stride 4 after the stem
            stage = nn.Sequential(
                *(
                    self._make_block(
                        config,
                        norm,
                        stage_in if block == 0 else stage_out,
                        stage_out,
                        first_stride if block == 0 else 1,
                    )
                    for block in range(blocks)
                )
            )
            self.add_module(name, stage)
            stage_in = stage_out

    @staticmethod
    def _make_block(
        config: BackboneConfig, norm: NormFactory, in_channels: int, out_channels: int, stride: int
    ) -> nn.Module:
        if config.block == "basic":
            return BasicBlock(norm, in_channels, out_channels, stride)
        if out_channels % config.bottleneck_ratio:
            raise ValueError(
                f"out channels {out_channels} not divisible by the bottleneck ratio "
                f"{config.bottleneck_ratio}"
            )
        width = out_channels // config.bottleneck_ratio
        return BottleneckBlock(norm, in_channels, out_channels, width, stride)

    def forward(self, images: Tensor) -> BackboneFeatures:
        if images.dim() != 4:
            raise ValueError(f"expected images [N, C, H, W], got shape {tuple(images.shape)}")
        x = self.stem(images)
        outputs = []
        for name in STAGE_NAMES:
            x = getattr(self, name)(x)
            outputs.append(x)
        return BackboneFeatures(*outputs)
