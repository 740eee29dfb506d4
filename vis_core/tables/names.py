"""A folder's file names, listed once and held compactly.

The table folders of an output that has not been compacted hold a file per video, and its
commit log a claim per video version. fsspec lists a folder whole, as a detail dict per
file (about 1 KB each); `FolderNames` keeps only the names, as one sorted NumPy array of
their UTF-8 bytes (about one byte a character), and answers membership by binary search.
`iter_names` streams a local folder's names (`os.scandir`) rather than listing it whole.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from fsspec.implementations.local import LocalFileSystem


class FolderNames:
    """A set of file names (`name in names`, iteration in sorted order, `len`)."""

    def __init__(self, names: Iterable[str] = ()):
        encoded = [name.encode("utf-8") for name in names]
        if not encoded:
            self._names = _NONE
            return
        array = np.array(encoded, dtype=np.bytes_)
        del encoded
        array.sort()
        self._names = array[np.append(True, array[1:] != array[:-1])]  # without repeats

    @classmethod
    def list(cls, fs: Any, folder: str) -> FolderNames:
        """The names in `folder` now (an absent folder: none). Sub-folders' names are
        included: callers look for names of the files they expect."""
        return cls(iter_names(fs, folder))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str) or not len(self._names):
            return False
        probe = name.encode("utf-8")
        # A longer name would be cut to the array's width by the search: never in it.
        if len(probe) > self._names.itemsize or probe.endswith(b"\0"):
            return False
        index = int(np.searchsorted(self._names, probe))
        return index < len(self._names) and self._names[index] == probe

    def __iter__(self) -> Iterator[str]:
        return (name.decode("utf-8") for name in self._names)

    def __len__(self) -> int:
        return len(self._names)

    @property
    def nbytes(self) -> int:
        return int(self._names.nbytes)


_NONE = np.array([], "S1")


def iter_names(fs: Any, folder: str) -> Iterator[str]:
    """The names in `folder` now (files and sub-folders; an absent folder: none), streamed
    on a local disk; elsewhere fsspec lists the folder whole, and its cache is dropped."""
    if isinstance(fs, LocalFileSystem):
        try:
            with os.scandir(folder) as entries:
                yield from (entry.name for entry in entries)
        except FileNotFoundError:
            return
        return
    fs.invalidate_cache(folder)
    try:
        paths = fs.ls(folder, detail=False)
    except FileNotFoundError:
        return
    finally:
        fs.invalidate_cache(folder)  # an object store's cache would keep every detail
    yield from (path.rstrip("/").rsplit("/", 1)[-1] for path in paths)
