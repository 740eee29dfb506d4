"""Training data: frame sampling, clips from a dataset, clip-consistent augmentation, batches."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from vis_core.data.augment import AugmentConfig, augment_clip, resize_clip
from vis_core.data.clips import Clip, load_clip, sample_frame_indices
from vis_core.data.ytvis import YtvisDataset
from vis_core.modeling.presets import get_preset
from vis_core.modeling.vita_model import VitaModel
from vis_core.synth.splits import preset
from vis_core.synth.writer import generate_split
from vis_core.training.batch import ClipBatch


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("split")
    config = preset("val").replace(width=96, height=64, frames=(8, 8))
    summary = generate_split(str(root), config, num_videos=2, seed=3)
    return YtvisDataset.load(summary.annotations_uri)


def test_sampled_indices_are_sorted_distinct_and_near_the_reference():
    rng = np.random.default_rng(0)
    for _ in range(50):
        indices = sample_frame_indices(40, 5, 10, rng)
        assert len(indices) == 5 and len(set(indices.tolist())) == 5
        assert (np.diff(indices) > 0).all() and indices.max() - indices.min() <= 10
    short = sample_frame_indices(3, 5, 20, rng)
    assert len(short) == 5 and set(short.tolist()) == {0, 1, 2}  # all frames, then repeats


def test_load_clip_matches_the_annotations(tiny_split):
    dataset = tiny_split
    video = dataset.videos[0]
    labels = {c.id: i for i, c in enumerate(dataset.categories)}
    clip = load_clip(dataset, video, [1, 4, 6], labels)
    assert clip.frames.shape == (3, 64, 96, 3)
    tracks = {t.id: t for t in dataset.tracks(video.id)}
    assert len(clip.track_ids) > 0
    for mask, label, track_id in zip(clip.masks, clip.labels, clip.track_ids, strict=True):
        track = tracks[int(track_id)]
        np.testing.assert_array_equal(mask, track.masks()[[1, 4, 6]])
        assert label == labels[track.category_id]


def _toy_clip() -> Clip:
    frames = np.zeros((2, 20, 30, 3), np.uint8)
    frames[:, :, :10] = 200  # the left third is bright
    masks = np.zeros((2, 2, 20, 30), bool)
    masks[0, :, 5:15, 2:8] = True  # left object
    masks[1, :, 5:15, 22:28] = True  # right object
    return Clip(frames, masks, np.array([0, 1]), np.array([7, 8]), np.array([0, 1]))


def test_flip_moves_frames_and_masks_together():
    config = AugmentConfig(min_sizes=(20,), max_size=100, flip_prob=1.0)
    flipped = augment_clip(_toy_clip(), config, np.random.default_rng(0))
    assert (flipped.frames[:, :, -10:] == 200).all() and (flipped.frames[:, :, :20] == 0).all()
    assert flipped.masks[0, :, 5:15, 22:28].all() and not flipped.masks[0, :, :, :15].any()


def test_resize_keeps_masks_binary_and_crop_drops_lost_instances():
    frames, masks = resize_clip(_toy_clip().frames, _toy_clip().masks, 40, 1000)
    assert frames.shape == (2, 40, 60, 3) and masks.shape == (2, 2, 40, 60)
    assert masks.dtype == bool and masks[0].sum() == 4 * _toy_clip().masks[0].sum()
    config = AugmentConfig(min_sizes=(20,), flip_prob=0.0, crop_prob=1.0, crop_scale=(0.3, 0.3))
    counts = set()
    for seed in range(20):
        cropped = augment_clip(_toy_clip(), config, np.random.default_rng(seed))
        assert len(cropped.labels) == len(cropped.track_ids) == len(cropped.masks)
        assert all(m.any() for m in cropped.masks)
        counts.add(len(cropped.labels))
    assert 0 in counts or 1 in counts  # small crops lose an object sometimes


def test_batch_pads_after_normalising_and_pads_masks_with_background():
    model = VitaModel(get_preset("vita_small_synth"))
    small, large = (
        _toy_clip(),
        augment_clip(
            _toy_clip(), AugmentConfig(min_sizes=(40,), flip_prob=0.0), np.random.default_rng(0)
        ),
    )
    batch = ClipBatch.from_clips([small, large])
    images, targets = batch.model_inputs(model.detector.preprocess)
    assert images.shape == (2, 2, 3, 64, 64)  # 40x60 padded to multiples of 32
    assert torch.equal(images[0, :, :, 20:], torch.zeros_like(images[0, :, :, 20:]))
    assert images[0, 0, :, :20, :30].abs().sum() > 0
    assert targets[0].masks.shape == (2, 2, 64, 64) and not targets[0].masks[..., 20:, :].any()
    assert torch.equal(targets[1].track_ids, torch.tensor([7, 8]))
    with pytest.raises(ValueError, match="same length"):
        one_frame = replace(small, frames=small.frames[:1], masks=small.masks[:, :1])
        ClipBatch.from_clips([small, one_frame])


@pytest.fixture(scope="module")
def split_with_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("split_images")
    config = preset("train").replace(width=96, height=64, frames=(6, 9))
    generate_split(str(root), config, num_videos=3, seed=5, coco_images=3)
    return root


def _sources(root):
    from vis_core.data.clip_stream import PseudoVideoSource, VideoClipSource
    from vis_core.data.coco import CocoDataset
    from vis_core.data.labels import label_of_category

    names = get_preset("vita_small_synth").class_names
    videos = YtvisDataset.load(str(root / "annotations.json"))
    images = CocoDataset.load(str(root / "coco" / "annotations.json"))
    return (
        VideoClipSource(
            videos, label_of_category(videos.categories, names, len(names)), sampling_range=4
        ),
        PseudoVideoSource(images, label_of_category(images.categories, names, len(names))),
    )


def test_pseudo_videos_move_their_objects_and_keep_identities(split_with_images):
    _, pseudo = _sources(split_with_images)
    clip = pseudo.sample(4, np.random.default_rng(0))
    assert clip.frames.shape[0] == 4 and clip.masks.shape[1] == 4
    assert clip.masks.shape[2:] == clip.frames.shape[1:3]
    assert len(set(clip.track_ids.tolist())) == len(clip.track_ids)
    moved = [not np.array_equal(m[0], m[1]) for m in clip.masks if m[0].any() and m[1].any()]
    assert any(moved)  # independent crops move the objects between frames


def test_clip_stream_mixes_sources_and_batches(split_with_images):
    from vis_core.data.clip_stream import ClipStream

    video_source, pseudo = _sources(split_with_images)
    augment = AugmentConfig(min_sizes=(48, 64), max_size=128)
    stream = ClipStream([video_source, pseudo], [0.5, 0.5], 3, augment, seed=1)
    loader = torch.utils.data.DataLoader(stream, batch_size=2, collate_fn=ClipBatch.from_clips)
    batches = [batch for _, batch in zip(range(3), loader, strict=False)]
    for batch in batches:
        assert len(batch.frames) == 2 and all(f.shape[0] == 3 for f in batch.frames)
        for frames, target in zip(batch.frames, batch.targets, strict=True):
            assert target.masks.shape[1:] == frames.shape[:3]
            assert (target.labels < 8).all()
    same = ClipStream([video_source, pseudo], [0.5, 0.5], 3, augment, seed=1)
    other_rank = ClipStream([video_source, pseudo], [0.5, 0.5], 3, augment, seed=1, rank=1)
    first, again, ranked = (next(iter(s)) for s in (stream, same, other_rank))
    np.testing.assert_array_equal(first.frames, again.frames)
    assert first.frames.shape != ranked.frames.shape or not np.array_equal(
        first.frames, ranked.frames
    )


def test_a_clip_without_instances_augments():
    empty = replace(
        _toy_clip(), masks=np.zeros((0, 2, 20, 30), bool), labels=np.zeros(0, np.int64),
        track_ids=np.zeros(0, np.int64),
    )  # fmt: skip
    config = AugmentConfig(min_sizes=(40,), crop_prob=1.0)
    out = augment_clip(empty, config, np.random.default_rng(0))
    assert out.masks.shape[0] == 0 and out.masks.shape[1:] == (2, *out.frames.shape[1:3])
