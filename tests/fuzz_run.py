"""Runs a generated fuzz corpus (tests/fuzz_corpus.py) through the decoding path and the
corpus path, judges every file and sums the run up as the README's reliability row.

Each file goes through
- the decoding path: `open_video` and a whole pass of frames (in a thread, given up after
  `HANG_S`: a hang is a finding, not a stuck run);
- the corpus path: `process_video` with a small model and a per-video time limit, its rows
  committed to tables with `TableCommitter`, as the corpus job does.

A file is *correct* when it decodes to what is expected (a clip: the encoded frames as
displayed, their timestamps; a mutation: whatever it decodes to, the same on both paths)
and its `ok` row and masks have the decoded frame count and displayed size; *failed with an
error* when both paths fail with the same typed error that names the file (for a hostile
file, the expected one). Anything else is a problem, listed. After the run the tables are
read back: a file without a `videos` row is *lost*, one with two is *duplicated*.

Both paths decode with one thread, where FFmpeg is reproducible; each file is decoded once
more with FFmpeg's automatic threads, and the files whose outcome changes are listed (not
counted as problems: see `VideoReader._decoded`), as are the `ok` mutations with fewer
frames than the file they damage.

The long loop (README, Reliability): `make fuzz`, or `OMP_NUM_THREADS=1 python -m tests.fuzz_run
--mutations 1000 --seed 1` for this module's own summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypeVar

import numpy as np
import pyarrow.dataset as pads

from tests.fuzz_corpus import FuzzCase, clip_cases, hostile_cases, mutated_cases
from vis_core import masks
from vis_core.corpus.listing import CorpusVideo
from vis_core.corpus.process import ProcessOptions, process_video
from vis_core.corpus.time_limit import TimeLimit
from vis_core.inference.segmenter import VideoSegmenter
from vis_core.tables.commit import TableCommitter
from vis_core.tables.read import read_table
from vis_core.video.decode import DecodeLimits, open_video
from vis_core.video.errors import VideoDecodeError

# How long the decoding path may take on one of these small files before it counts as a hang.
HANG_S = 60.0
# The corpus path's limit: generous for a loaded machine, far below a hang.
FUZZ_TIME_LIMIT = TimeLimit(base_s=60.0, per_frame_s=5.0)
# Error types that make a clear `failed` row (what `process_video` records by name).
TYPED_ERRORS = (
    "VideoDecodeError",
    "VideoReadError",
    "EmptyVideoError",
    "NotAVideoError",
    "UnsupportedVideoError",
    "CorruptVideoError",
    "VideoTooLargeError",
    "VideoTimeLimitError",
    "FrameSourceError",
)
_T = TypeVar("_T")


@dataclass(frozen=True)
class Decoded:
    """What the decoding path made of a file: frames `[T, H, W, 3]` and timestamps, or the
    error's type name and message."""

    frames: np.ndarray | None = None
    timestamps_s: np.ndarray | None = None
    error_type: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class FileResult:
    """One file's outcome on the corpus path, with what was wrong (`problems`)."""

    name: str
    kind: str
    status: str  # "ok", "failed", or "none" (no row: the path crashed or hung)
    error: str | None
    problems: tuple[str, ...]
    seconds: float
    memory_bytes: int  # peak resident memory above the start, while processing it
    short: bool = False  # ok with fewer frames than the file it damages
    # Decoded otherwise with FFmpeg's automatic threads (see `VideoReader._decoded`).
    thread_dependent: bool = False

    @property
    def correct(self) -> bool:
        return self.status == "ok" and not self.problems

    @property
    def failed_clearly(self) -> bool:
        return self.status == "failed" and not self.problems


@dataclass(frozen=True)
class ReliabilityRow:
    """The README's row: files tried, correct, failed with an error, lost, duplicated,
    problems (wrong results, unclear errors, crashes, hangs), worst memory and time."""

    files: int
    correct: int
    failed_with_error: int
    lost: int
    duplicated: int
    problems: int
    worst_memory_bytes: int
    worst_seconds: float
    baseline_rss_bytes: int

    HEADER: ClassVar[str] = (
        "| files tried | correct | failed with an error | lost | duplicated | problems "
        "| worst memory per video | worst time per video |\n|---|---|---|---|---|---|---|---|"
    )

    def markdown(self) -> str:
        return (
            f"| {self.files} | {self.correct} | {self.failed_with_error} | {self.lost} "
            f"| {self.duplicated} | {self.problems} | +{self.worst_memory_bytes / 2**20:.0f} MiB "
            f"(process {self.baseline_rss_bytes / 2**20:.0f} MiB before) "
            f"| {self.worst_seconds:.2f} s |"
        )


