"""The YouTube-VIS / OVIS reader: annotations, masks in every official form, frames."""

import json

import av
import numpy as np
import pytest

from vis_core import masks
from vis_core.data.frames import iter_frames, read_frames, video_source
from vis_core.data.ytvis import AnnotationFormatError, YtvisDataset
from vis_core.video.encode import write_mp4
from vis_core.video.errors import CorruptVideoError, VideoReadError

HEIGHT, WIDTH, LENGTH = 24, 32, 4


def _frames(seed: int) -> np.ndarray:
    """Smooth frames `[T, H, W, 3]` that survive compression nearly unchanged."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 215, size=(LENGTH, 1, 1, 3))
    ramp = np.linspace(0, 30, WIDTH)[None, None, :, None]
    return np.broadcast_to(base + ramp, (LENGTH, HEIGHT, WIDTH, 3)).astype(np.uint8)


def _write_jpeg(path, image: np.ndarray) -> None:
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("mjpeg", rate=1)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuvj444p"
        stream.options = {"qscale": "2"}
        container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))


@pytest.fixture
def dataset_dir(tmp_path):
    """Three videos: one mp4 named by video_path, one at videos/NAME.mp4, one JPEG folder."""
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[4:12, 6:20] = True
    compressed = masks.encode_one(mask)
    polygon = [[6.0, 4.0, 19.0, 4.0, 19.0, 11.0, 6.0, 11.0]]
    # Column-major runs: 6 empty columns and 4 rows, then 14 columns of 8 ones.
    runs = [HEIGHT * 6 + 4] + [8, HEIGHT - 8] * 13 + [8, HEIGHT - 12 + HEIGHT * 12]
    uncompressed = {"size": [HEIGHT, WIDTH], "counts": runs}
    videos, names = [], ["a", "b", "c"]
    for index, name in enumerate(names):
        entry = {
            "id": index + 1,
            "height": HEIGHT,
            "width": WIDTH,
            "length": LENGTH,
            "file_names": [f"{name}/{t:05d}.jpg" for t in range(LENGTH)],
        }
        if name == "a":
            entry["video_path"] = "clips/a.mp4"
            write_mp4(str(tmp_path / "clips" / "a.mp4"), _frames(index), fps=5, crf=0)
        elif name == "b":
            write_mp4(str(tmp_path / "videos" / "b.mp4"), _frames(index), fps=5, crf=0)
        else:
            (tmp_path / "JPEGImages" / name).mkdir(parents=True)
            for t, image in enumerate(_frames(index)):
                _write_jpeg(tmp_path / "JPEGImages" / entry["file_names"][t], image)
        videos.append(entry)
    annotations = [
        {"id": 1, "video_id": 1, "category_id": 2, "iscrowd": 0,
         "segmentations": [compressed, None, polygon, uncompressed],
         "areas": [112, None, 112, 112]},
        {"id": 2, "video_id": 3, "category_id": 1, "iscrowd": 1,
         "segmentations": [None, None, None, compressed], "areas": [None, None, None, 112]},
    ]  # fmt: skip
    data = {
        "videos": videos,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "star"}],
    }
    (tmp_path / "annotations.json").write_text(json.dumps(data))
    return tmp_path, mask


def test_load_parses_videos_tracks_and_categories(dataset_dir):
    root, _ = dataset_dir
    dataset = YtvisDataset.load(str(root / "annotations.json"))
    assert len(dataset) == 3
    assert [video.name for video in dataset.videos] == ["a", "b", "c"]
    assert dataset.category_names == {1: "circle", 2: "star"}
    (track,) = dataset.tracks(1)
    assert (track.category_id, track.length, track.iscrowd) == (2, LENGTH, False)
    assert dataset.tracks(2) == ()
    assert dataset.tracks(3)[0].iscrowd


def test_track_masks_from_every_segmentation_form(dataset_dir):
    root, mask = dataset_dir
    dataset = YtvisDataset.load(f"file://{root}/annotations.json")
    dense = dataset.tracks(1)[0].masks()
    assert dense.shape == (LENGTH, HEIGHT, WIDTH)
    for t in (0, 3):  # compressed and uncompressed RLE
        np.testing.assert_array_equal(dense[t], mask)
    assert not dense[1].any()
    # A rasterised polygon covers the same rectangle up to its edge convention.
    assert (dense[2] & mask).sum() == dense[2].sum() and dense[2].sum() >= 0.8 * mask.sum()
    # Some frames, in any order and repeated: only those are decoded.
    frames = np.array([3, 1, 3, 0, 2])
    np.testing.assert_array_equal(dataset.tracks(1)[0].masks(frames), dense[frames])


def test_frames_from_mp4_and_jpeg_folders(dataset_dir):
    root, _ = dataset_dir
    dataset = YtvisDataset.load(str(root / "annotations.json"))
    a, b, c = dataset.videos
    assert video_source(dataset, a).endswith("clips/a.mp4")
    assert video_source(dataset, b).endswith("videos/b.mp4")
    assert video_source(dataset, c) is None
    for index, video in enumerate(dataset.videos):
        frames = np.stack(list(iter_frames(dataset, video)))
        assert frames.shape == (LENGTH, HEIGHT, WIDTH, 3)
        error = np.abs(frames.astype(int) - _frames(index).astype(int)).mean()
        assert error < 4.0, f"video {video.name}: mean abs error {error}"


def test_read_frames_at_indices(dataset_dir):
    root, _ = dataset_dir
    dataset = YtvisDataset.load(str(root / "annotations.json"))
    video = dataset.videos[0]
    everything = read_frames(dataset, video)
    picked = read_frames(dataset, video, [3, 1, 1])
    np.testing.assert_array_equal(picked, everything[[3, 1, 1]])
    with pytest.raises(IndexError):
        read_frames(dataset, video, [LENGTH])


def test_frame_count_mismatch_and_missing_jpeg_raise(dataset_dir):
    root, _ = dataset_dir
    data = json.loads((root / "annotations.json").read_text())
    data["videos"][1]["file_names"].append("b/00004.jpg")  # mp4 has one frame fewer
    data["videos"][1]["length"] = LENGTH + 1
    data["annotations"] = []
    dataset = YtvisDataset.from_dict(data, root=str(root))
    with pytest.raises(CorruptVideoError, match="frames where the annotations list"):
        list(iter_frames(dataset, dataset.videos[1]))
    (root / "JPEGImages" / "c" / "00002.jpg").unlink()
    with pytest.raises(VideoReadError, match="not found"):
        list(iter_frames(dataset, dataset.videos[2]))


def test_test_split_without_annotations_loads():
    data = {"videos": [{"id": 7, "height": 2, "width": 2, "file_names": ["v/0.jpg"]}]}
    dataset = YtvisDataset.from_dict(data)
    assert dataset.tracks(7) == () and dataset.videos[0].length == 1


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("videos"), "no 'videos'"),
        (lambda d: d["videos"][0].pop("height"), "bad entry"),
        (lambda d: d["videos"][0].update(length=9), "length 9"),
        (lambda d: d["annotations"][0].update(video_id=99), "not a video"),
        (lambda d: d["annotations"][0]["segmentations"].pop(), "segmentations"),
        (lambda d: d["videos"].append(dict(d["videos"][0])), "not unique"),
    ],
)
def test_malformed_files_raise_clear_errors(dataset_dir, mutate, message):
    root, _ = dataset_dir
    data = json.loads((root / "annotations.json").read_text())
    mutate(data)
    with pytest.raises(AnnotationFormatError, match=message):
        YtvisDataset.from_dict(data)


def test_missing_file_and_bad_json(tmp_path):
    with pytest.raises(FileNotFoundError):
        YtvisDataset.load(str(tmp_path / "nope.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(AnnotationFormatError, match="not valid JSON"):
        YtvisDataset.load(str(tmp_path / "bad.json"))
