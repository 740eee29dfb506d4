"""Synthetic benchmark on disk: mp4s, YouTube-VIS json, stats, COCO images, CLI, determinism."""

from __future__ import annotations

import argparse
import io
import json
import uuid
from pathlib import Path

import av
import fsspec
import numpy as np
import pytest

import jobs.cli
import jobs.synth
from vis_core import masks
from vis_core.synth.generate import image_scene, synthesize_video
from vis_core.synth.render import render_video
from vis_core.synth.splits import SynthConfig, preset
from vis_core.synth.writer import generate_split
from vis_core.video.image import decode_image

# Short videos keep the suite fast; the presets' other settings are kept.
SPLIT_CASES = {
    "train": (preset("train").replace(frames=(6, 10)), 3),
    "val": (preset("val"), 3),
    "val-long": (preset("val-long").replace(frames=(16, 20)), 2),
}
# Mean absolute error of decoded pixels against the rendered frames: camera noise of up to
# 6 grey levels is partly smoothed away by H.264 at CRF <= 28 (7.5 at worst in 30 videos).
MAX_MEAN_ABS_ERROR = 10.0


def _decode_mp4(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module", params=sorted(SPLIT_CASES))
def written_split(request, tmp_path_factory) -> tuple[SynthConfig, Path]:
    config, count = SPLIT_CASES[request.param]
    out = tmp_path_factory.mktemp(f"synth-{request.param}")
    generate_split(str(out), config, num_videos=count, seed=5)
    return config, out


def test_mp4s_match_the_annotation_file(written_split):
    config, out = written_split
    data = _load(out / "annotations.json")
    assert [c["name"] for c in data["categories"]][:3] == ["circle", "square", "triangle"]
    assert len(data["videos"]) == SPLIT_CASES[config.name][1]
    for index, video in enumerate(data["videos"]):
        name = f"{config.name}_{index:05d}"
        assert video["id"] == index + 1 and video["video_path"] == f"videos/{name}.mp4"
        assert video["file_names"][:2] == [f"{name}/00000.jpg", f"{name}/00001.jpg"]
        assert len(video["file_names"]) == video["length"]
        assert config.frames[0] <= video["length"] <= config.frames[1]
        frames = _decode_mp4(out / video["video_path"])
        assert frames.shape == (video["length"], video["height"], video["width"], 3)
        assert (video["width"], video["height"]) == (320, 240)


def test_annotations_are_the_rendered_label_maps(written_split):
    config, out = written_split
    data = _load(out / "annotations.json")
    for index, video in enumerate(data["videos"]):
        scene, rendered = synthesize_video(config, seed=5, index=index)
        tracks = [a for a in data["annotations"] if a["video_id"] == video["id"]]
        visible = [k for k in range(1, len(scene.objects) + 1) if (rendered.labels == k).any()]
        assert len(tracks) == len(visible)  # never-visible instances have no annotation
        for track, instance in zip(tracks, visible, strict=True):
            assert track["category_id"] == scene.objects[instance - 1].category.id
            assert track["iscrowd"] == 0 and track["length"] == video["length"]
            assert (track["height"], track["width"]) == (240, 320)
            for t, rle in enumerate(track["segmentations"]):
                expected = rendered.labels[t] == instance
                if rle is None:
                    assert not expected.any()
                    assert track["areas"][t] is None and track["bboxes"][t] is None
                    continue
                assert isinstance(rle["counts"], str)
                np.testing.assert_array_equal(masks.decode_one(rle), expected)
                assert track["areas"][t] == int(masks.area([rle])[0]) == expected.sum()
                assert track["bboxes"][t] == masks.bbox([rle])[0].tolist()
        decoded = _decode_mp4(out / video["video_path"])
        error = np.abs(decoded.astype(np.int16) - rendered.frames.astype(np.int16)).mean()
        assert error < MAX_MEAN_ABS_ERROR, (video["id"], error)


def test_stats_file(written_split):
    config, out = written_split
    stats = _load(out / "stats.json")
    assert stats["split"] == config.name and stats["num_videos"] == SPLIT_CASES[config.name][1]
    assert stats["mean_instances_per_video"] >= config.instances[0] - 1
    for key in (
        "share_videos_repeated_category",
        "share_instance_frames_occluded_over_30pct",
        "share_tracks_entering_or_leaving",
    ):
        assert 0.0 <= stats[key] <= 1.0
    annotations = _load(out / "annotations.json")["annotations"]
    assert stats["num_instances"] == len(annotations)


def test_same_seed_same_bytes_and_videos_independent_of_count(tmp_path):
    config = preset("val").replace(frames=(5, 8))
    generate_split(str(tmp_path / "a"), config, num_videos=3, seed=11)
    generate_split(str(tmp_path / "b"), config, num_videos=3, seed=11, workers=2)
    generate_split(str(tmp_path / "c"), config, num_videos=2, seed=11)
    generate_split(str(tmp_path / "d"), config, num_videos=3, seed=12)
    first = (tmp_path / "a" / "annotations.json").read_bytes()
    assert first == (tmp_path / "b" / "annotations.json").read_bytes()
    assert (tmp_path / "a" / "stats.json").read_bytes() == (
        tmp_path / "b" / "stats.json"
    ).read_bytes()
    for name in ("val_00000", "val_00002"):
        np.testing.assert_array_equal(
            _decode_mp4(tmp_path / "a" / "videos" / f"{name}.mp4"),
            _decode_mp4(tmp_path / "b" / "videos" / f"{name}.mp4"),
        )
    three, two = json.loads(first), _load(tmp_path / "c" / "annotations.json")
    assert three["videos"][:2] == two["videos"]
    assert three["annotations"][: len(two["annotations"])] == two["annotations"]
    assert first != (tmp_path / "d" / "annotations.json").read_bytes()


def test_coco_image_set(tmp_path):
    config = preset("train")
    summary = generate_split(str(tmp_path), config, num_videos=0, seed=2, coco_images=3)
    assert summary.coco_annotations_uri is not None
    data = _load(tmp_path / "coco" / "annotations.json")
    assert {c["id"] for c in data["categories"]} == set(range(1, 9))
    assert [image["id"] for image in data["images"]] == [1, 2, 3]
    assert [a["id"] for a in data["annotations"]] == list(range(1, len(data["annotations"]) + 1))
    for index, image in enumerate(data["images"]):
        pixels = decode_image((tmp_path / "coco" / "images" / image["file_name"]).read_bytes())
        assert pixels.shape == (image["height"], image["width"], 3) == (240, 320, 3)
        scene = image_scene(config, seed=2, index=index)
        rendered = render_video(scene)
        assert np.abs(pixels.astype(np.int16) - rendered.frames[0]).mean() < MAX_MEAN_ABS_ERROR
        own = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        visible = [k for k in range(1, len(scene.objects) + 1) if (rendered.labels[0] == k).any()]
        assert len(own) == len(visible) >= 1
        for annotation, instance in zip(own, visible, strict=True):
            rle = annotation["segmentation"]
            np.testing.assert_array_equal(masks.decode_one(rle), rendered.labels[0] == instance)
            assert annotation["area"] == int(masks.area([rle])[0]) > 0
            assert annotation["bbox"] == masks.bbox([rle])[0].tolist()
            assert annotation["iscrowd"] == 0
            assert annotation["category_id"] == scene.objects[instance - 1].category.id


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    jobs.synth.register(parser.add_subparsers())
    return parser.parse_args(["synth", *argv])


def test_cli_writes_annotations_and_stats(tmp_path, capsys):
    out = tmp_path / "cli"
    args = _cli(
        [
            "--out",
            str(out),
            "--split",
            "val",
            "--videos",
            "2",
            "--seed",
            "4",
            "--frames",
            "3",
            "5",
            "--size",
            "96x64",
            "--instances",
            "3",
            "4",
            "--workers",
            "1",
        ]
    )
    assert args.func(args) == 0
    data = _load(out / "annotations.json")
    assert [(v["width"], v["height"]) for v in data["videos"]] == [(96, 64), (96, 64)]
    assert all(3 <= v["length"] <= 5 for v in data["videos"])
    assert data["info"]["config"]["instances"] == [3, 4]
    stats = _load(out / "stats.json")
    assert stats["num_videos"] == 2 and stats["seed"] == 4
    assert "instances per video" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        _cli(["--out", str(out), "--size", "96by64"])
    bad = _cli(["--out", str(out), "--frames", "9", "3"])
    assert bad.func(bad) == 2


def test_writes_through_fsspec_uris():
    root = f"memory://synth-{uuid.uuid4().hex}/val"
    config = preset("val").replace(frames=(3, 4))
    summary = generate_split(root, config, num_videos=1, seed=0)
    fs = fsspec.filesystem("memory")
    path = root.removeprefix("memory://")
    try:
        data = json.loads(fs.cat(f"{path}/annotations.json"))
        assert summary.annotations_uri.endswith(f"{path}/annotations.json")
        with av.open(io.BytesIO(fs.cat(f"{path}/{data['videos'][0]['video_path']}"))) as video:
            assert sum(1 for _ in video.decode(video=0)) == data["videos"][0]["length"]
        assert fs.exists(f"{path}/stats.json")
    finally:
        fs.rm(path.rsplit("/", 1)[0], recursive=True)


def test_vis_command_runs_synth(tmp_path):
    out = tmp_path / "vis"
    argv = ["synth", "--out", str(out), "--videos", "1", "--frames", "2", "2"]
    assert jobs.cli.main([*argv, "--size", "64x48", "--workers", "1"]) == 0
    assert _load(out / "annotations.json")["videos"][0]["length"] == 2
    assert _load(out / "stats.json")["num_frames"] == 2