def decode_file(path: Path, limits: DecodeLimits, threads: int = 1) -> Decoded:
    """The decoding path on one file (see the module docstring)."""

    def decode() -> Decoded:
        try:
            with open_video(path, limits, threads) as video:
                decoded = list(video.frames())
        except VideoDecodeError as error:
            return Decoded(error_type=type(error).__name__, error=str(error))
        frames = np.stack([frame.image for frame in decoded]) if decoded else None
        timestamps = np.array([frame.timestamp_s for frame in decoded])
        return Decoded(frames=frames, timestamps_s=timestamps)

    try:
        return _in_thread(decode, HANG_S)
    except TimeoutError:
        return Decoded(error_type="hang", error=f"decoding took over {HANG_S:g} s")
    except Exception as error:  # a crash of the decoding path: a finding
        return Decoded(error_type=f"crash {type(error).__name__}", error=str(error))


def judge_decoded(case: FuzzCase, decoded: Decoded) -> list[str]:
    """What is wrong with the decoding path's result for `case`."""
    if case.frames is not None:
        if decoded.frames is None:
            return [f"a clip failed to decode: {decoded.error_type}: {decoded.error}"]
        if decoded.frames.shape != case.frames.shape:
            return [f"decoded {decoded.frames.shape}, expected {case.frames.shape}"]
        problems = []
        error = np.abs(decoded.frames.astype(np.int16) - case.frames).mean()
        if error > case.max_error:
            problems.append(f"frames differ by {error:.2f} on average (> {case.max_error})")
        if not np.allclose(decoded.timestamps_s, case.timestamps_s, atol=1e-3):
            problems.append(f"timestamps {decoded.timestamps_s.tolist()}")
        return problems
    if case.error is not None and decoded.error_type != case.error:
        return [f"expected {case.error}, got {decoded.error_type}: {decoded.error}"]
    if decoded.frames is None and decoded.error_type not in TYPED_ERRORS:
        return [f"untyped failure {decoded.error_type}: {decoded.error}"]
    return []


def judge_rows(uri: str, row: dict, frame_sizes: set, decoded: Decoded) -> list[str]:
    """What is wrong with a file's corpus-path rows, against its decoding path result."""
    problems = []
    if decoded.frames is not None:
        count, height, width = decoded.frames.shape[:3]
        if row["status"] != "ok":
            problems.append(f"the corpus path failed where decoding did not: {row['error']}")
        elif (row["num_frames"], row["height"], row["width"]) != (count, height, width):
            problems.append(
                f"row says {row['num_frames']} frames of {row['width']}x{row['height']}, "
                f"decoding gave {count} of {width}x{height}"
            )
        elif frame_sizes - {(height, width)}:
            problems.append(f"masks of {sorted(frame_sizes)} in a {width}x{height} video")
        return problems
    if row["status"] != "failed":
        return [f"the corpus path gave {row['status']} where decoding failed: {decoded.error}"]
    error = row["error"] or ""
    error_type = error.split(":")[0]
    if error_type != decoded.error_type or error_type not in TYPED_ERRORS:
        problems.append(f"error {error[:200]!r}, decoding said {decoded.error_type}")
    if uri not in error:
        problems.append(f"the error does not name the video: {error[:200]!r}")
    return problems


