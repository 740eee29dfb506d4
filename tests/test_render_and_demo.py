"""Mask overlays, contact sheets and PNGs; the embedded-default demo end to end."""

import json

import av
import numpy as np
import torch

from jobs.cli import main
from vis_core.modeling.model_file import save_model
from vis_core.modeling.presets import vita_small_synth
from vis_core.modeling.vita_model import VitaModel
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


def test_demo_writes_a_corpus_results_and_previews(tmp_path, capsys):
    torch.manual_seed(0)
    model_file = str(tmp_path / "model.vis.pt")
    save_model(model_file, VitaModel(vita_small_synth()))
    args = ["demo", "--out", str(tmp_path), "--videos", "2", "--previews", "1"]
    assert main([*args, "--model", model_file]) == 0
    assert (tmp_path / "corpus" / "annotations.json").is_file()
    assert len(list((tmp_path / "corpus" / "videos").glob("*.mp4"))) == 2
    assert isinstance(json.loads((tmp_path / "results.json").read_text()), list)
    names = sorted(path.name for path in (tmp_path / "previews").glob("*.png"))
    assert len(names) == 2  # ground truth and predictions of one video
    assert names[0].endswith("_ground_truth.png") and names[1].endswith("_predictions.png")
    for preview in (tmp_path / "previews").glob("*.png"):
        with av.open(str(preview)) as container:
            assert next(container.decode(video=0)).width > 320
    out = capsys.readouterr().out
    assert "instances per video" in out and "AP50" in out
