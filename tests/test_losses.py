"""Point sampling, mask losses, the frame and clip criteria, and `VitaCriterion` on a model."""

import dataclasses
import math

import pytest
import torch
from torch.nn import functional as F

from vis_core.data.targets import ClipTargets, FrameTargets
from vis_core.losses import Losses, Matching, VitaCriterion
from vis_core.losses.frame_criterion import FrameCriterion
from vis_core.losses.mask_losses import (
    dice_loss,
    pairwise_dice_cost,
    pairwise_sigmoid_ce_cost,
    point_sampled_mask_losses,
    sigmoid_ce_loss,
)
from vis_core.losses.point_sampling import point_sample, uncertain_point_coords_with_randomness
from vis_core.losses.vita_criterion import ClipCriterion
from vis_core.modeling.config import LossConfig
from vis_core.modeling.frame_decoder import FramePrediction
from vis_core.modeling.frame_detector import FrameDetections
from vis_core.modeling.presets import vita_small_synth
from vis_core.modeling.vita import VitaOutput
from vis_core.modeling.vita_model import VitaModel
from vis_core.training.step import frame_pilot

# Point sampling ---------------------------------------------------------------------------


def _bilinear(image: torch.Tensor, x: float, y: float) -> float:
    """Direct lookup with pixel centres at (i + 0.5) / size and zeros outside the map."""
    height, width = image.shape
    px, py = x * width - 0.5, y * height - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    value = 0.0
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        xi, yi = x0 + dx, y0 + dy
        weight = (1 - abs(px - xi)) * (1 - abs(py - yi))
        if 0 <= xi < width and 0 <= yi < height:
            value += weight * image[yi, xi].item()
    return value


def test_point_sample_equals_a_direct_bilinear_lookup():
    image = torch.arange(12.0).reshape(3, 4) ** 1.5
    points = torch.tensor([[0.375, 0.5], [0.5, 0.5], [0.3, 0.9], [0.01, 0.02], [0.99, 0.4]])
    sampled = point_sample(image[None, None], points[None])  # [1, 1, P]
    expected = [_bilinear(image, x, y) for x, y in points.tolist()]
    assert sampled.shape == (1, 1, 5)
    assert sampled[0, 0].tolist() == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert sampled[0, 0, 0].item() == pytest.approx(image[1, 1].item())  # a pixel centre


def test_point_sample_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[R, P, 2\]"):
        point_sample(torch.zeros(1, 1, 4, 4), torch.zeros(1, 5, 3))


def test_uncertain_points_are_the_most_uncertain_candidates_plus_uniform_ones():
    logits = 6 * torch.randn(2, 1, 6, 8, generator=torch.Generator().manual_seed(0))
    logits = F.interpolate(logits, size=(24, 32), mode="bilinear")[:, 0]  # smooth maps
    coords = uncertain_point_coords_with_randomness(
        logits, 40, 3.0, 0.75, generator=torch.Generator().manual_seed(1)
    )
    assert coords.shape == (2, 40, 2)
    assert bool(((coords >= 0) & (coords <= 1)).all())
    # The same generator replays the 120 candidates: the first 30 points are the 30 with the
    # smallest |logit|, the last 10 are fresh uniform points.
    candidates = torch.rand(2, 120, 2, generator=torch.Generator().manual_seed(1))
    candidate_logits = point_sample(logits[:, None], candidates)[:, 0]
    for index in range(2):
        expected = candidates[index][candidate_logits[index].abs().argsort()[:30]]
        assert sorted(map(tuple, coords[index, :30].tolist())) == sorted(
            map(tuple, expected.tolist())
        )
    chosen = point_sample(logits[:, None], coords)[:, 0].abs()
    assert chosen[:, :30].mean() < 0.5 * candidate_logits.abs().mean()


# Mask losses ------------------------------------------------------------------------------


