"""A run's committed videos as a compact set: what a corpus job's driver holds to skip them.

The driver checks every listed video against the videos its run has committed. Holding
the commits themselves (a claim object and its paths per video) costs over a kilobyte a
video; this set keeps each video's key (the 20 hex digits that name its files and claims,
`vis_core.tables.claims.video_key`) and one status bit: 21 bytes a video, 2.1 MB for
100,000. The key is the commit protocol's identity of a video, so the set answers exactly
what a commit would.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from vis_core.tables.claims import video_key
from vis_core.tables.schema import STATUS_FAILED, STATUS_OK
from vis_core.tables.view import Commit


@dataclass(frozen=True)
class CommittedSet:
    """keys: sorted video keys (`S20`); failed: whether each video's commit is `failed`."""

    keys: np.ndarray
    failed: np.ndarray

    @classmethod
    def of(cls, commits: Iterable[Commit]) -> CommittedSet:
        """The set of `commits` (streamed: only the set is held)."""
        keys, failed = bytearray(), bytearray()
        for commit in commits:
            keys += commit.claim.key.encode("ascii")
            failed.append(commit.status == STATUS_FAILED)
        key_array = np.frombuffer(bytes(keys), dtype="S20")
        order = np.argsort(key_array, kind="stable")
        failed_array = np.frombuffer(bytes(failed), dtype=np.bool_)
        return cls(key_array[order], failed_array[order])

    def status(self, video_id: str) -> str | None:
        """`ok` or `failed` for a committed video; None when it is not committed."""
        probe = video_key(video_id).encode("ascii")
        index = int(np.searchsorted(self.keys, probe))
        if index == len(self.keys) or self.keys[index] != probe:
            return None
        return STATUS_FAILED if self.failed[index] else STATUS_OK

    def __contains__(self, video_id: object) -> bool:
        return isinstance(video_id, str) and self.status(video_id) is not None

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        return int(self.keys.nbytes + self.failed.nbytes)
