"""The QueryTrack head: its place in the model and model file, its contrastive focal
loss, a training step on a frozen detector, and overfitting two tiny videos."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vis_core.data.clips import Clip
from vis_core.data.targets import FrameTargets
from vis_core.inference.online import DetectorChunk
from vis_core.inference.querytrack_tracker import QueryTrackTracker
from vis_core.losses.mask_losses import downsample_targets
from vis_core.losses.matcher import Matching
from vis_core.losses.querytrack_criterion import (
    QueryTrackCriterion,
    softmax_focal_loss,
    track_loss,
)
from vis_core.methods import get_method
from vis_core.modeling.config import LossConfig, config_from_dict, config_to_dict
from vis_core.modeling.frame_detector import FrameDetections
from vis_core.modeling.head_config import AssociationConfig, QueryTrackConfig
from vis_core.modeling.model_file import load_model, save_model
from vis_core.modeling.presets import vita_small_synth
from vis_core.modeling.querytrack import QueryTrackHead
from vis_core.modeling.vita_model import VitaModel
from vis_core.synth.generate import synthesize_video
from vis_core.synth.splits import preset
from vis_core.training.batch import ClipBatch
from vis_core.training.optim import OptimConfig, build_optimizer
from vis_core.training.step import train_step
from workflows.train_worker import freeze_detector

HEIGHT, WIDTH, FRAMES = 64, 64, 4
NUM_CLASSES = 8  # vita_small_synth


def head_config(embed_dim: int = 32) -> object:
    config = vita_small_synth()
    return dataclasses.replace(
        config,
        input=dataclasses.replace(config.input, min_size_test=HEIGHT),
        loss=LossConfig(dense_masks=True),  # deterministic matching, fast at this size
        querytrack=QueryTrackConfig(embed_dim=embed_dim),
    )


def synth_clip(seed: int, frames: int = FRAMES) -> Clip:
    """Two objects of one class (the class cannot tell them apart), `frames` frames."""
    config = preset("val").replace(
        width=WIDTH, height=HEIGHT, frames=(frames, frames), instances=(2, 2),
        occluders=(0, 0), radius=(0.2, 0.3), noise_sigma=(1.0, 1.0), repeat_category_prob=1.0,
    )  # fmt: skip
    scene, rendered = synthesize_video(config, seed=seed, index=0)
    ids = [k for k in range(1, len(scene.objects) + 1) if (rendered.labels == k).any()]
    return Clip(
        frames=rendered.frames,
        masks=np.stack([rendered.labels == k for k in ids]),
        labels=np.array([scene.objects[k - 1].category.id - 1 for k in ids]),
        track_ids=np.array(ids),
        frame_indices=np.arange(frames),
    )


def test_the_model_and_its_file_carry_the_head(tmp_path) -> None:
    torch.manual_seed(0)
    model = VitaModel(head_config()).eval()
    parameters = sum(p.numel() for p in model.querytrack.parameters())
    assert parameters == 2 * (64 * 64 + 64) + 64 * 32 + 32  # MLP 64 -> 64 -> 64 -> 32
    images = torch.randn(1, 2, 3, HEIGHT, WIDTH)
    with torch.no_grad():
        prediction = model(images)
    assert prediction.track_embed.shape == (1, 2, 16, 32)  # [B, T, Q, E]
    path = str(tmp_path / "head.vis.pt")
    save_model(path, model)
    loaded = load_model(path)
    assert loaded.config == model.config and loaded.querytrack is not None
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor)
    # A model file written before heads existed: no `querytrack` key, no head.
    old = config_to_dict(vita_small_synth())
    del old["querytrack"]
    assert config_from_dict(old).querytrack is None
    plain = VitaModel(config_from_dict(old))
    assert plain.querytrack is None and plain(images).track_embed is None
    # The method adds its default head to a config that has none, and keeps one it has.
    assert get_method("querytrack").with_head(vita_small_synth()).querytrack == QueryTrackConfig()
    assert get_method("querytrack").with_head(model.config) is model.config


def test_softmax_focal_loss_is_the_papers_formula_and_stable() -> None:
    logits = torch.tensor([[0.0, 2.0, -1.0], [0.0, 0.5, 3.0]])
    positive = torch.tensor([1, 0])
    p = logits.softmax(dim=1)
    is_positive = torch.nn.functional.one_hot(positive, 3).bool()
    p_star = torch.where(is_positive, p, 1 - p)
    alpha_t = torch.where(is_positive, 0.25, 0.75)
    expected = (-alpha_t * (1 - p_star) ** 2 * p_star.log()).sum(dim=1)
    torch.testing.assert_close(softmax_focal_loss(logits, positive, 0.25, 2.0), expected)
    # Far past float32's exp range: finite loss and gradients.
    extreme = torch.tensor([[0.0, 300.0, -300.0]], requires_grad=True)
    loss = softmax_focal_loss(extreme, torch.tensor([2]), 0.25, 2.0)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(extreme.grad).all()
    assert loss.item() == pytest.approx(0.25 * 600 + 0.75 * 300)


def test_track_loss_pairs_identities_across_frames() -> None:
    """Frame 0 has identities 7 and 8; frame 1 has 8 and 9. Key 7 has no reference in
    frame 1 (its positive is "nobody"); 8 pairs with 8."""
    embed = torch.zeros(1, 2, 4, 2, requires_grad=True)  # [B, T, Q, E]
    values = torch.tensor([[[3.0, 0.0], [0.0, 0.0], [0.0, 3.0], [0.0, 0.0]],
                           [[0.0, 0.0], [0.0, 3.0], [0.0, 0.0], [3.0, 0.0]]])  # fmt: skip
    with torch.no_grad():
        embed[0] = values
    targets = [
        FrameTargets(torch.zeros(2).long(), torch.zeros(2, 1, 1), torch.tensor([7, 8])),
        FrameTargets(torch.zeros(2).long(), torch.zeros(2, 1, 1), torch.tensor([8, 9])),
    ]
    matchings = [
        Matching(torch.tensor([0, 2]), torch.tensor([0, 1])),  # 7 -> query 0, 8 -> query 2
        Matching(torch.tensor([1, 3]), torch.tensor([0, 1])),  # 8 -> query 1, 9 -> query 3
    ]
    loss = track_loss(embed, targets, matchings, 0.25, 2.0)
    key0 = torch.stack((values[0, 0], values[0, 2]))  # identities 7, 8
    key1 = torch.stack((values[1, 1], values[1, 3]))  # identities 8, 9

    def rows(key, ref, positive):
        logits = torch.nn.functional.pad(key @ ref.T, (1, 0))
        return softmax_focal_loss(logits, torch.tensor(positive), 0.25, 2.0)

    expected = torch.cat((rows(key0, key1, [0, 1]), rows(key1, key0, [2, 0]))).mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert embed.grad[0, 0, 0].abs().sum() > 0 and embed.grad[0, 1, 3].abs().sum() > 0
    assert embed.grad[0, 0, 1].abs().sum() == 0  # an unmatched query takes no part
    # Background negatives: every reference query is an entry (queries in slot order).
    with_background = track_loss(embed, targets, matchings, 0.25, 2.0, background_negatives=True)
    expected = torch.cat((rows(key0, values[1], [0, 2]), rows(key1, values[0], [3, 0]))).mean()
    torch.testing.assert_close(with_background, expected)
    # One frame, or no matched instance: zero, with the graph kept.
    assert track_loss(embed[:, :1], targets[:1], matchings[:1], 0.25, 2.0).item() == 0.0


def test_a_training_step_on_a_frozen_detector_moves_only_the_head() -> None:
    torch.manual_seed(0)
    config = head_config()
    model = VitaModel(config)
    freeze_detector(model)
    frozen = QueryTrackCriterion.for_model(config, frozen_detector=True)
    optimizer = build_optimizer(model, OptimConfig(lr=1e-3, weight_decay=0.0))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    batch = ClipBatch.from_clips([synth_clip(seed=3, frames=2)])
    result = train_step(model, frozen, optimizer, batch, clip_grad_norm=1.0)
    assert set(result.terms) == {"loss_track"} and result.loss > 0
    changed = {n for n, v in model.state_dict().items() if not torch.equal(v, before[n])}
    assert changed and all(name.startswith("querytrack.") for name in changed)
    # End to end (detector not frozen): the frame terms join, weighted as the detector's.
    full = QueryTrackCriterion.for_model(config)
    images, targets = batch.model_inputs(model.detector.preprocess)
    losses = full(model(images), targets)
    assert {"loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "loss_track"} <= set(losses.terms)
    assert losses.weights["loss_mask_2"] == config.loss.mask_weight
    assert losses.weights["loss_track"] == config.querytrack.loss_weight


class StubDetector:
    """Detector outputs made from a clip's ground truth, the way a trained detector's look
    to the head: each object is found by one query slot (a confident class, its mask),
    the slot changes from frame to frame, and the frame query is dominated by its slot's
    code, with the object's identity a faint part of it. (A random detector's queries carry
    no identity at all: their matched slots swap objects between frames.)"""

    def __init__(self, clip: Clip, seed: int, queries: int = 16, channels: int = 64):
        generator = torch.Generator().manual_seed(seed)
        frames, objects = clip.num_frames, len(clip.labels)
        slot_code = torch.randn(queries, channels, generator=generator)
        identity = 0.2 * torch.randn(objects, channels, generator=generator)
        self.slots = torch.stack([torch.randperm(queries, generator=generator)[:objects]
                                  for _ in range(frames)])  # fmt: skip  # [T, N]
        grid = (HEIGHT // 4, WIDTH // 4)
        truth = downsample_targets(torch.from_numpy(clip.masks), grid) > 0.5  # [N, T, h, w]
        self.class_logits = torch.zeros(frames, queries, NUM_CLASSES + 1)
        self.class_logits[..., -1] = 4.0  # no object
        self.mask_logits = torch.full((frames, queries, *grid), -4.0)
        self.frame_queries = slot_code.repeat(frames, 1, 1)
        self.frame_queries += 0.02 * torch.randn(self.frame_queries.shape, generator=generator)
        for t in range(frames):
            for k, slot in enumerate(self.slots[t].tolist()):
                self.class_logits[t, slot, -1] = 0.0
                self.class_logits[t, slot, int(clip.labels[k])] = 4.0
                self.mask_logits[t, slot][truth[k, t]] = 4.0
                self.frame_queries[t, slot] += identity[k]

    def detections(self) -> FrameDetections:
        return FrameDetections(
            pred_logits=self.class_logits,
            pred_masks=self.mask_logits,
            aux_outputs=(),
            frame_queries=self.frame_queries[None],  # [L=1, T, Q, C]
            clip_mask_features=torch.zeros(self.class_logits.shape[0], 1, 1, 1),
        )

    def chunk(self) -> DetectorChunk:
        return DetectorChunk.from_detections(0, self.detections())


def concatenated(stubs: list[StubDetector]) -> FrameDetections:
    """B clips' detections, clip-major, as the model gives them."""
    parts = [stub.detections() for stub in stubs]
    return FrameDetections(
        pred_logits=torch.cat([part.pred_logits for part in parts]),
        pred_masks=torch.cat([part.pred_masks for part in parts]),
        aux_outputs=(),
        frame_queries=torch.cat([part.frame_queries for part in parts], dim=1),
        clip_mask_features=torch.cat([part.clip_mask_features for part in parts]),
    )


