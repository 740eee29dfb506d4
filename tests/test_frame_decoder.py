"""Frame decoder: official parity, the attention-mask rules, gradients and preset sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from vis_core.modeling import frame_decoder
from vis_core.modeling.checkpoint import strip_prefix
from vis_core.modeling.config import FrameDecoderConfig
from vis_core.modeling.frame_decoder import FrameDecoder, unblock_fully_blocked_rows
from vis_core.modeling.presets import vita_r50_ytvis19, vita_small_synth

FIXTURES = Path(__file__).parent / "fixtures" / "official_parity"
PREFIX = "sem_seg_head.predictor."


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def official() -> dict:
    """The fixture's constructor arguments, state dict, inputs and eval outputs."""
    config = json.loads((FIXTURES / "m2f_decoder_config.json").read_text())
    return {
        "constructor": config["constructor"],
        "attn_mask": config["attn_mask"],
        "state_dict": torch.load(FIXTURES / "m2f_decoder_state_dict.pt", weights_only=True),
        "inputs": torch.load(FIXTURES / "m2f_decoder_inputs.pt", weights_only=True),
        "outputs": torch.load(FIXTURES / "m2f_decoder_outputs_eval.pt", weights_only=True),
    }


def build_official(official: dict) -> FrameDecoder:
    args = official["constructor"]
    config = FrameDecoderConfig(
        hidden_dim=args["hidden_dim"],
        heads=args["nheads"],
        ffn_dim=args["dim_feedforward"],
        layers=args["dec_layers"],
        num_queries=args["num_queries"],
        pre_norm=args["pre_norm"],
        enforce_input_project=args["enforce_input_project"],
        vita_last_layers=args["vita_last_layer_num"],
    )
    model = FrameDecoder(config, args["num_classes"], args["in_channels"], args["mask_dim"])
    model.load_state_dict(strip_prefix(official["state_dict"], PREFIX), strict=True)
    return model


def run_official(model: FrameDecoder, official: dict) -> frame_decoder.FrameDecoderOutput:
    inputs = official["inputs"]
    with torch.no_grad():
        return model([inputs["x.0"], inputs["x.1"], inputs["x.2"]], inputs["mask_features"])


def test_parameter_names_and_shapes_are_the_official_ones(official):
    model = build_official(official)
    expected = {k: v.shape for k, v in strip_prefix(official["state_dict"], PREFIX).items()}
    assert {k: v.shape for k, v in model.state_dict().items()} == expected


def test_eval_outputs_match_the_official_decoder(official):
    model = build_official(official).eval()
    output = run_official(model, official)
    gold = official["outputs"]
    assert_close(output.pred_logits, gold["pred_logits"])
    assert_close(output.pred_masks, gold["pred_masks"])
    assert_close(output.frame_queries, gold["frame_queries"])
    assert len(output.aux_outputs) == official["constructor"]["dec_layers"]
    for index, aux in enumerate(output.aux_outputs):
        assert_close(aux.pred_logits, gold[f"aux_outputs.{index}.pred_logits"])
        assert_close(aux.pred_masks, gold[f"aux_outputs.{index}.pred_masks"])
    assert output.predictions[-1].pred_masks is output.pred_masks
    assert len(output.predictions) == len(output.aux_outputs) + 1


def test_train_mode_keeps_more_frame_query_layers_and_the_same_predictions(official):
    model = build_official(official)
    evaluated = run_official(model.eval(), official)
    trained = run_official(model.train(), official)
    assert trained.frame_queries.shape == (2, 2, 8, 64)
    assert_close(trained.frame_queries[-1:], evaluated.frame_queries)
    assert_close(trained.pred_logits, evaluated.pred_logits)
    assert_close(trained.pred_masks, evaluated.pred_masks)
    # The earlier kept layer is the normed state after layer 1, not a copy of the last one.
    assert not torch.allclose(trained.frame_queries[0], trained.frame_queries[1])


def test_fixture_layer_zero_has_one_fully_blocked_query_and_it_gets_unblocked(official):
    heads = official["constructor"]["nheads"]
    level0 = official["inputs"]["x.0"].shape[-2:]
    initial_masks = official["outputs"]["aux_outputs.0.pred_masks"]
    model = build_official(official)
    blocked = model._attention_mask(initial_masks, level0)
    frames, queries = initial_masks.shape[:2]
    assert blocked.shape == (frames * heads, queries, level0.numel())

    full_rows = blocked.all(dim=-1)  # [N*heads, Q]
    # One query of one frame, repeated over the heads.
    assert (
        full_rows.sum().item() == official["attn_mask"]["fully_blocked_rows_per_layer"][0] * heads
    )
    unblocked = unblock_fully_blocked_rows(blocked)
    assert not unblocked[full_rows].any()
    assert torch.equal(unblocked[~full_rows], blocked[~full_rows])


def test_without_the_unblocking_rule_the_outputs_change(official, monkeypatch):
    model = build_official(official).eval()
    monkeypatch.setattr(frame_decoder, "unblock_fully_blocked_rows", lambda mask: mask)
    output = run_official(model, official)
    gold = official["outputs"]
    # Prediction 0 needs no mask; every later one depends on the blocked query's layer 0.
    assert_close(output.aux_outputs[0].pred_logits, gold["aux_outputs.0.pred_logits"])
    assert not torch.allclose(
        output.aux_outputs[1].pred_logits, gold["aux_outputs.1.pred_logits"], equal_nan=False
    )
    assert not torch.allclose(output.pred_masks, gold["pred_masks"], equal_nan=False)


