"""A folder's file names, listed once and held compactly.

The table folders of an output that has not been compacted hold a file per video, and its
commit log a claim per video version. fsspec lists a folder whole, as a detail dict per
file (about 1 KB each); `FolderNames` keeps only the names, as one sorted NumPy array of
their UTF-8 bytes (about one byte a character), and answers membership by binary search.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np


class FolderNames:
    """A set of file names (`name in names`, iteration in sorted order, `len`)."""

    def __init__(self, names: Iterable[str] = ()):
        encoded = sorted({name.encode("utf-8") for name in names})
        self._names = np.array(encoded, dtype=np.bytes_) if encoded else np.array([], "S1")

    @classmethod
    def list(cls, fs: Any, folder: str) -> FolderNames:
        """The names in `folder` now (an absent folder: none). Sub-folders' names are
        included: callers look for names of the files they expect."""
        fs.invalidate_cache(folder)
        try:
            paths = fs.ls(folder, detail=False)
        except FileNotFoundError:
            return cls()
        finally:
            fs.invalidate_cache(folder)  # an object store's cache would keep every detail
        return cls(path.rstrip("/").rsplit("/", 1)[-1] for path in paths)

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
