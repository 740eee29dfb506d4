"""ResNet backbone: official key layout, output sizes, block arithmetic, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from vis_core.modeling.backbone import BackboneFeatures, BasicBlock, BottleneckBlock, ResNet
from vis_core.modeling.config import BackboneConfig
from vis_core.modeling.conv import ConvNormAct, FrozenBatchNorm2d
from vis_core.modeling.presets import vita_r50_ytvis19, vita_small_synth

NORM_KEYS = ("weight", "bias", "running_mean", "running_var")


def _conv_keys(name: str, out_channels: int, in_channels: int, kernel: int) -> dict:
    keys = {f"{name}.weight": (out_channels, in_channels, kernel, kernel)}
    keys.update({f"{name}.norm.{key}": (out_channels,) for key in NORM_KEYS})
    return keys


def _official_r50_keys() -> dict[str, tuple[int, ...]]:
    """detectron2's R-50 `backbone.*` keys (reference section 5), prefix stripped."""
    expected = _conv_keys("stem.conv1", 64, 3, 7)
    # (stage, blocks, bottleneck width, out channels); res2 takes the stem's 64 channels.
    stages = [("res2", 3, 64, 256), ("res3", 4, 128, 512), ("res4", 6, 256, 1024)]
    stages.append(("res5", 3, 512, 2048))
    in_channels = 64
    for stage, blocks, width, out_channels in stages:
        for block in range(blocks):
            prefix = f"{stage}.{block}"
            block_in = in_channels if block == 0 else out_channels
            if block == 0:
                expected.update(_conv_keys(f"{prefix}.shortcut", out_channels, block_in, 1))
            expected.update(_conv_keys(f"{prefix}.conv1", width, block_in, 1))
            expected.update(_conv_keys(f"{prefix}.conv2", width, width, 3))
            expected.update(_conv_keys(f"{prefix}.conv3", out_channels, width, 1))
        in_channels = out_channels
    return expected


def test_r50_state_dict_is_exactly_the_official_key_list():
    backbone = ResNet(vita_r50_ytvis19().backbone)
    actual = {key: tuple(value.shape) for key, value in backbone.state_dict().items()}
    expected = _official_r50_keys()
    assert len(expected) == 265  # 53 convs (incl. 4 shortcuts) x (weight + 4 norm tensors)
    assert actual == expected
    # Spot checks copied from the reference text.
    assert actual["res2.0.shortcut.weight"] == (256, 64, 1, 1)
    assert actual["res2.1.conv1.weight"] == (64, 256, 1, 1)
    assert actual["res5.0.shortcut.weight"] == (2048, 1024, 1, 1)
    assert "res5.2.conv3.norm.running_var" in actual
    assert not any("num_batches_tracked" in key for key in actual)
    # Norms are frozen buffers: the only parameters are the conv weights (no conv bias).
    assert all(
        name.endswith(".weight") and ".norm." not in name for name, _ in backbone.named_parameters()
    )
    assert backbone.out_channels == (256, 512, 1024, 2048)


def test_r50_loads_an_official_style_state_dict_strictly():
    backbone = ResNet(vita_r50_ytvis19().backbone)
    generator = torch.Generator().manual_seed(0)
    official = {
        f"backbone.{key}": torch.rand(shape, generator=generator)
        for key, shape in _official_r50_keys().items()
    }
    stripped = {key.removeprefix("backbone."): value for key, value in official.items()}
    backbone.load_state_dict(stripped, strict=True)
    torch.testing.assert_close(
        backbone.res4[5].conv2.norm.running_mean, stripped["res4.5.conv2.norm.running_mean"]
    )


def test_stride_is_in_the_3x3_conv():
    backbone = ResNet(vita_r50_ytvis19().backbone)
    block = backbone.res3[0]
    assert block.conv1.stride == (1, 1)
    assert block.conv2.stride == (2, 2)
    assert block.shortcut.stride == (2, 2)
    assert backbone.res2[0].conv2.stride == (1, 1)
    assert backbone.res3[1].shortcut is None


@pytest.mark.parametrize("preset", [vita_r50_ytvis19, vita_small_synth])
def test_output_sizes_follow_the_fixture_for_a_40x72_input(preset):
    config = preset().backbone
    backbone = ResNet(config).eval()
    with torch.no_grad():
        features = backbone(torch.randn(2, 3, 40, 72))
    assert isinstance(features, BackboneFeatures)
    sizes = [(10, 18), (5, 9), (3, 5), (2, 3)]  # pixel_decoder_inputs.pt res2..res5
    maps = (features.res2, features.res3, features.res4, features.res5)
    for feature, size, channels in zip(maps, sizes, config.out_channels, strict=True):
        assert tuple(feature.shape) == (2, channels, *size)


