"""Binary masks and COCO run-length encoding (RLE).

Three forms of one mask travel through the project:
- a dense boolean array `[H, W]` (or a stack `[N, H, W]`);
- a JSON-ready compressed RLE dict `{"size": [H, W], "counts": str}`, as in YouTube-VIS
  annotation and result files;
- the compressed RLE `counts` as raw bytes, the `mask` column of the Parquet tables, with
  height and width in their own columns.

All encoding goes through pycocotools' C code, the same code the official evaluator uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from vis_core.rle_runs import RUN_LIMIT, decode_counts

RLE = dict[str, Any]


class MaskFormatError(ValueError):
    """A segmentation is not a valid polygon list, uncompressed RLE or compressed RLE."""


def encode(masks: np.ndarray) -> list[RLE]:
    """Encode masks `[N, H, W]` (any dtype, nonzero is foreground) to compressed RLE dicts."""
    if masks.ndim != 3:
        raise ValueError(f"expected masks of shape [N, H, W], got {masks.shape}")
    # pycocotools wants a Fortran-ordered uint8 array [H, W, N].
    stacked = np.asfortranarray(np.moveaxis(masks, 0, -1).astype(np.uint8, copy=False))
    rles = mask_utils.encode(stacked)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def encode_one(mask: np.ndarray) -> RLE:
    """Encode one mask `[H, W]` to a compressed RLE dict."""
    return encode(mask[None])[0]


def decode(rles: Sequence[RLE]) -> np.ndarray:
    """Decode compressed RLE dicts of one size to a boolean array `[N, H, W]`."""
    if not rles:
        raise ValueError("decode needs at least one RLE (the frame size comes from it)")
    return np.moveaxis(mask_utils.decode(list(map(_for_c, rles))), -1, 0).astype(bool)


def decode_one(rle: RLE) -> np.ndarray:
    """Decode one compressed RLE dict to a boolean mask `[H, W]`."""
    return mask_utils.decode(_for_c(rle)).astype(bool)


def area(rles: Sequence[RLE]) -> np.ndarray:
    """Foreground pixel counts `[N]` of compressed RLE dicts, without decoding."""
    # pycocotools' `area` overflows on lists of 256 or more RLEs (2.0.11, numpy 2).
    return decode_counts([to_bytes(rle) for rle in rles]).areas


def bbox(rles: Sequence[RLE]) -> np.ndarray:
    """Boxes `[N, 4]` as (x, y, w, h) of compressed RLE dicts; zeros for empty masks."""
    if not rles:
        return np.zeros((0, 4), dtype=np.float64)
    return mask_utils.toBbox(list(map(_for_c, rles))).astype(np.float64)


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight box (x, y, w, h) of a dense mask `[H, W]`, or None when it is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def iou_matrix(dts: Sequence[RLE], gts: Sequence[RLE]) -> np.ndarray:
    """Pairwise intersection-over-union `[D, G]` of compressed RLE dicts of one size."""
    if not dts or not gts:
        return np.zeros((len(dts), len(gts)))
    return mask_utils.iou(list(map(_for_c, dts)), list(map(_for_c, gts)), [0] * len(gts))


def to_bytes(rle: RLE) -> bytes:
    """The compressed `counts` of an RLE dict as bytes (the Parquet `mask` column)."""
    counts = rle["counts"]
    return counts.encode("ascii") if isinstance(counts, str) else bytes(counts)


def from_bytes(counts: bytes, height: int, width: int) -> RLE:
    """Rebuild an RLE dict from Parquet columns; inverse of `to_bytes`."""
    return {"size": [int(height), int(width)], "counts": bytes(counts).decode("ascii")}


def to_compressed(segmentation: Any, height: int, width: int) -> RLE:
    """Normalise a polygon list, uncompressed RLE or compressed RLE to compressed RLE.

    This is the official `annToRLE` conversion, with a clear error for malformed input
    and a size check (the official code trusts both).
    """
    if isinstance(segmentation, list):
        if not segmentation or not all(
            isinstance(poly, list) and len(poly) >= 6 and len(poly) % 2 == 0
            for poly in segmentation
        ):
            raise MaskFormatError("a polygon segmentation must be lists of >= 3 (x, y) pairs")
        return _as_str(mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width)))
    if not isinstance(segmentation, dict) or "counts" not in segmentation:
        raise MaskFormatError(
            f"segmentation must be a polygon list or an RLE dict, got {type(segmentation).__name__}"
        )
    size = segmentation.get("size")
    if not (isinstance(size, (list, tuple)) and len(size) == 2):
        raise MaskFormatError(f"RLE needs 'size': [height, width], got {size!r}")
    if [int(size[0]), int(size[1])] != [height, width]:
        raise MaskFormatError(f"RLE size {list(size)} does not match the frame {[height, width]}")
    counts = segmentation["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        if sum(counts) != height * width or any(c < 0 for c in counts):
            raise MaskFormatError(f"uncompressed RLE counts must sum to {height * width}")
        return _as_str(mask_utils.frPyObjects(segmentation, height, width))
    if not isinstance(counts, (str, bytes)):
        raise MaskFormatError(f"RLE counts must be a string or a list, got {type(counts).__name__}")
    rle = {"size": [height, width], "counts": counts}
    _check_compressed(rle)
    return _as_str(rle)


def _check_compressed(rle: RLE) -> None:
    """Raise MaskFormatError unless the compressed counts decode to exactly H*W pixels."""
    # pycocotools' decoder does not validate: bad counts give garbage areas and IoUs.
    decoded = decode_counts([to_bytes(rle)])
    if decoded.malformed[0]:
        raise MaskFormatError(
            f"malformed compressed RLE counts (a character outside the alphabet, a number "
            f"cut short, or a run outside [0, {RUN_LIMIT})): {_shown(rle['counts'])}"
        )
    total = rle["size"][0] * rle["size"][1]
    if decoded.pixel_totals[0] != total:
        raise MaskFormatError(
            f"compressed RLE covers {decoded.pixel_totals[0]} pixels, the frame has {total}"
        )


def _shown(counts: str | bytes, limit: int = 40) -> str:
    text = counts.decode("ascii", "replace") if isinstance(counts, bytes) else counts
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _as_str(rle: RLE) -> RLE:
    counts = rle["counts"]
    return {
        "size": [int(rle["size"][0]), int(rle["size"][1])],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }


def _for_c(rle: RLE) -> RLE:
    """pycocotools' C functions want bytes counts."""
    counts = rle["counts"]
    return rle if isinstance(counts, bytes) else {"size": rle["size"], "counts": counts.encode()}