def test_attention_mask_follows_the_resized_mask_logits():
    config = FrameDecoderConfig(
        hidden_dim=8, heads=2, ffn_dim=16, layers=1, num_queries=2, vita_last_layers=1
    )
    model = FrameDecoder(config, num_classes=1, in_channels=8, mask_dim=8)
    logits = torch.full((1, 2, 4, 4), -3.0)
    logits[0, 0, :2, :2] = 3.0  # query 0 covers the top-left quarter
    blocked = model._attention_mask(logits, (2, 2))
    assert blocked.dtype == torch.bool and blocked.shape == (2, 2, 4)
    expected_query0 = torch.tensor([False, True, True, True])
    for head in range(2):
        assert torch.equal(blocked[head, 0], expected_query0)
        assert blocked[head, 1].all()  # query 1 covers nothing
    resized = F.interpolate(logits, size=(2, 2), mode="bilinear", align_corners=False)
    assert torch.equal(blocked[0], resized[0].flatten(1).sigmoid() < 0.5)


def test_frames_are_decoded_independently(official):
    model = build_official(official).eval()
    inputs = official["inputs"]
    both = run_official(model, official)
    with torch.no_grad():
        second = model([inputs[f"x.{i}"][1:] for i in range(3)], inputs["mask_features"][1:])
    assert_close(second.pred_masks[0], both.pred_masks[1])
    assert_close(second.frame_queries[:, 0], both.frame_queries[:, 1])


def random_inputs(
    frames: int, in_channels: int, mask_dim: int, sizes: tuple[tuple[int, int], ...]
) -> tuple[list[torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    features = [torch.randn(frames, in_channels, h, w, generator=generator) for h, w in sizes]
    height, width = sizes[-1][0] * 2, sizes[-1][1] * 2
    return features, torch.randn(frames, mask_dim, height, width, generator=generator)


SMALL_SIZES = ((2, 3), (3, 5), (5, 9))


def assert_forward_backward(model: FrameDecoder, in_channels: int, mask_dim: int) -> None:
    model.train()
    features, mask_features = random_inputs(2, in_channels, mask_dim, SMALL_SIZES)
    output = model(features, mask_features)
    loss = output.frame_queries.square().mean()
    for prediction in output.predictions:
        loss = loss + prediction.pred_logits.square().mean() + prediction.pred_masks.mean()
    loss.backward()
    for name, parameter in model.named_parameters():
        if name.startswith("pilot_"):  # reached by pilot queries only (test_mask_pilot.py)
            continue
        assert parameter.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{name} has a non-finite gradient"
        assert parameter.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_forward_backward_with_the_fixture_sizes(official):
    args = official["constructor"]
    model = build_official(official)
    assert_forward_backward(model, args["in_channels"], args["mask_dim"])


def test_forward_backward_with_the_small_preset_sizes_and_an_input_projection():
    preset = vita_small_synth()
    in_channels = preset.pixel_decoder.conv_dim + 8  # forces the 1x1 input projections
    mask_dim = preset.pixel_decoder.mask_dim
    model = FrameDecoder(preset.frame_decoder, preset.num_classes, in_channels, mask_dim)
    names = {name for name, _ in model.named_parameters()}
    assert {f"input_proj.{i}.weight" for i in range(3)} <= names
    assert all(model.input_proj[i].bias.abs().sum() == 0 for i in range(3))
    assert_forward_backward(model, in_channels, mask_dim)


def test_official_r50_sizes_on_a_tiny_input():
    preset = vita_r50_ytvis19()
    mask_dim = preset.pixel_decoder.mask_dim
    in_channels = preset.pixel_decoder.conv_dim
    model = FrameDecoder(preset.frame_decoder, preset.num_classes, in_channels, mask_dim)
    assert not any(key.startswith("input_proj") for key in model.state_dict())
    features, mask_features = random_inputs(1, in_channels, mask_dim, SMALL_SIZES)
    queries, hidden = preset.frame_decoder.num_queries, preset.frame_decoder.hidden_dim
    with torch.no_grad():
        evaluated = model.eval()(features, mask_features)
        trained = model.train()(features, mask_features)
    assert evaluated.pred_logits.shape == (1, queries, preset.num_classes + 1)
    assert evaluated.pred_masks.shape == (1, queries, 10, 18)
    assert len(evaluated.aux_outputs) == preset.frame_decoder.layers
    assert evaluated.frame_queries.shape == (1, 1, queries, hidden)
    last_layers = preset.frame_decoder.vita_last_layers
    assert trained.frame_queries.shape == (last_layers, 1, queries, hidden)
    assert torch.isfinite(trained.pred_masks).all()


def test_bad_inputs_raise_clear_errors(official):
    model = build_official(official)
    inputs = official["inputs"]
    features = [inputs["x.0"], inputs["x.1"], inputs["x.2"]]
    with pytest.raises(ValueError, match="expected 3 feature maps"):
        model(features[:2], inputs["mask_features"])
    with pytest.raises(ValueError, match="mask_features must be"):
        model(features, inputs["mask_features"][:, :10])
    with pytest.raises(ValueError, match="feature map 1 must be"):
        model([features[0], features[1][:1], features[2]], inputs["mask_features"])
    with pytest.raises(ValueError, match="vita_last_layers"):
        FrameDecoder(FrameDecoderConfig(layers=2, vita_last_layers=3), 5, 256, 256)
