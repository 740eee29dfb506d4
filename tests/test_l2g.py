"""The Local2Global head: its place in the model and model file, its pieces (box sine
embedding, local-token ranking, first-frame boxes), the clip loss's matching rule and
reduced supervision, and a training step on a frozen detector."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vis_core.data.targets import ClipTargets
from vis_core.losses.l2g_criterion import (
    L2gCriterion,
    assign_queries,
    sigmoid_focal_loss,
    supervised_frames,
    token_targets,
)
from vis_core.losses.matcher import FrameMatcher
from vis_core.methods import get_method
from vis_core.modeling.config import LossConfig, config_from_dict, config_to_dict
from vis_core.modeling.frame_decoder import FramePrediction
from vis_core.modeling.head_config import L2gConfig
from vis_core.modeling.l2g import L2gOutput, rank_tokens, token_boxes
from vis_core.modeling.layers import PositionEmbeddingSine, box_sine_embedding
from vis_core.modeling.model_file import load_model, save_model
from vis_core.modeling.presets import vita_small_synth
from vis_core.modeling.vita_model import VitaModel
from vis_core.training.batch import ClipBatch
from vis_core.training.optim import OptimConfig, build_optimizer
from vis_core.training.step import train_step
from workflows.train_worker import freeze_detector

SIZE = 64
HIDDEN, QUERIES, CLASSES, LAYERS = 64, 16, 8, 6  # vita_small_synth's frame decoder


def head_config(l2g: L2gConfig | None = None) -> object:
    config = vita_small_synth()
    return dataclasses.replace(
        config,
        input=dataclasses.replace(config.input, min_size_test=SIZE),
        loss=LossConfig(dense_masks=True),  # deterministic matching, fast at this size
        l2g=l2g or L2gConfig(),
    )


def two_object_clip(frames: int = 2, seed: int = 0) -> object:
    """A clip of two boxes on noise; the second appears in frame 1."""
    from vis_core.data.clips import Clip

    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 255, (frames, SIZE, SIZE, 3), generator=generator)
    masks = torch.zeros(2, frames, SIZE, SIZE, dtype=torch.bool)
    masks[0, :, 8:28, 8:28] = True
    masks[1, 1:, 36:60, 30:54] = True
    images[masks.any(0)] = 220
    return Clip(
        frames=images.to(torch.uint8).numpy(),
        masks=masks.numpy(),
        labels=torch.tensor([2, 5]).numpy(),
        track_ids=torch.tensor([1, 2]).numpy(),
        frame_indices=torch.arange(frames).numpy(),
    )


def test_the_model_and_its_file_carry_the_head(tmp_path) -> None:
    torch.manual_seed(0)
    model = VitaModel(head_config()).eval()
    aligner = model.l2g.aligner
    assert len(aligner.ffn) == 3 and aligner.ffn[0].linear1.out_features == 4 * HIDDEN
    assert aligner.self_attention[0].self_attn.num_heads == 4  # the frame decoder's
    images = torch.randn(1, 3, 3, SIZE, SIZE)
    with torch.no_grad():
        prediction = model(images)
    output = prediction.l2g
    assert isinstance(output, L2gOutput) and len(output.predictions) == LAYERS + 1
    assert output.predictions[-1].pred_logits.shape == (1, 3, QUERIES, CLASSES + 1)
    assert output.predictions[-1].pred_masks.shape == (1, 3, QUERIES, SIZE // 4, SIZE // 4)
    tokens = sum(h * w for h, w in output.token_sizes)  # strides 16, 8, 4
    assert output.token_sizes == ((4, 4), (8, 8), (16, 16))
    assert output.token_logits.shape == (1, 3, tokens, CLASSES)
    path = str(tmp_path / "l2g.vis.pt")
    save_model(path, model)
    loaded = load_model(path)
    assert loaded.config == model.config and loaded.l2g is not None
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor)
    assert config_from_dict(config_to_dict(model.config)) == model.config
    # A model file written before the head existed: no `l2g` key, no head.
    old = config_to_dict(vita_small_synth())
    del old["l2g"]
    assert config_from_dict(old).l2g is None
    plain = VitaModel(config_from_dict(old))
    assert plain.l2g is None and plain(images).l2g is None
    # The method adds its default head to a config that has none, and keeps one it has.
    assert get_method("l2g").with_head(vita_small_synth()).l2g == L2gConfig()
    assert get_method("l2g").with_head(model.config) is model.config
    assert get_method("l2g").clip_frames == 4


def test_box_sine_embedding_is_the_map_embedding_of_each_coordinate() -> None:
    """A coordinate v embeds as `PositionEmbeddingSine` does the position v of a map."""
    features, width, column = 8, 10, 6
    # [1, 2F, 1, W]: F y features, then F x features
    x_features = PositionEmbeddingSine(features)(torch.zeros(1, 1, 1, width))[0, features:, 0]
    x = (column + 1) / width  # the map's normalised position of that column
    embedded = box_sine_embedding(torch.tensor([[x, 0.5, 0.2, 0.1]]), features)
    assert embedded.shape == (1, 4 * features)
    torch.testing.assert_close(embedded[0, :features], x_features[:, column])
    other = box_sine_embedding(torch.tensor([[x, 0.5, 0.3, 0.1]]), features)
    assert torch.equal(other[0, : 2 * features], embedded[0, : 2 * features])
    assert not torch.equal(other, embedded)  # the width differs
    with pytest.raises(ValueError, match="even"):
        box_sine_embedding(torch.zeros(1, 4), 3)


def test_the_first_frame_queries_take_the_ranked_tokens_cells() -> None:
    """Global query i starts from the box of the i-th best token's cell."""
    sizes = ((2, 2), (4, 4))  # 4 + 16 tokens
    logits = torch.full((1, 20, 3), -5.0)
    logits[0, 1, 2] = 3.0  # coarse level, row 0, column 1: best
    logits[0, 4 + 2 * 4 + 3, 0] = 2.0  # fine level, row 2, column 3: second
    ranked = rank_tokens(logits, 2)
    assert ranked.tolist() == [[1, 15]]
    boxes = token_boxes(sizes, torch.device("cpu"))[ranked]
    torch.testing.assert_close(boxes[0, 0], torch.tensor([0.75, 0.25, 0.5, 0.5]))
    torch.testing.assert_close(boxes[0, 1], torch.tensor([0.875, 0.625, 0.25, 0.25]))
    # Fewer tokens than queries (tiny frames): the ranking repeats.
    three = torch.tensor([[[0.1], [0.9], [0.5]]])
    assert rank_tokens(three, 5).tolist() == [[1, 2, 0, 1, 2]]


