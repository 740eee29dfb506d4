"""Seeded damage to a video file: truncation, byte flips in the header or in the payload.

The header is the container's description of the streams and index (an mp4's `moov` box
wherever it lies, what precedes the first Matroska Cluster or the AVI `movi` list); the
payload is the coded frames (`mdat`, the clusters, `movi`).
"""

from __future__ import annotations

import numpy as np

MUTATIONS = ("truncate", "header_flips", "payload_flips")

_ISO_TOP_LEVEL = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"uuid", b"meta")


def mutate(data: bytes, how: str, rng: np.random.Generator) -> bytes:
    """`data` damaged as `how` says (one of `MUTATIONS`), drawing positions from `rng`.

    truncate: cut at a uniform offset in [1, len); header_flips: 1-4 bytes of the header
    XORed with a random non-zero byte; payload_flips: 1-16 bytes of the payload likewise.
    """
    if len(data) < 2:
        raise ValueError("nothing to damage in a file under 2 bytes")
    if how == "truncate":
        return data[: int(rng.integers(1, len(data)))]
    header, payload = regions(data)
    if how == "header_flips":
        return _flip(data, header, int(rng.integers(1, 5)), rng)
    if how == "payload_flips":
        return _flip(data, payload, int(rng.integers(1, 17)), rng)
    raise ValueError(f"unknown mutation {how!r}; one of {MUTATIONS}")


def regions(data: bytes) -> tuple[range, range]:
    """(header, payload) byte ranges of a video file; for an unknown layout, the first tenth
    and the rest."""
    boxes = _iso_boxes(data)
    if "moov" in boxes and "mdat" in boxes:
        return boxes["moov"], boxes["mdat"]
    for marker in (b"\x1f\x43\xb6\x75", b"movi"):  # Matroska Cluster, AVI movi list
        start = data.find(marker)
        if start > 0:
            return range(0, start), range(start, len(data))
    split = max(1, len(data) // 10)
    return range(0, split), range(split, len(data))


def _flip(data: bytes, where: range, count: int, rng: np.random.Generator) -> bytes:
    damaged = bytearray(data)
    for position in rng.choice(np.asarray(where), size=min(count, len(where)), replace=False):
        damaged[position] ^= int(rng.integers(1, 256))
    return bytes(damaged)


def _iso_boxes(data: bytes) -> dict[str, range]:
    """Top-level ISO BMFF boxes by type (the first of each), or {} for another format."""
    boxes: dict[str, range] = {}
    position = 0
    while position + 8 <= len(data):
        size = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        if kind not in _ISO_TOP_LEVEL:
            break
        if size == 1 and position + 16 <= len(data):
            size = int.from_bytes(data[position + 8 : position + 16], "big")
        elif size == 0:
            size = len(data) - position
        if size < 8:
            break
        boxes.setdefault(kind.decode(), range(position, min(position + size, len(data))))
        position += size
    return boxes
