"""Mask overlays, contact sheets and PNGs; the embedded-default demo end to end."""

import av
import numpy as np
import torch

from jobs.cli import main
from tests.media import smooth_frames
from vis_core.modeling.model_file import save_model
from vis_core.modeling.presets import vita_small_synth
from vis_core.modeling.vita_model import VitaModel
from vis_core.render.overlay import contact_sheet, instance_colors, overlay_masks, write_png
from vis_core.tables.read import read_table
from vis_core.video.encode import write_mp4


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


def test_demo_runs_the_corpus_job_evaluates_and_renders(tmp_path, capsys):
    import ray

    torch.manual_seed(0)
    model_file = str(tmp_path / "model.vis.pt")
    save_model(model_file, VitaModel(vita_small_synth()))
    real = tmp_path / "real_videos"
    real.mkdir()
    write_mp4(str(real / "clip one.mp4"), smooth_frames(5, 48, 64), fps=5.0)
    args = ["demo", "--out", str(tmp_path / "demo"), "--videos", "2", "--previews", "1"]
    try:
        assert main([*args, "--model", model_file, "--real-videos", str(real)]) == 0
    finally:
        ray.shutdown()
    demo = tmp_path / "demo"
    assert len(list((demo / "bucket" / "synthetic").glob("*.mp4"))) == 2
    assert (demo / "bucket" / "real" / "clip one.mp4").is_file()
    videos = read_table(str(demo / "tables"), "videos").to_pylist()
    assert sorted(v["video_id"] for v in videos) == [
        "real/clip one.mp4",
        "synthetic/val_00000.mp4",
        "synthetic/val_00001.mp4",
    ]
    previews = sorted(path.name for path in (demo / "previews").iterdir())
    assert previews == [
        "real_clip one.mp4",
        "real_clip one.png",
        "synthetic_val_00000.mp4",
        "synthetic_val_00000.png",
    ]
    out = capsys.readouterr().out
    assert "instances per video" in out and "AP50" in out
    assert "videos: 3 in the corpus, 0 already committed, 3 ok, 0 failed" in out
