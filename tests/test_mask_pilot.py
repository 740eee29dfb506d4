"""Mask-piloted training: pilot queries' attention masks, their isolation from the matching
queries (inference is unchanged by them), their fixed-assignment losses, and that they train."""

import dataclasses

import pytest
import torch

from vis_core.data.targets import ClipTargets
from vis_core.losses import VitaCriterion
from vis_core.modeling.config import (
    BackboneConfig,
    FrameDecoderConfig,
    ModelConfig,
    PixelDecoderConfig,
    VitaConfig,
)
from vis_core.modeling.frame_decoder import FrameDecoder
from vis_core.modeling.mask_pilot import MaskPilot
from vis_core.modeling.vita_model import VitaModel
from vis_core.training.batch import ClipBatch
from vis_core.training.optim import OptimConfig, build_optimizer
from vis_core.training.step import frame_pilot, train_step


def _tiny_config(**frame_decoder: object) -> ModelConfig:
    return ModelConfig(
        name="tiny",
        num_classes=3,
        backbone=BackboneConfig(
            block="basic", stage_blocks=(1, 1, 1, 1), stem_channels=8,
            out_channels=(8, 16, 24, 32), norm="group_norm", group_norm_groups=4,
        ),
        pixel_decoder=PixelDecoderConfig(kind="fpn", conv_dim=16, mask_dim=16, group_norm_groups=4),
        frame_decoder=FrameDecoderConfig(
            hidden_dim=16, heads=2, ffn_dim=32, layers=3, num_queries=4, vita_last_layers=2,
            **frame_decoder,
        ),
        vita=VitaConfig(
            hidden_dim=16, heads=2, ffn_dim=32, encoder_layers=1, decoder_layers=1,
            window_size=2, num_queries=4,
        ),
    )  # fmt: skip


def _pilot(frames: int = 2) -> MaskPilot:
    masks = torch.zeros(frames, 2, 32, 32, dtype=torch.bool)
    masks[:, 0, 4:9, 4:9] = True
    masks[0, 1, 20:30, 0:3] = True
    labels = [torch.tensor([1, 2]), torch.tensor([1])][:frames]
    return MaskPilot.from_frames(labels, [masks[0], masks[1, :1]][:frames], 3, label_noise=0.0)


def test_pilot_pads_frames_and_keeps_labels_without_noise():
    pilot = _pilot()
    assert pilot.labels.tolist() == [[1, 2], [1, 0]]
    assert pilot.valid.tolist() == [[True, True], [True, False]]
    assert not pilot.masks[1, 1].any()


def test_label_noise_replaces_the_expected_share():
    labels = [torch.zeros(1000, dtype=torch.int64)]
    masks = [torch.zeros(1000, 4, 4, dtype=torch.bool)]
    generator = torch.Generator().manual_seed(0)
    pilot = MaskPilot.from_frames(labels, masks, 5, label_noise=0.5, generator=generator)
    # Half are redrawn, a fifth of those land on class 0 again: 40% change.
    changed = (pilot.labels != 0).float().mean().item()
    assert 0.35 < changed < 0.45


def test_cross_attention_attends_every_cell_an_object_touches():
    pilot = _pilot()
    blocked = pilot.cross_attention_blocked((4, 4), heads=2)  # 32x32 -> 8x8 cells
    assert blocked.shape == (2 * 2, 2, 16)
    open_cells = (~blocked[0, 0]).nonzero().flatten().tolist()
    # Rows 4..8, columns 4..8 touch cells 0 and 1 on each axis.
    assert open_cells == [0, 1, 4, 5]
    assert blocked[2, 1].all()  # frame 1's padded slot: nothing (the decoder unblocks it)


def test_self_attention_hides_pilots_from_matching_queries():
    pilot = _pilot()
    blocked = pilot.self_attention_blocked(num_queries=3, heads=2)
    assert blocked.shape == (4, 5, 5)
    assert blocked[0, :3, 3:].all() and not blocked[0, :3, :3].any()
    assert not blocked[0, 3:, :].any()  # frame 0: pilots see all
    assert blocked[2, 3:, 4].all() and not blocked[2, 3:, 3].any()  # frame 1: padding hidden


