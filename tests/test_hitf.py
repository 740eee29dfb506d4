"""The HF head: its place in the model and model file, what its frames read, its
matching and loss, a training step on a frozen detector, and overfitting two tiny
videos (YouTube-VIS AP on them)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from vis_core import masks
from vis_core.data.clips import Clip
from vis_core.evaluation import evaluate_ytvis
from vis_core.inference.frames import InputGeometry
from vis_core.inference.hitf_tracker import HitfTracker
from vis_core.inference.online import DetectorChunk, TrackRles
from vis_core.losses.hitf_criterion import HitfCriterion, frame_losses, match_slots
from vis_core.losses.mask_losses import downsample_targets
from vis_core.methods import get_method
from vis_core.modeling.config import LossConfig, ModelConfig, config_from_dict, config_to_dict
from vis_core.modeling.head_config import HitfConfig
from vis_core.modeling.hitf import HitfHead, reference_index
from vis_core.modeling.model_file import load_model, save_model
from vis_core.modeling.presets import vita_small_synth
from vis_core.modeling.vita_model import VitaModel
from vis_core.synth.generate import synthesize_video
from vis_core.synth.splits import preset
from vis_core.training.batch import ClipBatch
from vis_core.training.optim import OptimConfig, build_optimizer
from vis_core.training.step import train_step
from workflows.train_worker import freeze_detector

SIZE = 64  # frames of the model tests
QUERIES, CHANNELS, NUM_CLASSES = 16, 64, 8  # vita_small_synth


def head_config(size: int = SIZE, hitf: HitfConfig | None = None) -> ModelConfig:
    config = vita_small_synth()
    return dataclasses.replace(
        config,
        input=dataclasses.replace(config.input, min_size_test=size),
        loss=LossConfig(dense_masks=True),  # deterministic matching, fast at this size
        hitf=hitf or HitfConfig(),
    )


def synth_clip(seed: int, frames: int, size: int = SIZE) -> Clip:
    """Two large objects, `frames` frames of `size` x `size` pixels."""
    config = preset("val").replace(
        width=size, height=size, frames=(frames, frames), instances=(2, 2),
        occluders=(0, 0), radius=(0.2, 0.3), noise_sigma=(1.0, 1.0), repeat_category_prob=0.0,
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
    assert model.hitf is not None and len(model.hitf.blocks) == 2
    images = torch.randn(1, 3, 3, SIZE, SIZE)
    with torch.no_grad():
        prediction = model(images)
    grid = SIZE // 4
    assert prediction.hitf.class_logits.shape == (1, 3, QUERIES, NUM_CLASSES + 1)
    assert prediction.hitf.mask_logits.shape == (1, 3, QUERIES, grid, grid)
    path = str(tmp_path / "hitf.vis.pt")
    save_model(path, model)
    loaded = load_model(path)
    assert loaded.config == model.config and loaded.hitf is not None
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor)
    assert config_from_dict(config_to_dict(model.config)) == model.config
    # A model file written before the head existed: no `hitf` key, no head.
    old = config_to_dict(vita_small_synth())
    del old["hitf"]
    assert config_from_dict(old).hitf is None
    plain = VitaModel(config_from_dict(old))
    assert plain.hitf is None and plain(images).hitf is None
    # The method adds its default head to a config that has none, and keeps one it has.
    assert get_method("hitf").with_head(vita_small_synth()).hitf == HitfConfig()
    assert get_method("hitf").with_head(model.config) is model.config
    assert get_method("hitf").clip_frames == 5


def test_reference_frames_are_the_previous_ones_the_first_repeated() -> None:
    assert reference_index(0, 5, 3).tolist() == [
        [0, 0, 0], [0, 0, 0], [1, 0, 0], [2, 1, 0], [3, 2, 1]
    ]  # fmt: skip
    # A chunk after 3 held frames: no clamping needed.
    assert reference_index(3, 2, 3).tolist() == [[2, 1, 0], [3, 2, 1]]


def test_a_frame_reads_only_itself_and_its_previous_frames() -> None:
    """Frame t's prediction depends on frames t-R..t and on nothing later (the online head
    can run it as soon as frame t arrives); without `reference_pixels` the references'
    pixel maps are not read."""
    torch.manual_seed(0)
    for reference_pixels in (True, False):
        config = head_config(hitf=HitfConfig(reference_pixels=reference_pixels))
        head = HitfHead.for_model(config).eval()
        queries = torch.randn(1, 6, QUERIES, CHANNELS)
        features = torch.randn(1, 6, CHANNELS, 16, 16)
        with torch.no_grad():
            before = head(queries, features)
            changed = queries.clone()
            changed[:, 4:] += 1.0  # frames 4 and 5
            after = head(changed, features)
            torch.testing.assert_close(after.mask_logits[:, :4], before.mask_logits[:, :4])
            assert not torch.allclose(after.class_logits[:, 4], before.class_logits[:, 4])
            # Frame 5's references are frames 4, 3, 2: frame 1 does not reach it.
            moved = features.clone()
            moved[:, 1] += 1.0
            later = head(queries, moved)
            torch.testing.assert_close(later.class_logits[:, 5], before.class_logits[:, 5])
            # The pixel maps of frame 4 (a reference of frame 5) reach frame 5's codes
            # only through Eq. 3's c2p attention.
            pixels = features.clone()
            pixels[:, 4] += 1.0
            reached = head(queries, pixels).class_logits[:, 5]
            assert torch.allclose(reached, before.class_logits[:, 5]) != reference_pixels


def test_pairwise_matching_prefers_the_slot_that_holds_the_object_in_both_frames() -> None:
    """Slot 0 fits the object at t only, slot 1 at t-1 and t (a bit worse at t): matched
    on t alone the object goes to slot 0, over the pair to slot 1."""
    target = torch.zeros(1, 2, 4)  # [M, F, P]: the object covers cells 0 and 1
    target[0, :, :2] = 1.0
    logits = torch.full((2, 3, 4), -5.0)  # [F, Q, P]
    logits[1, 0, :2] = 5.0  # slot 0 at t
    logits[1, 1, :2] = 3.0  # slot 1 at t, less sure
    logits[0, 1, :2] = 5.0  # slot 1 at t-1
    logits[:, 2, 2:] = 5.0  # slot 2: the background
    class_logits = torch.zeros(2, 3, 3)  # [F, Q, K+1]: no class preference
    labels, present = torch.tensor([1]), torch.ones(1, 2, dtype=torch.bool)
    alone = match_slots(class_logits[1:], logits[1:], labels, target[:, 1:], present[:, 1:])
    pair = match_slots(class_logits, logits, labels, target, present)
    assert alone.prediction_index.tolist() == [0] and pair.prediction_index.tolist() == [1]


def test_frame_losses_are_the_pq_style_formula() -> None:
    torch.manual_seed(0)
    class_logits = torch.randn(4, 3, requires_grad=True)  # Q = 4, K = 2
    mask_logits = torch.randn(4, 6, requires_grad=True)  # P = 6 cells
    target = torch.tensor([[1.0, 1.0, 0.5, 0.0, 0.0, 0.0]])
    slots, labels = torch.tensor([2]), torch.tensor([1])
    positive, negative, mask_id = frame_losses(class_logits, mask_logits, slots, labels, target)
    p = class_logits.softmax(dim=-1)
    m = mask_logits.softmax(dim=0)
    dice = (2 * (m[2] * target[0]).sum() + 1) / (m[2].sum() + target[0].sum() + 1)
    expected_positive = (p[2, 1] * (1 - dice) - dice * p[2, 1].log()) / 4
    expected_negative = -p[[0, 1, 3], -1].log().sum() / 4
    background = m[[0, 1, 3]].sum(dim=0)
    cells = -(target[0] * m[2].log() + (1 - target[0]) * background.log())
    torch.testing.assert_close(positive, expected_positive)
    torch.testing.assert_close(negative, expected_negative)
    torch.testing.assert_close(mask_id, cells.mean())
    # The PQ-style weights are constants: the class term's gradient is Dice * d(-log p).
    positive.backward()
    grad = torch.autograd.grad(-dice.detach() * p[2, 1].log() / 4, class_logits)[0]
    torch.testing.assert_close(class_logits.grad, grad)


def test_a_training_step_on_a_frozen_detector_moves_only_the_head() -> None:
    torch.manual_seed(0)
    config = head_config()
    model = VitaModel(config)
    freeze_detector(model)
    frozen = get_method("hitf").criterion(config, True)
    optimizer = build_optimizer(model, OptimConfig(lr=1e-3, weight_decay=0.05))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    batch = ClipBatch.from_clips([synth_clip(seed=3, frames=3)])
    result = train_step(model, frozen, optimizer, batch, clip_grad_norm=1.0)
    assert set(result.terms) == {"loss_hitf_positive", "loss_hitf_negative", "loss_hitf_mask_id"}
    changed = {n for n, v in model.state_dict().items() if not torch.equal(v, before[n])}
    assert changed and all(name.startswith("hitf.") for name in changed)
    # End to end (detector not frozen): the frame terms join, weighted as the detector's.
    full = HitfCriterion.for_model(config)
    images, targets = batch.model_inputs(model.detector.preprocess)
    losses = full(model(images), targets)
    assert {"loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "loss_hitf_mask_id"} <= set(
        losses.terms
    )
    assert losses.weights["loss_mask_2"] == config.loss.mask_weight
    assert losses.weights["loss_hitf_positive"] == 3.0 * 0.75
    assert losses.weights["loss_hitf_negative"] == 3.0 * 0.25
    assert losses.weights["loss_hitf_mask_id"] == 0.3


OVERFIT_SIZE, OVERFIT_FRAMES = 128, 4


class StubDetector:
    """Detector outputs made from a clip's ground truth, the way a trained detector's look
    to the head: each object is found by one query slot throughout the clip, its frame
    query is the slot's code plus the object's look and its class's code, and the mask
    features are each object's look on its cells, a background look elsewhere."""

    def __init__(self, clip: Clip, seed: int):
        generator = torch.Generator().manual_seed(seed)
        shared = torch.Generator().manual_seed(99)  # class codes and the background's look
        class_code = torch.randn(NUM_CLASSES, CHANNELS, generator=shared)
        background = torch.randn(CHANNELS, generator=shared)
        frames, objects = clip.num_frames, len(clip.labels)
        look = torch.randn(objects, CHANNELS, generator=generator)
        slots = torch.randperm(QUERIES, generator=generator)[:objects]
        self.queries = torch.randn(QUERIES, CHANNELS, generator=generator).repeat(frames, 1, 1)
        self.queries += 0.05 * torch.randn(self.queries.shape, generator=generator)
        for k, slot in enumerate(slots.tolist()):
            self.queries[:, slot] += look[k] + class_code[int(clip.labels[k])]
        grid = (OVERFIT_SIZE // 4, OVERFIT_SIZE // 4)
        share = downsample_targets(torch.from_numpy(clip.masks), grid)  # [N, T, h, w]
        rest = (1.0 - share.sum(dim=0)).clamp(min=0.0)  # [T, h, w]
        self.features = torch.einsum("nc,nthw->tchw", look, share)
        self.features += background[None, :, None, None] * rest[:, None]
        self.features += 0.1 * torch.randn(self.features.shape, generator=generator)

    def chunk(self) -> DetectorChunk:
        frames = self.queries.shape[0]
        detector_masks = torch.zeros(frames, QUERIES, *self.features.shape[-2:])  # unread
        return DetectorChunk(
            first_frame=0,
            class_logits=torch.zeros(frames, QUERIES, NUM_CLASSES + 1),
            mask_logits=detector_masks,
            frame_queries=self.queries,
            mask_features=self.features,
        )


def ytvis_ground_truth(clips: list[Clip]) -> dict:
    """YouTube-VIS ground truth of the clips (video ids 1, 2, ...; category = label + 1)."""
    videos, annotations = [], []
    for video_id, clip in enumerate(clips, start=1):
        height, width = clip.frames.shape[1:3]
        videos.append({"id": video_id, "height": height, "width": width, "length": clip.num_frames})
        for track, label in zip(clip.masks, clip.labels, strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "video_id": video_id,
                    "category_id": int(label) + 1,
                    "iscrowd": 0,
                    "segmentations": [masks.encode_one(m) if m.any() else None for m in track],
                    "areas": [int(m.sum()) or None for m in track],
                }
            )
    categories = [{"id": c + 1, "name": f"class{c}"} for c in range(NUM_CLASSES)]
    return {"videos": videos, "categories": categories, "annotations": annotations}


