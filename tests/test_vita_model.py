"""The whole model: every preset runs forward and backward; official checkpoints convert."""

import pickle

import numpy as np
import pytest
import torch

from vis_core.modeling.checkpoint import (
    CheckpointError,
    load_official,
    project_to_official,
    read_official,
)
from vis_core.modeling.presets import PRESETS, get_preset
from vis_core.modeling.vita import Vita
from vis_core.modeling.vita_model import VitaModel


def _clip(model: VitaModel, batch: int = 1, frames: int = 2, size: int = 64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (batch * frames, size, size + 8, 3), generator=generator)
    images = model.detector.preprocess(pixels.to(torch.uint8))
    return images.unflatten(0, (batch, frames))


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_runs_forward_and_backward(preset):
    torch.manual_seed(0)
    config = get_preset(preset)
    model = VitaModel(config).train()
    images = _clip(model)
    assert images.shape[-2] % 32 == 0 and images.shape[-1] % 32 == 0  # padded
    out = model(images)
    video, frames = out.video, out.frames
    layers = config.frame_decoder.vita_last_layers
    cq, k = config.vita.num_queries, config.num_classes
    assert frames.frame_queries.shape[:3] == (layers, 2, config.frame_decoder.num_queries)
    assert video.pred_logits.shape == (layers, 1, cq, k + 1)
    masks = Vita.clip_mask_logits(video.pred_mask_embed, out.mask_features)
    assert masks.shape == (layers, 1, cq, 2, 16, 24)  # 64x72 padded to 64x96
    assert len(video.aux_outputs) == config.vita.decoder_layers - 1
    loss = (
        masks.sigmoid().mean()
        + video.pred_logits.logsumexp(-1).mean()
        + frames.pred_masks.mean()
        + frames.pred_logits.mean()
        + video.pred_fq_embed.mean()
        + video.pred_cq_embed.mean()
    )
    loss.backward()
    # Pilot embeddings are reached by pilot queries only (test_mask_pilot.py).
    trained = [p for n, p in model.named_parameters() if p.requires_grad and "pilot_" not in n]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trained)
    model.eval()
    with torch.no_grad():
        evaluated = model(images)
    assert evaluated.video.pred_logits.shape == (1, 1, cq, k + 1)  # eval: last layer only


def test_token_pruning_keeps_the_top_share():
    config = get_preset("vita_small_synth")
    config = type(config)(**{**config.__dict__, "vita": type(config.vita)(
        **{**config.vita.__dict__, "token_keep_ratio": 0.5})})  # fmt: skip
    model = VitaModel(config).eval()
    with torch.no_grad():
        out = model(_clip(model))
    kept = out.video.kept_frame_query_index
    assert kept.shape == (1, 1, 2, config.frame_decoder.num_queries // 2)
    foreground = 1 - out.frames.pred_logits.softmax(-1)[..., -1]  # [T, Q]
    for t in range(2):
        expected = foreground[t].topk(kept.shape[-1]).indices.sort().values
        assert torch.equal(kept[0, 0, t], expected)


def _official_state(model: VitaModel) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in project_to_official(model.state_dict()).items()}


@pytest.mark.parametrize("file_format", ["pth-model-key", "bare", "pkl"])
def test_converter_round_trip_gives_bitwise_equal_outputs(tmp_path, file_format):
    torch.manual_seed(1)
    config = get_preset("vita_small_synth")
    source = VitaModel(config).eval()
    official = _official_state(source)
    official["criterion.empty_weight"] = torch.ones(config.num_classes + 1)
    path = tmp_path / ("ckpt.pkl" if file_format == "pkl" else "ckpt.pth")
    if file_format == "pkl":
        arrays = {k: v.numpy() for k, v in official.items()}
        path.write_bytes(pickle.dumps({"model": arrays, "__author__": "test"}))
    else:
        wrapped = {"model": official} if file_format == "pth-model-key" else official
        torch.save(wrapped, path)

    torch.manual_seed(2)
    target = VitaModel(config).eval()
    report = load_official(target, read_official(path))
    assert report.complete, report.summary()
    images = _clip(source)
    with torch.no_grad():
        expected, actual = source(images), target(images)
    assert torch.equal(expected.video.pred_logits, actual.video.pred_logits)
    assert torch.equal(expected.frames.pred_masks, actual.frames.pred_masks)
    assert torch.equal(expected.mask_features, actual.mask_features)


