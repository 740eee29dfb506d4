"""A corpus job's plan: the listed videos its run has still to process, streamed.

The listing (`vis_core.corpus.listing.iter_corpus`) is checked video by video against the
run's committed set (`vis_core.tables.committed_set`), so the driver holds neither the
listing nor the commits whole: a 100,000-video corpus costs it the committed set (about
2 MB) and one folder's listing at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from vis_core.corpus.listing import CorpusVideo
from vis_core.tables.committed_set import CommittedSet
from vis_core.tables.schema import STATUS_FAILED


@dataclass
class CorpusPlan:
    """Iterate it once for the videos to process: those not committed (and the failed
    ones with `retry_failed`). listed / skipped count the videos seen so far, and are
    final once `finished`."""

    listing: Iterable[CorpusVideo]
    committed: CommittedSet
    retry_failed: bool = False
    listed: int = field(default=0, init=False)
    skipped: int = field(default=0, init=False)
    finished: bool = field(default=False, init=False)

    @property
    def to_process(self) -> int:
        return self.listed - self.skipped

    def __iter__(self) -> Iterator[CorpusVideo]:
        for video in self.listing:
            self.listed += 1
            status = self.committed.status(video.video_id)
            if status is None or (self.retry_failed and status == STATUS_FAILED):
                yield video
            else:
                self.skipped += 1
        self.finished = True
