"""Corpus scale: the job driver's planning and the tables' files for 100,000 videos.

Synthetic, no model: a listing of 100,000 empty `.mp4` files (100 folders of 1,000 in a
local folder), and the same videos committed by one run with small fake rows (a `videos`
row, one tracklet, two frames), in the layout a commit leaves: a file per table and a
claim per video. They are written directly, from one template per table with the video
id patched in (same length, so the Parquet stays valid): committing 100,000 videos one
by one takes an hour on a small loaded machine. Then:

- planning, what the driver does before and while it feeds the workers (its run's
  recovery, the committed set, the streamed listing checked against it), on an empty
  output, on the 100,000 per-video commits, and after `vis compact`; beside the way the
  driver worked before (the whole listing and a dict of every commit held at once);
- `vis compact`: time, its peak memory, files per table, files per 1,000 videos; then
  2,500 more videos committed and compacted again (full packs are kept).

Each planning and compaction row runs in a fresh process: its time is wall-clock without
tracing, "peak RSS" is the process's peak resident memory above its size after imports,
"traced peak" the peak of Python allocations (tracemalloc, NumPy included) in a second,
traced run.
"""

from __future__ import annotations

import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VIDEOS = 100_000
PER_FOLDER = 1_000
MORE = 2_500  # committed after the first compaction
RUN = "bench-run"
_TEMPLATE_ID = "f000/v000000.mp4"  # every video id has this length


def video_id(index: int) -> str:
    return f"f{index // PER_FOLDER:03d}/v{index:06d}.mp4"


def make_listing(root: Path, count: int) -> None:
    for index in range(count):
        path = root / video_id(index)
        if index % PER_FOLDER == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def _templates() -> dict[str, bytes]:
    """Each table's file for the template video: uncompressed, no dictionary, so the
    video id is in the bytes as is."""
    import pyarrow.parquet as pq

    from vis_core import masks
    from vis_core.inference.instances import VideoInstances
    from vis_core.tables.rows import VideoRecord, ok_rows

    dense = np.zeros((1, 2, 4, 4), dtype=bool)
    dense[0, :, 1:3, 1:3] = True
    instances = VideoInstances(
        num_frames=2,
        height=4,
        width=4,
        scores=np.array([0.9], np.float32),
        labels=np.zeros(1, np.int64),
        masks=(tuple(masks.encode(dense[0])),),
    )
    record = VideoRecord(_TEMPLATE_ID, f"/corpus/{_TEMPLATE_ID}", "fake", RUN, "vita", 2)
    rows = ok_rows(record, instances, ["thing"], np.arange(2) / 10.0)
    templates = {}
    for table, data in rows.tables.items():
        buffer = io.BytesIO()
        pq.write_table(data, buffer, compression="none", use_dictionary=False)
        templates[table] = buffer.getvalue()
    return templates


def commit_bulk(output: Path, indices: range) -> None:
    """Write the state that committing each video leaves (published files and a claim)."""
    from vis_core.tables.claims import COMMITS, Claim, data_name, new_attempt, video_key

    templates = _templates()
    template = _TEMPLATE_ID.encode()
    for table in templates:
        (output / table).mkdir(parents=True, exist_ok=True)
    (output / COMMITS).mkdir(parents=True, exist_ok=True)
    for index in indices:
        name_id = video_id(index)
        attempt = new_attempt()
        name = data_name(RUN, video_key(name_id), attempt)
        for table, data in templates.items():
            (output / table / name).write_bytes(data.replace(template, name_id.encode()))
        claim = Claim(RUN, name_id, 1, "ok", attempt, "bench", dict.fromkeys(templates, name))
        (output / COMMITS / claim.name).write_bytes(claim.to_bytes())


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _plan(corpus: str, output: str, way: str) -> dict:
    """The driver's planning, `stream` (this version) or `whole` (the former way)."""
    from vis_core.corpus.listing import iter_corpus, list_corpus
    from vis_core.corpus.plan import CorpusPlan
    from vis_core.tables.commit import TableCommitter

    committer = TableCommitter(output, RUN)
    committer.recover()
    if way == "stream":
        plan = CorpusPlan(iter_corpus(corpus), committer.committed_set())
        for _ in plan:
            pass
        return {"listed": plan.listed, "todo": plan.to_process}
    listing = list_corpus(corpus)
    committed = committer.committed()
    todo = [video for video in listing if video.video_id not in committed]
    return {"listed": len(listing), "todo": len(todo)}


