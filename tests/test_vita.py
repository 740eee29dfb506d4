"""The VITA module: official parity (fixtures from the official code), gradients, presets,
token pruning and input checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor

from vis_core.modeling.checkpoint import strip_prefix
from vis_core.modeling.config import VitaConfig
from vis_core.modeling.presets import vita_r50_ytvis19, vita_small_synth
from vis_core.modeling.vita import (
    Vita,
    VitaOutput,
    frame_foreground_probability,
    kept_token_count,
)

FIXTURES = Path(__file__).parent / "fixtures" / "official_parity"
PREFIX = "vita_module."
TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


def load(name: str) -> dict[str, Tensor]:
    return torch.load(FIXTURES / name, weights_only=True)


def fixture_model_args() -> tuple[VitaConfig, dict[str, int]]:
    """The fixture's official constructor arguments as a `VitaConfig` plus external sizes."""
    kw = json.loads((FIXTURES / "config.json").read_text())["constructor"]
    config = VitaConfig(
        hidden_dim=kw["hidden_dim"],
        heads=kw["nheads"],
        ffn_dim=kw["dim_feedforward"],
        encoder_layers=kw["enc_layers"],
        decoder_layers=kw["dec_layers"],
        window_size=kw["enc_window_size"],
        num_queries=kw["num_queries"],
        pre_norm=kw["pre_norm"],
        enforce_input_project=kw["enforce_input_project"],
        sim_use_clip=kw["sim_use_clip"],
        aux_loss=kw["aux_loss"],
    )
    sizes = {
        "num_classes": kw["num_classes"],
        "num_frame_queries": kw["num_frame_queries"],
        "frame_query_dim": kw["hidden_dim"],
        "mask_in_channels": kw["conv_dim"],
        "mask_dim": kw["mask_dim"],
    }
    return config, sizes


def official_model() -> Vita:
    config, sizes = fixture_model_args()
    model = Vita(config, **sizes)
    model.load_state_dict(strip_prefix(load("vita_state_dict.pt"), PREFIX), strict=True)
    return model


def flatten_output(output: VitaOutput) -> dict[str, Tensor]:
    """The output under the fixture's key names."""
    flat = {
        "pred_logits": output.pred_logits,
        "pred_mask_embed": output.pred_mask_embed,
        "pred_cq_embed": output.pred_cq_embed,
        "pred_fq_embed": output.pred_fq_embed,
    }
    for index, aux in enumerate(output.aux_outputs):
        flat[f"aux_outputs.{index}.pred_logits"] = aux.pred_logits
        flat[f"aux_outputs.{index}.pred_mask_embed"] = aux.pred_mask_embed
        flat[f"aux_outputs.{index}.pred_cq_embed"] = aux.pred_cq_embed
        flat[f"aux_outputs.{index}.pred_fq_embed"] = output.pred_fq_embed
    for index, tensor in enumerate(output.encoder_layer_outputs):
        flat[f"debug.enc_layer.{index}"] = tensor
    for index, tensor in enumerate(output.decoder_layer_outputs):
        flat[f"debug.dec_layer.{index}"] = tensor
    return flat