def tracks_of_objects(tracker: QueryTrackTracker, stub: StubDetector) -> set[tuple[int, int]]:
    """Run the online head on a whole clip: the (object, track) pairs of its masks (the
    object is known from the query slot that found it)."""
    with torch.no_grad():
        state, step = tracker.step(tracker.start(), stub.chunk())
    assert len(tracker.finish(state)) == len(step.masks.track_ids.unique())
    pairs = set()
    for frame, track_id, logits in zip(
        step.masks.frames.tolist(), step.masks.track_ids.tolist(), step.masks.mask_logits,
        strict=True,
    ):  # fmt: skip
        slot = int((stub.mask_logits[frame] == logits).flatten(1).all(1).int().argmax())
        objects = stub.slots[frame].tolist()
        pairs.add((objects.index(slot), track_id))
    return pairs


def one_track_per_object(tracker: QueryTrackTracker, stub: StubDetector) -> bool:
    """Each object is one track over the whole clip, and no track holds two objects."""
    pairs = tracks_of_objects(tracker, stub)
    objects = stub.slots.shape[1]
    return len(pairs) == objects and len({track for _, track in pairs}) == objects


def test_the_head_overfits_two_tiny_videos() -> None:
    """Two 4-frame synthetic videos of two same-class objects (the class gate cannot tell
    them apart), seen through `StubDetector`: the whole criterion (matcher included) trains
    the head until the contrastive loss has fallen by 90%; then the online head keeps one
    track per object through each video, which it could not before training."""
    torch.manual_seed(0)
    config = head_config()
    head = QueryTrackHead(config.querytrack, frame_query_dim=64)
    clips = [synth_clip(seed=5), synth_clip(seed=6)]
    stubs = [StubDetector(clip, seed) for seed, clip in enumerate(clips)]
    # The paper's strict gate (IDOL's 0.5): only trained embeddings pass it.
    strict = AssociationConfig(match_threshold=0.5, birth_score=0.2, min_matched_frames=1)
    tracker = QueryTrackTracker(head, strict)
    assert not any(one_track_per_object(tracker, stub) for stub in stubs)

    detections = concatenated(stubs)
    targets = ClipBatch.from_clips(clips).targets
    criterion = QueryTrackCriterion.for_model(config, frozen_detector=True)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    losses = []
    for _ in range(150):
        embed = head(detections.frame_queries[-1]).unflatten(0, (len(clips), FRAMES))
        total = criterion.losses(detections, embed, targets).total()
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(total.item())
    assert np.mean(losses[-5:]) < 0.1 * losses[0], f"loss {losses[0]:.3f} -> {losses[-5:]}"
    assert all(one_track_per_object(tracker, stub) for stub in stubs)
