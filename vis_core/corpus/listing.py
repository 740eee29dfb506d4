"""Listing a corpus: every file with a video extension under an input root, recursively.

A video's id is its exact POSIX path relative to the root (spaces and non-ASCII kept);
two identical files are two videos. Other files are ignored. A local file name that is
not valid UTF-8 gets an id with each undecodable byte written as `\\xNN` (tables hold
UTF-8 only); the file is still read by its real name.

Nothing outside the root is read: a symbolic link to a file inside the root is a video
like any other, one that leads outside it (even to nothing) is listed with a
`refusal`, which the job records as a `failed` row (`OutsideInputError`) without opening
it. Symbolic links to folders are not followed (no loops, no way out of the root).

`iter_corpus` streams the listing folder by folder (each folder's files in name order,
then its sub-folders), so a job's driver holds one folder's listing at a time, never the
whole corpus; `list_corpus` is the sorted list, for small corpora and tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from vis_core.storage import open_fs, printable
from vis_core.video.errors import VideoReadError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")


class CorpusNotFoundError(FileNotFoundError):
    """The input root does not exist or is not a folder."""


class OutsideInputError(VideoReadError):
    """A listed entry leads outside the input root (a symbolic link): refused, not read."""


@dataclass(frozen=True)
class CorpusVideo:
    """One video of the corpus: `video_id` (relative POSIX path), `uri` (readable with
    `vis_core.storage.open_fs` and the same storage options), `size` in bytes; `refusal`:
    why it must not be read (see the module docstring), else None."""

    video_id: str
    uri: str
    size: int
    refusal: str | None = None

    def check_readable(self) -> None:
        """Raises OutsideInputError for a refused entry (before anything opens it)."""
        if self.refusal is not None:
            raise OutsideInputError(printable(self.uri), self.refusal)


def is_video_file(name: str) -> bool:
    return name.lower().endswith(VIDEO_EXTENSIONS)


def list_corpus(input_uri: str, **storage_options: Any) -> list[CorpusVideo]:
    """The corpus under `input_uri` (a local path, `file://` or `s3://` prefix), sorted by
    video id."""
    return sorted(iter_corpus(input_uri, **storage_options), key=lambda video: video.video_id)


def iter_corpus(input_uri: str, **storage_options: Any) -> Iterator[CorpusVideo]:
    """The corpus under `input_uri`, streamed one folder at a time (see the module
    docstring). Raises CorpusNotFoundError at once when the input is not a folder."""
    fs, root = open_fs(input_uri, **storage_options)
    if not fs.isdir(root):
        raise CorpusNotFoundError(f"the input {input_uri} is not a folder or prefix")
    return _walk(fs, root)


def _walk(fs: Any, root: str) -> Iterator[CorpusVideo]:
    real_root = os.path.realpath(root) if _is_local(fs) else root
    for folder, subfolders, files in fs.walk(root, detail=True):
        ordered = sorted(subfolders.items())  # walked in name order: a stable order
        subfolders.clear()
        subfolders.update(ordered)
        for name in sorted(files):
            info = files[name]
            is_link = bool(info.get("islink"))  # fsspec's local listing types a link "other"
            if (info.get("type") != "file" and not is_link) or not is_video_file(name):
                continue
            path = info["name"]
            yield CorpusVideo(
                video_id=printable(_relative(path, root)),
                uri=fs.unstrip_protocol(path),
                size=int(info.get("size") or 0),
                refusal=_link_refusal(path, real_root) if is_link else None,
            )
        fs.invalidate_cache(folder)  # an object store's cache would keep every folder


def _is_local(fs: Any) -> bool:
    protocol = fs.protocol
    return "file" in (protocol if isinstance(protocol, (tuple, list)) else (protocol,))


def _link_refusal(path: str, real_root: str) -> str | None:
    """Why the symbolic link at `path` must not be read (None: it leads to a file inside
    `real_root`, the input root with its own links resolved)."""
    target = os.path.realpath(path)
    if os.path.commonpath([target, real_root]) != real_root:
        return "a symbolic link that leads outside the input root"
    return None


def _relative(path: str, root: str) -> str:
    """`path` below `root`, exactly as stored: no normalisation (an object key may hold
    `..` or `//`, which are part of its id; the id never becomes a file path)."""
    prefix = root.rstrip("/") + "/"
    if not path.startswith(prefix):
        raise ValueError(f"{path!r} is not inside {root!r}")
    return path[len(prefix) :]