def video_ap(tracker: HitfTracker, stubs: list[StubDetector], clips: list[Clip]) -> float:
    """Mask AP of the online head over the clips (masks made as `OnlineSegmenter` does)."""
    size = OVERFIT_SIZE
    geometry = InputGeometry(size, size, size, size, size, size)
    results = []
    for video_id, (stub, clip) in enumerate(zip(stubs, clips, strict=True), start=1):
        with torch.no_grad():
            state, step = tracker.step(tracker.start(), stub.chunk())
        rles = TrackRles()
        rles.add(step.masks, geometry)
        summaries = (*step.finished, *tracker.finish(state))
        instances = rles.instances(summaries, clip.num_frames, size, size, max_instances=10)
        results += instances.to_ytvis_results(video_id, list(range(1, NUM_CLASSES + 1)))
    if not results:
        return 0.0
    return evaluate_ytvis(ytvis_ground_truth(clips), results).ap


def test_the_head_overfits_two_tiny_videos() -> None:
    """Two 4-frame synthetic videos of two objects each, seen through `StubDetector`: the
    whole criterion (pairwise matching included) trains the head alone for 40 steps;
    then the online head finds both objects in each video, one identity each, with
    YouTube-VIS mask AP >= 0.9, which it could not before training."""
    torch.manual_seed(0)
    config = head_config(size=OVERFIT_SIZE)
    head = HitfHead.for_model(config)
    clips = [synth_clip(seed, OVERFIT_FRAMES, OVERFIT_SIZE) for seed in (5, 6)]
    stubs = [StubDetector(clip, seed) for seed, clip in enumerate(clips)]
    tracker = HitfTracker(head)
    assert video_ap(tracker, stubs, clips) < 0.2

    criterion = HitfCriterion.for_model(config, frozen_detector=True)
    queries = torch.stack([stub.queries for stub in stubs])  # [B, T, Q, C]
    features = torch.stack([stub.features for stub in stubs])  # [B, T, C, h, w]
    targets = ClipBatch.from_clips(clips).targets
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    for _ in range(40):
        total = criterion.losses(None, head(queries, features), targets).total()
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    head.eval()
    ap = video_ap(tracker, stubs, clips)
    assert ap >= 0.9, f"AP {ap:.3f}"
    for stub in stubs:
        with torch.no_grad():
            _, step = tracker.step(tracker.start(), stub.chunk())
        assert len(step.masks.track_ids.unique()) == 2 and not step.finished
        assert len(step.masks) == 2 * OVERFIT_FRAMES  # both objects in every frame
