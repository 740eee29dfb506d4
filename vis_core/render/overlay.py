"""Coloured instance masks over frames, contact sheets, and PNG output (PyAV's encoder).

Dimension letters: N instances, T frames, H x W a frame.
"""

from __future__ import annotations

import colorsys
import io
from collections.abc import Sequence

import av
import numpy as np

from vis_core.storage import open_output


def instance_colors(count: int) -> np.ndarray:
    """`[count, 3]` uint8 colours, well apart in hue and stable for a given index."""
    golden = 0.61803398875
    hues = (np.arange(count) * golden) % 1.0
    return np.array(
        [[round(255 * c) for c in colorsys.hsv_to_rgb(h, 0.85, 1.0)] for h in hues],
        dtype=np.uint8,
    ).reshape(count, 3)


def overlay_masks(
    frame: np.ndarray, masks: np.ndarray, colors: np.ndarray, alpha: float = 0.45
) -> np.ndarray:
    """Blend masks `[N, H, W]` bool over a frame `[H, W, 3]` uint8, with 1-pixel outlines.

    Later masks are drawn over earlier ones. Returns a new `[H, W, 3]` uint8 image.
    """
    out = frame.astype(np.float32)
    for mask, color in zip(masks, colors, strict=True):
        if not mask.any():
            continue
        out[mask] = (1 - alpha) * out[mask] + alpha * color
        out[_outline(mask)] = color
    return out.round().astype(np.uint8)


def contact_sheet(images: Sequence[np.ndarray], columns: int, gap: int = 4) -> np.ndarray:
    """Tile same-size images `[H, W, 3]` into rows of `columns`, on a dark background."""
    if not images:
        raise ValueError("a contact sheet needs at least one image")
    height, width = images[0].shape[:2]
    rows = -(-len(images) // columns)
    sheet = np.full(
        (rows * height + (rows + 1) * gap, columns * width + (columns + 1) * gap, 3),
        24,
        dtype=np.uint8,
    )
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        top, left = gap + row * (height + gap), gap + column * (width + gap)
        sheet[top : top + height, left : left + width] = image
    return sheet


def write_png(uri: str, image: np.ndarray) -> None:
    """Write an RGB image `[H, W, 3]` uint8 as PNG to a path or fsspec URI."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="image2pipe") as container:
        stream = container.add_stream("png", rate=1)
        stream.height, stream.width = image.shape[:2]
        stream.pix_fmt = "rgb24"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with open_output(uri) as file:
        file.write(buffer.getvalue())


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of `mask` `[H, W]` with a 4-neighbour outside the mask."""
    padded = np.pad(mask, 1)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior
