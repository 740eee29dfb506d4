"""What a video is before any frame is decoded: its stream, metadata and limits.

`probe_video` picks the video stream of an open PyAV container, reads its `VideoInfo` and
checks it against `DecodeLimits`, so an input that is no video or is too large fails
before decoding starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import av

from vis_core.video.errors import (
    CorruptVideoError,
    NotAVideoError,
    UnsupportedVideoError,
    VideoTooLargeError,
)
from vis_core.video.orientation import Orientation


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds a video must stay within; checked from the metadata before decoding.

    Attributes:
        max_pixels_per_frame: width * height of a frame (default: 4K UHD, 3840x2160); FFmpeg's
            decoders get a guard from it (`decoder_max_pixels`), so they refuse a frame far
            larger before allocating it.
        max_frames: frames in the video, declared or decoded.
        max_file_bytes: size of the file; None for no bound. Not checked for file objects
            that cannot seek.
    """

    max_pixels_per_frame: int = 3840 * 2160
    max_frames: int = 100_000
    max_file_bytes: int | None = 16 * 1024**3

    def __post_init__(self) -> None:
        for name in ("max_pixels_per_frame", "max_frames", "max_file_bytes"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"DecodeLimits.{name} must be a positive int, got {value!r}")

    @property
    def decoder_max_pixels(self) -> int:
        """FFmpeg's `max_pixels` for the decoders: a guard against huge allocations, not the
        exact bound (checked here on every frame). FFmpeg checks the width rounded up to
        its stride alignment (up to 64 pixels), which refused an 80x48 frame under a limit
        of 4000; twice the limit covers every frame at least 63 pixels wide."""
        return 2 * self.max_pixels_per_frame


@dataclass(frozen=True)
class VideoInfo:
    """Metadata of a video stream.

    Attributes:
        num_frames: frames the container declares, or when it does not say (Matroska,
            MPEG-TS...) round(duration_s * fps), with `num_frames_estimated` set; 0 when
            neither is known (raw elementary streams).
        num_frames_estimated: True when `num_frames` is not a count the container declares.
        fps: average frame rate (frames per second).
        width, height: frame size in pixels as displayed: the coded size, exchanged when
            the display matrix turns the frames a quarter (`VideoReader` sets it; the probe
            alone gives the coded size).
        duration_s: stream duration in seconds (else the container's, else
            num_frames / fps).
        codec: FFmpeg decoder name, e.g. "h264", "mpeg4", "vp9".
        orientation: how players turn the coded frames (a portrait phone video: 90 or 270).
    """

    num_frames: int
    num_frames_estimated: bool
    fps: float
    width: int
    height: int
    duration_s: float
    codec: str
    orientation: Orientation = field(default_factory=Orientation)


def probe_video(
    container: av.container.InputContainer, source: str, limits: DecodeLimits
) -> tuple[int, VideoInfo]:
    """The position of the video stream in `container.streams.video`, and its info.

    Raises:
        NotAVideoError: a still image, or no video stream.
        UnsupportedVideoError: no decoder for the video stream's codec.
        CorruptVideoError: the stream declares no frame size or frame rate.
        VideoTooLargeError: the frame size or frame count is over `limits`.
    """
    position = _video_stream_position(container, source)
    info = _stream_info(container, container.streams.video[position], source)
    _check_limits(info, limits, source)
    return position, info


def _video_stream_position(container: av.container.InputContainer, source: str) -> int:
    format_name = container.format.name
    if format_name in ("image2", "image2pipe") or format_name.endswith("_pipe"):
        raise NotAVideoError(source, f"is a still image ({format_name}), not a video")
    # Cover art in audio files is a video stream flagged as an attached picture.
    positions = [
        position
        for position, stream in enumerate(container.streams.video)
        if not stream.disposition & av.stream.Disposition.attached_pic
    ]
    if len(container.streams) == 0:
        raise CorruptVideoError(
            source, "the container holds no stream at all: it is empty or its header is damaged"
        )
    if not positions:
        found = ", ".join(f"{s.type} {_codec_name(s)}" for s in container.streams)
        raise NotAVideoError(source, f"has no video stream (streams: {found or 'none'})")
    return positions[0]


def _codec_name(stream: av.stream.Stream) -> str:
    # No codec context: FFmpeg has no decoder for the stream's codec.
    return stream.codec_context.name if stream.codec_context is not None else "(no decoder)"


def _stream_info(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, source: str
) -> VideoInfo:
    if stream.codec_context is None:
        raise UnsupportedVideoError(
            source, "the video stream's codec has no decoder in this FFmpeg build"
        )
    width, height = stream.codec_context.width, stream.codec_context.height
    if width < 1 or height < 1:
        raise CorruptVideoError(source, "the video stream declares no frame size")
    # average_rate is what the container measured; guessed_rate covers raw streams.
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise CorruptVideoError(source, "the video stream declares no frame rate")
    fps = float(rate)
    duration_s = 0.0
    if stream.duration is not None and stream.time_base is not None:
        duration_s = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration_s = container.duration / av.time_base
    num_frames, estimated = stream.frames, False
    if num_frames <= 0:
        num_frames, estimated = round(duration_s * fps), True
    if duration_s <= 0.0:
        duration_s = num_frames / fps
    return VideoInfo(
        num_frames=num_frames,
        num_frames_estimated=estimated,
        fps=fps,
        width=width,
        height=height,
        duration_s=duration_s,
        codec=stream.codec_context.name,
    )


def _check_limits(info: VideoInfo, limits: DecodeLimits, source: str) -> None:
    if info.width * info.height > limits.max_pixels_per_frame:
        raise VideoTooLargeError(
            source,
            f"video is {info.width}x{info.height}, above the limit of "
            f"{limits.max_pixels_per_frame} pixels per frame",
        )
    if info.num_frames > limits.max_frames:
        how = "an estimated" if info.num_frames_estimated else "a declared"
        raise VideoTooLargeError(
            source,
            f"video has {how} {info.num_frames} frames, above the limit of "
            f"{limits.max_frames} frames",
        )