def test_state_dict_keys_and_shapes_are_official():
    model = official_model()
    official = strip_prefix(load("vita_state_dict.pt"), PREFIX)
    ours = model.state_dict()
    assert set(ours) == set(official)
    assert all(ours[key].shape == official[key].shape for key in official)
    config, sizes = fixture_model_args()
    result = Vita(config, **sizes).load_state_dict(official, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_eval_parity_padded_shifted_windows():
    model = official_model().eval()
    inputs, gold = load("inputs.pt"), load("outputs_eval.pt")
    frame_query = inputs["frame_query_eval"]  # official [L=2, B*T=7, fQ, C]
    with torch.no_grad():
        # [L=2, B=1, T, fQ, C]: eval uses the last layer only, as the official code does.
        output = model(frame_query[:, None], return_layer_outputs=True)
        last_only = model(frame_query[-1:, None])
        mask_features = model.project_mask_features(inputs["mask_features_eval"])
        masks = model.video_mask_logits(output.pred_mask_embed[-1, 0], mask_features)
    actual = flatten_output(output) | {"vita_mask_features": mask_features, "pred_masks": masks}
    assert output.aux_outputs == () and output.kept_frame_query_index is None
    assert set(actual) == set(gold)
    for key, expected in gold.items():
        torch.testing.assert_close(actual[key], expected, **TOLERANCE, msg=key)
    torch.testing.assert_close(last_only.pred_logits, output.pred_logits, rtol=0, atol=0)


def test_train_parity_with_aux_outputs():
    model = official_model().train()
    inputs, gold = load("inputs.pt"), load("outputs_train.pt")
    layers, batch, frames = 3, 2, 3
    # official [L, B*T, fQ, C] with b-major rows -> [L, B, T, fQ, C]
    frame_query = inputs["frame_query_train"].view(layers, batch, frames, 8, 64)
    output = model(frame_query, return_layer_outputs=True)
    mask_features = model.project_mask_features(inputs["mask_features_train"])
    per_video = mask_features.view(batch, frames, *mask_features.shape[1:])  # [B, T, C, H, W]
    actual = flatten_output(output) | {
        "vita_mask_features": mask_features,
        "pred_masks": model.clip_mask_logits(output.pred_mask_embed, per_video),
        "aux_outputs.0.pred_masks": model.clip_mask_logits(
            output.aux_outputs[0].pred_mask_embed, per_video
        ),
    }
    assert len(output.aux_outputs) == 1
    assert set(actual) == set(gold)
    for key, expected in gold.items():
        torch.testing.assert_close(actual[key].detach(), expected, **TOLERANCE, msg=key)


def test_no_layer_outputs_unless_asked():
    model = official_model().eval()
    output = model(torch.randn(1, 1, 4, 8, 64))
    assert output.encoder_layer_outputs == () and output.decoder_layer_outputs == ()


def small_synth_args() -> tuple[VitaConfig, dict[str, int]]:
    preset = vita_small_synth()
    return preset.vita, {
        "num_classes": preset.num_classes,
        "num_frame_queries": preset.frame_decoder.num_queries,
        "frame_query_dim": preset.frame_decoder.hidden_dim,
        "mask_in_channels": preset.pixel_decoder.conv_dim,
        "mask_dim": preset.pixel_decoder.mask_dim,
    }


@pytest.mark.parametrize("sizes", ["fixture", "vita_small_synth"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_forward_backward_reaches_every_parameter(sizes, training):
    config, kw = fixture_model_args() if sizes == "fixture" else small_synth_args()
    torch.manual_seed(0)
    model = Vita(config, **kw).train(training)
    layers, batch, frames = 3, 2, 4  # T=4 pads windows of 3 and of 6
    queries, channels = kw["num_frame_queries"], kw["frame_query_dim"]
    output = model(torch.randn(layers, batch, frames, queries, channels))
    clip_features = torch.randn(batch * frames, kw["mask_in_channels"], 5, 6)
    mask_features = model.project_mask_features(clip_features).view(batch, frames, -1, 5, 6)
    masks = model.clip_mask_logits(output.pred_mask_embed, mask_features)
    loss = output.pred_logits.square().mean() + masks.sigmoid().mean()
    loss = loss + output.pred_cq_embed.square().mean() + output.pred_fq_embed.square().mean()
    for aux in output.aux_outputs:
        loss = loss + aux.pred_logits.square().mean() + aux.pred_mask_embed.square().mean()
    loss.backward()
    assert masks.shape[:4] == ((layers if training else 1), batch, config.num_queries, frames)
    assert len(output.aux_outputs) == (config.decoder_layers - 1 if training else 0)
    missing = [
        name
        for name, parameter in model.named_parameters()
        if parameter.grad is None or not parameter.grad.abs().sum() > 0
    ]
    assert not missing


def test_r50_ytvis19_sizes():
    preset = vita_r50_ytvis19()
    model = Vita(
        preset.vita,
        num_classes=preset.num_classes,
        num_frame_queries=preset.frame_decoder.num_queries,
        frame_query_dim=preset.frame_decoder.hidden_dim,
        mask_in_channels=preset.pixel_decoder.conv_dim,
        mask_dim=preset.pixel_decoder.mask_dim,
    )
    # The official keys and shapes of the spec's table (K = 40).
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert shapes["enc_self_attn.5.self_attn.in_proj_weight"] == (768, 256)
    assert shapes["enc_ffn.5.linear1.weight"] == (2048, 256)
    assert shapes["transformer_ffn_layers.2.linear2.weight"] == (256, 2048)
    assert shapes["class_embed.weight"] == (41, 256)
    assert shapes["fq_pos.weight"] == shapes["query_feat.weight"] == (100, 256)
    assert shapes["vita_mask_features.weight"] == (256, 256, 1, 1)
    assert "mask_embed.layers.2.bias" in shapes and "sim_embed_clip.weight" in shapes
    assert len(shapes) == 21 + 6 * 12 + 3 * 18  # fixed + per encoder + per decoder layer
    model.eval()
    with torch.no_grad():
        output = model(torch.randn(1, 1, 7, 100, 256))  # T=7 < W=6 * 2: padded, shifted
    assert output.pred_logits.shape == (1, 1, 100, 41)
    assert output.pred_mask_embed.shape == output.pred_cq_embed.shape == (1, 1, 100, 256)
    assert output.pred_fq_embed.shape == (1, 1, 7, 100, 256)
    masks = model.video_mask_logits(output.pred_mask_embed[-1, 0], torch.randn(7, 256, 3, 4))
    assert masks.shape == (100, 7, 3, 4)


def test_eval_batches_videos_independently():
    model = official_model().eval()
    videos = torch.randn(1, 2, 5, 8, 64)
    with torch.no_grad():
        together = model(videos)
        alone = [model(videos[:, index : index + 1]) for index in range(2)]
    for index, single in enumerate(alone):
        torch.testing.assert_close(together.pred_logits[:, index], single.pred_logits[:, 0])
        torch.testing.assert_close(together.pred_fq_embed[:, index], single.pred_fq_embed[:, 0])


def pruning_model(keep_ratio: float) -> Vita:
    config, sizes = fixture_model_args()
    model = Vita(
        VitaConfig(**{**config.__dict__, "token_keep_ratio": keep_ratio}),
        **sizes,
    )
    model.load_state_dict(official_model().state_dict())
    return model.eval()


def test_pruning_keeps_most_likely_foreground_queries():
    model = pruning_model(0.5)
    frame_queries = torch.randn(1, 2, 5, 8, 64)
    fg_prob = torch.rand(1, 2, 5, 8)
    with torch.no_grad():
        output = model(frame_queries, fg_prob)
    kept = output.kept_frame_query_index
    assert kept is not None and kept.shape == (1, 2, 5, 4)
    expected = fg_prob.topk(4, dim=-1).indices.sort(dim=-1).values
    assert torch.equal(kept, expected)
    assert output.pred_fq_embed.shape == (1, 2, 5, 4, 64)


def test_pruned_queries_do_not_matter():
    model = pruning_model(0.5)
    frame_queries = torch.randn(1, 1, 5, 8, 64)
    fg_prob = torch.rand(1, 1, 5, 8)
    changed = frame_queries.clone()
    pruned = fg_prob < fg_prob.topk(4, dim=-1).values[..., -1:]
    changed[pruned] = torch.randn_like(changed[pruned]) * 10
    with torch.no_grad():
        base, moved = model(frame_queries, fg_prob), model(changed, fg_prob)
    torch.testing.assert_close(moved.pred_logits, base.pred_logits)
    torch.testing.assert_close(moved.pred_fq_embed, base.pred_fq_embed)


def test_pruning_equals_a_model_over_the_kept_slots():
    # Every frame keeps slots 1, 3, 5, 7: the same as an unpruned model with 4 frame
    # queries whose fq_pos rows are those slots' embeddings.
    model = pruning_model(0.5)
    frame_queries = torch.randn(1, 1, 5, 8, 64)
    fg_prob = torch.tensor([0.1, 0.9] * 4).expand(1, 1, 5, 8)
    config, sizes = fixture_model_args()
    reduced = Vita(config, **(sizes | {"num_frame_queries": 4})).eval()
    state = model.state_dict()
    state["fq_pos.weight"] = state["fq_pos.weight"][1::2]
    reduced.load_state_dict(state)
    with torch.no_grad():
        pruned = model(frame_queries, fg_prob)
        expected = reduced(frame_queries[..., 1::2, :].contiguous())
    torch.testing.assert_close(pruned.pred_logits, expected.pred_logits, **TOLERANCE)
    torch.testing.assert_close(pruned.pred_fq_embed, expected.pred_fq_embed, **TOLERANCE)


def test_keeping_every_query_equals_no_pruning():
    model = pruning_model(0.95)  # ceil(0.95 * 8) = 8
    frame_queries = torch.randn(1, 1, 5, 8, 64)
    with torch.no_grad():
        pruned = model(frame_queries, torch.rand(1, 1, 5, 8))
        plain = official_model().eval()(frame_queries)
    torch.testing.assert_close(pruned.pred_logits, plain.pred_logits, **TOLERANCE)


def test_kept_token_count_and_foreground_probability():
    assert kept_token_count(10, 0.3) == 3
    assert kept_token_count(100, 0.5) == 50
    assert kept_token_count(8, 0.01) == 1
    assert kept_token_count(8, 1.0) == 8
    logits = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 100.0]])
    torch.testing.assert_close(frame_foreground_probability(logits), torch.tensor([2 / 3, 0.0]))


def test_clear_errors():
    model = official_model()
    with pytest.raises(ValueError, match=r"\[L, B, T, fQ, C\]"):
        model(torch.randn(3, 6, 8, 64))
    with pytest.raises(ValueError, match="fQ, C"):
        model(torch.randn(1, 1, 3, 7, 64))
    with pytest.raises(ValueError, match="frame_fg_prob"):
        model(torch.randn(1, 1, 3, 8, 64), torch.rand(1, 1, 3, 7))
    with pytest.raises(ValueError, match="pass frame_fg_prob"):
        pruning_model(0.5)(torch.randn(1, 1, 3, 8, 64))
    sizes = fixture_model_args()[1]
    with pytest.raises(ValueError, match="token_keep_ratio"):
        Vita(VitaConfig(token_keep_ratio=0.0), **sizes)
    with pytest.raises(ValueError, match="window_size"):
        Vita(VitaConfig(window_size=-1), **sizes)
