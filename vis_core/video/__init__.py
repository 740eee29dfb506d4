"""Video decoding (PyAV, chunked, with limits and typed errors) and mp4 encoding."""

from vis_core.video.decode import (
    DecodedFrame,
    DecodeLimits,
    FrameChunk,
    VideoInfo,
    VideoReader,
    open_video,
)
from vis_core.video.encode import Mp4Writer, write_mp4
from vis_core.video.errors import (
    CorruptVideoError,
    EmptyVideoError,
    NotAVideoError,
    UnsupportedVideoError,
    VideoDecodeError,
    VideoReadError,
    VideoTooLargeError,
)

__all__ = [
    "CorruptVideoError",
    "DecodeLimits",
    "DecodedFrame",
    "EmptyVideoError",
    "FrameChunk",
    "Mp4Writer",
    "NotAVideoError",
    "UnsupportedVideoError",
    "VideoDecodeError",
    "VideoInfo",
    "VideoReadError",
    "VideoReader",
    "VideoTooLargeError",
    "open_video",
    "write_mp4",
]
