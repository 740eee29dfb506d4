"""Masks made only where they are give the RLE of upsampling every pixel, bit for bit: on
random logits of many sizes and shapes, and through the segmenter on a model's logits."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import Tensor
from torch.nn import functional as F

from vis_core import masks
from vis_core.inference import VideoInstances, VideoSegmenter
from vis_core.inference import mask_upsampling as upsampling
from vis_core.inference import segmenter as segmenter_module
from vis_core.inference.mask_upsampling import dense_masks, upsampled_masks
from vis_core.modeling.model_file import load_model
from vis_core.modeling.vita_model import VitaModel
from vis_core.rle_encode import EncodedMasks


def full_size_path(logits: Tensor, height: int, width: int) -> EncodedMasks:
    """What the segmenter did before: every pixel upsampled and thresholded, pycocotools'
    encode, areas and boxes read back from the RLE."""
    original = F.interpolate(
        logits[:, None].float(), size=(height, width), mode="bilinear", align_corners=False
    )[:, 0]
    rles = masks.encode((original > 0).cpu().numpy())
    return EncodedMasks(
        height=height,
        width=width,
        counts=[masks.to_bytes(rle) for rle in rles],
        areas=masks.area(rles),
        boxes=masks.bbox(rles),
    )


def assert_same(got: EncodedMasks, expected: EncodedMasks) -> None:
    assert got.counts == expected.counts
    np.testing.assert_array_equal(got.areas, expected.areas)
    np.testing.assert_array_equal(got.boxes, expected.boxes)


def logit_maps(kind: str, count: int, height: int, width: int, seed: int) -> Tensor:
    """Logits `[N, h, w]`, a slice of a larger map as the segmenter's are."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "blobs":
        coarse = torch.randn(count, 1, max(2, height // 5), max(2, width // 5), generator=generator)
        maps = F.interpolate(coarse * 6, size=(height, width), mode="bilinear")[:, 0] - 1
    elif kind == "noise":
        maps = torch.randn(count, height, width, generator=generator)
    elif kind == "positive":
        maps = torch.rand(count, height, width, generator=generator) + 0.01
    elif kind == "negative":
        maps = -torch.rand(count, height, width, generator=generator)
        maps[0] = 0.0  # zero is background
    else:  # borders: instances that touch each edge and corner, or fill a column or row
        maps = torch.full((count, height, width), -3.0)
        maps[0, 0, :] = 2.0
        maps[1, :, -1] = 2.0
        maps[2, -1, -1] = 5.0
        maps[3, :, 0] = 1.0
        maps[3, 0, 0] = 0.0
        maps[4, -1, :] = 0.5
        maps[5, : height // 2 + 1, : width // 2 + 1] = 1.5
    padded = torch.zeros(count, height + 3, width + 2)
    padded[:, :height, :width] = maps
    return padded[:, :height, :width]


# (source h, w) -> (original H, W): 720p, odd sizes, integer and other scales, one axis
# unscaled, a single source pixel, none scaled; the last two take the dense path (a small
# output, a downsampling).
GEOMETRIES = [
    ((240, 427), (720, 1280)),
    ((24, 40), (73, 121)),
    ((13, 7), (100, 31)),
    ((5, 9), (64, 100)),
    ((48, 65), (75, 101)),
    ((10, 10), (10, 200)),
    ((30, 40), (30, 41)),
    ((1, 1), (97, 61)),
    ((40, 57), (40, 57)),
    ((30, 40), (50, 60)),
    ((64, 90), (50, 70)),
]


@pytest.mark.parametrize("source, original", GEOMETRIES)
@pytest.mark.parametrize("kind", ["blobs", "noise", "positive", "negative", "borders"])
def test_same_rle_as_upsampling_every_pixel(monkeypatch, source, original, kind) -> None:
    count = 6 if kind == "borders" or source[0] * source[1] < 20_000 else 2
    logits = logit_maps(kind, count, *source, seed=sum(source) + sum(original))
    expected = full_size_path(logits, *original)
    assert_same(upsampled_masks(logits, *original), expected)
    assert_same(dense_masks(logits, *original), expected)
    monkeypatch.setattr(upsampling, "_MOST_MIXED", np.inf)  # noise too without the dense path
    assert_same(upsampled_masks(logits, *original), expected)


def test_masks_take_the_sparse_path_here(monkeypatch) -> None:
    """The local arithmetic matches this machine's kernel, so the tests above exercise
    the sparse path (not the dense fallback) on mask-like logits."""
    cpu = torch.device("cpu")
    assert upsampling._matching_arithmetic(cpu, 240, 427, 720, 1280) is not None

    def no_dense(*args: object) -> EncodedMasks:
        raise AssertionError("the dense path was taken")

    generator = torch.Generator().manual_seed(11)
    for source, original in [((240, 427), (720, 1280)), ((48, 65), (75, 101))]:
        coarse = torch.randn(3, 1, source[0] // 24, source[1] // 24, generator=generator)
        logits = F.interpolate(coarse * 6, size=source, mode="bilinear")[:, 0] - 4  # blobs
        expected = full_size_path(logits, *original)
        with monkeypatch.context() as patch:
            patch.setattr(upsampling, "dense_masks", no_dense)
            assert_same(upsampled_masks(logits, *original), expected)


def test_dense_path_where_nothing_matches_or_logits_are_tiny(monkeypatch) -> None:
    logits = logit_maps("blobs", 3, 24, 40, seed=7)
    expected = full_size_path(logits, 73, 121)
    monkeypatch.setattr(upsampling, "_matching_arithmetic", lambda *args: None)
    assert_same(upsampled_masks(logits, 73, 121), expected)
    monkeypatch.undo()
    tiny = logits.clone()
    tiny[0, 3, 3] = 1e-35  # a product with a weight could underflow: no shortcut
    assert upsampling._Cells.of(tiny.numpy()) is None
    assert_same(upsampled_masks(tiny, 73, 121), full_size_path(tiny, 73, 121))


def test_axis_tables_match_pytorch_weights() -> None:
    """The weights of each output, read from `F.interpolate` of one-hot rows."""
    for n_in, n_out in [(240, 720), (427, 1280), (13, 100), (30, 41)]:
        axis = upsampling._axis(n_in, n_out, upsampling._CANDIDATES[0])
        one_hot = torch.eye(n_in)[None, :, :, None]  # channel c: 1 at source c
        weights = F.interpolate(one_hot, size=(n_out, 129), mode="bilinear")[0, :, :, 0].numpy()
        outputs = np.arange(n_out)
        two = axis.source1 != axis.source0  # (the last source alone takes both weights)
        np.testing.assert_array_equal(axis.weight1[two], weights[axis.source1, outputs][two])
        np.testing.assert_array_equal(axis.weight0[two], weights[axis.source0, outputs][two])
        assert axis.first[0] == 0 and axis.first[-1] == n_out and np.all(axis.count >= 1)
        assert axis.output[0, 0] == 0 and axis.output[-1, axis.count[-1] - 1] == n_out - 1


def moving_box_frames(count: int, height: int, width: int) -> list[np.ndarray]:
    frames = []
    for index in range(count):
        frame = np.empty((height, width, 3), dtype=np.uint8)
        frame[:] = np.linspace(20, 80, width, dtype=np.uint8)[None, :, None]
        x = (5 * index) % (width - 40)
        frame[height // 3 : height // 3 + 40, x : x + 40] = (230, 60, 40)
        frames.append(frame)
    return frames


@pytest.fixture(scope="module")
def shipped_model() -> VitaModel:
    return load_model(None)


@pytest.mark.parametrize("height, width", [(361, 483), (251, 447)])
def test_segmenter_masks_areas_and_boxes_as_before(
    monkeypatch, shipped_model: VitaModel, height: int, width: int
) -> None:
    """The shipped model's own logits (inputs 240x321 and 240x427, upsampled 1.5x and
    about 1.05x): the segmenter's masks equal the full-size path's, and the areas and
    boxes it carries equal those measured from the RLEs."""
    config = dataclasses.replace(shipped_model.config.inference, mask_chunk_frames=4)
    frames = moving_box_frames(6, height, width)
    new = VideoSegmenter(shipped_model, config).segment(frames)
    monkeypatch.setattr(segmenter_module, "upsampled_masks", full_size_path)
    old = VideoSegmenter(shipped_model, config).segment(frames)
    assert new.masks == old.masks
    np.testing.assert_array_equal(new.scores, old.scores)
    measured = dataclasses.replace(new, mask_areas=None, mask_boxes=None)
    assert new.mask_areas is not None and new.mask_boxes is not None
    np.testing.assert_array_equal(new.areas(), measured.areas())
    np.testing.assert_array_equal(new.boxes(), measured.boxes())
    coverage = new.areas().sum() / (new.areas().size * height * width)
    assert 1e-4 < coverage < 0.5  # masks, neither empty nor the whole frame


def test_instances_check_their_areas_and_boxes_shapes() -> None:
    rle = masks.encode_one(np.zeros((4, 5), bool))
    arguments = dict(
        num_frames=2,
        height=4,
        width=5,
        scores=np.zeros(1, np.float32),
        labels=np.zeros(1, np.int64),
        masks=((rle, rle),),
    )
    instances = VideoInstances(
        **arguments, mask_areas=np.zeros((1, 2), np.int64), mask_boxes=np.zeros((1, 2, 4))
    )
    assert instances.areas().shape == (1, 2) and instances.boxes().shape == (1, 2, 4)
    with pytest.raises(ValueError, match="mask_areas"):
        VideoInstances(**arguments, mask_areas=np.zeros((2, 1), np.int64))
    with pytest.raises(ValueError, match="mask_boxes"):
        VideoInstances(**arguments, mask_boxes=np.zeros((1, 2)))


@pytest.mark.gpu
def test_on_the_device() -> None:
    """On CUDA, the masks equal upsampling every pixel there (by the local arithmetic if
    the device's kernel rounds as one of the candidates, densely otherwise)."""
    for source, original in GEOMETRIES[:6]:
        logits = logit_maps("blobs", 4, *source, seed=1).cuda()
        assert_same(upsampled_masks(logits, *original), full_size_path(logits, *original))