def _child(mode: str, corpus: str, output: str) -> dict:
    """One measured row, in this (fresh) process."""
    import tracemalloc

    from vis_core.corpus import listing, plan  # noqa: F401  (imports before the baseline)
    from vis_core.tables import compact, read  # noqa: F401

    base = _rss_bytes()
    start = time.perf_counter()
    if mode == "compact":
        result = compact.TableCompactor(output, RUN).compact()
        found = {
            "videos": result.videos,
            "packs": result.packs,
            "before": dict(result.files_before),
            "after": dict(result.files_after),
        }
    else:
        found = _plan(corpus, output, mode)
    found["seconds"] = time.perf_counter() - start
    found["peak_rss"] = _peak_rss_bytes() - base
    if mode != "compact":
        tracemalloc.start()
        _plan(corpus, output, mode)
        found["traced_peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return found


def _measure(mode: str, corpus: Path, output: Path) -> dict:
    command = [sys.executable, "-m", "benchmarks.bench_corpus_scale", mode, str(corpus)]
    done = subprocess.run(
        [*command, str(output)], check=True, capture_output=True, text=True, cwd=_REPO
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


_REPO = Path(__file__).resolve().parents[1]


def _mb(count: int) -> str:
    return f"{count / 2**20:.1f} MB"


def run() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        corpus, output = Path(tmp) / "corpus", Path(tmp) / "tables"
        started = time.perf_counter()
        make_listing(corpus, VIDEOS)
        output.mkdir()
        rows = [("empty output", way, _measure(way, corpus, output)) for way in ("stream", "whole")]
        commit_bulk(output, range(VIDEOS))
        print(
            f"synthetic listing and {VIDEOS:,} commits written in "
            f"{time.perf_counter() - started:.0f} s"
        )
        rows += [
            (f"{VIDEOS:,} per-video commits", way, _measure(way, corpus, output))
            for way in ("stream", "whole")
        ]
        compaction = _measure("compact", corpus, output)
        rows += [
            (f"{VIDEOS:,} compacted", way, _measure(way, corpus, output))
            for way in ("stream", "whole")
        ]
        commit_bulk(output, range(VIDEOS, VIDEOS + MORE))
        again = _measure("compact", corpus, output)

    print(
        f"\nplanning a job over a listing of {VIDEOS:,} videos (stream: this version; "
        "whole: the listing and every commit held)"
    )
    header = ("output", "driver", "videos", "to do", "seconds", "peak RSS", "traced peak")
    print("  ".join(f"{h:>26}" if i == 0 else f"{h:>12}" for i, h in enumerate(header)))
    for state, way, found in rows:
        print(
            f"{state:>26}  {way:>12}  {found['listed']:>12,}  {found['todo']:>12,}  "
            f"{found['seconds']:>12.2f}  {_mb(found['peak_rss']):>12}  "
            f"{_mb(found['traced_peak']):>12}"
        )
    print("\nvis compact")
    for label, found in ((f"{VIDEOS:,} videos", compaction), (f"+{MORE:,} videos", again)):
        per_thousand = {
            table: 1000 * count / found["videos"] for table, count in found["after"].items()
        }
        print(
            f"{label:>16}: {found['seconds']:.0f} s, peak RSS {_mb(found['peak_rss'])}, "
            f"{found['packs']} packs written; files per table "
            + ", ".join(
                f"{table} {found['before'][table]:,} -> {found['after'][table]:,} "
                f"({per_thousand[table]:.2f} per 1,000 videos)"
                for table in found["after"]
            )
        )


if __name__ == "__main__":
    print(json.dumps(_child(*sys.argv[1:4])))
