"""Hungarian matchers: costs, optimality and invariances (frame-level and clip-level)."""

import itertools

import pytest
import torch

from vis_core.data.targets import ClipTargets, FrameTargets
from vis_core.losses import matcher as matcher_module
from vis_core.losses.mask_losses import dice_loss, sigmoid_ce_loss
from vis_core.losses.matcher import FrameMatcher, Matching, matching_cost
from vis_core.losses.point_sampling import point_sample
from vis_core.losses.vita_matcher import ClipMatcher
from vis_core.modeling.config import LossConfig
from vis_core.modeling.frame_decoder import FramePrediction

CLASSES = 5
CONFIG = LossConfig(num_points=64)


def _frame_targets(count: int, generator: torch.Generator, size=(16, 24)) -> FrameTargets:
    return FrameTargets(
        labels=torch.randint(0, CLASSES, (count,), generator=generator),
        masks=torch.rand(count, *size, generator=generator) > 0.6,
        track_ids=torch.arange(count),
    )


def _random_frames(frames=4, queries=6, counts=(3, 0, 5, 1), seed=0):
    generator = torch.Generator().manual_seed(seed)
    prediction = FramePrediction(
        pred_logits=torch.randn(frames, queries, CLASSES + 1, generator=generator),
        pred_masks=4 * torch.randn(frames, queries, 8, 12, generator=generator),
    )
    targets = [_frame_targets(count, generator) for count in counts]
    points = torch.rand(frames, CONFIG.num_points, 2, generator=generator)
    return prediction, targets, points


def _pairs(matching: Matching) -> set[tuple[int, int]]:
    return set(zip(matching.prediction_index.tolist(), matching.target_index.tolist(), strict=True))


def test_cost_is_the_weighted_sum_of_per_pair_losses():
    generator = torch.Generator().manual_seed(1)
    probability = torch.randn(3, CLASSES + 1, generator=generator).softmax(-1)
    point_logits = torch.randn(3, 20, generator=generator)
    labels = torch.tensor([4, 0])
    point_labels = (torch.rand(2, 20, generator=generator) > 0.5).float()
    cost = matching_cost(probability, point_logits, labels, point_labels, CONFIG)
    for q in range(3):
        for m in range(2):
            expected = (
                -2.0 * probability[q, labels[m]]
                + 5.0 * sigmoid_ce_loss(point_logits[q : q + 1], point_labels[m : m + 1], 1.0)
                + 5.0 * dice_loss(point_logits[q : q + 1], point_labels[m : m + 1], 1.0)
            )
            assert cost[q, m].item() == pytest.approx(expected.item(), rel=1e-5)


def test_frame_matching_is_the_minimum_cost_assignment():
    prediction, targets, points = _random_frames(frames=1, queries=5, counts=(3,))
    (matching,) = FrameMatcher(CONFIG)(prediction, targets, point_coords=points)
    sampled_targets = point_sample(targets[0].masks[:, None].float(), points.expand(3, -1, -1))
    cost = matching_cost(
        prediction.pred_logits[0].softmax(-1),
        point_sample(prediction.pred_masks, points)[0],
        targets[0].labels,
        sampled_targets[:, 0],
        CONFIG,
    )
    best = min(
        sum(cost[q, m].item() for m, q in enumerate(rows))
        for rows in itertools.permutations(range(5), 3)
    )
    found = sum(cost[q, m].item() for q, m in _pairs(matching))
    assert len(matching) == 3
    assert found == pytest.approx(best, rel=1e-6)
    assert matching.prediction_index.tolist() == sorted(matching.prediction_index.tolist())


def test_batched_frame_matching_equals_per_frame_matching(monkeypatch):
    prediction, targets, points = _random_frames()
    matcher = FrameMatcher(CONFIG)
    batched = matcher(prediction, targets, point_coords=points)
    for frame in range(4):
        single = FramePrediction(
            prediction.pred_logits[frame : frame + 1], prediction.pred_masks[frame : frame + 1]
        )
        (alone,) = matcher(
            single, targets[frame : frame + 1], point_coords=points[frame : frame + 1]
        )
        assert _pairs(alone) == _pairs(batched[frame])
    # Chunked over frames (a tiny memory bound) gives the same result.
    monkeypatch.setattr(matcher_module, "MAX_SAMPLED_VALUES", 1)
    chunked = matcher(prediction, targets, point_coords=points)
    assert [_pairs(m) for m in chunked] == [_pairs(m) for m in batched]


