"""Mask overlays, contact sheets and PNGs; the embedded-default demo end to end."""

import av
import numpy as np

from jobs.cli import main
from vis_core.render.overlay import contact_sheet, instance_colors, overlay_masks, write_png


def test_overlay_colours_masks_and_outlines_only_inside_them():
    frame = np.full((20, 30, 3), 100, np.uint8)
    masks = np.zeros((2, 20, 30), bool)
    masks[0, 2:10, 2:12] = True
    masks[1, 12:18, 15:28] = True
    colors = instance_colors(2)
    out = overlay_masks(frame, masks, colors)
    outside = ~masks.any(0)
    assert (out[outside] == 100).all()
    assert (out[2, 2] == colors[0]).all()  # a corner is on the outline
    assert not (out[5, 6] == 100).all() and not (out[5, 6] == colors[0]).all()  # blended
    assert len({tuple(c) for c in instance_colors(12)}) == 12


def test_contact_sheet_and_png_round_trip(tmp_path):
    tiles = [np.full((10, 16, 3), value, np.uint8) for value in (50, 150, 250)]
    sheet = contact_sheet(tiles, columns=2, gap=2)
    assert sheet.shape == (2 * 10 + 3 * 2, 2 * 16 + 3 * 2, 3)
    assert (sheet[2:12, 2:18] == 50).all() and (sheet[14:24, 2:18] == 250).all()
    write_png(str(tmp_path / "sheet.png"), sheet)
    with av.open(str(tmp_path / "sheet.png")) as container:
        decoded = next(container.decode(video=0)).to_ndarray(format="rgb24")
    np.testing.assert_array_equal(decoded, sheet)  # PNG is lossless


def test_demo_writes_a_corpus_and_previews(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--videos", "2", "--previews", "1"]) == 0
    assert (tmp_path / "corpus" / "annotations.json").is_file()
    assert len(list((tmp_path / "corpus" / "videos").glob("*.mp4"))) == 2
    (preview,) = (tmp_path / "previews").glob("*.png")
    with av.open(str(preview)) as container:
        assert next(container.decode(video=0)).width > 320
    assert "instances per video" in capsys.readouterr().out
