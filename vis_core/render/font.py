"""A tiny built-in 5x7 bitmap font, to write labels on frames without Pillow or OpenCV.

Each glyph is 7 rows of 5 pixels, written below as one line: `#` is ink, `.` is paper,
rows separated by spaces. Lower-case letters are drawn with the upper-case glyphs; any
other character without a glyph is drawn as `?`.

A line of text is laid out in cells of 6 x 7 pixels (a glyph and one column of spacing)
inside a background box with one pixel of padding on every side, all times `scale`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

GLYPH_WIDTH, GLYPH_HEIGHT = 5, 7
_ADVANCE = GLYPH_WIDTH + 1  # a glyph and one column of spacing
_PADDING = 1

_GLYPH_ROWS = {
    "0": ".###. #...# #..## #.#.# ##..# #...# .###.",
    "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
    "2": ".###. #...# ....# ...#. ..#.. .#... #####",
    "3": "##### ...#. ..#.. ...#. ....# #...# .###.",
    "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#.",
    "5": "##### #.... ####. ....# ....# #...# .###.",
    "6": "..##. .#... #.... ####. #...# #...# .###.",
    "7": "##### ....# ...#. ..#.. .#... .#... .#...",
    "8": ".###. #...# #...# .###. #...# #...# .###.",
    "9": ".###. #...# #...# .#### ....# ...#. .##..",
    "A": ".###. #...# #...# ##### #...# #...# #...#",
    "B": "####. #...# #...# ####. #...# #...# ####.",
    "C": ".###. #...# #.... #.... #.... #...# .###.",
    "D": "###.. #..#. #...# #...# #...# #..#. ###..",
    "E": "##### #.... #.... ####. #.... #.... #####",
    "F": "##### #.... #.... ####. #.... #.... #....",
    "G": ".###. #...# #.... #.### #...# #...# .####",
    "H": "#...# #...# #...# ##### #...# #...# #...#",
    "I": ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
    "J": "..### ...#. ...#. ...#. ...#. #..#. .##..",
    "K": "#...# #..#. #.#.. ##... #.#.. #..#. #...#",
    "L": "#.... #.... #.... #.... #.... #.... #####",
    "M": "#...# ##.## #.#.# #.#.# #...# #...# #...#",
    "N": "#...# #...# ##..# #.#.# #..## #...# #...#",
    "O": ".###. #...# #...# #...# #...# #...# .###.",
    "P": "####. #...# #...# ####. #.... #.... #....",
    "Q": ".###. #...# #...# #...# #.#.# #..#. .##.#",
    "R": "####. #...# #...# ####. #.#.. #..#. #...#",
    "S": ".#### #.... #.... .###. ....# ....# ####.",
    "T": "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
    "U": "#...# #...# #...# #...# #...# #...# .###.",
    "V": "#...# #...# #...# #...# #...# .#.#. ..#..",
    "W": "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.",
    "X": "#...# #...# .#.#. ..#.. .#.#. #...# #...#",
    "Y": "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..",
    "Z": "##### ....# ...#. ..#.. .#... #.... #####",
    " ": "..... ..... ..... ..... ..... ..... .....",
    "#": ".#.#. .#.#. ##### .#.#. ##### .#.#. .#.#.",
    ":": "..... .##.. .##.. ..... .##.. .##.. .....",
    ".": "..... ..... ..... ..... ..... .##.. .##..",
    "_": "..... ..... ..... ..... ..... ..... #####",
    "-": "..... ..... ..... ##### ..... ..... .....",
    "%": "##... ##..# ...#. ..#.. .#... #..## ...##",
    "(": "...#. ..#.. .#... .#... .#... ..#.. ...#.",
    ")": ".#... ..#.. ...#. ...#. ...#. ..#.. .#...",
    "/": "..... ....# ...#. ..#.. .#... #.... .....",
    "?": ".###. #...# ....# ...#. ..#.. ..... ..#..",
    "<": "...#. ..#.. .#... #.... .#... ..#.. ...#.",
    ">": ".#... ..#.. ...#. ....# ...#. ..#.. .#...",
    "=": "..... ..... ##### ..... ##### ..... .....",
}


def _parse(char: str, rows: str) -> np.ndarray:
    bitmap = np.array([[pixel == "#" for pixel in row] for row in rows.split()], dtype=bool)
    if bitmap.shape != (GLYPH_HEIGHT, GLYPH_WIDTH):
        raise ValueError(f"glyph {char!r} is {bitmap.shape}, not {GLYPH_HEIGHT}x{GLYPH_WIDTH}")
    return bitmap


GLYPHS: dict[str, np.ndarray] = {char: _parse(char, rows) for char, rows in _GLYPH_ROWS.items()}
"""`[7, 5]` bool bitmaps by character."""


def glyph(char: str) -> np.ndarray:
    """The `[7, 5]` bool bitmap of a character (upper case for letters, `?` if unknown)."""
    return GLYPHS.get(char.upper(), GLYPHS["?"])


def text_size(text: str, scale: int = 1) -> tuple[int, int]:
    """(width, height) in pixels of the box `draw_text` fills for `text`."""
    if not text:
        return 0, 0
    return (len(text) * _ADVANCE + _PADDING) * scale, (GLYPH_HEIGHT + 2 * _PADDING) * scale


def text_bitmap(text: str, scale: int = 1) -> np.ndarray:
    """The ink of `text` in its box: `[height, width]` bool, the size `text_size` gives."""
    if not text:
        return np.zeros((0, 0), dtype=bool)
    ink = np.zeros((GLYPH_HEIGHT + 2 * _PADDING, len(text) * _ADVANCE + _PADDING), dtype=bool)
    for index, char in enumerate(text):
        left = _PADDING + index * _ADVANCE
        ink[_PADDING : _PADDING + GLYPH_HEIGHT, left : left + GLYPH_WIDTH] = glyph(char)
    return ink.repeat(scale, axis=0).repeat(scale, axis=1)  # [height, width]


def draw_text(
    image: np.ndarray,
    text: str,
    x: int,
    y: int,
    color: Sequence[int] | np.ndarray,
    scale: int = 1,
    background: Sequence[int] | np.ndarray | None = (0, 0, 0),
) -> None:
    """Draw one line of `text` in place on an RGB image `[H, W, 3]` uint8.

    (x, y) is the top-left corner of the text's box (`text_size`), which is filled with
    `background` (None: leave it as is) so the text stays readable over any frame. The box
    may reach past the image's border, even start outside it: only the part inside is drawn.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.shape} {image.dtype}")
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive int, got {scale!r}")
    if not text:
        return
    ink = text_bitmap(text, scale)
    x, y = int(x), int(y)
    top, left = max(y, 0), max(x, 0)
    bottom = min(y + ink.shape[0], image.shape[0])
    right = min(x + ink.shape[1], image.shape[1])
    if top >= bottom or left >= right:
        return  # entirely outside the image
    region = image[top:bottom, left:right]  # a view: drawing on it draws on the image
    if background is not None:
        region[:] = np.asarray(background, dtype=np.uint8)
    region[ink[top - y : bottom - y, left - x : right - x]] = np.asarray(color, dtype=np.uint8)
