"""The file size a Matroska (or WebM) file declares in its first bytes.

Matroska declares no frame count, so a truncated file would decode as a shorter video;
its Segment element, right after the EBML header, declares its size instead (unknown only
for live streams), so a file that ends before its segment does is known to be cut.
Sizes are EBML variable-length integers: the leading zero bits of the first byte give the
length, the marker bit after them is dropped, and all value bits set means unknown.
"""

from __future__ import annotations

_EBML_ID = b"\x1a\x45\xdf\xa3"
_SEGMENT_ID = b"\x18\x53\x80\x67"


def declared_file_size(head: bytes) -> int | None:
    """Where the first Segment of a Matroska file ends, from the file's first bytes (the
    EBML header and the Segment's size, about 50 bytes); None when not Matroska, of an
    unknown size, or cut before it says."""
    if not head.startswith(_EBML_ID):
        return None
    header = _vint(head, len(_EBML_ID))
    if header is None or header[0] is None:
        return None
    segment = len(_EBML_ID) + header[1] + header[0]
    if head[segment : segment + 4] != _SEGMENT_ID:
        return None
    size = _vint(head, segment + 4)
    if size is None or size[0] is None:
        return None
    return segment + 4 + size[1] + size[0]


def _vint(data: bytes, position: int) -> tuple[int | None, int] | None:
    """(value or None for unknown, length in bytes) of the size at `position`; None when
    the bytes are cut or invalid."""
    if position >= len(data) or data[position] == 0:
        return None
    first = data[position]
    length = 8 - first.bit_length() + 1
    if position + length > len(data):
        return None
    value = first & (0xFF >> length)
    for byte in data[position + 1 : position + length]:
        value = (value << 8) | byte
    unknown = value == (1 << (7 * length)) - 1
    return (None if unknown else value), length
