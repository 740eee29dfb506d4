"""`vis render`: tracklets from the output tables drawn over a video; the bitmap font."""

import argparse

import av
import numpy as np
import pytest

from jobs import render as render_job
from vis_core import masks
from vis_core.inference.instances import VideoInstances
from vis_core.render.font import GLYPHS, draw_text, text_bitmap, text_size
from vis_core.render.overlay import instance_colors
from vis_core.render.tracklets import RenderError, label_origin, render_tracklets
from vis_core.synth.shapes import CATEGORIES
from vis_core.tables.commit import TableCommitter
from vis_core.tables.read import TablesNotFoundError
from vis_core.tables.rows import VideoRecord, failed_rows, ok_rows
from vis_core.video.encode import write_mp4

T, H, W = 6, 64, 160
RUN = "run-1"
LABELS = ("#0 cat 0.90", "#1 dog 0.75")


def _source_frames() -> np.ndarray:
    """`[T, H, W, 3]` smooth grey-blue gradients, brighter frame by frame."""
    ys, xs = np.mgrid[0:H, 0:W]
    base = np.stack([60 + xs // 4, 80 + ys // 2, 110 + 0 * xs], axis=-1)
    return np.stack([base + 4 * t for t in range(T)]).astype(np.uint8)


def _instance_masks() -> np.ndarray:
    """`[2, T, H, W]`: a still box, and a box moving right that is absent in frame 0."""
    dense = np.zeros((2, T, H, W), bool)
    dense[0, :, 14:34, 6:40] = True
    for t in range(1, T):
        dense[1, t, 40:60, 70 + 2 * t : 110 + 2 * t] = True
    return dense


def _decode(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _luma(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


@pytest.fixture
def tables(tmp_path):
    """Tables under tmp_path/out: an `ok` video with two tracklets and a `failed` one."""
    video_uri = str(tmp_path / "corpus" / "clip.mp4")
    write_mp4(video_uri, _source_frames(), fps=5, crf=10)
    dense = _instance_masks()
    instances = VideoInstances(
        num_frames=T,
        height=H,
        width=W,
        scores=np.array([0.9, 0.75], np.float32),
        labels=np.array([0, 1]),
        masks=tuple(tuple(masks.encode(track)) for track in dense),
    )
    out = str(tmp_path / "out")
    committer = TableCommitter(out, RUN)
    record = VideoRecord("clips/clip.mp4", video_uri, "tiny", RUN, T, 5.0, W, H)
    committer.commit(ok_rows(record, instances, ["cat", "dog"], np.arange(T) / 5.0))
    broken = VideoRecord("clips/broken.mp4", str(tmp_path / "broken.mp4"), "tiny", RUN)
    committer.commit(failed_rows(broken, "clips/broken.mp4: not a video"))
    return out


def test_render_draws_masks_and_labels_over_the_frames(tables, tmp_path):
    out, sheet = tmp_path / "render" / "clip.mp4", tmp_path / "render" / "clip.png"
    summary = render_tracklets(
        tables, "clips/clip.mp4", str(out), sheet_uri=str(sheet), sheet_frames=4, min_score=0.0
    )
    assert (summary.frames_written, summary.tracklets_drawn, summary.run_id) == (T, 2, RUN)

    rendered = _decode(out).astype(np.int16)
    source = _decode(tmp_path / "corpus" / "clip.mp4").astype(np.int16)
    assert rendered.shape == (T, H, W, 3)
    dense, colors = _instance_masks(), instance_colors(2).astype(np.int16)
    scale, boxes = 1, {0: (6, 14, 34, 20), 1: (70, 40, 40, 20)}  # frame 0's box of track 1
    for t in range(T):
        labelled = np.zeros((H, W), bool)
        for track in (0, 1):
            if not dense[track, t].any():
                continue
            box = boxes[track] if track == 0 else (70 + 2 * t, 40, 40, 20)
            width, height = text_size(LABELS[track], scale)
            x, y = label_origin(box, (width, height), (H, W))
            assert y + height == box[1]  # just above the box
            expected = np.zeros((H, W, 3), np.uint8)
            draw_text(expected, LABELS[track], x, y, colors[track], scale=scale)
            ink = expected.any(axis=-1)
            box_area = np.zeros((H, W), bool)
            box_area[y : y + height, x : x + width] = True
            got = _luma(rendered[t])
            assert got[ink].mean() - got[box_area & ~ink].mean() > 60  # text on a dark box
            assert np.corrcoef(got[box_area], _luma(expected)[box_area])[0, 1] > 0.8
            labelled |= box_area
            # Inside the mask (off its outline) the pixels moved toward the track's colour.
            inner = dense[track, t].copy()
            inner[np.flatnonzero(inner.any(1))[[0, -1]]] = False
            inner[:, np.flatnonzero(inner.any(0))[[0, -1]]] = False
            before = np.abs(source[t][inner] - colors[track]).mean()
            after = np.abs(rendered[t][inner] - colors[track]).mean()
            assert after < 0.7 * before
        # Away from masks and labels (2 pixels of margin for compression), nothing changed.
        touched = np.pad(dense[:, t].any(0) | labelled, 2)
        near = np.zeros((H, W), bool)
        for dy in range(5):
            for dx in range(5):
                near |= touched[dy : dy + H, dx : dx + W]
        assert np.abs(rendered[t][~near] - source[t][~near]).mean() < 3
    # Track 1 is absent in frame 0: its region there is the plain frame.
    region = np.s_[40:60, 72:112]
    assert np.abs(rendered[0][region] - source[0][region]).mean() < 3
    assert np.abs(rendered[1][region] - source[1][region]).mean() > 20

    sheet_image = _decode(sheet)[0]  # 4 frames in one row, 4-pixel gaps
    assert sheet_image.shape == (H + 2 * 4, 4 * W + 5 * 4, 3)


def test_render_draws_only_tracks_above_min_score_and_says_so(tables, tmp_path):
    out = tmp_path / "render" / "confident.mp4"
    summary = render_tracklets(tables, "clips/clip.mp4", str(out), min_score=0.8)
    assert (summary.tracklets_drawn, summary.tracklets_hidden) == (1, 1)
    rendered = _decode(out).astype(np.int16)
    source = _decode(tmp_path / "corpus" / "clip.mp4").astype(np.int16)
    # Track 1 (score 0.75) is not drawn: its region (above the legend) is the plain frame.
    region = np.s_[40:52, 72:112]
    assert np.abs(rendered[1][region] - source[1][region]).mean() < 3
    # Track 0 (0.90) is.
    assert np.abs(rendered[1][14:34, 8:38] - source[1][14:34, 8:38]).mean() > 20
    # The legend, white on black, at the bottom-left corner of every frame.
    legend = "tracks scoring >= 0.80"
    width, height = text_size(legend, 1)
    expected = np.zeros((height, width, 3), np.uint8)
    draw_text(expected, legend, 0, 0, (255, 255, 255))
    for frame in rendered:
        corner = _luma(frame[H - height :, :width])
        assert np.corrcoef(corner.flatten(), _luma(expected).flatten())[0, 1] > 0.8
    with pytest.raises(ValueError, match="min_score"):
        render_tracklets(tables, "clips/clip.mp4", str(out), min_score=1.5)


def test_render_errors_name_the_problem(tables, tmp_path):
    out = str(tmp_path / "x.mp4")
    with pytest.raises(RenderError, match=r"'nope.mp4' is not in run 'run-1'.*'clips/clip.mp4'"):
        render_tracklets(tables, "nope.mp4", out)
    with pytest.raises(RenderError, match=r"failed in run 'run-1': clips/broken.mp4: not a video"):
        render_tracklets(tables, "clips/broken.mp4", out)
    with pytest.raises(RenderError, match=r"run 'other' has no committed .* runs are 'run-1'"):
        render_tracklets(tables, "clips/clip.mp4", out, run_id="other")
    with pytest.raises(TablesNotFoundError, match="no committed video"):
        render_tracklets(str(tmp_path / "empty"), "clips/clip.mp4", out)


def test_cli_writes_the_mp4_and_the_sheet_next_to_it(tables, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    render_job.register(parser.add_subparsers())
    out = tmp_path / "cli" / "clip.mp4"
    with pytest.raises(SystemExit):  # --out is required
        parser.parse_args(["render", "--tables", tables, "--video", "clips/clip.mp4"])
    args = parser.parse_args(
        ["render", "--tables", tables, "--video", "clips/clip.mp4", "--out", str(out)]
    )
    assert args.func(args) == 0
    assert out.is_file() and (tmp_path / "cli" / "clip.png").is_file()
    assert f"{T} frames, 2 tracklets" in capsys.readouterr().out
    bad = parser.parse_args(
        ["render", "--tables", tables, "--video", "clips/broken.mp4", "--out", str(out)]
    )
    assert bad.func(bad) == 2
    assert "vis render: error: video 'clips/broken.mp4' failed" in capsys.readouterr().err


def test_draw_text_glyphs_background_and_clipping():
    image = np.full((20, 40, 3), 200, np.uint8)
    draw_text(image, "1a", 2, 3, (255, 0, 0))
    width, height = text_size("1a")
    assert (width, height) == (13, 9)
    box = image[3 : 3 + height, 2 : 2 + width]
    ink = (box == (255, 0, 0)).all(-1)
    assert ((box == 0).all(-1) | ink).all()  # the box is background or ink
    # "1": a column down the middle with a foot; "a" is drawn as "A".
    assert ink[1:8, 1:6].tolist()[6] == [False, True, True, True, False]
    assert ink[1:8, 3].all()
    np.testing.assert_array_equal(ink[1:8, 7:12], text_bitmap("A")[1:8, 1:6])
    assert (image[:3] == 200).all() and (image[:, 15:] == 200).all()  # nothing outside
    # Partly outside: only the inside part, the same pixels as unclipped.
    big = np.zeros((40, 60, 3), np.uint8)
    draw_text(big, "#7:", 10, 10, (9, 9, 9), scale=2, background=(1, 1, 1))
    clipped = np.zeros((20, 20, 3), np.uint8)
    draw_text(clipped, "#7:", -5, -4, (9, 9, 9), scale=2, background=(1, 1, 1))
    np.testing.assert_array_equal(clipped, big[14:34, 15:35])
    draw_text(clipped, "far away", 100, 100, (9, 9, 9))  # entirely outside: no error
    assert text_bitmap("?").tolist() == text_bitmap("~").tolist()  # unknown -> "?"


def test_every_character_the_previews_write_has_a_glyph():
    """Labels (`#<id> <category> <score>`) and the legend are drawn without `?`."""
    written = "tracks scoring >= 0.50 #12 " + " ".join(c.name for c in CATEGORIES) + " 0.93"
    assert {char for char in written.upper() if char not in GLYPHS} == set()
    assert text_bitmap(">=").tolist() != text_bitmap("??").tolist()
