"""A progress line for long jobs: videos done (and failed), frames, frames per second, ETA.

On a terminal it redraws one line in place; elsewhere (logs, CI) it writes a line at most
every `interval_s` seconds, so a long job shows it is alive without flooding the log.
While the corpus is still being listed (the job streams it), the total is the videos
listed so far and there is no ETA.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class JobProgress:
    def __init__(
        self,
        total_videos: int,
        enabled: bool = True,
        final: bool = True,
        stream: TextIO | None = None,
        interval_s: float = 10.0,
    ):
        self.total = total_videos
        self.final = final  # False: `total` grows as the listing goes on
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.interval_s = interval_s if not self._interactive() else 0.1
        self.done = self.failed = self.frames = 0
        self.started = time.perf_counter()
        self._last_shown = 0.0

    def update(self, frames: int, failed: bool = False) -> None:
        self.done += 1
        self.failed += int(failed)
        self.frames += frames
        now = time.perf_counter()
        if now - self._last_shown >= self.interval_s or (self.final and self.done == self.total):
            self._last_shown = now
            self._show()

    def close(self) -> None:
        if self.enabled and self._interactive():
            self.stream.write("\n")
            self.stream.flush()

    def line(self) -> str:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = self.frames / elapsed
        if not self.final:
            return (
                f"[listing] videos {self.done}/{self.total}+ ({self.failed} failed)  "
                f"frames {self.frames:,}  {rate:.1f} frames/s"
            )
        remaining = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        width = 24
        filled = width * self.done // max(self.total, 1)
        bar = "#" * filled + "." * (width - filled)
        return (
            f"[{bar}] videos {self.done}/{self.total} ({self.failed} failed)  "
            f"frames {self.frames:,}  {rate:.1f} frames/s  "
            f"ETA {time.strftime('%H:%M:%S', time.gmtime(remaining))}"
        )

    def _show(self) -> None:
        if not self.enabled:
            return
        if self._interactive():
            self.stream.write("\r" + self.line())
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def _interactive(self) -> bool:
        return bool(getattr(self.stream or sys.stderr, "isatty", lambda: False)())
