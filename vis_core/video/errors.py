"""Typed errors of video decoding.

Every failure of `vis_core.video.decode` is a `VideoDecodeError` subclass, so a corpus job
can record a `failed` row with a clear message and go on; PyAV's own exceptions never leak
out. Each error carries the video it is about (`source`) and what was wrong (`problem`),
and pickles (Ray ships exceptions between processes).
"""

from __future__ import annotations


class VideoDecodeError(Exception):
    """A video could not be decoded. The message is `"<source>: <problem>"`."""

    def __init__(self, source: str, problem: str):
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem

    def __reduce__(self) -> tuple[type[VideoDecodeError], tuple[str, str]]:
        # The default reduction replays `args` (the joined message) as one argument.
        return (type(self), (self.source, self.problem))


class VideoReadError(VideoDecodeError):
    """The object cannot be opened or read at the storage level (missing, no permission, I/O)."""


class EmptyVideoError(VideoDecodeError):
    """The file has zero bytes."""


class NotAVideoError(VideoDecodeError):
    """The bytes are not a video: an unknown format, an image, or no video stream (audio only)."""


class UnsupportedVideoError(VideoDecodeError):
    """A video stream in a codec this FFmpeg build cannot decode."""


class CorruptVideoError(VideoDecodeError):
    """A video container whose header, index or stream is damaged or truncated.

    Raised as well when decoding stops short of the frame count the container declares, so
    a partly decoded video never passes as complete.
    """


class VideoTooLargeError(VideoDecodeError):
    """The video is over a `DecodeLimits` bound (frame size, frame count or file size)."""
