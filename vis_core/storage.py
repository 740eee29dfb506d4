"""Object storage through fsspec: local paths, `file://` and `s3://` alike.

Everything that reads or writes a dataset, a corpus or a table goes through `open_fs`, so
a local folder stands in for a bucket in the embedded default and in the tests.

Transient object-store faults are retried here, for every caller (`s3_retry_options`):
botocore retries each request, s3fs retries reading an answer's body. What is left once
the retries are spent is an error for the caller: `STORAGE_ERRORS` names every type a
storage call can raise then (s3fs lets a few through that are not `OSError`), and
`storage_error` turns one into an `OSError`.
"""

from __future__ import annotations

import errno
import os
import posixpath
from typing import IO, Any

import fsspec
from fsspec import AbstractFileSystem

# botocore's retry mode and attempts per request, unless the usual AWS_RETRY_MODE and
# AWS_MAX_ATTEMPTS say otherwise (botocore reads them only when no config is given, and we
# give one). "standard" retries 500/502/503/504, throttling (503 SlowDown), request
# timeouts and dropped or refused connections, with jittered exponential backoff
# (rand * 2**n s, at most 20 s), and keeps a retry quota per client so that a store that is
# down fails fast instead of being hammered; "legacy" (botocore's default) has no quota and
# retries fewer kinds of answers. 5 attempts ride out a blip of about 7 s on average (up to
# 15) per request before the request fails.
S3_RETRY_MODE = "standard"
S3_MAX_ATTEMPTS = 5
# s3fs's own tries around each call and around reading an answer's body: a connection that
# breaks after botocore's attempts, or a body cut short (the connection closes before its
# Content-Length: aiohttp's ClientPayloadError), which botocore cannot retry since the body
# is read after its call returns. Backoff 0.1 * 1.7**n s. This is s3fs's default, set here
# so that it does not change under us. A body that stays short fails the read: s3fs never
# returns fewer bytes than the range it asked for, so a video cannot decode short.
S3_BODY_RETRIES = 5
_S3_PROTOCOLS = ("s3", "s3a")


def s3_retry_options() -> dict[str, Any]:
    """The s3fs options that set botocore's retries (merged into any given options)."""
    mode = os.environ.get("AWS_RETRY_MODE") or S3_RETRY_MODE
    attempts = int(os.environ.get("AWS_MAX_ATTEMPTS") or S3_MAX_ATTEMPTS)
    # total_max_attempts counts the first try (botocore's max_attempts would count retries).
    return {"config_kwargs": {"retries": {"mode": mode, "total_max_attempts": attempts}}}


def _storage_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [OSError]
    try:  # what s3fs re-raises untranslated once its retries are spent
        from aiohttp import ClientError
        from botocore.exceptions import BotoCoreError

        types += [ClientError, BotoCoreError]
    except ImportError:  # no s3 support installed: only OSError
        pass
    return tuple(types)


STORAGE_ERRORS: tuple[type[BaseException], ...] = _storage_error_types()


def storage_error(error: BaseException) -> OSError:
    """`error` (one of `STORAGE_ERRORS`) as an `OSError` (EIO, with its type and message)."""
    if isinstance(error, OSError):
        return error
    return OSError(errno.EIO, f"{type(error).__name__}: {error}")


def open_fs(uri: str, **storage_options: Any) -> tuple[AbstractFileSystem, str]:
    """The filesystem behind `uri` and the path inside it (no protocol, no trailing slash).

    s3 endpoint and credentials come from the usual environment (AWS_* variables,
    AWS_ENDPOINT_URL) unless given in `storage_options`; the retries are
    `s3_retry_options()` unless given there.
    """
    protocol, _ = fsspec.core.split_protocol(uri)
    if protocol in _S3_PROTOCOLS:
        storage_options = _with_retries(storage_options)
    fs, path = fsspec.core.url_to_fs(uri, **storage_options)
    if protocol in _S3_PROTOCOLS:
        fs.retries = S3_BODY_RETRIES  # an attribute, not an option, in s3fs
    return fs, path.rstrip("/") or path


def _with_retries(storage_options: dict[str, Any]) -> dict[str, Any]:
    options = dict(storage_options)
    config = dict(options.get("config_kwargs") or {})
    config.setdefault("retries", s3_retry_options()["config_kwargs"]["retries"])
    options["config_kwargs"] = config
    return options


class StorageFile:
    """A binary file read through `open_fs` whose storage errors are all `OSError`s
    (`storage_error`), for readers that handle `OSError` only (FFmpeg's I/O through PyAV)."""

    def __init__(self, file: IO[bytes]):
        self._file = file

    def read(self, size: int = -1) -> bytes:
        try:
            return self._file.read(size)
        except STORAGE_ERRORS as error:
            raise storage_error(error) from error

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        try:
            return self._file.seek(offset, whence)
        except STORAGE_ERRORS as error:
            raise storage_error(error) from error

    def tell(self) -> int:
        return self._file.tell()

    def seekable(self) -> bool:
        return self._file.seekable()

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._file.close()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def open_output(uri: str, **storage_options: Any) -> Any:
    """Open `uri` for binary writing, creating its parent folder (needed on local disks)."""
    fs, path = open_fs(uri, **storage_options)
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    return fs.open(path, "wb")


def join(root: str, *parts: str) -> str:
    """Join a path inside a filesystem with POSIX relative parts."""
    return posixpath.join(root, *parts)


def relative_to(path: str, root: str) -> str:
    """The POSIX path of `path` relative to `root`; both as returned by `open_fs`/`find`."""
    rel = posixpath.relpath(path, root)
    if rel == "." or rel.startswith("../"):
        raise ValueError(f"{path!r} is not inside {root!r}")
    return rel


def printable(text: str) -> str:
    """`text` as valid UTF-8: the undecodable bytes of a local file name (which Python
    holds as lone surrogates) written as `\\xNN`."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
