"""A generated corpus of odd and hostile videos for the bad-input tests, deterministic by seed.

- `clip_cases`: well-formed clips that must decode to what was encoded, as players show
  it: every codec this PyAV build encodes among H.264, HEVC, VP9, AV1, MPEG-4 and MJPEG,
  10-bit and 4:4:4 pixel formats, odd widths and heights, a single frame, a variable frame
  rate, and display rotations (a portrait phone clip stored 320x180, turned 90 degrees).
- `hostile_cases`: files that must fail with one typed error: a video stream with zero
  frames, audio only, and declared sizes far beyond the limits (decompression bombs,
  built by `tests.fuzz_bombs`).
- `mutated_cases`: seeded damage to the clips (`tests.fuzz_mutate`: truncation at a random
  offset, byte flips in the header or in the payload): each must decode consistently or
  fail with a typed error.

Every clip carries a white block in the top-left corner of its stored frames, so a test
sees where display rotation puts it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tests.fuzz_bombs import h264_sps_bomb, matroska_duration_bomb, mjpeg_sof_bomb
from tests.fuzz_mutate import MUTATIONS, mutate
from tests.media import write_audio_only
from vis_core.video.orientation import Orientation

# SVT-AV1 prints its configuration to stderr unless told otherwise.
os.environ.setdefault("SVT_LOG", "1")
# x265 logs through its own printf; quiet it like the other encoders.
_X265 = {"x265-params": "log-level=none"}


@dataclass(frozen=True)
class FuzzCase:
    """One generated file.

    Attributes:
        name: its file name in the corpus folder (its `video_id`).
        kind: what it exercises, e.g. "codec", "rotation", "truncate", "bomb".
        frames: for a well-formed clip, the frames as players display them,
            `[T, H, W, 3]` uint8; None for a file without one right decoding.
        timestamps_s: `[T]` presentation times of a well-formed clip.
        max_error: mean absolute error allowed against `frames` (lossy codecs).
        error: the error type the file must fail with (a class name); None for a clip,
            which must decode, and for a mutation, which may decode or fail.
        source: for a mutation, the name of the file it damages;
        source_frames: that file's frame count.
    """

    name: str
    kind: str
    frames: np.ndarray | None = None
    timestamps_s: tuple[float, ...] | None = None
    max_error: float = 0.0
    error: str | None = None
    source: str | None = None
    source_frames: int | None = None


@dataclass(frozen=True)
class ClipSpec:
    """How a well-formed clip is encoded; frames from `clip_frames`."""

    name: str
    kind: str
    codec: str
    pix_fmt: str
    size: tuple[int, int] = (48, 64)  # stored (height, width)
    num_frames: int = 6
    container: str | None = None  # FFmpeg muxer; None: from the extension
    rotation: int = 0  # degrees counter-clockwise, as `set_display_rotation` takes them
    mirrored: bool = False
    pts: tuple[int, ...] | None = None  # in 1/1000 s; None: a constant 10 fps
    options: dict[str, str] | None = None
    max_error: float = 6.0


CLIPS = (
    ClipSpec("h264.mp4", "codec", "libx264", "yuv420p"),
    ClipSpec("hevc.mp4", "codec", "libx265", "yuv420p", options=_X265),
    ClipSpec("vp9.webm", "codec", "libvpx-vp9", "yuv420p"),
    ClipSpec("av1.mkv", "codec", "libsvtav1", "yuv420p", size=(64, 64)),
    ClipSpec("mpeg4.avi", "codec", "mpeg4", "yuv420p", options={"qscale": "2"}),
    ClipSpec("mjpeg.avi", "codec", "mjpeg", "yuvj420p", options={"qscale": "2"}),
    ClipSpec("h264_10bit.mp4", "pixel format", "libx264", "yuv420p10le"),
    ClipSpec("hevc_10bit.mkv", "pixel format", "libx265", "yuv420p10le", options=_X265),
    ClipSpec("av1_10bit.mp4", "pixel format", "libsvtav1", "yuv420p10le", size=(64, 64)),
    ClipSpec("h264_444.mp4", "pixel format", "libx264", "yuv444p"),
    ClipSpec("hevc_444.mkv", "pixel format", "libx265", "yuv444p", options=_X265),
    ClipSpec("vp9_444.webm", "pixel format", "libvpx-vp9", "yuv444p"),
    ClipSpec("h264_odd_33x17.mp4", "odd size", "libx264", "yuv444p", size=(17, 33)),
    ClipSpec("vp9_odd_35x21.webm", "odd size", "libvpx-vp9", "yuv420p", size=(21, 35)),
    ClipSpec("mpeg4_odd_31x19.avi", "odd size", "mpeg4", "yuv420p", size=(19, 31)),
    ClipSpec("mjpeg_odd_29x15.mkv", "odd size", "mjpeg", "yuvj444p", size=(15, 29)),
    ClipSpec("single_frame.mp4", "single frame", "libx264", "yuv420p", num_frames=1),
    ClipSpec(
        "vfr.mkv",
        "variable frame rate",
        "libx264",
        "yuv420p",
        num_frames=7,
        pts=(0, 40, 50, 200, 230, 600, 610),
    ),
    ClipSpec("portrait_90.mp4", "rotation", "libx264", "yuv420p", size=(180, 320), rotation=90),
    ClipSpec("portrait_270.mov", "rotation", "libx264", "yuv420p", size=(180, 320), rotation=-90),
    ClipSpec("upside_down_180.mkv", "rotation", "libx264", "yuv420p", rotation=180),
    ClipSpec("mirrored.mp4", "rotation", "libx264", "yuv420p", mirrored=True),
)

# What the bombs are made from: the H.264 one needs frame sides in whole macroblocks.
_BOMB_H264 = ClipSpec("bomb.mp4", "bomb", "libx264", "yuv420p", options={"preset": "ultrafast"})
_BOMB_MJPEG = ClipSpec("bomb.avi", "bomb", "mjpeg", "yuvj420p")
_BOMB_MKV = ClipSpec("bomb.mkv", "bomb", "libx264", "yuv420p")


def clip_frames(num_frames: int, height: int, width: int) -> np.ndarray:
    """`[T, H, W, 3]` uint8: a gradient, a square moving along the bottom edge, and a white
    block in the top-left corner (a quarter of the shorter side)."""
    ys, xs = np.mgrid[0:height, 0:width]
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    block = max(2, min(height, width) // 4)
    for t in range(num_frames):
        frames[t, ..., 0] = 40 + xs * 120 // max(width - 1, 1)
        frames[t, ..., 1] = 40 + ys * 120 // max(height - 1, 1)
        frames[t, ..., 2] = 30 + 20 * t
        frames[t, :block, :block] = 255
        x0 = (block + 3 * t) % max(width - block, 1)
        frames[t, height - block :, x0 : x0 + block] = (20, 20, 20)
    return frames


def missing_encoders() -> dict[str, str]:
    """Encoder -> why its clips are skipped, for the encoders this PyAV build lacks."""
    wanted = {clip.codec for clip in CLIPS}
    return {
        codec: f"this PyAV build has no {codec} encoder (av.codecs_available)"
        for codec in sorted(wanted - set(av.codecs_available))
    }


def clip_cases(root: Path) -> list[FuzzCase]:
    """Write the well-formed clips under `root` (skipping those without an encoder)."""
    root.mkdir(parents=True, exist_ok=True)
    missing = missing_encoders()
    return [_write_clip(root, clip) for clip in CLIPS if clip.codec not in missing]


def hostile_cases(root: Path) -> list[FuzzCase]:
    """Write the files that must fail with one typed error under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    _write_zero_frames(root / "zero_frames.mkv")
    write_audio_only(root / "audio_only.mp4")
    writers: dict[str, Callable[[], bytes]] = {
        # 16000x16000 H.264 declared by the SPS of a 64x48 clip: 1.4 KB.
        "bomb_h264_16000x16000.mp4": lambda: h264_sps_bomb(encode_clip(_BOMB_H264)),
        # 16000x16000 JPEG frames in an AVI that declares 64x48.
        "bomb_mjpeg_16000x16000.avi": lambda: mjpeg_sof_bomb(encode_clip(_BOMB_MJPEG)),
        # A Matroska file that declares a billion seconds of video.
        "bomb_duration.mkv": lambda: matroska_duration_bomb(encode_clip(_BOMB_MKV)),
    }
    for name, write in writers.items():
        (root / name).write_bytes(write())
    # The MJPEG decoder reports its refusal of the frame size as invalid data.
    errors = {"bomb_mjpeg_16000x16000.avi": "CorruptVideoError"}
    return [
        FuzzCase("zero_frames.mkv", "zero frames", error="CorruptVideoError"),
        FuzzCase("audio_only.mp4", "audio only", error="NotAVideoError"),
        *(FuzzCase(name, "bomb", error=errors.get(name, "VideoTooLargeError")) for name in writers),
    ]