def run_cases(
    cases: list[tuple[FuzzCase, Path]],
    segmenter: VideoSegmenter,
    output: Path,
    limits: DecodeLimits | None = None,
) -> tuple[list[FileResult], ReliabilityRow]:
    """Every case (and where its file is) through both paths, rows committed under `output`."""
    limits = limits if limits is not None else DecodeLimits()
    options = ProcessOptions(
        model="fuzz", run_id="fuzz", limits=limits, time_limit=FUZZ_TIME_LIMIT, decode_threads=1
    )
    committer = TableCommitter(str(output), options.run_id)
    memory = _PeakMemory()
    baseline = memory.current()
    results = []
    for case, path in cases:
        # Both paths decode with one thread, FFmpeg's reproducible case; automatic threads
        # are tried too, to count the files whose outcome depends on them.
        decoded = decode_file(path, limits)
        problems = judge_decoded(case, decoded)
        thread_dependent = _outcome(decode_file(path, limits, threads=0)) != _outcome(decoded)
        memory.reset()
        started = time.perf_counter()
        try:
            video = CorpusVideo(case.name, str(path), 0)
            rows = process_video(video, segmenter, options, segmenter.model.config.class_names)
            committer.commit(rows)
        except Exception as error:  # a crash of the corpus path: the file has no row
            problems.append(f"the corpus path crashed: {type(error).__name__}: {error}")
            row, sizes = {"status": "none", "error": None}, set()
        else:
            row = rows.tables["videos"].to_pylist()[0]
            frames = rows.tables["tracklet_frames"]
            sizes = set(zip(frames["height"].to_pylist(), frames["width"].to_pylist(), strict=True))
            problems += judge_rows(str(path), row, sizes, decoded)
            problems += _mask_problems(frames.slice(0, 50).to_pylist())
        seconds = time.perf_counter() - started
        short = (
            row["status"] == "ok"
            and case.source_frames is not None
            and row["num_frames"] < case.source_frames
        )
        results.append(
            FileResult(
                case.name,
                case.kind,
                row["status"],
                row["error"],
                tuple(problems),
                seconds,
                memory.peak() - memory.start,
                short,
                thread_dependent,
            )
        )
    memory.stop()
    lost, duplicated = _lost_and_duplicated([case.name for case, _ in cases], output)
    summary = ReliabilityRow(
        files=len(results),
        correct=sum(result.correct for result in results),
        failed_with_error=sum(result.failed_clearly for result in results),
        lost=lost,
        duplicated=duplicated,
        problems=sum(bool(result.problems) for result in results),
        worst_memory_bytes=max((result.memory_bytes for result in results), default=0),
        worst_seconds=max((result.seconds for result in results), default=0.0),
        baseline_rss_bytes=baseline,
    )
    return results, summary


def fuzz_corpus(
    root: Path, mutations: int, seed: int, extra_bases: tuple[Path, ...] = ()
) -> list[tuple[FuzzCase, Path]]:
    """Clips, hostile files and `mutations` damaged copies of the clips and of
    `extra_bases` (real videos), written under `root`."""
    clips = clip_cases(root / "clips")
    hostile = hostile_cases(root / "hostile")
    bases = [(root / "clips" / case.name, len(case.frames)) for case in clips]
    for path in extra_bases:
        with open_video(path) as video:
            bases.append((path, video.info.num_frames))
    mutated = mutated_cases(root / "mutated", bases, mutations, seed)
    return [
        *((case, root / "clips" / case.name) for case in clips),
        *((case, root / "hostile" / case.name) for case in hostile),
        *((case, root / "mutated" / case.name) for case in mutated),
    ]


def tiny_segmenter(seed: int = 0) -> VideoSegmenter:
    """The small preset with random weights and 64-pixel inputs (as tests/conftest.py's
    `tiny_model`): the masks are meaningless, their sizes and the rows are what count."""
    import torch

    from vis_core.modeling.presets import vita_small_synth
    from vis_core.modeling.vita_model import VitaModel

    config = vita_small_synth()
    config = dataclasses.replace(
        config,
        input=dataclasses.replace(config.input, min_size_test=64),
        inference=dataclasses.replace(config.inference, long_video_frames=8),
    )
    torch.manual_seed(seed)
    model = VitaModel(config).eval()
    return VideoSegmenter(model, device=torch.device("cpu"), dtype=torch.float32)