def test_sigmoid_ce_and_dice_equal_hand_computed_values():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 3.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    sig = [[0.5, 1 / (1 + math.exp(-2))], [1 / (1 + math.exp(1)), 1 / (1 + math.exp(-3))]]
    bce = [
        (-math.log(sig[0][0]) - math.log(1 - sig[0][1])) / 2,
        (-math.log(1 - sig[1][0]) - math.log(sig[1][1])) / 2,
    ]
    assert sigmoid_ce_loss(logits, labels, 2.0).item() == pytest.approx(sum(bce) / 2, rel=1e-6)
    dice = [
        1 - (2 * sig[0][0] + 1) / (sig[0][0] + sig[0][1] + 1 + 1),
        1 - (2 * sig[1][1] + 1) / (sig[1][0] + sig[1][1] + 1 + 1),
    ]
    assert dice_loss(logits, labels, 4.0).item() == pytest.approx(sum(dice) / 4, rel=1e-6)


def test_pairwise_costs_equal_the_losses_of_each_pair():
    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(2, 4, 30, generator=generator)  # batch of 2, Q = 4
    labels = torch.rand(2, 3, 30, generator=generator)  # M = 3, soft labels allowed
    bce = pairwise_sigmoid_ce_cost(logits, labels)
    dice = pairwise_dice_cost(logits, labels)
    assert bce.shape == dice.shape == (2, 4, 3)
    for b in range(2):
        for q in range(4):
            for m in range(3):
                pair = (logits[b, q : q + 1], labels[b, m : m + 1], 1.0)
                assert bce[b, q, m].item() == pytest.approx(sigmoid_ce_loss(*pair).item(), 1e-5)
                assert dice[b, q, m].item() == pytest.approx(dice_loss(*pair).item(), 1e-5)


def test_clip_mask_losses_score_a_group_of_frames_as_one_row():
    config = LossConfig(num_points=16, importance_sample_ratio=0.0)
    target = torch.zeros(1, 2, 8, 8, dtype=torch.bool)
    target[0, 0] = True  # present in frame 0 only
    right = 12.0 * (2 * target.float() - 1)
    torch.manual_seed(0)
    good = point_sampled_mask_losses(right, target, 1.0, config)
    wrong = point_sampled_mask_losses(right.flip(1), target, 1.0, config)
    # The whole group is one mask: dice compares frame 0 and frame 1 together.
    assert good.dice.item() < 0.05 and good.sigmoid_ce.item() < 0.5
    assert wrong.dice.item() > 0.9 and wrong.sigmoid_ce.item() > 5.0
    empty = point_sampled_mask_losses(right[:0], target[:0], 1.0, config)
    assert empty.dice.item() == 0.0


# Frame criterion --------------------------------------------------------------------------

CLASSES = 4