def test_pilot_queries_leave_the_matching_queries_outputs_unchanged():
    torch.manual_seed(0)
    config = _tiny_config(mask_piloting=True)
    decoder = FrameDecoder(config.frame_decoder, 3, in_channels=16, mask_dim=16).eval()
    features = [torch.randn(2, 16, 2, 2), torch.randn(2, 16, 4, 4), torch.randn(2, 16, 8, 8)]
    mask_features = torch.randn(2, 16, 8, 8)
    plain = decoder(features, mask_features)
    piloted = decoder(features, mask_features, _pilot())
    assert not plain.pilot_predictions
    assert len(piloted.pilot_predictions) == config.frame_decoder.layers + 1
    assert piloted.pilot_predictions[-1].pred_masks.shape == (2, 2, 8, 8)
    torch.testing.assert_close(piloted.pred_logits, plain.pred_logits)
    torch.testing.assert_close(piloted.pred_masks, plain.pred_masks)
    torch.testing.assert_close(piloted.frame_queries, plain.frame_queries)
    for with_pilot, without in zip(piloted.aux_outputs, plain.aux_outputs, strict=True):
        torch.testing.assert_close(with_pilot.pred_masks, without.pred_masks)


def test_a_decoder_without_piloting_has_no_pilot_weights_and_refuses_a_pilot():
    decoder = FrameDecoder(_tiny_config().frame_decoder, 3, in_channels=16, mask_dim=16)
    assert not any("pilot" in name for name in decoder.state_dict())
    features = [torch.randn(2, 16, 2, 2), torch.randn(2, 16, 4, 4), torch.randn(2, 16, 8, 8)]
    with pytest.raises(ValueError, match="without mask piloting"):
        decoder(features, torch.randn(2, 16, 8, 8), _pilot())


def _clip_batch() -> ClipBatch:
    frames = torch.full((2, 64, 64, 3), 40, dtype=torch.uint8)
    masks = torch.zeros(2, 2, 64, 64, dtype=torch.bool)  # [N objects, T frames, H, W]
    masks[0, :, 8:30, 8:30] = True
    masks[1, 0, 36:60, 30:58] = True  # object 1 visible in frame 0 only
    for index in range(2):
        colour = torch.tensor([200, 60 + 100 * index, 30], dtype=torch.uint8)
        for t in range(2):
            frames[t][masks[index, t]] = colour
    target = ClipTargets(torch.tensor([0, 2]), masks, torch.tensor([1, 2]))
    return ClipBatch(frames=(frames,), targets=(target,))


def test_frame_pilot_follows_the_criterions_frame_targets():
    batch = _clip_batch()
    config = dataclasses.replace(
        _tiny_config(mask_piloting=True),
        frame_decoder=dataclasses.replace(
            _tiny_config().frame_decoder, mask_piloting=True, pilot_label_noise=0.0
        ),
    )
    pilot = frame_pilot(batch.targets, config)
    assert pilot.valid.tolist() == [[True, True], [True, False]]
    assert pilot.labels.tolist() == [[0, 2], [0, 0]]
    assert torch.equal(pilot.masks[1, 0], batch.targets[0].masks[0, 1])


@pytest.mark.parametrize("dense_masks", [False, True])
def test_mask_piloted_training_fits_a_clip_and_inference_ignores_the_pilots(dense_masks):
    torch.manual_seed(0)
    config = _tiny_config(mask_piloting=True)
    config = dataclasses.replace(
        config, loss=dataclasses.replace(config.loss, num_points=256, dense_masks=dense_masks)
    )
    model = VitaModel(config)
    criterion = VitaCriterion.for_model(config)
    optimizer = build_optimizer(
        model, OptimConfig(lr=3e-3, weight_decay=0.0, backbone_multiplier=1.0)
    )
    batch = _clip_batch()
    first = None
    for _ in range(60):
        result = train_step(model, criterion, optimizer, batch, 1.0, mask_piloting=True)
        first = first if first is not None else result.terms
    pilot_terms = [name for name in result.terms if name.startswith("loss_pilot_")]
    assert len(pilot_terms) == 3 * (config.frame_decoder.layers + 1)
    assert result.terms["loss_pilot_dice"] < 0.5 * first["loss_pilot_dice"]
    assert result.terms["loss_pilot_ce"] < 0.5 * first["loss_pilot_ce"]
    model.eval()
    images, _ = batch.model_inputs(model.detector.preprocess)
    with torch.no_grad():
        detections = model.detector(images.flatten(0, 1))
    assert not detections.pilot_predictions
    assert detections.pred_logits.shape[1] == config.frame_decoder.num_queries
