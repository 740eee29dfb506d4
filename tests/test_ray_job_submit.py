"""`infra/submit.py` with the job specs: filling placeholders, exit statuses, and the corpus
job submitted to a real Ray head (started here, on loopback, and stopped here) through
`infra/jobs/process.yaml`."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.local_stack import free_port, session_members, stop_session
from infra.submit import (
    EXIT_STOPPED,
    REPO_ROOT,
    SpecError,
    build_runtime_env,
    exit_code,
    fill_entrypoint,
    load_spec,
    main,
)
from tests.media import smooth_frames

PROCESS_SPEC = REPO_ROOT / "infra" / "jobs" / "process.yaml"


# -- the spec, without a cluster ----------------------------------------------------------


def test_placeholders_are_filled_as_single_shell_words_and_extra_args_appended() -> None:
    spec = load_spec(PROCESS_SPEC)
    assert spec.required() == ["input", "output", "tracking_uri"]
    command = fill_entrypoint(
        spec,
        {"input": "s3://b/my videos/", "output": "s3://b/t", "tracking_uri": "http://m:5000"},
        ["--model", "models:/vis/1", "--gpu"],
    )
    assert command == (
        "python -m jobs.process --input 's3://b/my videos/' --output s3://b/t "
        "--tracking-uri http://m:5000 --model models:/vis/1 --gpu"
    )
    with pytest.raises(SpecError, match="missing values for \\['tracking_uri'\\]"):
        fill_entrypoint(spec, {"input": "a", "output": "b"})
    with pytest.raises(SpecError, match="no placeholder \\['inptu'\\]"):
        fill_entrypoint(spec, {"inptu": "a", "input": "a", "output": "b", "tracking_uri": "c"})


def test_runtime_env_paths_are_relative_to_the_repository_and_env_is_added() -> None:
    spec = load_spec(PROCESS_SPEC)
    runtime_env = build_runtime_env(spec, {"MLFLOW_TRACKING_URI": "http://m:5000"})
    assert runtime_env["working_dir"] == str(REPO_ROOT)
    assert runtime_env["env_vars"]["MLFLOW_TRACKING_URI"] == "http://m:5000"
    assert "working_dir" not in build_runtime_env(spec, upload=False)


def test_bad_specs_are_refused(tmp_path: Path) -> None:
    cases = {
        "no_entrypoint.yaml": "params: {}\n",
        "undeclared.yaml": "entrypoint: python -m jobs.cli eval --gt {gt}\n",
        "format_spec.yaml": "entrypoint: python -m x {n:>3}\nparams: {n: null}\n",
        "typo.yaml": "entrypoint: python -m x\nruntime_evn: {}\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(SpecError):
            load_spec(tmp_path / name)
    assert main([str(tmp_path / "typo.yaml"), "--address", "http://127.0.0.1:1"]) == 2


def test_exit_status_follows_the_jobs_status() -> None:
    assert exit_code("SUCCEEDED", 0) == 0
    assert exit_code("FAILED", 2) == 2  # jobs.process could not run
    assert exit_code("FAILED", None) == 1  # e.g. the runtime env could not be set up
    assert exit_code("STOPPED", None) == EXIT_STOPPED


def test_unreachable_cluster_is_a_clear_error(capsys: pytest.CaptureFixture) -> None:
    args = ["--set", "input=a", "--set", "output=b", "--set", "tracking_uri=c"]
    address = f"http://127.0.0.1:{free_port()}"
    assert main([str(PROCESS_SPEC), "--address", address, *args]) == 2
    assert f"cannot submit to {address}" in capsys.readouterr().err


# -- a real head ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RayHead:
    dashboard_url: str
    temp_dir: str
    pid: int  # `ray start --block`, leader of its own session


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def ray_head() -> Iterator[RayHead]:
    """A Ray head in a subprocess: loopback dashboard on a free port, 2 CPUs, its own temp
    dir and session, token authentication off (so it does not depend on a token file of
    this user). Stopped by stopping the processes of that session (Ray's workers make their
    own process groups, not sessions): never `ray stop`, which would stop every Ray
    instance on the machine."""
    temp_dir = tempfile.mkdtemp(prefix="rayjs", dir="/tmp")  # short: socket paths
    ports = {name: free_port() for name in ("gcs", "dashboard", "agent", "client")}
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        # The job's `python` is this environment's.
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
    }
    env.pop("RAY_ADDRESS", None)
    command = [
        os.path.join(os.path.dirname(sys.executable), "ray"),
        "start",
        "--head",
        "--block",
        f"--port={ports['gcs']}",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={ports['dashboard']}",
        f"--dashboard-agent-listen-port={ports['agent']}",
        f"--ray-client-server-port={ports['client']}",
        "--include-dashboard=true",
        "--num-cpus=2",
        "--num-gpus=0",
        "--object-store-memory=200000000",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    log = open(os.path.join(temp_dir, "ray_start.log"), "wb")  # noqa: SIM115
    process = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    head = RayHead(f"http://127.0.0.1:{ports['dashboard']}", temp_dir, process.pid)
    try:
        deadline = time.monotonic() + 120
        while not _answers(f"{head.dashboard_url}/api/jobs/"):
            if process.poll() is not None or time.monotonic() > deadline:
                text = Path(temp_dir, "ray_start.log").read_text(errors="replace")
                pytest.fail(f"the Ray head did not start:\n{text[-3000:]}")
            time.sleep(0.5)
        yield head
    finally:
        stop_session(process.pid, marker=temp_dir, grace_s=2.0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        log.close()
        assert not session_members(process.pid), "processes of the test's Ray head are left"
        _kill_stragglers(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _kill_stragglers(temp_dir: str) -> None:
    """SIGKILL any process outside the session that still names the head's temp dir."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if temp_dir.encode() in (entry / "cmdline").read_bytes():
                    os.kill(int(entry.name), signal.SIGKILL)


