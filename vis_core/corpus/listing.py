"""Listing a corpus: every file with a video extension under an input root, recursively.

A video's id is its exact POSIX path relative to the root (spaces and non-ASCII kept);
two identical files are two videos. Other files are ignored.

`iter_corpus` streams the listing folder by folder (each folder's files in name order,
then its sub-folders), so a job's driver holds one folder's listing at a time, never the
whole corpus; `list_corpus` is the sorted list, for small corpora and tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from vis_core.storage import open_fs

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")


class CorpusNotFoundError(FileNotFoundError):
    """The input root does not exist or is not a folder."""


@dataclass(frozen=True)
class CorpusVideo:
    """One video of the corpus: `video_id` (relative POSIX path), `uri` (readable with
    `vis_core.storage.open_fs` and the same storage options), `size` in bytes."""

    video_id: str
    uri: str
    size: int


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
    for folder, subfolders, files in fs.walk(root, detail=True):
        ordered = sorted(subfolders.items())  # walked in name order: a stable order
        subfolders.clear()
        subfolders.update(ordered)
        for name in sorted(files):
            info = files[name]
            if info.get("type") != "file" or not is_video_file(name):
                continue
            path = info["name"]
            yield CorpusVideo(
                video_id=_relative(path, root),
                uri=fs.unstrip_protocol(path),
                size=int(info.get("size") or 0),
            )
        fs.invalidate_cache(folder)  # an object store's cache would keep every folder


def _relative(path: str, root: str) -> str:
    """`path` below `root`, exactly as stored: no normalisation (an object key may hold
    `..` or `//`, which are part of its id; the id never becomes a file path)."""
    prefix = root.rstrip("/") + "/"
    if not path.startswith(prefix):
        raise ValueError(f"{path!r} is not inside {root!r}")
    return path[len(prefix) :]
