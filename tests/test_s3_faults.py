"""Object store faults: the corpus job against the local S3 server (moto) behind a
fault-injecting proxy (`tests/s3_fault_proxy.py`), for listing, reading videos and writing
tables.

Transient faults (dropped connections, lost answers, 500/503, slow answers, truncated
bodies) are retried and the job's tables equal a clean run's; a video that cannot be read
gets a `failed` row with its error; tables that cannot be written stop the job with a
clear message and leave nothing partial committed. The fake credentials appear in no log,
table or error. The long loop (`make s3-faults`) prints the README's reliability rows.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.dataset as pads
import pytest
from pyarrow.fs import FSSpecHandler, PyFileSystem

from tests.s3_fault_proxy import FAULTS, Fault, FaultPlan, FaultProxy
from tests.test_corpus_job import comparable, job, make_corpus
from vis_core.storage import open_fs
from vis_core.tables.read import TablesNotFoundError, read_table
from workflows.corpus_job import StorageFailure, run_corpus_job

ACCESS_KEY = "AKIAVISFAULTPROXY7Q2Z"
SECRET_KEY = "vis-fault-secret-that-must-never-appear-5d1c"
TABLES = ("videos", "tracklets", "tracklet_frames")
# Three good videos (one in a folder with a space and an accent, one Matroska) and an empty
# file, which fails as it does without faults.
VIDEOS = ("a.mp4", "sub dir/b é.mp4", "c.mkv", "zero.mp4")
KINDS = ("list", "read", "write")


@pytest.fixture(scope="module")
def local_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    full = make_corpus(tmp_path_factory.mktemp("full") / "bucket")
    root = tmp_path_factory.mktemp("s3faults") / "corpus"
    for video_id in VIDEOS:
        (root / video_id).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(full / video_id, root / video_id)
    return root


@pytest.fixture(scope="module")
def proxy(s3_server):
    with FaultProxy(s3_server.endpoint_url) as fault_proxy:
        yield fault_proxy


def client_env(s3_server, proxy: FaultProxy) -> dict[str, str]:
    env = s3_server.env()
    env.update(AWS_ENDPOINT_URL=proxy.endpoint_url, AWS_ENDPOINT_URL_S3=proxy.endpoint_url)
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    return env


@pytest.fixture(scope="module")
def ray_session(s3_server, proxy: FaultProxy):
    """Local Ray whose workers reach the store through the proxy, with the fake keys."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in client_env(s3_server, proxy).items():
            patch.setenv(name, value)
        context = ray.init(num_cpus=2, include_dashboard=False)
        try:
            yield context.address_info["session_dir"]
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def references(local_corpus: Path, tiny_model: str, ray_session, tmp_path_factory) -> dict:
    """The tables of clean runs on a local folder, pipeline -> table -> comparable rows
    (each pipeline has its own: batching across videos changes scores by rounding)."""
    tables: dict[str, dict] = {}
    for pipeline in ("single", "staged"):
        output = str(tmp_path_factory.mktemp("reference") / pipeline)
        run_corpus_job(job(str(local_corpus), output, tiny_model, pipeline=pipeline))
        tables[pipeline] = {table: comparable(output, table) for table in TABLES}
    return tables


@pytest.fixture(scope="module")
def reference(references: dict) -> dict:
    return references["single"]


def fresh_bucket(s3_server, local_corpus: Path) -> str:
    """A new bucket holding the corpus under `corpus/`, written straight to the server."""
    name = f"faults-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(name)
    client = s3_server.client()
    for path in sorted(local_corpus.rglob("*")):
        if path.is_file():
            key = f"corpus/{path.relative_to(local_corpus).as_posix()}"
            client.put_object(Bucket=name, Key=key, Body=path.read_bytes())
    return f"s3://{name}"