def test_mapping_covers_every_parameter_and_buffer_of_r50():
    model = VitaModel(get_preset("vita_r50_ytvis19"))
    own = model.state_dict()
    official = project_to_official(own)
    assert len(official) == len(own)
    prefixes = {key.split(".")[0] for key in official}
    assert prefixes == {"backbone", "sem_seg_head", "vita_module"}
    assert "backbone.res5.2.conv3.norm.running_var" in official
    assert "sem_seg_head.predictor.transformer_ffn_layers.8.linear2.weight" in official
    assert "vita_module.enc_self_attn.5.self_attn.in_proj_weight" in official
    report = load_official(model, official)
    assert report.complete


def test_partial_checkpoints_load_into_one_module():
    torch.manual_seed(3)
    config = get_preset("vita_small_synth")
    official = _official_state(VitaModel(config))
    vita_only = {k: v for k, v in official.items() if k.startswith("vita_module.")}
    fresh = VitaModel(config)
    report = load_official(fresh.vita, vita_only, part="vita")
    assert report.complete, report.summary()
    for key, value in vita_only.items():
        assert torch.equal(fresh.vita.state_dict()[key.removeprefix("vita_module.")], value)
    report = load_official(fresh.detector.pixel_decoder, official, part="pixel_decoder")
    assert report.missing == () and len(report.unexpected) == 0
    with pytest.raises(CheckpointError, match="no checkpoint tensor fits"):
        load_official(fresh.detector.backbone, vita_only, part="backbone")


def test_mismatched_shapes_and_legacy_names_are_reported():
    config = get_preset("vita_small_synth")
    official = _official_state(VitaModel(config))
    official["sem_seg_head.predictor.class_embed.weight"] = torch.zeros(81, 64)
    official["sem_seg_head.predictor.static_query.weight"] = official.pop(
        "sem_seg_head.predictor.query_feat.weight"
    )
    official["unrelated.thing"] = torch.zeros(1)
    report = load_official(VitaModel(config), official)
    assert any("class_embed.weight (checkpoint (81, 64)" in key for key in report.missing)
    assert not any("query_feat" in key for key in report.missing)  # renamed from static_query
    assert report.unexpected == ("unrelated.thing",)


def test_unsafe_pickles_are_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": {"x": np.zeros(2)}, "p": Payload()}))
    with pytest.raises(CheckpointError, match="refusing to load"):
        read_official(path)
    with pytest.raises(CheckpointError, match="not found"):
        read_official(tmp_path / "missing.pth")


def test_convert_checkpoint_cli_writes_a_loadable_model(tmp_path):
    from jobs.cli import main
    from vis_core.modeling.model_file import load_model

    torch.manual_seed(4)
    source = VitaModel(get_preset("vita_small_synth")).eval()
    official = _official_state(source)
    torch.save({"model": official}, tmp_path / "official.pth")
    out = tmp_path / "converted.pt"
    args = ["convert-checkpoint", "--src", str(tmp_path / "official.pth")]
    assert main([*args, "--preset", "vita_small_synth", "--out", str(out)]) == 0
    loaded = load_model(str(out))
    images = _clip(source)
    with torch.no_grad():
        assert torch.equal(source(images).video.pred_logits, loaded(images).video.pred_logits)

    vita_only = {k: v for k, v in official.items() if k.startswith("vita_module.")}
    torch.save(vita_only, tmp_path / "vita.pth")
    partial = ["convert-checkpoint", "--src", str(tmp_path / "vita.pth")]
    partial += ["--preset", "vita_small_synth", "--out", str(tmp_path / "p.pt")]
    assert main(partial) == 1  # the detector's weights are missing
    assert not (tmp_path / "p.pt").exists()
    assert main([*partial, "--part", "vita"]) == 0
    assert main([*partial[:2], str(tmp_path / "nope.pth"), *partial[3:]]) == 2
