"""Object storage through fsspec: local paths, `file://` and `s3://` alike.

Everything that reads or writes a dataset, a corpus or a table goes through `open_fs`, so
a local folder stands in for a bucket in the embedded default and in the tests.
"""

from __future__ import annotations

import posixpath
from typing import Any

import fsspec
from fsspec import AbstractFileSystem


def open_fs(uri: str, **storage_options: Any) -> tuple[AbstractFileSystem, str]:
    """The filesystem behind `uri` and the path inside it (no protocol, no trailing slash).

    s3 endpoint and credentials come from the usual environment (AWS_* variables,
    AWS_ENDPOINT_URL) unless given in `storage_options`.
    """
    fs, path = fsspec.core.url_to_fs(uri, **storage_options)
    return fs, path.rstrip("/") or path


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