def test_small_preset_uses_basic_blocks_with_a_shortcut_only_where_channels_change():
    backbone = ResNet(vita_small_synth().backbone)
    keys = set(backbone.state_dict())
    assert isinstance(backbone.res2[0], BasicBlock)
    assert "res2.0.shortcut.weight" not in keys  # stem 32 -> res2 32 channels
    assert {"res3.0.shortcut.weight", "res5.0.conv2.norm.weight"} <= keys
    assert isinstance(backbone.res5[0].conv2.norm, nn.GroupNorm)  # trained from scratch
    assert not any(key.startswith("res2.0.conv3") for key in keys)


def _frozen_bn(channels: int, generator: torch.Generator) -> FrozenBatchNorm2d:
    norm = FrozenBatchNorm2d(channels)
    norm.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
    norm.bias.copy_(torch.randn(channels, generator=generator))
    norm.running_mean.copy_(torch.randn(channels, generator=generator))
    norm.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
    return norm


def _reference_conv_bn(conv: ConvNormAct, x: torch.Tensor) -> torch.Tensor:
    """conv then eval-mode batch norm, written with functional ops."""
    y = F.conv2d(x, conv.weight, stride=conv.stride, padding=conv.padding)
    norm = conv.norm
    return F.batch_norm(y, norm.running_mean, norm.running_var, norm.weight, norm.bias, eps=1e-5)


def _randomise_norms(module: nn.Module) -> None:
    generator = torch.Generator().manual_seed(1)
    convs = [child for child in module.modules() if isinstance(child, ConvNormAct)]
    for conv in convs:
        conv.norm = _frozen_bn(conv.out_channels, generator)


def test_bottleneck_block_matches_a_functional_reference():
    block = BottleneckBlock(FrozenBatchNorm2d, 8, 16, width=4, stride=2)
    _randomise_norms(block)
    x = torch.randn(2, 8, 9, 11)
    out = F.relu(_reference_conv_bn(block.conv1, x))
    out = F.relu(_reference_conv_bn(block.conv2, out))
    expected = F.relu(_reference_conv_bn(block.conv3, out) + _reference_conv_bn(block.shortcut, x))
    torch.testing.assert_close(block(x), expected)
    assert block(x).shape == (2, 16, 5, 6)


def test_basic_block_matches_a_functional_reference():
    block = BasicBlock(FrozenBatchNorm2d, 6, 6, stride=1)
    _randomise_norms(block)
    x = torch.randn(2, 6, 7, 5)
    out = F.relu(_reference_conv_bn(block.conv1, x))
    expected = F.relu(_reference_conv_bn(block.conv2, out) + x)
    torch.testing.assert_close(block(x), expected)


def test_frozen_batch_norm_equals_eval_batch_norm_and_has_only_buffers():
    norm = _frozen_bn(5, torch.Generator().manual_seed(2))
    reference = nn.BatchNorm2d(5).eval()
    reference.load_state_dict(norm.state_dict(), strict=False)  # lacks num_batches_tracked
    x = torch.randn(3, 5, 4, 4)
    torch.testing.assert_close(norm(x), reference(x))
    assert list(norm.parameters()) == []
    assert set(norm.state_dict()) == set(NORM_KEYS)
    # A fresh one is the identity.
    torch.testing.assert_close(FrozenBatchNorm2d(5)(x), x)


def test_conv_norm_act_keys_and_activation():
    conv = ConvNormAct(3, 4, 3, padding=1, bias=False, norm=nn.GroupNorm(2, 4), activation=F.relu)
    assert set(conv.state_dict()) == {"weight", "norm.weight", "norm.bias"}
    out = conv(torch.randn(2, 3, 5, 5))
    assert out.shape == (2, 4, 5, 5)
    assert (out >= 0).all()


@pytest.mark.parametrize("preset", [vita_r50_ytvis19, vita_small_synth])
def test_forward_backward_reaches_every_parameter(preset):
    backbone = ResNet(preset().backbone)
    features = backbone(torch.randn(1, 3, 32, 32))
    loss = sum(feature.square().mean() for feature in vars(features).values())
    loss.backward()
    for name, parameter in backbone.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_invalid_configs_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown ResNet block"):
        ResNet(BackboneConfig(block="bottleneck_v2"))
    with pytest.raises(ValueError, match="bottleneck ratio"):
        ResNet(BackboneConfig(out_channels=(256, 510, 1024, 2048)))
    with pytest.raises(ValueError, match=r"images \[N, C, H, W\]"):
        ResNet(vita_small_synth().backbone)(torch.randn(3, 32, 32))
