"""The staged job's pieces without Ray: the decode stage, `VitaProgram` with the mask
chunks (equal to `VideoSegmenter`), batching across videos, the detector stage's reports
and failures, and the device stand-in."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.media import smooth_frames
from vis_core.corpus.chunks import VideoFailure, VideoHeader, decode_items
from vis_core.corpus.detector_stage import FAILED, LONG, OK, RETRY, DetectorStage
from vis_core.corpus.listing import CorpusVideo
from vis_core.inference.frames import PreparedChunk, input_geometry
from vis_core.inference.instances import VideoInstances
from vis_core.inference.mask_chunks import assemble_instances, encode_mask_logits
from vis_core.inference.program_segmenter import ProgramSegmenter
from vis_core.inference.segmenter import VideoSegmenter
from vis_core.inference.standin import StandInProgram
from vis_core.inference.vita_program import VitaProgram
from vis_core.modeling.presets import vita_small_synth
from vis_core.modeling.vita_model import VitaModel
from vis_core.video.decode import DecodeLimits
from vis_core.video.encode import write_mp4

CHUNK = 4  # detector chunks; videos over LONG_FRAMES take the two-pass path
LONG_FRAMES = 8


@pytest.fixture(scope="module")
def model() -> VitaModel:
    torch.manual_seed(0)
    config = vita_small_synth()
    config = dataclasses.replace(
        config,
        input=dataclasses.replace(config.input, min_size_test=64),
        inference=dataclasses.replace(
            config.inference,
            detector_chunk_frames=CHUNK,
            mask_chunk_frames=3,
            long_video_frames=LONG_FRAMES,
        ),
    )
    return VitaModel(config).eval()


def assert_identical(a: VideoInstances, b: VideoInstances) -> None:
    assert (a.num_frames, a.height, a.width) == (b.num_frames, b.height, b.width)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.masks == b.masks
    np.testing.assert_array_equal(a.areas(), b.areas())
    np.testing.assert_array_equal(a.boxes(), b.boxes())


@pytest.mark.parametrize("frames", [1, 7, 11])  # short, short over chunks, long
def test_program_run_serially_equals_the_video_segmenter(model: VitaModel, frames: int) -> None:
    video = list(smooth_frames(frames, 48, 80))
    expected = VideoSegmenter(model).segment(video)
    program = VitaProgram(model)
    got = ProgramSegmenter(program, model.config.input, CHUNK).segment(video)
    assert_identical(got, expected)
    assert program.open_videos == 0


def chunks_of(frames: np.ndarray, model: VitaModel) -> list[PreparedChunk]:
    """A video's prepared chunks, as the decode stage makes them."""
    segmenter = ProgramSegmenter(VitaProgram(model), model.config.input, CHUNK)
    return list(segmenter._chunks(list(frames)))


def test_batches_across_videos_give_each_video_its_instances(model: VitaModel) -> None:
    """Two videos of one size and one of another, interleaved chunk by chunk in calls of
    up to 3 chunks; each video as segmented alone (up to the kernels' rounding)."""
    videos = {
        "a": smooth_frames(6, 48, 80),
        "b": smooth_frames(10, 48, 80)[::-1].copy(),  # long
        "c": smooth_frames(5, 40, 64),
    }
    program = VitaProgram(model, max_batch_frames=3 * CHUNK)
    chunks = {key: chunks_of(frames, model) for key, frames in videos.items()}
    for key, video_chunks in chunks.items():
        program.open(key, video_chunks[0].geometry)
    interleaved = [
        (key, video_chunks[index])
        for index in range(3)
        for key, video_chunks in chunks.items()
        if index < len(video_chunks)
    ]
    for start in range(0, len(interleaved), 3):
        program.detect(interleaved[start : start + 3])
    for key, frames in videos.items():
        selection, masks = program.finish(key)
        if masks is None:
            assert key == "b"
            masks = [program.second_pass(key, chunk) for chunk in chunks[key]]
            program.close(key)
        geometry = chunks[key][0].geometry
        got = assemble_instances(
            selection, [encode_mask_logits(m) for m in masks], geometry, len(frames)
        )
        expected = VideoSegmenter(model).segment(list(frames))
        np.testing.assert_array_equal(got.labels, expected.labels)
        np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-4, atol=1e-6)
        pairs = zip(got.masks, expected.masks, strict=True)
        agree = np.mean([a == b for x, y in pairs for a, b in zip(x, y, strict=True)])
        assert agree > 0.9, agree  # RLE strings of noise masks: the same but for rounding
    assert program.open_videos == 0