def test_permuting_predictions_permutes_the_frame_assignment():
    prediction, targets, points = _random_frames()
    matcher = FrameMatcher(CONFIG)
    original = matcher(prediction, targets, point_coords=points)
    order = torch.randperm(6, generator=torch.Generator().manual_seed(3))
    permuted = FramePrediction(prediction.pred_logits[:, order], prediction.pred_masks[:, order])
    for before, after in zip(
        original, matcher(permuted, targets, point_coords=points), strict=True
    ):
        assert {(order[q].item(), m) for q, m in _pairs(after)} == _pairs(before)


def test_permuting_targets_permutes_the_frame_assignment():
    prediction, targets, points = _random_frames()
    matcher = FrameMatcher(CONFIG)
    original = matcher(prediction, targets, point_coords=points)
    generator = torch.Generator().manual_seed(4)
    orders = [torch.randperm(len(t.labels), generator=generator) for t in targets]
    permuted = [
        FrameTargets(t.labels[o], t.masks[o], t.track_ids[o])
        for t, o in zip(targets, orders, strict=True)
    ]
    after = matcher(prediction, permuted, point_coords=points)
    for frame, order in enumerate(orders):
        assert {(q, order[m].item()) for q, m in _pairs(after[frame])} == _pairs(original[frame])


def test_frames_without_targets_get_empty_matchings():
    prediction, targets, points = _random_frames(counts=(0, 0, 2, 0))
    matchings = FrameMatcher(CONFIG)(prediction, targets, point_coords=points)
    assert [len(m) for m in matchings] == [0, 0, 2, 0]
    prediction, targets, _ = _random_frames(counts=(0, 0, 0, 0))
    matchings = FrameMatcher(CONFIG)(prediction, targets)  # random points of its own
    assert all(len(m) == 0 and m.target_index.dtype == torch.int64 for m in matchings)


