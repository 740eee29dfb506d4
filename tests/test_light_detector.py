"""The small preset's cheaper parts: the FPN pixel decoder, attention at stride 4, and
dense mask matching and losses on the stride-4 grid."""

import dataclasses

import pytest
import torch

from vis_core.data.targets import ClipTargets, FrameTargets
from vis_core.losses.mask_losses import dense_mask_losses, downsample_targets
from vis_core.losses.matcher import FrameMatcher
from vis_core.losses.vita_matcher import ClipMatcher
from vis_core.modeling.backbone import ResNet
from vis_core.modeling.config import LossConfig
from vis_core.modeling.fpn_pixel_decoder import FPNPixelDecoder
from vis_core.modeling.frame_decoder import FramePrediction
from vis_core.modeling.frame_detector import FrameDetector, build_pixel_decoder
from vis_core.modeling.pixel_decoder import MSDeformAttnPixelDecoder
from vis_core.modeling.presets import vita_small_synth


def test_fpn_decoder_gives_every_map_at_its_stride_and_fuses_coarse_context():
    config = vita_small_synth()
    backbone = ResNet(config.backbone)
    decoder = FPNPixelDecoder(config.pixel_decoder, backbone.out_channels)
    images = torch.randn(2, 3, 96, 160)
    output = decoder(backbone(images))
    dim = config.pixel_decoder.conv_dim
    assert [tuple(m.shape) for m in output.multi_scale_features] == [
        (2, dim, 3, 5), (2, dim, 6, 10), (2, dim, 12, 20)
    ]  # fmt: skip
    assert output.clip_mask_features.shape == (2, dim, 24, 40)
    assert output.mask_features.shape == (2, config.pixel_decoder.mask_dim, 24, 40)
    # Top-down: the stride-4 map depends on the coarsest backbone level.
    features = backbone(images)
    changed = dataclasses.replace(features, res5=features.res5 + 1.0)
    assert not torch.allclose(decoder(changed).clip_mask_features, output.clip_mask_features)


def test_pixel_decoder_kind_is_chosen_by_config_and_unknown_kinds_fail():
    config = vita_small_synth().pixel_decoder
    channels = (32, 64, 96, 128)
    fpn = dataclasses.replace(config, kind="fpn")
    assert isinstance(build_pixel_decoder(fpn, channels), FPNPixelDecoder)
    deformable = dataclasses.replace(config, kind="msdeform")
    assert isinstance(build_pixel_decoder(deformable, channels), MSDeformAttnPixelDecoder)
    bad = dataclasses.replace(config, kind="unet")
    with pytest.raises(ValueError, match="unknown pixel decoder 'unet'"):
        build_pixel_decoder(bad, channels)


def test_detector_attends_the_maps_of_its_attention_strides():
    config = vita_small_synth()
    seen: list[tuple[int, ...]] = []
    detector = FrameDetector(config).eval()
    hook = detector.frame_decoder.register_forward_pre_hook(
        lambda _module, inputs: seen.append(tuple(m.shape[-1] for m in inputs[0]))
    )
    with torch.no_grad():
        detector(torch.randn(1, 3, 64, 128))
    hook.remove()
    expected = tuple(128 // s for s in config.frame_decoder.attention_strides)
    assert seen == [expected]
    bad = dataclasses.replace(
        config,
        frame_decoder=dataclasses.replace(config.frame_decoder, attention_strides=(64, 8, 4)),
    )
    with pytest.raises(ValueError, match="attention_strides"):
        FrameDetector(bad)


def test_area_downsampled_targets_are_each_cells_covered_share():
    masks = torch.zeros(1, 8, 8, dtype=torch.bool)
    masks[0, 0:2, 0:1] = True  # half of cell (0, 0)
    masks[0, 4:8, 4:8] = True  # all of cell (1, 1)
    small = downsample_targets(masks, (2, 2))
    torch.testing.assert_close(small, torch.tensor([[[2 / 16, 0.0], [0.0, 1.0]]]))


def _cell_centres(height: int, width: int) -> torch.Tensor:
    ys = (torch.arange(height) + 0.5) / height
    xs = (torch.arange(width) + 0.5) / width
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x.flatten(), grid_y.flatten()), dim=-1)  # [h*w, 2] (x, y)


def test_dense_frame_matching_equals_point_matching_at_every_cell_centre():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 4)
    masks = torch.randn(3, 5, 6, 7)
    targets = [
        FrameTargets(
            labels=torch.randint(3, (count,)),
            masks=torch.rand(count, 6, 7).round(),
            track_ids=torch.arange(count),
        )
        for count in (2, 0, 3)
    ]
    prediction = FramePrediction(logits, masks)
    points = _cell_centres(6, 7).expand(3, -1, -1)
    sampled = FrameMatcher(LossConfig())._cost(logits, masks, targets, points)
    dense = FrameMatcher(LossConfig(dense_masks=True))._cost(logits, masks, targets, None)
    torch.testing.assert_close(dense, sampled)
    matchings = FrameMatcher(LossConfig(dense_masks=True))(prediction, targets)
    assert [len(m) for m in matchings] == [2, 0, 3]


def test_dense_clip_matching_equals_point_matching_at_every_cell_centre():
    torch.manual_seed(1)
    class_logits = torch.randn(6, 4)
    mask_logits = torch.randn(6, 3, 5, 4)  # [cQ, T, h, w]
    targets = ClipTargets(
        labels=torch.tensor([0, 2]),
        masks=torch.rand(2, 3, 5, 4).round(),
        track_ids=torch.tensor([1, 2]),
    )
    sampled = ClipMatcher(LossConfig()).match_clip(
        class_logits, mask_logits, targets, _cell_centres(5, 4)
    )
    dense = ClipMatcher(LossConfig(dense_masks=True)).match_clip(class_logits, mask_logits, targets)
    assert dense.prediction_index.tolist() == sampled.prediction_index.tolist()
    assert dense.target_index.tolist() == sampled.target_index.tolist()


def test_dense_losses_average_every_cell_and_sum_masks():
    logits = torch.full((2, 1, 4, 4), -1.0)
    logits[0, 0, :2] = 2.0
    targets = torch.zeros(2, 1, 4, 4)
    targets[0, 0, :2] = 1.0
    targets[1, 0, 0, 0] = 0.25  # an area-resized cell partly covered
    losses = dense_mask_losses(logits, targets, num_masks=2.0)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    torch.testing.assert_close(losses.sigmoid_ce, bce.flatten(1).mean(1).sum() / 2.0)
    probability = logits.sigmoid().flatten(1)
    labels = targets.flatten(1)
    dice = 1 - (2 * (probability * labels).sum(1) + 1) / (probability.sum(1) + labels.sum(1) + 1)
    torch.testing.assert_close(losses.dice, dice.sum() / 2.0)
    with pytest.raises(ValueError, match="dense targets"):
        dense_mask_losses(logits, targets[:, :, :2], 1.0)
