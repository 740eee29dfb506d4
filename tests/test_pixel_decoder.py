"""Deformable attention and the pixel decoder: official goldens, a naive reference, gradients."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from vis_core.modeling.backbone import BackboneFeatures, ResNet
from vis_core.modeling.checkpoint import strip_prefix
from vis_core.modeling.config import PixelDecoderConfig
from vis_core.modeling.ms_deform_attn import (
    MSDeformAttn,
    ms_deform_attn_core,
    ms_deform_attn_core_bag,
    ms_deform_attn_core_grid_sample,
)
from vis_core.modeling.pixel_decoder import MSDeformAttnPixelDecoder, PixelDecoderOutput
from vis_core.modeling.presets import vita_r50_ytvis19, vita_small_synth

FIXTURES = Path(__file__).parent / "fixtures" / "official_parity"
PREFIX = "sem_seg_head.pixel_decoder."
# The fixture's constructor (pixel_decoder_config.json): GroupNorm(32, 64) is hard-coded there.
FIXTURE_CONFIG = PixelDecoderConfig(
    conv_dim=64, mask_dim=64, heads=4, ffn_dim=128, encoder_layers=2, group_norm_groups=32
)
FIXTURE_IN_CHANNELS = (16, 24, 32, 40)


def _load(name: str) -> dict[str, torch.Tensor]:
    return torch.load(FIXTURES / name, weights_only=True)


def _outputs_by_fixture_key(output: PixelDecoderOutput) -> dict[str, torch.Tensor]:
    flat = {
        "mask_features": output.mask_features,
        "clip_mask_features": output.clip_mask_features,
        "transformer_encoder_features": output.transformer_encoder_features,
    }
    flat.update({f"multi_scale_features.{i}": m for i, m in enumerate(output.multi_scale_features)})
    return flat


def _official_decoder() -> MSDeformAttnPixelDecoder:
    decoder = MSDeformAttnPixelDecoder(FIXTURE_CONFIG, FIXTURE_IN_CHANNELS)
    state_dict = strip_prefix(_load("pixel_decoder_state_dict.pt"), PREFIX)
    decoder.load_state_dict(state_dict, strict=True)
    return decoder


def test_state_dict_keys_and_shapes_are_the_official_ones():
    config = json.loads((FIXTURES / "pixel_decoder_config.json").read_text())
    expected = {
        key.removeprefix(PREFIX): tuple(shape)
        for key, (shape, _) in config["shapes"]["state_dict"].items()
    }
    decoder = MSDeformAttnPixelDecoder(FIXTURE_CONFIG, FIXTURE_IN_CHANNELS)
    actual = {key: tuple(value.shape) for key, value in decoder.state_dict().items()}
    assert actual == expected


@pytest.mark.parametrize("train_mode", [False, True])
def test_matches_the_official_outputs(train_mode):
    decoder = _official_decoder().train(train_mode)
    inputs = _load("pixel_decoder_inputs.pt")
    expected = _load("pixel_decoder_outputs.pt")
    with torch.no_grad():
        output = decoder(BackboneFeatures(**inputs))
    actual = _outputs_by_fixture_key(output)
    assert set(actual) == set(expected)
    for key, tensor in expected.items():
        torch.testing.assert_close(actual[key], tensor, rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.gpu
def test_matches_the_official_outputs_on_cuda_under_autocast(monkeypatch):
    decoder = _official_decoder().cuda().eval()
    inputs = {key: value.cuda() for key, value in _load("pixel_decoder_inputs.pt").items()}
    # cuDNN convolutions run in TF32 by default on Ampere and later (mask_features then
    # differ by ~1e-3): full fp32 here, so that only autocast is under test.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        output = decoder(BackboneFeatures(**inputs))
    for key, tensor in _load("pixel_decoder_outputs.pt").items():
        actual = _outputs_by_fixture_key(output)[key]
        assert actual.dtype == torch.float32  # the decoder runs in fp32 regardless
        torch.testing.assert_close(actual.cpu(), tensor, rtol=1e-4, atol=1e-4, msg=key)


def test_autocast_does_not_change_the_numbers():
    decoder = _official_decoder().eval()
    features = BackboneFeatures(**_load("pixel_decoder_inputs.pt"))
    with torch.no_grad():
        plain = decoder(features)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = decoder(features)
    assert autocast.mask_features.dtype == torch.float32
    torch.testing.assert_close(autocast.mask_features, plain.mask_features)


def _naive_deform_attn(value, spatial_shapes, starts, locations, weights):
    """Per-point bilinear interpolation, corners outside the map count as zero."""
    batch, _, heads, head_dim = value.shape
    _, queries, _, _, points, _ = locations.shape
    output = torch.zeros(batch, queries, heads, head_dim, dtype=torch.float64)
    for b in range(batch):
        for q in range(queries):
            for m in range(heads):
                for level, ((height, width), start) in enumerate(
                    zip(spatial_shapes, starts, strict=True)
                ):
                    for p in range(points):
                        x, y = locations[b, q, m, level, p].tolist()
                        # Normalised coordinates to pixel units, pixel centres at integers.
                        px, py = x * width - 0.5, y * height - 0.5
                        x0, y0 = math.floor(px), math.floor(py)
                        sample = torch.zeros(head_dim, dtype=torch.float64)
                        for xi, yi in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
                            if 0 <= xi < width and 0 <= yi < height:
                                corner = (1 - abs(px - xi)) * (1 - abs(py - yi))
                                sample += corner * value[b, start + yi * width + xi, m].double()
                        output[b, q, m] += weights[b, q, m, level, p].item() * sample
    return output.flatten(2).float()


@pytest.mark.parametrize("core", [ms_deform_attn_core_grid_sample, ms_deform_attn_core_bag])
def test_sampling_cores_equal_a_naive_bilinear_reference(core):
    generator = torch.Generator().manual_seed(7)
    spatial_shapes, starts = [(3, 4), (2, 5)], [0, 12]
    batch, queries, heads, head_dim, points = 2, 3, 2, 3, 2
    value = torch.randn(batch, 22, heads, head_dim, generator=generator)
    # Some points fall outside [0, 1], some straddle the border, most are inside.
    locations = torch.rand(batch, queries, heads, 2, points, 2, generator=generator) * 1.6 - 0.3
    weights = torch.rand(batch, queries, heads, 2, points, generator=generator)
    actual = core(value, spatial_shapes, starts, locations, weights)
    expected = _naive_deform_attn(value, spatial_shapes, starts, locations, weights)
    assert actual.shape == (batch, queries, heads * head_dim)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)
    assert ((locations < 0) | (locations > 1)).any()


def test_bag_core_equals_grid_sample_in_values_and_gradients():
    """The default path (`embedding_bag`) against the reference (`grid_sample`) at the R-50
    pixel decoder's level sizes for a 128x160 input, gradients included (training)."""
    generator = torch.Generator().manual_seed(3)
    spatial_shapes, starts = [(16, 20), (8, 10), (4, 5)], [0, 320, 400]
    value = torch.randn(2, 420, 8, 32, generator=generator, requires_grad=True)
    locations = torch.rand(2, 420, 8, 3, 4, 2, generator=generator) * 1.4 - 0.2
    locations.requires_grad_(True)
    weights = torch.rand(2, 420, 8, 3, 4, generator=generator).softmax(-1).requires_grad_(True)
    results = []
    for core in (ms_deform_attn_core_grid_sample, ms_deform_attn_core_bag):
        output = core(value, spatial_shapes, starts, locations, weights)
        results.append(
            (output, *torch.autograd.grad(output.square().sum(), (value, locations, weights)))
        )
    for expected, actual in zip(*results, strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


def test_core_samples_with_bag_in_inference_and_grid_sample_in_training(monkeypatch):
    """embedding_bag's backward is the slower one: a step that needs gradients samples
    with grid_sample whatever `SAMPLING` says."""
    from vis_core.modeling import ms_deform_attn

    calls = []
    for name in ("ms_deform_attn_core_bag", "ms_deform_attn_core_grid_sample"):
        core = getattr(ms_deform_attn, name)
        monkeypatch.setattr(
            ms_deform_attn,
            name,
            lambda *args, core=core, name=name: calls.append(name) or core(*args),
        )
    value = torch.randn(1, 12, 2, 3)
    locations, weights = torch.rand(1, 4, 2, 1, 2, 2), torch.rand(1, 4, 2, 1, 2)
    with torch.inference_mode():
        ms_deform_attn_core(value, [(3, 4)], [0], locations, weights)
    ms_deform_attn_core(value, [(3, 4)], [0], locations, weights.requires_grad_(True))
    with torch.no_grad():
        ms_deform_attn_core(value, [(3, 4)], [0], locations, weights)
    assert calls == [
        "ms_deform_attn_core_bag",
        "ms_deform_attn_core_grid_sample",
        "ms_deform_attn_core_bag",
    ]


def test_core_rejects_mismatched_levels():
    value = torch.randn(1, 12, 2, 3)
    locations = torch.rand(1, 4, 2, 2, 1, 2)
    weights = torch.rand(1, 4, 2, 2, 1)
    with pytest.raises(ValueError, match="spatial shapes"):
        ms_deform_attn_core(value, [(3, 4)], [0], locations, weights)
    with pytest.raises(ValueError, match="runs past"):
        ms_deform_attn_core(value, [(3, 4), (2, 2)], [0, 12], locations, weights)


def test_deform_attn_initialisation_is_the_official_one():
    attention = MSDeformAttn(dim=16, levels=3, heads=4, points=2)
    assert not attention.sampling_offsets.weight.any()
    assert not attention.attention_weights.weight.any()
    assert not attention.attention_weights.bias.any()
    offsets = attention.sampling_offsets.bias.view(4, 3, 2, 2)  # [M, L, P, (x, y)]
    # Heads point right, down, left, up; point p sits p + 1 pixels out, on every level.
    directions = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    for level in range(3):
        for point in range(2):
            torch.testing.assert_close(offsets[:, level, point], directions * (point + 1))
    assert not attention.value_proj.bias.any() and not attention.output_proj.bias.any()


def _loss(output: PixelDecoderOutput) -> torch.Tensor:
    return sum(tensor.square().mean() for tensor in _outputs_by_fixture_key(output).values())


def _as_if_trained(decoder: MSDeformAttnPixelDecoder) -> MSDeformAttnPixelDecoder:
    """Un-zero the query -> offset / weight projections.

    They start at zero (the official init), so at step 0 the queries, and with them
    `level_embed`, get an exactly zero gradient; after one optimiser step they do not.
    """
    with torch.no_grad():
        for layer in decoder.transformer.encoder.layers:
            layer.self_attn.sampling_offsets.weight.normal_(std=0.05)
            layer.self_attn.attention_weights.weight.normal_(std=0.05)
    return decoder


def _assert_every_parameter_has_a_gradient(module: torch.nn.Module) -> None:
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_level_embed_gets_no_gradient_at_the_official_init_only():
    features = BackboneFeatures(
        *(torch.randn(1, c, s, s) for c, s in zip(FIXTURE_IN_CHANNELS, (8, 4, 2, 1), strict=True))
    )
    fresh = MSDeformAttnPixelDecoder(FIXTURE_CONFIG, FIXTURE_IN_CHANNELS)
    _loss(fresh(features)).backward()
    assert not fresh.transformer.level_embed.grad.any()
    trained = _as_if_trained(MSDeformAttnPixelDecoder(FIXTURE_CONFIG, FIXTURE_IN_CHANNELS))
    _loss(trained(features)).backward()
    assert trained.transformer.level_embed.grad.abs().sum() > 0


def test_forward_backward_fixture_sizes():
    decoder = _as_if_trained(MSDeformAttnPixelDecoder(FIXTURE_CONFIG, FIXTURE_IN_CHANNELS))
    sizes = [(10, 18), (5, 9), (3, 5), (2, 3)]
    features = BackboneFeatures(
        *(torch.randn(2, c, h, w) for c, (h, w) in zip(FIXTURE_IN_CHANNELS, sizes, strict=True))
    )
    _loss(decoder(features)).backward()
    _assert_every_parameter_has_a_gradient(decoder)


def test_forward_backward_small_synth_preset_with_its_backbone():
    config = vita_small_synth()
    backbone = ResNet(config.backbone)
    decoder = _as_if_trained(MSDeformAttnPixelDecoder(config.pixel_decoder, backbone.out_channels))
    output = decoder(backbone(torch.randn(2, 3, 64, 96)))
    assert output.mask_features.shape == (2, 64, 16, 24)
    _loss(output).backward()
    _assert_every_parameter_has_a_gradient(decoder)
    _assert_every_parameter_has_a_gradient(backbone)


def test_r50_preset_shapes_on_a_tiny_input():
    config = vita_r50_ytvis19()
    backbone = ResNet(config.backbone).eval()
    decoder = MSDeformAttnPixelDecoder(config.pixel_decoder, backbone.out_channels).eval()
    with torch.no_grad():
        output = decoder(backbone(torch.randn(1, 3, 64, 96)))
    assert output.mask_features.shape == (1, 256, 16, 24)
    assert output.clip_mask_features.shape == (1, 256, 16, 24)
    assert output.transformer_encoder_features.shape == (1, 256, 2, 3)
    assert [tuple(m.shape) for m in output.multi_scale_features] == [
        (1, 256, 2, 3),
        (1, 256, 4, 6),
        (1, 256, 8, 12),
    ]
    attention = decoder.transformer.encoder.layers[5].self_attn
    assert attention.sampling_offsets.weight.shape == (192, 256)
    assert attention.attention_weights.weight.shape == (96, 256)
    assert decoder.transformer.encoder.layers[0].linear1.weight.shape == (1024, 256)


def test_wrong_input_channels_raise():
    decoder = MSDeformAttnPixelDecoder(FIXTURE_CONFIG, FIXTURE_IN_CHANNELS)
    features = BackboneFeatures(*(torch.randn(1, 8, s, s) for s in (8, 4, 2, 1)))
    with pytest.raises(ValueError, match="channels"):
        decoder(features)
    with pytest.raises(ValueError, match="GroupNorm"):
        MSDeformAttnPixelDecoder(PixelDecoderConfig(conv_dim=48), FIXTURE_IN_CHANNELS)
