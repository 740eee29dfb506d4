"""Display rotation: frames, sizes, tables, masks and renders in the orientation players
show, the one FFmpeg's own autorotation applies."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from av.filter import Graph

from tests.fuzz_corpus import ClipSpec, clip_frames, encode_clip
from vis_core import masks
from vis_core.corpus.listing import CorpusVideo
from vis_core.corpus.process import ProcessOptions, process_video
from vis_core.inference.frames import open_frames
from vis_core.inference.instances import VideoInstances
from vis_core.render.tracklets import render_tracklets
from vis_core.tables.commit import TableCommitter
from vis_core.video.decode import open_video
from vis_core.video.orientation import Orientation, matrix_orientation

# The phone clip: stored 320 wide and 180 high, shown turned a quarter.
PORTRAIT = ClipSpec("portrait.mp4", "rotation", "libx264", "yuv420p", size=(180, 320), rotation=90)
BLOCK = 45  # side of the white block in the stored top-left corner (clip_frames)


def write(tmp_path: Path, spec: ClipSpec) -> Path:
    path = tmp_path / spec.name
    path.write_bytes(encode_clip(spec))
    return path


def corner_means(image: np.ndarray, side: int) -> dict[str, float]:
    """Mean brightness of each corner's `side` x `side` block of an `[H, W, 3]` image."""
    gray = image.min(axis=2).astype(np.float64)
    return {
        "top-left": gray[:side, :side].mean(),
        "top-right": gray[:side, -side:].mean(),
        "bottom-left": gray[-side:, :side].mean(),
        "bottom-right": gray[-side:, -side:].mean(),
    }


def white_corner(image: np.ndarray, side: int) -> str:
    means = corner_means(image, side)
    corner = max(means, key=means.get)
    assert means[corner] > 200, means
    return corner