def _perfect_frames(height=128, width=192, frames=2, queries=5, shift=0):
    """Two rectangles per frame; queries 3 and 1 predict them exactly (logits +-10)."""
    logits = torch.full((frames, queries, CLASSES + 1), -10.0)
    logits[..., -1] = 10.0
    masks = torch.full((frames, queries, height, width), -10.0)
    targets = []
    for frame in range(frames):
        boxes = torch.zeros(2, height, width, dtype=torch.bool)
        boxes[0, height // 8 : height // 2, width // 8 : width // 2] = True
        boxes[1, height // 2 : 7 * height // 8, width // 3 : 7 * width // 8] = True
        targets.append(FrameTargets(torch.tensor([1, 2]), boxes, torch.tensor([4, 9])))
        for instance, query in enumerate((3, 1)):
            logits[frame, query] = -10.0
            logits[frame, query, instance + 1] = 10.0
            masks[frame, query] = 10.0 * (2 * boxes[instance].float() - 1)
    masks = masks.roll(shift, dims=-1)
    # Auxiliary predictions: one from the "learnable queries", then the final one with
    # queries 0 and 3 swapped, so each prediction's matching is told apart.
    swap = torch.tensor([3, 1, 2, 0, 4])
    detections = FrameDetections(
        pred_logits=logits,
        pred_masks=masks,
        aux_outputs=(
            FramePrediction(logits[:, [4, 2, 0, 1, 3]], -masks),
            FramePrediction(logits[:, swap], masks[:, swap]),
        ),
        frame_queries=torch.zeros(1, frames, queries, 8),
        clip_mask_features=torch.zeros(frames, 8, height // 4, width // 4),
    )
    return detections, targets


def test_a_perfect_frame_prediction_has_near_zero_losses():
    criterion = FrameCriterion(LossConfig(num_points=256), CLASSES, vita_last_layers=2)
    torch.manual_seed(0)
    detections, targets = _perfect_frames()
    perfect = criterion(detections, targets)
    names = ("loss_ce", "loss_mask", "loss_dice")
    assert list(perfect.terms) == [*names, *(f"{n}_{i}" for i in (0, 1) for n in names)]
    assert perfect.terms["loss_mask_1"].item() < 0.1 < perfect.terms["loss_mask_0"].item()
    # Only the points within a pixel of a box edge (sampled often: they are the uncertain
    # ones) have fractional labels, so BCE and dice are small but not exactly 0.
    assert perfect.terms["loss_ce"].item() < 1e-3
    assert perfect.terms["loss_mask"].item() < 0.1
    assert perfect.terms["loss_dice"].item() < 0.1
    shifted = criterion(*_perfect_frames(shift=24))
    assert shifted.terms["loss_mask"].item() > 10 * perfect.terms["loss_mask"].item()
    assert shifted.terms["loss_dice"].item() > 3 * perfect.terms["loss_dice"].item()
    # The last two predictions feed VITA: their matchings, oldest first, pair each target
    # with the query that predicts it.
    swapped, final = perfect.vita_matchings
    assert all(m.prediction_index.tolist() == [0, 1] for m in swapped)
    assert all(m.target_index.tolist() == [0, 1] for m in swapped)
    assert all(m.prediction_index.tolist() == [1, 3] for m in final)
    assert all(m.target_index.tolist() == [1, 0] for m in final)


def test_frame_criterion_can_match_without_losses():
    criterion = FrameCriterion(LossConfig(num_points=32), CLASSES, vita_last_layers=1)
    output = criterion(*_perfect_frames(32, 48), compute_losses=False)
    assert output.terms == {}
    assert len(output.vita_matchings) == 1 and len(output.vita_matchings[0]) == 2
    with pytest.raises(ValueError, match="decoder layers"):
        FrameCriterion(LossConfig(), CLASSES, vita_last_layers=3)(*_perfect_frames(32, 48))


# Similarity loss --------------------------------------------------------------------------


def _sim_setup(agree: bool, layers: int = 2, frames: int = 2, seed: int = 0):
    """One clip with 2 instances (tracks 5, 6) present in every frame; frame query 0 / 1 and
    video query 0 / 1 are matched to them (masks and classes made exact for the matcher)."""
    generator = torch.Generator().manual_seed(seed)
    masks = torch.zeros(2, frames, 16, 24, dtype=torch.bool)
    masks[0, :, 2:8, 2:10] = True
    masks[1, :, 9:15, 12:22] = True
    targets = ClipTargets(torch.tensor([0, 2]), masks, torch.tensor([5, 6]))
    queries, channels = 3, 3
    features = torch.zeros(1, frames, channels, 16, 24)
    features[0, :, :2] = masks.float().transpose(0, 1)
    features[0, :, 2] = 1.0
    embed = torch.tensor([[20.0, 0.0, -10.0], [0.0, 20.0, -10.0], [0.0, 0.0, -10.0]])
    logits = torch.full((queries, CLASSES + 1), -5.0)
    logits[:, -1] = 5.0
    logits[0, :] = -5.0
    logits[0, 0] = 5.0
    logits[1, :] = -5.0
    logits[1, 2] = 5.0
    first, second = torch.tensor([3.0, 0, 0, 0]), torch.tensor([-3.0, 0, 0, 0])
    fq = 0.3 * torch.randn(layers, 1, frames, 4, 4, generator=generator)
    fq[:, :, :, 0], fq[:, :, :, 1] = first, second
    cq = 0.3 * torch.randn(layers, 1, queries, 4, generator=generator)
    cq[:, :, 0], cq[:, :, 1] = (first, second) if agree else (second, first)
    video = VitaOutput(
        pred_logits=logits.expand(layers, 1, -1, -1),
        pred_mask_embed=embed.expand(layers, 1, -1, -1),
        pred_cq_embed=cq,
        pred_fq_embed=fq,
    )
    frame_targets = [targets.frame(t) for t in range(frames)]
    frame_matching = Matching(torch.tensor([0, 1]), torch.tensor([0, 1]))
    frame_matchings = [[frame_matching] * frames for _ in range(layers)]
    return video, features, targets, frame_targets, frame_matchings


def test_similarity_loss_is_the_masked_bce_of_raw_dot_products():
    criterion = ClipCriterion(LossConfig(num_points=32), CLASSES)
    video, features, targets, frame_targets, frame_matchings = _sim_setup(agree=True)
    terms = criterion(video, features, [targets], frame_targets, frame_matchings)
    # Per layer entry l: frame rows (t, q) for q in 0, 1 with ids 5, 6, then the clip rows.
    rows, ids, entries = [], [], []
    for layer in range(2):
        for frame in range(2):
            rows += [
                video.pred_fq_embed[layer, 0, frame, 0],
                video.pred_fq_embed[layer, 0, frame, 1],
            ]
            ids += [5, 6]
            entries += [layer, layer]
    for layer in range(2):
        rows += [video.pred_cq_embed[layer, 0, 0], video.pred_cq_embed[layer, 0, 1]]
        ids += [5, 6]
        entries += [layer, layer]
    expected = _reference_similarity_loss(rows, ids, entries)
    assert terms["loss_vita_sim"].item() == pytest.approx(expected, rel=1e-5)


def _reference_similarity_loss(rows: list, ids: list, entries: list) -> float:
    """BCE on raw dot products of every pair from the same (layer, clip) entry."""
    embedding = torch.stack(rows)
    ids, entries = torch.tensor(ids), torch.tensor(entries)
    same_entry = (entries[:, None] == entries[None]).float()
    target = ((ids[:, None] == ids[None]) & (same_entry > 0)).float()
    loss = F.binary_cross_entropy_with_logits(embedding @ embedding.T, target, reduction="none")
    return ((loss * same_entry).sum() / same_entry.sum()).item()


def test_similarity_loss_is_lower_when_frame_and_clip_embeddings_agree():
    criterion = ClipCriterion(LossConfig(num_points=32), CLASSES)
    video, features, targets, frame_targets, frame_matchings = _sim_setup(agree=True)
    agree = criterion(video, features, [targets], frame_targets, frame_matchings)
    video, features, targets, frame_targets, frame_matchings = _sim_setup(agree=False)
    disagree = criterion(video, features, [targets], frame_targets, frame_matchings)
    assert agree["loss_vita_sim"].item() < 0.05
    assert disagree["loss_vita_sim"].item() > 1.0


def test_similarity_loss_skips_frame_queries_removed_by_token_pruning():
    criterion = ClipCriterion(LossConfig(num_points=32), CLASSES)
    video, features, targets, frame_targets, frame_matchings = _sim_setup(agree=True)
    # Keep frame queries 1 and 3 of 4: matched query 0 has no embedding, query 1 is slot 0.
    kept = torch.tensor([1, 3]).expand(2, 1, 2, 2)
    pruned = dataclasses.replace(
        video, pred_fq_embed=video.pred_fq_embed[:, :, :, [1, 3]], kept_frame_query_index=kept
    )
    terms = criterion(pruned, features, [targets], frame_targets, frame_matchings)
    rows, ids, entries = [], [], []
    for layer in range(2):
        rows += [video.pred_fq_embed[layer, 0, frame, 1] for frame in range(2)]
        ids += [6, 6]
        entries += [layer, layer]
    for layer in range(2):
        rows += [video.pred_cq_embed[layer, 0, 0], video.pred_cq_embed[layer, 0, 1]]
        ids += [5, 6]
        entries += [layer, layer]
    expected = _reference_similarity_loss(rows, ids, entries)
    assert terms["loss_vita_sim"].item() == pytest.approx(expected, rel=1e-5)


# VitaCriterion on the small model ---------------------------------------------------------


def _rectangle_clip(frames, height, width, absent_frames, generator) -> ClipTargets:
    """Two random rectangles; instance 1 is absent from `absent_frames`."""
    masks = torch.zeros(2, frames, height, width, dtype=torch.bool)
    for instance in range(2):
        y0 = int(torch.randint(0, height // 2, (1,), generator=generator))
        x0 = int(torch.randint(0, width // 2, (1,), generator=generator))
        for frame in range(frames):
            if instance == 1 and frame in absent_frames:
                continue
            masks[instance, frame, y0 + frame : y0 + frame + 20, x0 : x0 + 30] = True
    labels = torch.randint(0, 8, (2,), generator=generator)
    return ClipTargets(labels, masks, track_ids=torch.tensor([3, 11]))


def _empty_clip(frames, height, width) -> ClipTargets:
    return ClipTargets(
        labels=torch.zeros(0, dtype=torch.int64),
        masks=torch.zeros(0, frames, height, width, dtype=torch.bool),
        track_ids=torch.zeros(0, dtype=torch.int64),
    )


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    config = dataclasses.replace(vita_small_synth(), loss=LossConfig(num_points=64))
    return VitaModel(config).train()


def _images(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, 3, 64, 96, generator=generator)  # B=2 clips of T=3 frames


def _targets(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [_rectangle_clip(3, 64, 96, {1}, generator), _empty_clip(3, 64, 96)]


def test_criterion_on_the_small_model_is_finite_weighted_and_reaches_every_parameter(
    small_model,
):
    small_model.zero_grad(set_to_none=True)
    criterion = VitaCriterion.for_model(small_model.config)
    # The preset trains with pilot queries: they are the only path to their embeddings.
    assert small_model.config.frame_decoder.mask_piloting
    pilot = frame_pilot(tuple(_targets()), small_model.config)
    losses = criterion(small_model(_images(), pilot=pilot), _targets())
    frame_layers = small_model.config.frame_decoder.layers  # aux predictions 0..layers-1
    vita_aux = small_model.config.vita.decoder_layers - 1
    expected = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
    expected |= {"loss_pilot_ce": 2.0, "loss_pilot_mask": 5.0, "loss_pilot_dice": 5.0}
    expected |= {f"{k}_{i}": w for k, w in list(expected.items()) for i in range(frame_layers)}
    vita = {"loss_vita_ce": 2.0, "loss_vita_mask": 5.0, "loss_vita_dice": 5.0}
    expected |= vita | {f"{k}_{i}": w for k, w in vita.items() for i in range(vita_aux)}
    expected["loss_vita_sim"] = 0.5
    assert dict(losses.weights) == expected
    no_object = [1.0] * small_model.config.num_classes + [0.1]
    buffers = dict(criterion.named_buffers())
    for name in ("frame.class_loss.empty_weight", "clip.class_loss.empty_weight"):
        assert buffers[name].tolist() == pytest.approx(no_object)
    assert all(math.isfinite(value) for value in losses.detached().values())
    total = losses.total()
    weighted = sum(expected[name] * value for name, value in losses.detached().items())
    assert total.item() == pytest.approx(weighted, rel=1e-5)
    total.backward()
    trained = [p for p in small_model.parameters() if p.requires_grad]
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in trained)
    # Deformable attention's offset and weight projections start at zero, so a few inputs
    # (the level embedding) get an exactly zero gradient at initialisation; nearly all do not.
    nonzero = sum(int(p.grad.abs().sum() > 0) for p in trained)
    assert nonzero >= len(trained) - 1


def test_criterion_runs_on_a_model_with_token_pruning():
    torch.manual_seed(0)
    config = vita_small_synth()
    config = dataclasses.replace(
        config,
        vita=dataclasses.replace(config.vita, token_keep_ratio=0.5),
        loss=LossConfig(num_points=32),
    )
    model = VitaModel(config).train()
    losses = VitaCriterion.for_model(config)(model(_images()), _targets())
    assert math.isfinite(losses.total().item()) and losses.terms["loss_vita_sim"].item() > 0


def test_frozen_detector_mode_keeps_only_vita_terms(small_model):
    criterion = VitaCriterion.for_model(small_model.config, frozen_detector=True)
    losses = criterion(small_model(_images()), _targets())
    assert all(name.startswith("loss_vita_") for name in losses.terms)
    assert "loss_vita_sim" in losses.terms and "loss_vita_ce_1" in losses.terms
    assert math.isfinite(losses.total().item())


def test_instances_absent_from_the_whole_clip_are_not_targets(small_model):
    criterion = VitaCriterion.for_model(small_model.config)
    with torch.no_grad():
        prediction = small_model(_images())
    targets = _targets()
    ghost = ClipTargets(
        labels=torch.cat([targets[0].labels, torch.tensor([5])]),
        masks=torch.cat([targets[0].masks, torch.zeros(1, 3, 64, 96, dtype=torch.bool)]),
        track_ids=torch.cat([targets[0].track_ids, torch.tensor([99])]),
    )
    torch.manual_seed(1)
    plain = criterion(prediction, targets).detached()
    torch.manual_seed(1)
    with_ghost = criterion(prediction, [ghost, targets[1]]).detached()
    assert with_ghost == plain


def test_a_batch_without_instances_gives_finite_losses(small_model):
    small_model.zero_grad(set_to_none=True)
    criterion = VitaCriterion.for_model(small_model.config)
    losses = criterion(small_model(_images()), [_empty_clip(3, 64, 96)] * 2)
    assert losses.terms["loss_mask"].item() == 0.0 and losses.terms["loss_vita_sim"].item() == 0.0
    assert losses.terms["loss_vita_ce"].item() > 0.0  # every query should say "no object"
    losses.total().backward()
    assert small_model.vita.mask_embed.layers[0].weight.grad is not None
    # DDP needs a gradient (zero) on every parameter the forward used, both sim heads too.
    assert small_model.vita.sim_embed_frame.weight.grad is not None
    assert small_model.vita.sim_embed_clip.weight.grad is not None


def test_criterion_rejects_an_eval_mode_prediction_and_mismatched_targets(small_model):
    criterion = VitaCriterion.for_model(small_model.config)
    small_model.eval()
    try:
        with torch.no_grad():
            prediction = small_model(_images())
    finally:
        small_model.train()
    with pytest.raises(ValueError, match="training mode"):
        criterion(prediction, _targets())
    with torch.no_grad():
        prediction = small_model(_images())
    with pytest.raises(ValueError, match="clip targets"):
        criterion(prediction, _targets()[:1])
    with pytest.raises(ValueError, match="aspect"):
        criterion(prediction, [_empty_clip(3, 64, 64)] * 2)


def test_losses_total_and_logging():
    terms = {"loss_a": torch.tensor(2.0, requires_grad=True), "loss_b": torch.tensor(3.0)}
    losses = Losses(terms=terms, weights={"loss_a": 0.5, "loss_b": 2.0})
    assert losses.total().item() == pytest.approx(7.0)
    assert losses.detached() == {"loss_a": 2.0, "loss_b": 3.0}
    with pytest.raises(TypeError):
        losses.weights["loss_a"] = 1.0  # read-only
    with pytest.raises(ValueError, match="differ"):
        Losses(terms=terms, weights={"loss_a": 1.0})