@pytest.mark.slow  # another job on the head: about 11 s here
def test_a_failing_job_returns_its_exit_status(
    ray_head: RayHead, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    spec = tmp_path / "fail.yaml"
    spec.write_text(
        "entrypoint: python -c \"print('about to fail {{x}}'); raise SystemExit({code})\"\n"
        "params: {code: null}\n"
    )
    assert main([str(spec), "--address", ray_head.dashboard_url, "--set", "code=5"]) == 5
    captured = capsys.readouterr()
    assert "about to fail {x}" in captured.out
    assert "FAILED" in captured.err


def test_corpus_job_submitted_with_the_process_spec_writes_the_tables(
    ray_head: RayHead, tiny_model: str, tmp_path: Path
) -> None:
    from vis_core.tables.read import read_table
    from vis_core.video.encode import write_mp4

    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    write_mp4(str(corpus / "a.mp4"), smooth_frames(4, 48, 64), fps=10.0)
    write_mp4(str(corpus / "sub" / "b.mp4"), smooth_frames(3, 40, 56), fps=5.0)
    output = tmp_path / "tables"
    command = [
        sys.executable,
        "-m",
        "infra.submit",
        str(PROCESS_SPEC),
        "--address",
        ray_head.dashboard_url,
        "--set",
        f"input={corpus}",
        "--set",
        f"output={output}",
        "--set",
        f"tracking_uri=sqlite:///{tmp_path / 'unused.db'}",
        "--",
        "--model",
        tiny_model,
        "--no-tracking",
    ]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    result = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "videos: 2 in the corpus, 0 already committed, 2 ok, 0 failed" in result.stdout
    assert "SUCCEEDED" in result.stderr

    videos = read_table(str(output), "videos").to_pylist()
    assert sorted(v["video_id"] for v in videos) == ["a.mp4", "sub/b.mp4"]
    assert all(v["status"] == "ok" for v in videos)
    assert {v["video_id"]: v["num_frames"] for v in videos} == {"a.mp4": 4, "sub/b.mp4": 3}
    tracklets = read_table(str(output), "tracklets").to_pylist()
    frames = read_table(str(output), "tracklet_frames").to_pylist()
    assert {t["video_id"] for t in tracklets} <= {"a.mp4", "sub/b.mp4"}
    assert len({t["run_id"] for t in tracklets + videos}) == 1
    assert all(f["frame_index"] < 4 for f in frames)
