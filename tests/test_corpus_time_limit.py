"""The per-video time limit of the corpus path, without Ray: a video whose decoding hangs
or whose processing crawls gets a `failed` row in time, and the next video goes on."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

import vis_core.corpus.process as process_module
from tests.fuzz_corpus import ClipSpec, encode_clip
from vis_core import masks
from vis_core.corpus.listing import CorpusVideo
from vis_core.corpus.process import ProcessOptions, process_video
from vis_core.corpus.time_limit import TimeLimit
from vis_core.inference.frames import open_frames
from vis_core.inference.instances import VideoInstances

CLIP = ClipSpec("clip.mp4", "codec", "libx264", "yuv420p", num_frames=4)


CLASS_NAMES = ("thing",)


class SlowSegmenter:
    """Stands in for the model: an empty mask per frame, `seconds_per_frame` each."""

    def __init__(self, seconds_per_frame: float):
        self.seconds_per_frame = seconds_per_frame

    def segment(self, frames) -> VideoInstances:
        images = []
        for image in open_frames(frames):
            time.sleep(self.seconds_per_frame)
            images.append(image)
        height, width = images[0].shape[:2]
        empty = masks.encode_one(np.zeros((height, width), np.uint8))
        return VideoInstances(
            num_frames=len(images),
            height=height,
            width=width,
            scores=np.array([0.5], np.float32),
            labels=np.array([0], np.int64),
            masks=((empty,) * len(images),),
        )


@pytest.fixture
def clip(tmp_path: Path) -> CorpusVideo:
    path = tmp_path / CLIP.name
    path.write_bytes(encode_clip(CLIP))
    return CorpusVideo(CLIP.name, str(path), path.stat().st_size)


def videos_row(rows) -> dict:
    return rows.tables["videos"].to_pylist()[0]


def test_a_decoder_that_never_returns_gets_a_failed_row_in_time(
    clip: CorpusVideo, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck = threading.Event()

    def hangs(*args, **kwargs):
        stuck.wait()  # as FFmpeg stuck inside a call: nothing the consumer can interrupt
        raise RuntimeError("released")

    monkeypatch.setattr(process_module, "open_video", hangs)
    monkeypatch.setattr(process_module, "_STOP_WAIT_S", 0.2)
    options = ProcessOptions("m", "r", time_limit=TimeLimit(base_s=0.5))
    started = time.monotonic()
    try:
        row = videos_row(process_video(clip, SlowSegmenter(0.0), options, CLASS_NAMES))
    finally:
        stuck.set()
    assert time.monotonic() - started < 3.0
    assert row["status"] == "failed"
    assert row["error"].startswith(f"VideoTimeLimitError: {clip.uri}: processing took over")
    assert "after 0 frames" in row["error"]


def test_the_budget_grows_with_the_frames(clip: CorpusVideo) -> None:
    slow = SlowSegmenter(0.2)
    over = ProcessOptions("m", "r", time_limit=TimeLimit(base_s=0.5, per_frame_s=0.0))
    row = videos_row(process_video(clip, slow, over, CLASS_NAMES))
    assert row["status"] == "failed" and row["error"].startswith("VideoTimeLimitError")
    # What the video was known to be is kept in its failed row.
    assert (row["width"], row["height"]) == (64, 48)
    within = ProcessOptions("m", "r", time_limit=TimeLimit(base_s=0.5, per_frame_s=1.0))
    row = videos_row(process_video(clip, slow, within, CLASS_NAMES))
    assert (row["status"], row["num_frames"]) == ("ok", CLIP.num_frames)
    unlimited = ProcessOptions("m", "r", time_limit=TimeLimit(base_s=None))
    assert videos_row(process_video(clip, slow, unlimited, CLASS_NAMES))["status"] == "ok"


def test_time_limit_values() -> None:
    assert TimeLimit().start().remaining() > 0
    assert TimeLimit(base_s=None).start().remaining() == float("inf")
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="base_s"):
            TimeLimit(base_s=bad)
    with pytest.raises(ValueError, match="per_frame_s"):
        TimeLimit(per_frame_s=-0.1)