def write_corpus(root: Path) -> dict[str, CorpusVideo]:
    root.mkdir(parents=True, exist_ok=True)
    write_mp4(str(root / "short.mp4"), smooth_frames(6, 48, 64), fps=10.0)
    write_mp4(str(root / "long.mp4"), smooth_frames(10, 48, 64), fps=10.0)
    data = (root / "short.mp4").read_bytes()
    (root / "empty.mp4").write_bytes(b"")
    noise = np.random.default_rng(0).integers(0, 256, (12, 96, 128, 3), dtype=np.uint8)
    write_mp4(str(root / "whole.mp4"), noise, fps=10.0)
    whole = (root / "whole.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    del data
    return {
        name: CorpusVideo(name, str(root / name), (root / name).stat().st_size)
        for name in ("short.mp4", "long.mp4", "empty.mp4", "truncated.mp4")
    }


def test_decode_items_header_chunks_and_failures(model: VitaModel, tmp_path: Path) -> None:
    videos = write_corpus(tmp_path)
    items = list(decode_items(videos["short.mp4"], DecodeLimits(), model.config.input, CHUNK))
    header, *chunks = items
    assert isinstance(header, VideoHeader) and (header.width, header.height) == (64, 48)
    assert header.geometry == input_geometry(48, 64, model.config.input)
    assert [(c.first_frame, len(c)) for c in chunks] == [(0, 4), (4, 2)]
    assert chunks[0].frames.shape == (4, 64, 85, 3) and chunks[0].frames.dtype == np.uint8
    assert chunks[1].timestamps.tolist() == pytest.approx([0.4, 0.5])
    (empty,) = decode_items(videos["empty.mp4"], DecodeLimits(), model.config.input, CHUNK)
    assert isinstance(empty, VideoFailure) and empty.message.startswith("EmptyVideoError: ")
    *_, broken = decode_items(videos["truncated.mp4"], DecodeLimits(), model.config.input, CHUNK)
    assert isinstance(broken, VideoFailure)
    assert broken.message.startswith("CorruptVideoError: "), broken.message
    limited = DecodeLimits(max_frames=8)
    *_, too_long = decode_items(videos["long.mp4"], limited, model.config.input, CHUNK)
    assert isinstance(too_long, VideoFailure)
    assert too_long.message.startswith("VideoTooLargeError: ")


def test_detector_stage_reports(model: VitaModel, tmp_path: Path) -> None:
    videos = write_corpus(tmp_path)
    items = {
        name: list(decode_items(video, DecodeLimits(), model.config.input, CHUNK))
        for name, video in videos.items()
    }
    stage = DetectorStage(VitaProgram(model, max_batch_frames=2 * CHUNK))
    lost = ConnectionError("the decoding worker died")
    stage.take([("lost", items["short.mp4"][0]), ("lost", lost)])
    longest = max(len(v) for v in items.values())
    for index in range(longest):  # every video's items, interleaved
        stage.take([(name, v[index]) for name, v in items.items() if index < len(v)])
    report, masks = stage.finish("short.mp4", 3)
    assert report.status == OK and report.num_frames == 6 and report.error is None
    assert [m.first_frame for m in masks[:2]] == [0, 4] and masks[2] is None
    assert report.timestamps.tolist() == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert report.seconds.decode > 0 and report.seconds.detect > 0 and report.seconds.head > 0
    for name, error in (("empty.mp4", "EmptyVideoError"), ("truncated.mp4", "CorruptVideoError")):
        report, masks = stage.finish(name, 0)
        assert report.status == FAILED and report.error.startswith(error) and masks == []
    report, _ = stage.finish("lost", 0)
    assert report.status == RETRY and "ConnectionError" in report.error
    report, masks = stage.finish("long.mp4", 3)
    assert report.status == LONG and masks == [None] * 3
    second = list(decode_items(videos["long.mp4"], DecodeLimits(), model.config.input, CHUNK))
    got = [stage.second_pass("long.mp4", item) for item in second]
    assert got[0] is None and [m.first_frame for m in got[1:]] == [0, 4, 8]
    closed = stage.close("long.mp4")
    assert closed.status == OK and closed.seconds.head > 0
    assert stage.program.open_videos == 0


def test_detector_stage_fails_a_video_whose_frames_break_the_model(model: VitaModel) -> None:
    """One bad video in a batch fails alone: the others of the batch go on."""
    good = chunks_of(smooth_frames(3, 48, 80), model)[0]
    bad = dataclasses.replace(good, first_frame=5)  # not where its video is
    stage = DetectorStage(VitaProgram(model, max_batch_frames=4 * CHUNK))
    header = VideoHeader(10.0, 80, 48, good.geometry)
    stage.take([("good", header), ("bad", header), ("good", good), ("bad", bad)])
    assert stage.finish("good", 1)[0].status == OK
    report, _ = stage.finish("bad", 1)
    assert report.status == FAILED and report.error.startswith("ValueError while processing")


def test_standin_holds_the_device_and_gives_real_looking_outputs(
    model: VitaModel, tmp_path: Path
) -> None:
    frames = smooth_frames(11, 48, 80)
    real = VitaProgram(model)
    standin = StandInProgram(real, frame_s=0.01, log_path=str(tmp_path / "device.log"))
    segmenter = ProgramSegmenter(standin, model.config.input, CHUNK)
    started = time.perf_counter()
    instances = segmenter.segment(list(frames))  # long: 11 frames held twice
    assert time.perf_counter() - started >= 0.22
    assert standin.frames == 22 and standin.busy_s >= 0.22
    held = [line.split() for line in (tmp_path / "device.log").read_text().splitlines()]
    assert sum(int(frames) for _, _, frames in held) == 22
    assert all(float(end) - float(start) >= 0.01 * int(n) for start, end, n in held)
    assert instances.num_frames == 11 and len(instances) == model.config.inference.top_k
    one = VideoSegmenter(model).segment(list(frames[:1]))
    np.testing.assert_array_equal(instances.labels, one.labels)
    for track, first in zip(instances.masks, one.masks, strict=True):
        assert all(rle == first[0] for rle in track)  # the first frame's masks, repeated
    assert real.open_videos == 0