def _rectangles(count: int, generator: torch.Generator, size=(16, 24)) -> torch.Tensor:
    """`[count, H, W]` bool: one random axis-aligned rectangle each."""
    height, width = size
    masks = torch.zeros(count, height, width, dtype=torch.bool)
    for mask in masks:
        y0, x0 = (torch.randint(0, n // 2, (1,), generator=generator).item() for n in size)
        y1 = y0 + 3 + torch.randint(0, height // 2 - 2, (1,), generator=generator).item()
        x1 = x0 + 3 + torch.randint(0, width // 2 - 2, (1,), generator=generator).item()
        mask[y0:y1, x0:x1] = True
    return masks


def test_a_perfect_frame_prediction_is_matched_to_its_own_target():
    generator = torch.Generator().manual_seed(5)
    masks = _rectangles(3, generator)
    target = FrameTargets(torch.tensor([1, 1, 3]), masks, torch.arange(3))
    queries = torch.tensor([4, 0, 2])  # query of each target
    logits = torch.randn(1, 6, CLASSES + 1, generator=generator)
    masks = torch.randn(1, 6, 16, 24, generator=generator)
    logits[0, queries, target.labels] = 20.0
    masks[0, queries] = 20.0 * (2.0 * target.masks.float() - 1.0)
    (matching,) = FrameMatcher(CONFIG)(FramePrediction(logits, masks), [target])
    assert _pairs(matching) == {(q, m) for m, q in enumerate(queries.tolist())}


def test_frame_matcher_rejects_mismatched_inputs_and_diverged_predictions():
    prediction, targets, _ = _random_frames()
    with pytest.raises(ValueError, match="disagree"):
        FrameMatcher(CONFIG)(prediction, targets[:3])
    prediction.pred_logits[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        FrameMatcher(CONFIG)(prediction, targets)


# Clip-level matcher ---------------------------------------------------------------------


def _clip_targets(count: int, frames: int, generator: torch.Generator) -> ClipTargets:
    return ClipTargets(
        labels=torch.randint(0, CLASSES, (count,), generator=generator),
        masks=torch.rand(count, frames, 16, 24, generator=generator) > 0.6,
        track_ids=torch.arange(count) + 10,
    )


def test_clip_matching_is_the_minimum_cost_assignment_over_all_frames():
    generator = torch.Generator().manual_seed(6)
    targets = _clip_targets(3, 2, generator)
    logits = torch.randn(5, CLASSES + 1, generator=generator)
    masks = 4 * torch.randn(5, 2, 8, 12, generator=generator)
    points = torch.rand(CONFIG.num_points, 2, generator=generator)
    matching = ClipMatcher(CONFIG).match_clip(logits, masks, targets, point_coords=points)
    # [N, T, P] flattened to [N, T*P]: one BCE mean and one dice over both frames.
    pred_points = point_sample(masks, points.expand(5, -1, -1)).flatten(1)
    target_points = point_sample(targets.masks.float(), points.expand(3, -1, -1)).flatten(1)
    cost = matching_cost(logits.softmax(-1), pred_points, targets.labels, target_points, CONFIG)
    best = min(
        sum(cost[q, m].item() for m, q in enumerate(rows))
        for rows in itertools.permutations(range(5), 3)
    )
    assert sum(cost[q, m].item() for q, m in _pairs(matching)) == pytest.approx(best, rel=1e-6)


def test_permuting_clip_predictions_and_targets_permutes_the_assignment():
    generator = torch.Generator().manual_seed(7)
    targets = _clip_targets(4, 3, generator)
    logits = torch.randn(6, CLASSES + 1, generator=generator)
    masks = 4 * torch.randn(6, 3, 8, 12, generator=generator)
    points = torch.rand(CONFIG.num_points, 2, generator=generator)
    matcher = ClipMatcher(CONFIG)
    original = _pairs(matcher.match_clip(logits, masks, targets, point_coords=points))
    queries = torch.randperm(6, generator=generator)
    instances = torch.randperm(4, generator=generator)
    permuted_targets = ClipTargets(
        targets.labels[instances], targets.masks[instances], targets.track_ids[instances]
    )
    after = matcher.match_clip(logits[queries], masks[queries], permuted_targets, points)
    assert {(queries[q].item(), instances[m].item()) for q, m in _pairs(after)} == original


def _perfect_clip_prediction(targets: ClipTargets, queries: int, order: torch.Tensor):
    """Video query `order[m]` predicts instance m exactly (mask logits +-10 from features)."""
    count, frames = targets.masks.shape[:2]
    channels = count + 1
    features = torch.zeros(frames, channels, 16, 24)
    features[:, :count] = targets.masks.float().transpose(0, 1)
    features[:, count] = 1.0  # a constant channel for the bias
    embed = torch.zeros(queries, channels)
    embed[:, count] = -10.0
    embed[order, torch.arange(count)] = 20.0
    logits = torch.zeros(queries, CLASSES + 1)
    logits[:, -1] = 5.0
    logits[order, targets.labels] = 20.0
    return logits, embed, features


def test_a_perfect_clip_prediction_is_matched_for_every_layer_and_clip():
    generator = torch.Generator().manual_seed(8)
    targets = [_clip_targets(3, 2, generator), _clip_targets(0, 2, generator)]
    order = torch.tensor([5, 1, 3])
    logits, embed, features = _perfect_clip_prediction(targets[0], 7, order)
    layers = 2
    matchings = ClipMatcher(CONFIG)(
        logits.expand(layers, 2, -1, -1),
        embed.expand(layers, 2, -1, -1),
        features.expand(2, -1, -1, -1, -1),
        targets,
    )
    assert len(matchings) == layers * 2  # entry l * B + b
    expected = {(q, m) for m, q in enumerate(order.tolist())}
    assert _pairs(matchings[0]) == expected and _pairs(matchings[2]) == expected
    assert len(matchings[1]) == 0 and len(matchings[3]) == 0  # the clip without instances


def test_clip_matching_uses_every_frame():
    # Two queries agree with the target in frame 0; only one also agrees in frame 1.
    masks = torch.zeros(1, 2, 16, 24, dtype=torch.bool)
    masks[0, 0, 2:10, 2:10] = True
    masks[0, 1, 6:14, 12:20] = True
    targets = ClipTargets(torch.tensor([1]), masks, torch.tensor([3]))
    good = 10.0 * (2.0 * masks[0].float() - 1.0)
    stale = good.clone()
    stale[1] = good[0]  # right in frame 0, wrong in frame 1
    logits = torch.zeros(2, CLASSES + 1)
    matching = ClipMatcher(CONFIG).match_clip(logits, torch.stack([stale, good]), targets)
    assert _pairs(matching) == {(1, 0)}