def prediction_of(masks: torch.Tensor, labels: list[list[int]], classes: int = 3):
    """A clip's final prediction from hand-made masks `[T, Q, h, w]` (bool) and each
    query's class per frame (-1 = no object)."""
    logits = torch.full((*masks.shape[:2], classes + 1), -4.0)
    for t, frame in enumerate(labels):
        for q, label in enumerate(frame):
            logits[t, q, label if label >= 0 else classes] = 4.0
    return FramePrediction(logits, torch.where(masks, 6.0, -6.0))


def test_each_instance_is_matched_once_at_its_first_frame_to_a_free_query() -> None:
    """Instance A is visible in frames 0-1; B appears in frame 1, where query 2 (A's since
    frame 0) predicts B best: B takes the best free query (3) instead, and keeps it."""
    frames, queries, h = 3, 4, 8
    truth = torch.zeros(2, frames, h, h, dtype=torch.bool)
    truth[0, :2, 0:4, 0:4] = True  # A: frames 0, 1
    truth[1, 1:, 4:8, 4:8] = True  # B: frames 1, 2
    clip = ClipTargets(torch.tensor([1, 2]), truth, torch.tensor([10, 11]))
    predicted = torch.zeros(frames, queries, h, h, dtype=torch.bool)
    predicted[0, 2] = truth[0, 0]  # query 2 finds A in frame 0
    predicted[1, 2] = truth[1, 1]  # ... and B in frame 1
    predicted[1, 3, 4:8, 4:7] = True  # query 3: most of B
    predicted[2, 3] = truth[1, 2]
    labels = [[-1, -1, 1, -1], [-1, -1, 2, 2], [-1, -1, -1, 2]]
    matcher = FrameMatcher(LossConfig(dense_masks=True))
    query_of = assign_queries(matcher, prediction_of(predicted, labels), clip)
    assert query_of.tolist() == [2, 3]
    # An instance never visible, or with no query left, gets none.
    hidden = ClipTargets(torch.tensor([1]), torch.zeros(1, frames, h, h, dtype=torch.bool),
                         torch.tensor([5]))  # fmt: skip
    assert assign_queries(matcher, prediction_of(predicted, labels), hidden).tolist() == [-1]
    few = prediction_of(predicted[:, 2:3], [[1], [2], [-1]])
    assert assign_queries(matcher, few, clip).tolist() == [0, -1]

    # The targets that follow: A's query is no object in frame 2 (absent, no mask loss).
    criterion = L2gCriterion(
        LossConfig(dense_masks=True), L2gConfig(reduced_supervision=False), 3, 1
    )
    final = prediction_of(predicted, labels)
    batched = FramePrediction(final.pred_logits[None], final.pred_masks[None])
    assignment = criterion.assign(batched, [clip])
    assert assignment.target_classes[0].tolist() == [[3, 3, 1, 3], [3, 3, 1, 2], [3, 3, 3, 2]]
    pairs = list(zip(assignment.frames.tolist(), assignment.queries.tolist(), strict=True))
    assert sorted(pairs) == [(0, 2), (1, 2), (1, 3), (2, 3)]
    assert assignment.supervised.all()