@pytest.mark.parametrize(
    ("rotation", "size", "corner"),
    [
        (90, (320, 180), "bottom-left"),  # a quarter turn counter-clockwise
        (-90, (320, 180), "top-right"),  # clockwise: a phone held upright
        (180, (180, 320), "bottom-right"),
    ],
)
def test_portrait_clip_comes_out_as_players_show_it(
    tmp_path: Path, rotation: int, size: tuple[int, int], corner: str
) -> None:
    path = write(
        tmp_path,
        ClipSpec("clip.mp4", "rotation", "libx264", "yuv420p", (180, 320), 4, rotation=rotation),
    )
    with open_video(path) as video:
        assert (video.info.height, video.info.width) == size
        assert video.info.orientation == Orientation(rotation % 360)
        frames = [frame.image for frame in video.frames()]
        assert video.output_size(90)[1 if size[0] > size[1] else 0] == 90
        chunk = next(video.iter_chunks(4, shortest_edge=90))
    assert [frame.shape for frame in frames] == [(*size, 3)] * 4
    # The white block of the stored top-left corner is where a player shows it.
    assert white_corner(frames[0], BLOCK) == corner
    assert chunk.frames.shape[1:3] == video.output_size(90)
    assert white_corner(chunk.frames[0], BLOCK * 90 // 180) == corner


def test_unrotated_clip_keeps_its_stored_frames(tmp_path: Path) -> None:
    path = write(tmp_path, ClipSpec("plain.mp4", "codec", "libx264", "yuv420p", (180, 320), 2))
    with open_video(path) as video:
        assert (video.info.width, video.info.height) == (320, 180)
        assert video.info.orientation == Orientation()
        assert white_corner(next(video.frames()).image, BLOCK) == "top-left"


# What `ffmpeg` itself applies for each display matrix (fftools' autorotation: the angle
# it reads and the sign of matrix[3] or the diagonal choose transpose, hflip and vflip).
FFMPEG_AUTOROTATE = [
    ((90, False, False), [("transpose", "cclock")]),
    ((90, True, False), [("transpose", "clock_flip")]),
    ((-90, False, False), [("transpose", "clock")]),
    ((-90, True, False), [("transpose", "cclock_flip")]),
    ((180, False, False), [("hflip", None), ("vflip", None)]),
    ((180, True, False), [("vflip", None)]),
    ((0, True, False), [("hflip", None)]),
    ((0, False, True), [("vflip", None)]),
]


@pytest.mark.parametrize(("set_rotation", "filters"), FFMPEG_AUTOROTATE)
def test_orientation_matches_ffmpeg_autorotation(
    set_rotation: tuple[int, bool, bool], filters: list[tuple[str, str | None]]
) -> None:
    degrees, hflip, vflip = set_rotation
    stored = np.random.default_rng(0).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    assert np.array_equal(
        _orientation_of(degrees, hflip, vflip).apply(stored), _ffmpeg(stored, filters)
    )


def test_display_matrix_parsing() -> None:
    one = 1 << 16
    assert matrix_orientation([one, 0, 0, 0, one, 0, 0, 0, 1 << 30]) == Orientation()
    assert matrix_orientation([0, -one, 0, one, 0, 0, 0, 0, 1 << 30]) == Orientation(90)
    assert matrix_orientation([0, one, 0, -one, 0, 0, 0, 0, 1 << 30]) == Orientation(270)
    assert matrix_orientation([-one, 0, 0, 0, one, 0, 0, 0, 1 << 30]) == Orientation(0, True)
    assert matrix_orientation([0] * 9) == Orientation()  # degenerate: ignored, as players do
    with pytest.raises(ValueError, match="9 elements"):
        matrix_orientation([one, 0, 0])
    with pytest.raises(ValueError, match="rotation"):
        Orientation(45)


class BrightSegmenter:
    """Stands in for the model: one instance, the near-white pixels of every frame."""

    def segment(self, frames) -> VideoInstances:
        images = list(open_frames(frames))
        height, width = images[0].shape[:2]
        track = tuple(masks.encode_one(image.min(axis=2) > 200) for image in images)
        return VideoInstances(
            num_frames=len(images),
            height=height,
            width=width,
            scores=np.array([0.9], np.float32),
            labels=np.array([0], np.int64),
            masks=(track,),
        )


def test_tables_masks_and_render_line_up_with_the_displayed_frames(tmp_path: Path) -> None:
    path = write(tmp_path, PORTRAIT)
    rows = process_video(
        CorpusVideo("portrait.mp4", str(path), 0),
        BrightSegmenter(),
        ProcessOptions(model="bright", run_id="rotation"),
        ("bright",),
    )
    video = rows.tables["videos"].to_pylist()[0]
    assert (video["status"], video["width"], video["height"]) == ("ok", 180, 320)
    frames = rows.tables["tracklet_frames"].to_pylist()
    assert len(frames) == PORTRAIT.num_frames
    for row in frames:
        assert (row["width"], row["height"]) == (180, 320)
        mask = masks.decode_one(masks.from_bytes(row["mask"], 320, 180))
        # The stored top-left block, shown bottom-left, is where the mask is.
        assert white_corner(np.repeat(mask[..., None] * 255, 3, axis=2), BLOCK) == "bottom-left"
        assert row["bbox"][0] < 2 and row["bbox"][1] > 320 - BLOCK - 3
    TableCommitter(str(tmp_path / "tables"), "rotation").commit(rows)
    out = tmp_path / "render.mp4"
    summary = render_tracklets(str(tmp_path / "tables"), "portrait.mp4", str(out), min_score=0)
    assert summary.frames_written == PORTRAIT.num_frames
    with open_video(out) as rendered:
        assert (rendered.info.width, rendered.info.height) == (180, 320)


def _orientation_of(degrees: int, hflip: bool, vflip: bool) -> Orientation:
    """The orientation the reader finds in a one-frame clip written with this rotation."""
    import io

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 16, "yuv420p"
        stream.set_display_rotation(degrees, hflip=hflip, vflip=vflip)
        frame = av.VideoFrame.from_ndarray(clip_frames(1, 16, 32)[0], format="rgb24")
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with open_video(io.BytesIO(buffer.getvalue())) as video:
        return video.info.orientation


def _ffmpeg(image: np.ndarray, filters: list[tuple[str, str | None]]) -> np.ndarray:
    """`image` through FFmpeg's own filters, in order."""
    graph = Graph()
    height, width = image.shape[:2]
    last = graph.add_buffer(width=width, height=height, format="rgb24", time_base=Fraction(1, 10))
    for name, argument in filters:
        node = graph.add(name, argument) if argument else graph.add(name)
        last.link_to(node)
        last = node
    sink = graph.add("buffersink")
    last.link_to(sink)
    graph.configure()
    graph.push(av.VideoFrame.from_ndarray(image, format="rgb24"))
    return graph.pull().to_ndarray()