def describe(results: list[FileResult], summary: ReliabilityRow) -> str:
    """The reliability row, the counts by kind and error, and every problem."""
    lines = [ReliabilityRow.HEADER, summary.markdown(), ""]
    kinds = Counter((result.kind, result.status) for result in results)
    lines.append("by kind: " + ", ".join(f"{k} {s}: {n}" for (k, s), n in sorted(kinds.items())))
    errors = Counter((result.error or "").split(":")[0] for result in results if result.error)
    lines.append("errors: " + ", ".join(f"{name}: {count}" for name, count in errors.most_common()))
    short = [result.name for result in results if result.short]
    lines.append(f"ok with fewer frames than the file they damage: {len(short)} {short}")
    threaded = [result.name for result in results if result.thread_dependent]
    lines.append(f"another outcome with automatic threads: {len(threaded)} {threaded}")
    slowest = max(results, key=lambda result: result.seconds, default=None)
    hungriest = max(results, key=lambda result: result.memory_bytes, default=None)
    if slowest is not None and hungriest is not None:
        lines.append(f"slowest: {slowest.name}; most memory: {hungriest.name}")
    lines += [
        f"PROBLEM {result.name}: {'; '.join(result.problems)}"
        for result in results
        if result.problems
    ]
    return "\n".join(lines)


def _outcome(decoded: Decoded) -> tuple:
    if decoded.frames is None:
        return (decoded.error_type,)
    return ("ok", decoded.frames.shape)


def _mask_problems(frame_rows: list[dict]) -> list[str]:
    """Masks whose RLE does not decode to their size and area."""
    problems = []
    for row in frame_rows:
        mask = masks.decode_one(masks.from_bytes(row["mask"], row["height"], row["width"]))
        if mask.shape != (row["height"], row["width"]) or int(mask.sum()) != row["area"]:
            problems.append(f"frame {row['frame_index']}: mask {mask.shape}, area {row['area']}")
    return problems[:3]


def _lost_and_duplicated(names: list[str], output: Path) -> tuple[int, int]:
    """Files without a committed `videos` row, and with more than one row in the table
    folder as a plain Parquet reader sees it."""
    committed = Counter(read_table(str(output), "videos").column("video_id").to_pylist())
    table = pads.dataset(str(output / "videos"), format="parquet").to_table(columns=["video_id"])
    rows = Counter(table.column("video_id").to_pylist())
    lost = sum(1 for name in names if committed[name] == 0)
    duplicated = sum(1 for name in names if rows[name] > 1)
    return lost, duplicated


def _in_thread(call: Callable[[], _T], timeout_s: float) -> _T:
    """`call()` in a daemon thread; TimeoutError when it has not returned in `timeout_s`
    (the thread is left behind)."""
    result: list = []

    def run() -> None:
        try:
            result.append((True, call()))
        except BaseException as error:
            result.append((False, error))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not result:
        raise TimeoutError
    ok, value = result[0]
    if not ok:
        raise value
    return value


class _PeakMemory:
    """Samples this process's resident memory every 5 ms (Linux /proc) to find the peak of
    each file; `ru_maxrss` only ever grows, so it cannot tell one file's peak."""

    def __init__(self) -> None:
        self.start = self.current()
        self._peak = self.start
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def reset(self) -> None:
        with self._lock:
            self.start = self._peak = self.current()

    def peak(self) -> int:
        with self._lock:
            return max(self._peak, self.current())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            value = self.current()
            with self._lock:
                self._peak = max(self._peak, value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz_run", description=__doc__)
    parser.add_argument("--mutations", type=int, default=1000, help="damaged files to try")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--base",
        type=Path,
        action="append",
        help="a real video to damage too (repeatable; default: tests/data/mmtrack_demo.mp4)",
    )
    parser.add_argument("--keep", type=Path, help="write the corpus and tables here (kept)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        root = args.keep or Path(folder)
        started = time.perf_counter()
        bases = tuple(args.base or [Path(__file__).parent / "data" / "mmtrack_demo.mp4"])
        cases = fuzz_corpus(root / "corpus", args.mutations, args.seed, bases)
        generated = time.perf_counter() - started
        results, summary = run_cases(cases, tiny_segmenter(), root / "tables")
    print(describe(results, summary))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        f"generated {len(cases)} files in {generated:.1f} s, ran them in "
        f"{time.perf_counter() - started - generated:.1f} s; process peak {peak / 2**20:.0f} MiB"
    )
    return 0 if summary.problems == summary.lost == summary.duplicated == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
