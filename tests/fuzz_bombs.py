"""Decompression bombs: small files that declare sizes far beyond the decode limits.

Each patches a clip in place (same length, so no container offset moves):
- `h264_sps_bomb`: the H.264 sequence parameter set in an mp4's `avcC` box declares
  16000x16000 frames (the largest FFmpeg accepts is about 16384x16384). Before the
  decoders got `max_pixels`, opening such a 1.4 KB file took 0.7 GB and 6 s, decoding it
  1.1 GB (error concealment writes every pixel of every frame).
- `mjpeg_sof_bomb`: every JPEG frame header (SOF0) of an MJPEG AVI declares 16000x16000
  while the AVI header still says the clip's size.
- `matroska_duration_bomb`: a Matroska segment that declares a billion seconds.
"""

from __future__ import annotations

import re
import struct

_BOMB_SIDE = 16000


def h264_sps_bomb(mp4: bytes, side: int = _BOMB_SIDE) -> bytes:
    """`mp4` (H.264 in an `avcC` box, frame sides multiples of 16, no cropping) with every
    SPS rewritten to declare `side` x `side` frames; the VUI is dropped to make room."""
    data = bytearray(mp4)
    box = data.find(b"avcC")
    if box < 0:
        raise ValueError("no avcC box: not H.264 in mp4")
    body = box + 4  # version, profile, compatibility, level, NAL length size, SPS count
    count = data[body + 5] & 0x1F
    position = body + 6
    for _ in range(count):
        length = int.from_bytes(data[position : position + 2], "big")
        nal = position + 2
        rbsp = _unescape(bytes(data[nal + 1 : nal + length]))
        patched = _escape(_sps_with_size(rbsp, side // 16, side // 16))
        if len(patched) > length - 1:
            raise ValueError("the patched SPS does not fit in place")
        # FFmpeg strips trailing zero bytes of a NAL unit: the padding reads as nothing.
        data[nal + 1 : nal + length] = patched + bytes(length - 1 - len(patched))
        position = nal + length
    return bytes(data)


def mjpeg_sof_bomb(avi: bytes, side: int = _BOMB_SIDE) -> bytes:
    """`avi` (baseline MJPEG, 3 components) with every frame header declaring `side` x
    `side`: marker FFC0, length 17, precision 8, then height and width."""
    header = b"\xff\xc0\x00\x11\x08"
    data = bytearray(avi)
    found = [match.start() for match in re.finditer(re.escape(header), avi)]
    if not found:
        raise ValueError("no baseline JPEG frame header (SOF0) found")
    for start in found:
        data[start + 5 : start + 9] = struct.pack(">HH", side, side)
    return bytes(data)


def matroska_duration_bomb(mkv: bytes, seconds: float = 1e9) -> bytes:
    """`mkv` with its segment Duration (ID 0x4489, an 8-byte float in milliseconds at the
    default timestamp scale) set to `seconds`."""
    element = b"\x44\x89\x88"
    start = mkv.find(element)
    if start < 0:
        raise ValueError("no 8-byte Matroska Duration element found")
    value = start + len(element)
    return mkv[:value] + struct.pack(">d", seconds * 1000.0) + mkv[value + 8 :]


def _sps_with_size(rbsp: bytes, width_mbs: int, height_mbs: int) -> bytes:
    """The SPS payload (after the NAL header byte) declaring the given size in macroblocks,
    progressive, without cropping or VUI."""
    bits = _BitReader(rbsp)
    profile = bits.read(8)
    bits.read(16)  # constraint flags, level
    bits.read_ue()  # seq_parameter_set_id
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        if bits.read_ue() == 3:  # chroma_format_idc
            bits.read(1)
        bits.read_ue()  # bit depths
        bits.read_ue()
        bits.read(1)
        if bits.read(1):
            raise ValueError("SPS scaling matrices are not supported")
    bits.read_ue()  # log2_max_frame_num_minus4
    order_type = bits.read_ue()
    if order_type == 0:
        bits.read_ue()
    elif order_type == 1:
        bits.read(1)
        bits.read_se()
        bits.read_se()
        for _ in range(bits.read_ue()):
            bits.read_se()
    bits.read_ue()  # max_num_ref_frames
    bits.read(1)  # gaps_in_frame_num_allowed
    head = bits.consumed()
    # frame_mbs_only, direct_8x8_inference, no cropping, no VUI, then the stop bit.
    tail = "1" + "1" + "0" + "0" + "1"
    out = head + _ue(width_mbs - 1) + _ue(height_mbs - 1) + tail
    out += "0" * (-len(out) % 8)
    return int(out, 2).to_bytes(len(out) // 8, "big")


class _BitReader:
    def __init__(self, data: bytes):
        self.bits = "".join(f"{byte:08b}" for byte in data)
        self.position = 0

    def read(self, count: int) -> int:
        chunk = self.bits[self.position : self.position + count]
        self.position += count
        return int(chunk, 2) if chunk else 0

    def read_ue(self) -> int:
        zeros = 0
        while self.bits[self.position] == "0":
            zeros += 1
            self.position += 1
        self.position += 1
        return (1 << zeros) - 1 + self.read(zeros)

    def read_se(self) -> int:
        value = self.read_ue()
        return (value + 1) // 2 if value % 2 else -(value // 2)

    def consumed(self) -> str:
        return self.bits[: self.position]


def _ue(value: int) -> str:
    """Exp-Golomb code of an unsigned value, as bits."""
    code = f"{value + 1:b}"
    return "0" * (len(code) - 1) + code


def _unescape(nal: bytes) -> bytes:
    """Drop the emulation prevention bytes (00 00 03 -> 00 00)."""
    out, zeros = bytearray(), 0
    for byte in nal:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _escape(rbsp: bytes) -> bytes:
    """Insert emulation prevention bytes (00 00 0x with x <= 3 -> 00 00 03 0x)."""
    out, zeros = bytearray(), 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)
