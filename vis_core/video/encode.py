"""H.264 mp4 encoding with PyAV, to any fsspec destination.

Used by the synthetic benchmark generator and for rendered previews. The mp4 muxer seeks
back to write its index, which an `s3://` upload stream cannot do, so the file is built in
a spooled temporary file and then copied to the destination.
"""

from __future__ import annotations

import shutil
import tempfile
from fractions import Fraction
from types import TracebackType

import av
import numpy as np

from vis_core.storage import open_output

# Past this size the spooled buffer moves from memory to a temporary file on disk.
_SPOOL_BYTES = 64 * 1024 * 1024


class Mp4Writer:
    """Writes RGB frames `[H, W, 3]` uint8 to an H.264 mp4 at `uri`.

    Frames must all have the size of the first one. yuv420p needs even sides, so an odd
    height or width is padded by one replicated row or column.

    Example:
        with Mp4Writer("out/video.mp4", fps=10) as writer:
            for frame in frames:
                writer.write(frame)
    """

    def __init__(self, uri: str, fps: float = 10.0, crf: int = 23, preset: str = "veryfast"):
        self.uri = uri
        self.fps = fps
        self.num_frames = 0
        # Closed in close() or __exit__, once the mp4 is copied out.
        self._buffer = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115
        self._container = av.open(self._buffer, mode="w", format="mp4")
        self._stream = self._container.add_stream(
            "libx264", rate=Fraction(fps).limit_denominator(1001)
        )
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(crf), "preset": preset}
        self._size: tuple[int, int] | None = None

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB frame `[H, W, 3]` uint8."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected RGB uint8 [H, W, 3], got {frame.shape} {frame.dtype}")
        height, width = frame.shape[:2]
        if self._size is None:
            self._size = (height, width)
            self._stream.height = height + height % 2
            self._stream.width = width + width % 2
        elif self._size != (height, width):
            raise ValueError(f"frame size {(height, width)} differs from the first {self._size}")
        if height % 2 or width % 2:
            frame = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        self._container.mux(self._stream.encode(video_frame))
        self.num_frames += 1

    def close(self) -> None:
        """Flush the encoder and copy the finished mp4 to its destination."""
        if self._container is None:
            return
        if self.num_frames == 0:
            raise ValueError(f"no frames were written to {self.uri}")
        self._container.mux(self._stream.encode(None))
        self._container.close()
        self._container = None
        self._buffer.seek(0)
        with open_output(self.uri) as destination:
            shutil.copyfileobj(self._buffer, destination)
        self._buffer.close()

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        elif self._container is not None:
            self._container.close()
            self._container = None
            self._buffer.close()


def write_mp4(uri: str, frames: np.ndarray, fps: float = 10.0, crf: int = 23) -> None:
    """Encode frames `[T, H, W, 3]` uint8 (or any iterable of `[H, W, 3]`) to an mp4 at `uri`."""
    with Mp4Writer(uri, fps=fps, crf=crf) as writer:
        for frame in frames:
            writer.write(frame)