@pytest.fixture
def driver_env(s3_server, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver's environment pointed at the proxy, with the fake keys."""
    import s3fs

    for name, value in client_env(s3_server, proxy).items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    s3fs.S3FileSystem.clear_instance_cache()
    yield
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def bucket(s3_server, proxy: FaultProxy, local_corpus: Path, driver_env) -> str:
    """A fresh bucket with the corpus, no fault planned; yields "s3://name"."""
    uri = fresh_bucket(s3_server, local_corpus)
    proxy.reset()
    try:
        yield uri
    finally:
        proxy.reset()
        s3_server.delete_bucket(uri.removeprefix("s3://"))


@dataclass
class Figures:
    """One row of the reliability table: what happened to the corpus under some faults."""

    runs: int = 0
    expected: int = 0
    committed: int = 0  # committed with exactly the clean run's rows
    failed: int = 0  # committed as `failed` with a storage error (the clean run had `ok`)
    lost: int = 0
    duplicated: int = 0
    wrong: int = 0  # committed with rows other than the clean run's (goal 0)
    jobs_stopped: int = 0  # the job stopped with StorageFailure
    injected: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def add(self, other: Figures) -> None:
        for name in ("runs", "expected", "committed", "failed", "lost", "duplicated", "wrong"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.jobs_stopped += other.jobs_stopped
        self.injected.update(other.injected)
        self.errors.update(other.errors)
        self.seconds += other.seconds


def video_rows(rows: list[dict], video_id: str) -> list[dict]:
    return [row for row in rows if row["video_id"] == video_id]


def check_tables(output: str, reference: dict) -> Figures:
    """Compare the committed tables under `output` with the clean run's, video by video
    (read with no fault planned); a video absent from the tables counts as lost."""
    try:
        tables = {table: comparable(output, table) for table in TABLES}
    except TablesNotFoundError:  # nothing committed
        tables = {table: [] for table in TABLES}
    fs, root = open_fs(output)
    plain_counts: Counter = Counter()
    if fs.exists(f"{root}/videos"):  # as a plain Parquet reader sees the folder
        plain = pads.dataset(
            f"{root}/videos", filesystem=PyFileSystem(FSSpecHandler(fs)), format="parquet"
        )
        plain_counts.update(plain.to_table(columns=["video_id"])["video_id"].to_pylist())
    counts = Counter(row["video_id"] for row in tables["videos"])
    figures = Figures(runs=1, expected=len(VIDEOS))
    for video_id in VIDEOS:
        if counts[video_id] == 0:
            figures.lost += 1
            continue
        if counts[video_id] > 1 or plain_counts[video_id] > 1:
            figures.duplicated += 1
        mine = {table: video_rows(tables[table], video_id) for table in TABLES}
        theirs = {table: video_rows(reference[table], video_id) for table in TABLES}
        if mine == theirs:
            figures.committed += 1
            continue
        row = mine["videos"][0]
        storage_error = row["status"] == "failed" and theirs["videos"][0]["status"] == "ok"
        if storage_error and not mine["tracklets"] and not mine["tracklet_frames"]:
            figures.failed += 1
            full = read_table(output, "videos", video_ids=[video_id])["error"][0].as_py()
            figures.errors[full.split(":")[0]] += 1
        else:
            figures.wrong += 1
    return figures


def assert_no_credentials(*texts: str, session_dir: str | None = None) -> None:
    for text in texts:
        assert ACCESS_KEY not in text and SECRET_KEY not in text
    if session_dir is not None:  # every Ray log of the session (drivers and workers)
        for path in Path(session_dir, "logs").rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert ACCESS_KEY.encode() not in data and SECRET_KEY.encode() not in data, path


def run_with_faults(
    proxy: FaultProxy, plan: FaultPlan, corpus: str, output: str, model: str, **changes
) -> tuple[object, StorageFailure | None, dict]:
    """The job under `plan`; returns its summary (or None), its StorageFailure (or None)
    and the faults injected. The plan is cleared afterwards."""
    proxy.reset(plan)
    try:
        summary, stopped = run_corpus_job(job(corpus, output, model, **changes)), None
    except StorageFailure as error:
        summary, stopped = None, error
    finally:
        injected = proxy.injected_faults()
        proxy.reset()
    return summary, stopped, injected


def a_few_of_each(seed: int) -> FaultPlan:
    """A few faults of every kind on listing, reading and writing: each kind's first
    requests meet one fault after another (drop, 500, 503, truncate: within the retries),
    then faults strike at random, at most twice per rule."""
    rules = [
        Fault("list", "drop", first=1),
        Fault("list", "503", first=1),
        Fault("list", "truncate", first=1),
        Fault("read", "500", first=1),
        Fault("read", "truncate", first=1),
        Fault("read", "drop", first=1),
        Fault("write", "503", first=1),
        Fault("write", "lost_answer", first=1),
        Fault("write", "drop", first=1),
    ]
    for kind in KINDS:
        for fault in ("drop", "lost_answer", "500", "503", "truncate"):
            rules.append(Fault(kind, fault, probability=0.03, limit=2))
        rules.append(Fault(kind, "slow", probability=0.03, limit=1, delay_s=1.0))
    return FaultPlan(rules, seed=seed)


@pytest.mark.parametrize("pipeline", ["single", pytest.param("staged", marks=pytest.mark.slow)])
def test_transient_faults_are_retried_and_the_tables_equal_a_clean_run(
    bucket: str,
    proxy: FaultProxy,
    tiny_model: str,
    references: dict,
    ray_session: str,
    pipeline: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture,
) -> None:
    output = f"{bucket}/tables"
    summary, stopped, injected = run_with_faults(
        proxy, a_few_of_each(seed=1), f"{bucket}/corpus", output, tiny_model, pipeline=pipeline
    )
    assert stopped is None
    assert (summary.ok, summary.failed) == (3, 1)
    kinds = {kind for kind, _ in injected}
    faults = {fault for _, fault in injected}
    assert kinds == set(KINDS) and {"drop", "500", "503", "truncate", "lost_answer"} <= faults
    figures = check_tables(output, references[pipeline])
    assert (figures.committed, figures.lost, figures.duplicated) == (len(VIDEOS), 0, 0)
    again = run_corpus_job(job(f"{bucket}/corpus", output, tiny_model, pipeline=pipeline))
    assert again.skipped == len(VIDEOS)
    output_text = capfd.readouterr()
    assert_no_credentials(
        summary.describe(),
        caplog.text,
        output_text.out,
        output_text.err,
        str(read_table(output, "videos").to_pylist()),
        session_dir=ray_session,
    )


def test_a_video_that_cannot_be_read_gets_a_failed_row_with_its_error(
    bucket: str, proxy: FaultProxy, tiny_model: str, reference: dict, ray_session: str
) -> None:
    output = f"{bucket}/tables"
    plan = FaultPlan([Fault("read", "500", persistent=True, key=r"/corpus/c\.mkv$")])
    summary, stopped, injected = run_with_faults(
        proxy, plan, f"{bucket}/corpus", output, tiny_model
    )
    assert stopped is None and injected[("read", "500")] >= 5  # every attempt
    assert (summary.ok, summary.failed) == (2, 2)
    figures = check_tables(output, reference)
    assert (figures.committed, figures.failed, figures.lost, figures.duplicated) == (3, 1, 0, 0)
    error = read_table(output, "videos", video_ids=["c.mkv"])["error"][0].as_py()
    assert error.startswith("VideoReadError") and "Internal Server Error" in error
    assert_no_credentials(error, summary.describe())
    # Once the store answers again, --retry-failed makes it whole.
    retried = run_corpus_job(job(f"{bucket}/corpus", output, tiny_model, retry_failed=True))
    assert (retried.ok, retried.failed) == (1, 1)  # c.mkv, and the empty file again
    assert check_tables(output, reference).committed == len(VIDEOS)


def test_a_commit_that_cannot_be_written_is_a_failed_row_and_nothing_partial_is_visible(
    bucket: str, proxy: FaultProxy, tiny_model: str, reference: dict, ray_session: str
) -> None:
    """Every `tracklet_frames` file fails to upload: a video's other files are staged, its
    commit is not made; the driver commits a `failed` row naming the error (such a row
    has no `tracklet_frames` file). No tracklet is visible, even to a plain reader."""
    output = f"{bucket}/tables"
    plan = FaultPlan([Fault("write", "500", persistent=True, key=r"/_staging/tracklet_frames/")])
    summary, stopped, _ = run_with_faults(proxy, plan, f"{bucket}/corpus", output, tiny_model)
    assert stopped is None and (summary.ok, summary.failed) == (0, 4)
    figures = check_tables(output, reference)
    assert (figures.committed, figures.failed, figures.lost, figures.duplicated) == (1, 3, 0, 0)
    errors = {video_id: error for video_id, error in summary.failures}
    assert (
        errors["a.mp4"]
        == "committing its rows failed: [Errno 121] We encountered an internal error."
    )
    fs, root = open_fs(output)
    for table in ("tracklets", "tracklet_frames"):
        assert not fs.exists(f"{root}/{table}") or not fs.find(f"{root}/{table}"), table
    assert_no_credentials(*errors.values())
    retried = run_corpus_job(job(f"{bucket}/corpus", output, tiny_model, retry_failed=True))
    assert (retried.ok, retried.failed) == (3, 1)
    assert check_tables(output, reference).committed == len(VIDEOS)


def test_tables_that_cannot_be_written_stop_the_job_with_a_clear_message(
    bucket: str,
    proxy: FaultProxy,
    tiny_model: str,
    reference: dict,
    ray_session: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every write under the output fails: the workers' commits and the driver's `failed`
    rows. The job stops saying so; nothing is committed; a rerun completes."""
    output = f"{bucket}/tables"
    plan = FaultPlan([Fault("write", "500", persistent=True, key=r"^/faults-[0-9a-f]+/tables/")])
    summary, stopped, _ = run_with_faults(proxy, plan, f"{bucket}/corpus", output, tiny_model)
    assert summary is None and stopped is not None
    message = str(stopped)
    assert message.startswith(f"cannot write the tables under {output}: [Errno 121] ")
    assert_no_credentials(message, caplog.text)
    with pytest.raises(TablesNotFoundError):  # nothing committed, nothing partial
        read_table(output, "videos")
    assert check_tables(output, reference).lost == len(VIDEOS)
    rerun = run_corpus_job(job(f"{bucket}/corpus", output, tiny_model))
    assert (rerun.ok, rerun.failed) == (3, 1)
    figures = check_tables(output, reference)
    assert (figures.committed, figures.lost, figures.duplicated) == (len(VIDEOS), 0, 0)


def test_a_listing_that_keeps_failing_stops_the_job_with_a_clear_message(
    bucket: str, proxy: FaultProxy, tiny_model: str, ray_session: str
) -> None:
    plan = FaultPlan([Fault("list", "500", persistent=True, key=r"^/faults-[0-9a-f]+/?$")])
    _, stopped, _ = run_with_faults(proxy, plan, f"{bucket}/corpus", f"{bucket}/tables", tiny_model)
    assert stopped is not None
    assert str(stopped).startswith(f"cannot list the input {bucket}/corpus: ")
    assert_no_credentials(str(stopped))


# The long loop: every kind of fault, alone, on listing, reading and writing at once, at
# several rates and seeds; then persistent faults. Prints the README's rows.
LOOP_SEEDS = int(os.environ.get("VIS_S3_FAULT_SEEDS", "2"))
LOOP_RATES = (0.05, 0.15)


def transient_plan(fault: str, rate: float, seed: int) -> FaultPlan:
    delay = 2.0 if fault == "slow" else 1.0
    rules = [Fault(kind, fault, probability=rate, delay_s=delay) for kind in KINDS]
    return FaultPlan(rules, seed=seed)


PERSISTENT = {
    "read of one video fails (500, every attempt)": FaultPlan(
        [Fault("read", "500", persistent=True, key=r"/corpus/c\.mkv$")]
    ),
    "read of one video cut short (every attempt)": FaultPlan(
        [Fault("read", "truncate", persistent=True, key=r"/corpus/sub dir/")]
    ),
    "uploads of one table fail (500, every attempt)": FaultPlan(
        [Fault("write", "500", persistent=True, key=r"/_staging/tracklet_frames/")]
    ),
    "every write to the tables fails (500, every attempt)": FaultPlan(
        [Fault("write", "500", persistent=True, key=r"^/faults-[0-9a-f]+/tables/")]
    ),
}


@pytest.mark.slow
def test_long_loop_of_object_store_faults(
    s3_server,
    proxy: FaultProxy,
    local_corpus: Path,
    tiny_model: str,
    reference: dict,
    ray_session: str,
    driver_env,
    capsys,
) -> None:
    rows: dict[str, Figures] = {}
    cases: list[tuple[str, FaultPlan]] = []
    for fault in FAULTS:
        for rate in LOOP_RATES:
            for seed in range(LOOP_SEEDS):
                cases.append((fault, transient_plan(fault, rate, seed)))
    cases += list(PERSISTENT.items())
    for name, plan in cases:
        uri = fresh_bucket(s3_server, local_corpus)
        started = time.perf_counter()
        output = f"{uri}/tables"
        summary, stopped, injected = run_with_faults(
            proxy, plan, f"{uri}/corpus", output, tiny_model
        )
        figures = check_tables(output, reference)
        figures.jobs_stopped = int(stopped is not None)
        figures.injected.update(injected)
        figures.seconds = time.perf_counter() - started
        texts = [str(stopped or ""), summary.describe() if summary else ""]
        if figures.lost < len(VIDEOS):
            texts.append(str(read_table(output, "videos").to_pylist()))
        assert_no_credentials(*texts)
        assert (figures.lost, figures.duplicated, figures.wrong) == (0, 0, 0) or stopped, name
        assert figures.wrong == 0 and figures.duplicated == 0, name
        if stopped is not None:  # nothing partial; a rerun without faults completes
            run_corpus_job(job(f"{uri}/corpus", output, tiny_model))
            after = check_tables(output, reference)
            assert (after.lost, after.duplicated, after.wrong) == (0, 0, 0), name
        rows.setdefault(name, Figures()).add(figures)
        s3_server.delete_bucket(uri.removeprefix("s3://"))
        with capsys.disabled():
            print(f"{name}: {figures}", flush=True)
    assert_no_credentials(session_dir=ray_session)
    with capsys.disabled():
        print(report(rows), flush=True)


def report(rows: dict[str, Figures]) -> str:
    header = (
        "| injected fault | runs | faults injected (list/read/write) | videos expected | "
        "committed | failed with an error | lost | duplicated | jobs stopped |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    lines = [header]
    for name, figures in rows.items():
        by_kind = "/".join(
            str(sum(n for (kind, _), n in figures.injected.items() if kind == k)) for k in KINDS
        )
        errors = ", ".join(f"{e} {n}" for e, n in sorted(figures.errors.items()))
        lines.append(
            f"| {name} | {figures.runs} | {by_kind} | {figures.expected} | {figures.committed} "
            f"| {figures.failed}{f' ({errors})' if errors else ''} | {figures.lost} "
            f"| {figures.duplicated} | {figures.jobs_stopped} |"
        )
    return "\n".join(lines)
