"""The bytes of one video for PyAV: a local path, an fsspec URI or an open binary file.

Storage failures become `VideoReadError`, a zero-byte file `EmptyVideoError`, a file over
the size limit `VideoTooLargeError`. When FFmpeg cannot open the input, its first bytes
tell a damaged video container (a truncated mp4 without its index: `CorruptVideoError`)
from data that is no video at all (`NotAVideoError`); `truncation` tells a Matroska file
cut short (it declares no frame count, so a pass cannot tell).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TypeVar

import av
import av.error
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from vis_core.storage import STORAGE_ERRORS, StorageFile, open_fs, storage_error
from vis_core.video.errors import (
    CorruptVideoError,
    EmptyVideoError,
    NotAVideoError,
    VideoReadError,
    VideoTooLargeError,
)
from vis_core.video.matroska import declared_file_size

VideoSource = str | os.PathLike | IO[bytes]
_T = TypeVar("_T")

# Enough for every signature in `container_family` (MPEG-TS needs two 188-byte packets).
_HEAD_BYTES = 512
# Second field of an ISO BMFF / QuickTime box header that can start an mp4 or mov file.
_ISO_BOX_TYPES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot")


def container_family(head: bytes) -> str | None:
    """The video container that the first bytes of a file announce, or None."""
    if head[4:8] in _ISO_BOX_TYPES:
        return "mp4/mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska/webm"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith(b"FLV\x01"):
        return "flv"
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "asf/wmv"
    if head.startswith(b"\x00\x00\x01\xba"):
        return "mpeg-ps"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "mpeg-ts"
    return None


@dataclass
class OpenedContainer:
    """A PyAV input container and the storage file opened for it (None for local paths and
    caller-owned file objects)."""

    container: av.container.InputContainer
    file: IO[bytes] | None

    def close(self) -> None:
        self.container.close()
        if self.file is not None:
            self.file.close()
            self.file = None


class VideoInput:
    """Where a video's bytes come from; opens a fresh PyAV container for each decoding pass.

    A local path (plain or `file://`) goes to FFmpeg's own file I/O; another fsspec URI is
    read through `fs.open`; a file object stays the caller's (never closed here) and is
    rewound before each pass when it can seek. `max_pixels` goes to the decoders that
    FFmpeg runs while probing the streams, so a frame declared over it is never allocated
    there (the probe then reports the declared size).
    """

    def __init__(
        self, source: VideoSource, max_file_bytes: int | None, max_pixels: int | None = None
    ):
        self._options = {"max_pixels": str(max_pixels)} if max_pixels is not None else None
        self._local_path: str | None = None
        self._fs: AbstractFileSystem | None = None
        self._path = ""
        self._file: IO[bytes] | None = None
        if isinstance(source, (str, os.PathLike)):
            self.name = os.fspath(source)
            self.size_bytes: int | None = self._stat_uri(self.name)
        elif callable(getattr(source, "read", None)):
            self._file = source
            # s3fs files know their path; io files their name.
            label = getattr(source, "path", None) or getattr(source, "name", None)
            self.name = str(label) if label else f"<{type(source).__name__}>"
            self.size_bytes = self._file_size(source)
        else:
            raise TypeError(
                f"a video source is a path, a URI or a binary file object, got {type(source)}"
            )
        if self.size_bytes == 0:
            raise EmptyVideoError(self.name, "the file is empty (0 bytes)")
        if (
            max_file_bytes is not None
            and self.size_bytes is not None
            and self.size_bytes > max_file_bytes
        ):
            raise VideoTooLargeError(
                self.name,
                f"file is {self.size_bytes} bytes, above the limit of {max_file_bytes} bytes",
            )

    def open_container(self) -> OpenedContainer:
        """Open a PyAV container at the start of the video."""
        storage_file = None
        if self._local_path is not None:
            target: str | IO[bytes] = self._local_path
        elif self._fs is not None:
            # Storage errors that are not OSErrors (a body still cut short after s3fs's
            # retries) would pass through FFmpeg as they are: they become OSErrors here.
            storage_file = StorageFile(
                self._storage_call("open", lambda: self._fs.open(self._path, "rb"))
            )
            target = storage_file
        else:
            self._rewind()
            target = self._file
        try:
            # Damaged metadata is not worth failing a video for: undecodable bytes become U+FFFD.
            container = av.open(target, mode="r", options=self._options, metadata_errors="replace")
            return OpenedContainer(container, storage_file)
        except BaseException as error:
            if storage_file is not None:
                storage_file.close()
            # FFmpeg's errno errors (missing file, I/O) are OSErrors too; bad data is not,
            # except that FFmpeg's Matroska demuxer answers EIO for a file that ends inside
            # its header: the file's fault, when its bytes can still be read.
            if isinstance(error, OSError) and not self._ends_early(error):
                raise VideoReadError(self.name, f"cannot open: {error}") from error
            if isinstance(error, av.error.FFmpegError):
                raise self._unopenable(error) from error
            raise

    def _stat_uri(self, uri: str) -> int | None:
        fs, path = self._storage_call("resolve", lambda: open_fs(uri))
        info = self._storage_call("stat", lambda: fs.info(path))
        if info.get("type") == "directory":
            raise VideoReadError(self.name, "is a directory, not a video file")
        if isinstance(fs, LocalFileSystem):
            self._local_path = path
        else:
            self._fs, self._path = fs, path
        size = info.get("size")
        return int(size) if size is not None else None

    def _storage_call(self, action: str, call: Callable[[], _T]) -> _T:
        try:
            return call()
        except FileNotFoundError as error:
            raise VideoReadError(self.name, "no such file") from error
        except (*STORAGE_ERRORS, ValueError, ImportError) as error:
            # fsspec raises ValueError for an unknown protocol, ImportError for a missing one.
            reason = storage_error(error) if isinstance(error, STORAGE_ERRORS) else error
            raise VideoReadError(self.name, f"cannot {action}: {reason}") from error

    def _file_size(self, file: IO[bytes]) -> int | None:
        if not _seekable(file):
            return None
        try:
            position = file.tell()
            size = file.seek(0, os.SEEK_END)
            file.seek(position)
        except OSError as error:
            raise VideoReadError(self.name, f"cannot seek: {error}") from error
        return size

    def _rewind(self) -> None:
        if _seekable(self._file):
            try:
                self._file.seek(0)
            except OSError as error:
                raise VideoReadError(self.name, f"cannot seek: {error}") from error

    def _head(self) -> bytes | None:
        """The first bytes of the input, or None where they cannot be read again."""
        try:
            if self._local_path is not None:
                with open(self._local_path, "rb") as file:
                    return file.read(_HEAD_BYTES)
            if self._fs is not None:
                with self._fs.open(self._path, "rb") as file:
                    return file.read(_HEAD_BYTES)
            if _seekable(self._file):
                self._file.seek(0)
                return self._file.read(_HEAD_BYTES)
        except STORAGE_ERRORS:
            return None
        return None

    def truncation(self) -> str | None:
        """Why the file is known to be cut short (a Matroska file that ends before the size
        its header declares), or None when it is not known to be."""
        if self.size_bytes is None:
            return None
        declared = declared_file_size(self._head() or b"")
        if declared is None or declared <= self.size_bytes:
            return None
        return (
            f"the file ends at byte {self.size_bytes} of the {declared} its Matroska header "
            "declares: it is truncated"
        )

    def _ends_early(self, error: OSError) -> bool:
        """Whether an EIO from FFmpeg comes from the data (readable bytes) rather than storage."""
        return (
            isinstance(error, av.error.FFmpegError)
            and error.errno == errno.EIO
            and bool(self._head())
        )

    def _unopenable(self, error: av.error.FFmpegError) -> Exception:
        reason = error.strerror or str(error)
        head = self._head()
        if head is None and self._file is not None:
            return VideoReadError(
                self.name, f"cannot open from a file object that cannot seek back: {reason}"
            )
        if head == b"":
            return EmptyVideoError(self.name, "the file is empty (0 bytes)")
        family = container_family(head or b"")
        if family is not None:
            return CorruptVideoError(
                self.name,
                f"the {family} container cannot be opened, its header or index is damaged or "
                f"missing (a truncated file?): {reason}",
            )
        return NotAVideoError(self.name, f"not a video: no known container format ({reason})")


def _seekable(file: IO[bytes] | None) -> bool:
    seekable = getattr(file, "seekable", None)
    try:
        return bool(seekable()) if callable(seekable) else False
    except (OSError, ValueError):
        return False