def test_reduced_supervision_keeps_the_last_frame_and_at_least_two() -> None:
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([supervised_frames(4, True, generator) for _ in range(200)])
    assert draws[:, -1].all() and (draws.sum(1) >= 2).all() and (draws.sum(1) <= 3).all()
    assert set(draws.sum(1).tolist()) == {2, 3} and not draws[:, :3].all(0).any()
    assert supervised_frames(2, True).all() and supervised_frames(4, False).all()


def test_token_targets_and_focal_loss() -> None:
    masks = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    masks[0, 0, 0:4, 0:3] = True  # covers the 4x4 cell (0, 0) by 12/16, cell (1, 0) not
    clip = ClipTargets(torch.tensor([1]), masks, torch.tensor([0]))
    targets = token_targets(clip, ((2, 2), (1, 1)), num_classes=3)  # [T, 4 + 1, K]
    assert targets.shape == (1, 5, 3)
    assert targets[0, :, 1].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]  # 12/64 of the whole frame
    assert targets[0, :, [0, 2]].sum() == 0
    logits = torch.tensor([2.0, -1.0])
    labels = torch.tensor([1.0, 0.0])
    p = logits.sigmoid()
    expected = torch.stack(
        (-0.25 * (1 - p[0]) ** 2 * p[0].log(), -0.75 * p[1] ** 2 * (1 - p[1]).log())
    )
    torch.testing.assert_close(sigmoid_focal_loss(logits, labels, 0.25, 2.0), expected)


def test_a_training_step_on_a_frozen_detector_moves_only_the_head() -> None:
    torch.manual_seed(0)
    config = head_config()
    model = VitaModel(config)
    freeze_detector(model)
    frozen = get_method("l2g").criterion(config, True)
    optimizer = build_optimizer(model, OptimConfig(lr=1e-3, weight_decay=0.0))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    batch = ClipBatch.from_clips([two_object_clip()])
    result = train_step(model, frozen, optimizer, batch, clip_grad_norm=1.0)
    assert {"loss_l2g_ce", "loss_l2g_mask", "loss_l2g_dice", "loss_l2g_token"} <= set(result.terms)
    assert not any(name.startswith("loss_ce") for name in result.terms) and result.loss > 0
    changed = {n for n, v in model.state_dict().items() if not torch.equal(v, before[n])}
    assert changed and all(name.startswith("l2g.") for name in changed)
    assert {n.split(".")[1] for n in changed} == {
        "token_class", "local_proj", "local_norm", "local_pos", "initial_queries",
        "box_embed", "aligner",
    }  # fmt: skip
    # End to end (detector not frozen): the frame terms join, weighted as the detector's.
    full = L2gCriterion.for_model(config)
    images, targets = batch.model_inputs(model.detector.preprocess)
    losses = full(model(images), targets)
    assert {"loss_ce", "loss_mask", "loss_ce_0", "loss_l2g_ce", "loss_l2g_ce_0"} <= set(
        losses.terms
    )
    assert losses.weights["loss_l2g_mask_2"] == config.loss.mask_weight
    assert losses.weights["loss_l2g_ce"] == config.loss.class_weight
    assert losses.weights["loss_l2g_token"] == config.l2g.token_class_weight
    with pytest.raises(KeyError):
        full.weight_of("loss_nope")
