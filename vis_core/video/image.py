"""Still images (JPEG frames of the public datasets, COCO images) through PyAV.

No imaging library is needed: FFmpeg's image decoders and MJPEG encoder do the work.
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
import av.error
import numpy as np

from vis_core.video.decode import resized_size
from vis_core.video.errors import NotAVideoError


def encode_jpeg(image: np.ndarray) -> bytes:
    """JPEG bytes of an RGB image `[H, W, 3]` uint8."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.shape} {image.dtype}")
    codec = av.CodecContext.create("mjpeg", "w")
    codec.height, codec.width = image.shape[:2]
    codec.pix_fmt = "yuvj420p"
    codec.time_base = Fraction(1, 1)
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    packets = codec.encode(frame.reformat(format="yuvj420p")) + codec.encode(None)
    return b"".join(bytes(packet) for packet in packets)


def decode_image(data: bytes, name: str = "image", shortest_edge: int | None = None) -> np.ndarray:
    """RGB image `[H, W, 3]` uint8 of encoded bytes (JPEG, PNG...), optionally resized so
    the shorter side is `shortest_edge`. Raises NotAVideoError naming `name` otherwise."""
    try:
        with av.open(io.BytesIO(data)) as container:
            frame = next(container.decode(video=0))
            height, width = resized_size(frame.height, frame.width, shortest_edge)
            return frame.to_ndarray(format="rgb24", height=height, width=width)
    except (av.error.FFmpegError, StopIteration) as error:
        raise NotAVideoError(name, f"is not a decodable image ({error})") from None
