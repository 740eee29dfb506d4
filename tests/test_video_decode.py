"""Video decoding: metadata, frames, resizing, chunks, sources, limits and typed errors."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import av
import numpy as np
import pytest

from tests.media import smooth_frames, write_audio_only, write_with_pyav
from vis_core.storage import open_fs
from vis_core.video.convert import RgbConverter
from vis_core.video.decode import DecodeLimits, open_video
from vis_core.video.encode import write_mp4
from vis_core.video.errors import (
    CorruptVideoError,
    EmptyVideoError,
    NotAVideoError,
    UnsupportedVideoError,
    VideoDecodeError,
    VideoReadError,
    VideoTooLargeError,
)
from vis_core.video.source import container_family

DATA = Path(__file__).parent / "data"
NUM_FRAMES, HEIGHT, WIDTH, FPS = 12, 48, 80, 10.0


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return smooth_frames(NUM_FRAMES, HEIGHT, WIDTH)


@pytest.fixture(scope="module")
def video_path(tmp_path_factory: pytest.TempPathFactory, frames: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    write_mp4(str(path), frames, fps=FPS, crf=12)
    return path


@pytest.fixture(scope="module")
def faststart_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 frames of noise (large frames, so cutting the file loses many), index first."""
    noise = np.random.default_rng(0).integers(0, 256, (40, 64, 96, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("faststart") / "faststart.mp4"
    write_with_pyav(path, noise, 10.0, "mp4", movflags="faststart")
    return path


def test_info_and_frames_match_what_was_encoded(video_path: Path, frames: np.ndarray) -> None:
    with open_video(video_path) as video:
        info = video.info
        decoded = list(video.frames())
    assert (info.num_frames, info.num_frames_estimated) == (NUM_FRAMES, False)
    assert (info.width, info.height, info.codec) == (WIDTH, HEIGHT, "h264")
    assert info.fps == pytest.approx(FPS)
    assert info.duration_s == pytest.approx(NUM_FRAMES / FPS)
    assert [frame.index for frame in decoded] == list(range(NUM_FRAMES))
    timestamps = [frame.timestamp_s for frame in decoded]
    assert timestamps == pytest.approx(np.arange(NUM_FRAMES) / FPS)
    images = np.stack([frame.image for frame in decoded])
    assert images.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3) and images.dtype == np.uint8
    mean_abs_error = np.abs(images.astype(np.int16) - frames).mean()
    assert mean_abs_error < 4.0, mean_abs_error


def test_resize_to_shortest_edge_keeps_aspect_and_content(
    video_path: Path, frames: np.ndarray
) -> None:
    with open_video(video_path) as video:
        assert video.output_size() == (HEIGHT, WIDTH)
        assert video.output_size(24) == (24, 40)
        assert video.output_size(30) == (30, 50)
        assert video.output_size(96) == (96, 160)
        first = next(video.frames(shortest_edge=24))
    assert first.image.shape == (24, 40, 3)
    # AREA halving is close to the mean of each 2x2 block of the source frame.
    reference = frames[0].reshape(24, 2, 40, 2, 3).mean(axis=(1, 3))
    assert np.abs(first.image - reference).mean() < 5.0


def test_portrait_resize_rounds_the_long_side(tmp_path: Path) -> None:
    path = tmp_path / "portrait.mp4"
    write_mp4(str(path), smooth_frames(2, 90, 48), fps=5)
    with open_video(path) as video:
        assert video.output_size(32) == (60, 32)
        assert video.output_size(20) == (38, 20)  # 37.5 rounds to an even 38
        assert next(video.frames(shortest_edge=20)).image.shape == (38, 20, 3)


def test_rgb_converter_gives_every_frame_its_size(frames: np.ndarray) -> None:
    convert = RgbConverter(24, 40, threads=1)
    for pixel_format in ("yuv420p", "rgb24", "yuv444p"):
        frame = av.VideoFrame.from_ndarray(frames[3], format="rgb24").reformat(format=pixel_format)
        halved = convert(frame)
        assert halved.shape == (24, 40, 3) and halved.dtype == np.uint8
        reference = frames[3].reshape(24, 2, 40, 2, 3).mean(axis=(1, 3))
        assert np.abs(halved - reference).mean() < 4.0, pixel_format
    # A frame of another size (a resolution change mid-stream) comes out the same size.
    other = av.VideoFrame.from_ndarray(smooth_frames(1, 30, 30)[0], format="rgb24")
    assert convert(other).shape == (24, 40, 3)
    same_size = RgbConverter(HEIGHT, WIDTH)(av.VideoFrame.from_ndarray(frames[0], format="rgb24"))
    np.testing.assert_array_equal(same_size, frames[0])


def test_chunks_stride_and_max_output_frames(video_path: Path) -> None:
    with open_video(video_path) as video:
        chunks = list(video.iter_chunks(5))
        assert [len(chunk) for chunk in chunks] == [5, 5, 2]
        assert chunks[0].frames.shape == (5, HEIGHT, WIDTH, 3)
        indices = np.concatenate([chunk.frame_indices for chunk in chunks])
        assert indices.tolist() == list(range(NUM_FRAMES))
        assert chunks[2].timestamps_s == pytest.approx([1.0, 1.1])

        strided = list(video.iter_chunks(3, shortest_edge=24, stride=3))
        assert [chunk.frame_indices.tolist() for chunk in strided] == [[0, 3, 6], [9]]
        assert strided[0].frames.shape == (3, 24, 40, 3)
        assert strided[1].timestamps_s == pytest.approx([0.9])

        first_four = list(video.frames(max_output_frames=4, stride=2))
        assert [frame.index for frame in first_four] == [0, 2, 4, 6]


def test_path_uri_and_file_objects_decode_the_same(video_path: Path) -> None:
    with open_video(str(video_path)) as video:
        expected = np.stack([frame.image for frame in video.frames()])
    fs, path = open_fs(video_path.as_uri())
    with open(video_path, "rb") as plain_file, fs.open(path, "rb") as fsspec_file:
        for source in (video_path.as_uri(), plain_file, fsspec_file):
            with open_video(source) as video:
                decoded = np.stack([frame.image for frame in video.frames()])
            np.testing.assert_array_equal(decoded, expected)
        assert not plain_file.closed  # the caller's file object stays open


def test_remote_filesystem_uri_reads_through_fsspec(video_path: Path) -> None:
    # memory:// takes the same fs.open path as s3:// (FFmpeg cannot open it by itself).
    fs, path = open_fs("memory://test_video_decode/clip.mp4")
    fs.pipe(path, video_path.read_bytes())
    try:
        with open_video("memory://test_video_decode/clip.mp4") as video:
            assert video.info.num_frames == NUM_FRAMES
            assert [frame.index for frame in video.frames()] == list(range(NUM_FRAMES))
    finally:
        fs.rm(path)


def test_second_pass_decodes_again(video_path: Path) -> None:
    with open(video_path, "rb") as file, open_video(file) as video:
        first = [frame.index for frame in video.frames()]
        second = [frame.index for frame in video.frames()]
    assert first == second == list(range(NUM_FRAMES))


def test_close_stops_a_pass_in_progress(video_path: Path) -> None:
    video = open_video(video_path)
    frames = video.frames()
    assert next(frames).index == 0
    video.close()
    with pytest.raises(StopIteration):
        next(frames)


def test_real_mpeg4_video_decodes_all_frames() -> None:
    with open_video(DATA / "mmtrack_demo.mp4") as video:
        info = video.info
        chunks = list(video.iter_chunks(5))
    assert (info.codec, info.width, info.height, info.num_frames) == ("mpeg4", 1920, 1080, 8)
    assert info.fps == pytest.approx(3.0)
    assert [chunk.frames.shape for chunk in chunks] == [(5, 1080, 1920, 3), (3, 1080, 1920, 3)]
    timestamps = np.concatenate([chunk.timestamps_s for chunk in chunks])
    assert timestamps == pytest.approx(np.arange(8) / 3.0)
    assert chunks[0].frames.std() > 10  # real picture content, not a blank frame


def test_tiny_single_frame_video(tmp_path: Path) -> None:
    path = tmp_path / "tiny.mp4"
    pixels = np.array([[[250, 10, 10], [250, 10, 10]], [[250, 10, 10], [250, 10, 10]]], np.uint8)
    write_mp4(str(path), pixels[None], fps=1, crf=0)
    with open_video(path) as video:
        assert (video.info.width, video.info.height, video.info.num_frames) == (2, 2, 1)
        (frame,) = list(video.frames())
    assert frame.image.shape == (2, 2, 3) and frame.index == 0 and frame.timestamp_s == 0.0
    assert np.abs(frame.image.astype(np.int16) - pixels).mean() < 20


def test_matroska_frame_count_is_estimated_from_duration(tmp_path: Path) -> None:
    path = tmp_path / "clip.mkv"
    write_with_pyav(path, smooth_frames(NUM_FRAMES, HEIGHT, WIDTH), FPS, "matroska")
    with open_video(path) as video:
        assert video.info.num_frames_estimated
        assert abs(video.info.num_frames - NUM_FRAMES) <= 1
        assert len(list(video.frames())) == NUM_FRAMES


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(EmptyVideoError, match="empty"):
        open_video(path)
    with open(path, "rb") as file, pytest.raises(EmptyVideoError):
        open_video(file)


def test_truncated_mp4_without_its_index(tmp_path: Path, video_path: Path) -> None:
    data = video_path.read_bytes()
    assert data.find(b"moov") > len(data) // 2  # write_mp4 puts the index at the end
    path = tmp_path / "half.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptVideoError, match="mp4/mov container") as caught:
        open_video(path)
    assert str(path) in str(caught.value)


def test_truncated_mp4_that_loses_frames(tmp_path: Path, faststart_path: Path) -> None:
    data = faststart_path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # index first: it survives the cut
    path = tmp_path / "half_faststart.mp4"
    path.write_bytes(data[: len(data) // 2])
    with open_video(path) as video:
        assert video.info.num_frames == 40
        with pytest.raises(CorruptVideoError, match="of the 40 frames the container declares"):
            for _ in video.iter_chunks(8):
                pass


def test_damaged_middle_of_stream(tmp_path: Path, faststart_path: Path) -> None:
    data = bytearray(faststart_path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = bytes(2000)
    path = tmp_path / "damaged.mp4"
    path.write_bytes(bytes(data))
    with open_video(path) as video, pytest.raises(CorruptVideoError):
        list(video.frames())


def test_storage_failure_while_decoding(faststart_path: Path) -> None:
    data = faststart_path.read_bytes()

    class DropsConnection(io.BytesIO):
        """Reads fail in the middle of the frame data, as a broken network stream would."""

        def read(self, size: int | None = -1) -> bytes:
            if len(data) // 2 < self.tell() < len(data) * 3 // 4:
                raise ConnectionError("connection reset by peer")
            return super().read(size)

    with (
        open_video(DropsConnection(data)) as video,
        pytest.raises(VideoReadError, match=r"reading failed after \d+ frames: connection reset"),
    ):
        list(video.frames())


def test_stopping_early_skips_the_completeness_check(faststart_path: Path, tmp_path: Path) -> None:
    data = faststart_path.read_bytes()
    path = tmp_path / "half_faststart.mp4"
    path.write_bytes(data[: len(data) // 2])
    with open_video(path) as video:
        assert len(list(video.frames(max_output_frames=3))) == 3


@pytest.mark.parametrize(
    ("name", "content", "pattern"),
    [
        ("notes.mp4", b"this is a text file, not a video\n" * 40, "no known container"),
        ("noise.mp4", np.random.default_rng(1).bytes(4096), "no known container"),
    ],
)
def test_data_that_is_not_a_video(tmp_path: Path, name: str, content: bytes, pattern: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(NotAVideoError, match=pattern):
        open_video(path)


def test_still_image_is_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "picture.mp4"
    with av.open(str(path), mode="w", format="image2", options={"update": "1"}) as container:
        stream = container.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = 8, 8, "rgb24"
        image = av.VideoFrame.from_ndarray(np.zeros((8, 8, 3), np.uint8), format="rgb24")
        container.mux(stream.encode(image))
        container.mux(stream.encode(None))
    with pytest.raises(NotAVideoError, match="still image"):
        open_video(path)


def test_audio_only_file(tmp_path: Path) -> None:
    path = tmp_path / "sound.m4a"
    write_audio_only(path)
    with pytest.raises(NotAVideoError, match=r"no video stream \(streams: audio aac\)"):
        open_video(path)


def test_frame_size_over_the_limit_fails_before_decoding(video_path: Path) -> None:
    with pytest.raises(VideoTooLargeError, match="video is 80x48, above the limit of 3000 pixels"):
        open_video(video_path, DecodeLimits(max_pixels_per_frame=3000))
    limits = DecodeLimits(max_pixels_per_frame=4000)
    with (
        open_video(video_path, limits) as video,
        pytest.raises(VideoTooLargeError, match="resizing to 160x96"),
    ):
        video.frames(shortest_edge=96)


def test_too_many_frames_and_bytes(video_path: Path, tmp_path: Path) -> None:
    with pytest.raises(VideoTooLargeError, match="declared 12 frames, above the limit of 10"):
        open_video(video_path, DecodeLimits(max_frames=10))
    with pytest.raises(VideoTooLargeError, match="above the limit of 1000 bytes"):
        open_video(video_path, DecodeLimits(max_file_bytes=1000))
    # A raw H.264 stream declares neither a frame count nor a duration: the limit holds
    # while decoding.
    path = tmp_path / "clip.h264"
    write_with_pyav(path, smooth_frames(NUM_FRAMES, HEIGHT, WIDTH), FPS, "h264")
    with open_video(path, DecodeLimits(max_frames=5)) as video:
        assert (video.info.num_frames, video.info.num_frames_estimated) == (0, True)
        with pytest.raises(VideoTooLargeError, match="more than the limit of 5 frames"):
            list(video.frames())


def test_default_limits_accept_4k_and_reject_8k() -> None:
    limits = DecodeLimits()
    assert 3840 * 2160 <= limits.max_pixels_per_frame < 7680 * 4320
    with pytest.raises(ValueError, match="max_frames"):
        DecodeLimits(max_frames=0)


def test_storage_level_failures(tmp_path: Path) -> None:
    with pytest.raises(VideoReadError, match="no such file"):
        open_video(tmp_path / "missing.mp4")
    with pytest.raises(VideoReadError, match="no such file"):
        open_video((tmp_path / "missing.mp4").as_uri())
    with pytest.raises(VideoReadError, match="directory"):
        open_video(tmp_path)
    with pytest.raises(VideoReadError):
        open_video("nosuchprotocol://bucket/video.mp4")


def test_errors_are_typed_and_pickle() -> None:
    error = CorruptVideoError("s3://bucket/a.mp4", "decoded 3 of the 9 frames")
    assert isinstance(error, VideoDecodeError)
    restored = pickle.loads(pickle.dumps(error))
    assert type(restored) is CorruptVideoError
    assert str(restored) == "s3://bucket/a.mp4: decoded 3 of the 9 frames"
    assert (restored.source, restored.problem) == (error.source, error.problem)


def test_container_family_signatures() -> None:
    assert container_family(b"\x00\x00\x00\x20ftypisom") == "mp4/mov"
    assert container_family(b"\x1a\x45\xdf\xa3\x01") == "matroska/webm"
    assert container_family(b"RIFF\x00\x00\x00\x00AVI LIST") == "avi"
    assert container_family(b"hello world") is None


# Regressions the fuzz corpus found (tests/test_video_fuzz.py); each crashed or misled.


def test_undecodable_metadata_does_not_fail_the_video(tmp_path: Path) -> None:
    path = tmp_path / "title.mkv"
    write_with_pyav(path, smooth_frames(3, 32, 32), 10.0, "matroska")
    data = path.read_bytes()
    assert b"Lavf" in data  # the muxer's name, in the ENCODER tag among others
    path.write_bytes(data.replace(b"Lavf", b"L\xc2\x41f"))  # not UTF-8 any more
    with open_video(path) as video:
        assert len(list(video.frames())) == 3


def test_video_codec_without_a_decoder(tmp_path: Path, video_path: Path) -> None:
    path = tmp_path / "unknown_codec.mp4"
    path.write_bytes(video_path.read_bytes().replace(b"avc1", b"zzz1"))
    with pytest.raises(UnsupportedVideoError, match="codec has no decoder"):
        open_video(path)


def test_matroska_cut_inside_its_header_is_corrupt_not_a_storage_failure(tmp_path: Path) -> None:
    source = tmp_path / "clip.mkv"
    write_with_pyav(source, smooth_frames(6, 32, 32), 10.0, "matroska")
    path = tmp_path / "cut.mkv"
    path.write_bytes(source.read_bytes()[:200])  # FFmpeg answers EIO here
    with pytest.raises(CorruptVideoError, match="matroska/webm container cannot be opened"):
        open_video(path)


def test_matroska_cut_between_frames_is_corrupt_not_short(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (12, 64, 96, 3), dtype=np.uint8)
    source = tmp_path / "noise.mkv"
    write_with_pyav(source, noise, 10.0, "matroska")
    data = source.read_bytes()
    path = tmp_path / "cut.mkv"
    path.write_bytes(data[: len(data) * 2 // 3])
    with open_video(path) as video, pytest.raises(CorruptVideoError) as caught:
        list(video.frames())
    assert f"the file ends at byte {len(data) * 2 // 3} of the {len(data)}" in str(caught.value)


def test_video_stream_without_frames(tmp_path: Path) -> None:
    from tests.fuzz_corpus import hostile_cases

    hostile_cases(tmp_path)
    with (
        open_video(tmp_path / "zero_frames.mkv") as video,
        pytest.raises(CorruptVideoError, match="the video stream holds no frame at all"),
    ):
        list(video.frames())
    with pytest.raises(VideoTooLargeError, match="video is 16000x16000"):
        open_video(tmp_path / "bomb_h264_16000x16000.mp4")