def mutated_cases(
    root: Path, bases: list[tuple[Path, int]], count: int, seed: int
) -> list[FuzzCase]:
    """Write `count` damaged copies of `bases` (files and their frame counts) under `root`:
    mutation kinds in turn, base files and positions drawn from `seed`."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cases = []
    for number in range(count):
        how = MUTATIONS[number % len(MUTATIONS)]
        base, frames = bases[int(rng.integers(len(bases)))]
        name = f"{how}_{number:04d}_{base.name}"
        (root / name).write_bytes(mutate(base.read_bytes(), how, rng))
        cases.append(FuzzCase(name, how, source=base.name, source_frames=frames))
    return cases


def _write_clip(root: Path, clip: ClipSpec) -> FuzzCase:
    (root / clip.name).write_bytes(encode_clip(clip))
    stored = clip_frames(clip.num_frames, *clip.size)
    shown = Orientation(clip.rotation % 360, clip.mirrored)
    frames = np.stack([shown.apply(frame) for frame in stored])
    if clip.pts is None:
        timestamps = tuple(index / 10.0 for index in range(clip.num_frames))
    else:
        timestamps = tuple(pts / 1000.0 for pts in clip.pts)
    return FuzzCase(clip.name, clip.kind, frames, timestamps, clip.max_error)


def encode_clip(clip: ClipSpec) -> bytes:
    """The clip's file bytes (written through a temporary file: some muxers seek)."""
    extension = os.path.splitext(clip.name)[1]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, f"clip{extension}")
        with av.open(path, mode="w", format=clip.container) as container:
            stream = _add_stream(container, clip)
            for index, image in enumerate(clip_frames(clip.num_frames, *clip.size)):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame = frame.reformat(format=clip.pix_fmt)
                if clip.pts is not None:
                    frame.pts, frame.time_base = clip.pts[index], Fraction(1, 1000)
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        with open(path, "rb") as file:
            return file.read()


def _add_stream(container: av.container.OutputContainer, clip: ClipSpec) -> av.VideoStream:
    stream = container.add_stream(clip.codec, rate=10)
    if clip.pts is not None:  # variable frame rate: millisecond timestamps, 10 fps nominal
        stream.codec_context.time_base = Fraction(1, 1000)
    stream.height, stream.width = clip.size
    stream.pix_fmt = clip.pix_fmt
    if clip.options:
        stream.options = dict(clip.options)
    if clip.rotation or clip.mirrored:
        stream.set_display_rotation(clip.rotation, hflip=clip.mirrored)
    return stream


def _write_zero_frames(path: Path) -> None:
    """A video stream without a single frame, beside one second of silent audio (an mp4
    muxer drops such a track; Matroska keeps it)."""
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=10)
        video.height, video.width, video.pix_fmt = 48, 64, "yuv420p"
        audio = container.add_stream("aac", rate=16000)
        for index in range(16):
            samples = np.zeros((1, 1024), dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, index * 1024
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
