"""Masks: RLE round trips, the Parquet byte form, and clear errors on malformed input."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from vis_core import masks


@pytest.fixture
def random_masks() -> np.ndarray:
    rng = np.random.default_rng(0)
    stack = rng.random((5, 37, 53)) > 0.6
    stack[3] = False  # an empty mask
    stack[4] = True  # a full one
    return stack


def test_encode_decode_round_trip(random_masks):
    rles = masks.encode(random_masks)
    assert all(isinstance(rle["counts"], str) and rle["size"] == [37, 53] for rle in rles)
    np.testing.assert_array_equal(masks.decode(rles), random_masks)
    np.testing.assert_array_equal(masks.decode_one(rles[1]), random_masks[1])


def test_area_and_bbox_match_dense_masks(random_masks):
    rles = masks.encode(random_masks)
    np.testing.assert_array_equal(masks.area(rles), random_masks.sum(axis=(1, 2)))
    boxes = masks.bbox(rles)
    for mask, box in zip(random_masks, boxes, strict=True):
        expected = masks.mask_bbox(mask)
        assert tuple(box) == (expected if expected is not None else (0, 0, 0, 0))


def test_mask_bbox_of_a_rectangle():
    mask = np.zeros((10, 12), bool)
    mask[2:5, 7:11] = True
    assert masks.mask_bbox(mask) == (7, 2, 4, 3)
    assert masks.mask_bbox(np.zeros((4, 4), bool)) is None


def test_bytes_round_trip(random_masks):
    rle = masks.encode_one(random_masks[0])
    blob = masks.to_bytes(rle)
    assert isinstance(blob, bytes)
    assert masks.from_bytes(blob, 37, 53) == rle


def test_iou_matrix_matches_dense_computation(random_masks):
    rles = masks.encode(random_masks)
    iou = masks.iou_matrix(rles[:3], rles)
    dense = random_masks.reshape(5, -1).astype(float)
    inter = dense[:3] @ dense.T
    union = dense[:3].sum(1)[:, None] + dense.sum(1)[None] - inter
    np.testing.assert_allclose(iou, np.where(union > 0, inter / np.maximum(union, 1), 0))


def test_to_compressed_accepts_every_official_form(random_masks):
    mask = random_masks[0]
    compressed = masks.encode_one(mask)
    uncompressed = {"size": [37, 53], "counts": _uncompressed_counts(mask)}
    as_bytes = {**compressed, "counts": compressed["counts"].encode()}
    for segmentation in (compressed, uncompressed, as_bytes):
        normalised = masks.to_compressed(segmentation, 37, 53)
        np.testing.assert_array_equal(masks.decode_one(normalised), mask)
    polygon = [[2.0, 2.0, 20.0, 2.0, 20.0, 10.0, 2.0, 10.0]]
    from_polygon = masks.decode_one(masks.to_compressed(polygon, 37, 53))
    expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygon, 37, 53)))
    np.testing.assert_array_equal(from_polygon, expected.astype(bool))


@pytest.mark.parametrize(
    "segmentation",
    [
        {"size": [37, 53], "counts": "not~rle"},  # a byte outside the alphabet
        {"size": [37, 53], "counts": "02"},  # covers too few pixels
        {"size": [36, 53], "counts": "0"},  # wrong frame size
        {"counts": "0"},  # no size
        {"size": [37, 53], "counts": [5, 5]},  # uncompressed, too short
        [[1.0, 2.0]],  # a polygon with one point
        "a string",
    ],
)
def test_to_compressed_rejects_malformed(segmentation):
    with pytest.raises(masks.MaskFormatError):
        masks.to_compressed(segmentation, 37, 53)


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    flat = mask.flatten(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    return [0, *counts] if flat[0] else counts


def test_area_of_many_masks():
    """pycocotools' own `area` overflows from 256 RLEs on (2.0.11 with numpy 2)."""
    stack = np.random.default_rng(1).random((300, 9, 7)) > 0.5
    np.testing.assert_array_equal(masks.area(masks.encode(stack)), stack.sum(axis=(1, 2)))
    assert masks.area([]).shape == (0,)
