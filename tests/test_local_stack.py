"""`infra/local_stack.py`: the local S3-compatible and MLflow servers serve the corpus job
end to end (tables in the bucket, the run in MLflow), and stop without leaving a process
or a port behind; `up`/`status`/`down` do the same from the command line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from infra.local_s3 import UNSET_VARS
from infra.local_stack import STATE_FILE, LocalStack, session_members
from tests.media import smooth_frames

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[1]


def port_open(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((host, int(port))) == 0


def gone(pid: int) -> bool:
    """No such process, or a zombie (stopped, not yet reaped by its parent)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return text[text.rindex(")") + 2] == "Z"


def test_stack_serves_the_corpus_job_and_stops_cleanly(
    tmp_path: Path, tiny_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray
    import s3fs
    from mlflow import MlflowClient

    from vis_core.storage import open_fs
    from vis_core.tables.read import read_table
    from vis_core.video.encode import write_mp4
    from workflows.corpus_job import CorpusJobConfig, run_corpus_job

    local = tmp_path / "corpus"
    local.mkdir()
    write_mp4(str(local / "a.mp4"), smooth_frames(4, 48, 64), fps=10.0)
    write_mp4(str(local / "b.mp4"), smooth_frames(3, 40, 56), fps=5.0)

    with LocalStack(tmp_path / "stack") as stack:
        pids = stack.pids()
        urls = [stack.s3_endpoint_url, stack.tracking_uri]
        assert all(port_open(url) for url in urls)
        assert (tmp_path / "stack" / STATE_FILE).exists()
        for name in UNSET_VARS:
            monkeypatch.delenv(name, raising=False)
        for name, value in stack.env().items():
            monkeypatch.setenv(name, value)
        s3fs.S3FileSystem.clear_instance_cache()
        fs, _ = open_fs(stack.bucket_uri)
        fs.put(str(local) + "/", "vis/corpus/", recursive=True)

        if ray.is_initialized():
            ray.shutdown()
        # A new local instance (never one of another process), whose workers inherit AWS_*.
        ray.init(address="local", num_cpus=2, include_dashboard=False)
        try:
            summary = run_corpus_job(
                CorpusJobConfig(
                    input_uri=f"{stack.bucket_uri}/corpus",
                    output_uri=f"{stack.bucket_uri}/tables",
                    model_uri=tiny_model,
                    tracking_uri=stack.tracking_uri,
                    progress=False,
                )
            )
        finally:
            ray.shutdown()
        assert (summary.ok, summary.failed) == (2, 0)

        videos = read_table(f"{stack.bucket_uri}/tables", "videos").to_pylist()
        assert sorted((v["video_id"], v["status"]) for v in videos) == [
            ("a.mp4", "ok"),
            ("b.mp4", "ok"),
        ]
        assert all(v["uri"].startswith("s3://vis/corpus/") for v in videos)
        assert fs.find("vis/tables/tracklets")

        client = MlflowClient(tracking_uri=stack.tracking_uri)
        experiment = client.get_experiment_by_name("vis-process")
        assert experiment is not None
        runs = client.search_runs([experiment.experiment_id])
        assert [run.info.run_id for run in runs] == [summary.mlflow_run_id]
        assert runs[0].data.metrics["videos_ok"] == 2
        assert runs[0].data.params["output"] == "s3://vis/tables"
        s3fs.S3FileSystem.clear_instance_cache()

    assert not any(port_open(url) for url in urls)
    assert all(gone(pid) and not session_members(pid) for pid in pids)
    assert not (tmp_path / "stack" / STATE_FILE).exists()
    assert (tmp_path / "stack" / "mlflow.db").exists()  # the store stays


def run_stack(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "infra.local_stack", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_up_status_down_from_the_command_line(tmp_path: Path) -> None:
    import boto3

    directory = str(tmp_path / "stack")
    up = run_stack("up", "--dir", directory, "--bucket", "demo")
    assert up.returncode == 0, up.stderr
    env = dict(
        line.removeprefix("export ").split("=", 1)
        for line in up.stdout.splitlines()
        if line.startswith("export ")
    )
    assert env["AWS_ACCESS_KEY_ID"] == "testing"
    endpoint, tracking_uri = env["AWS_ENDPOINT_URL"], env["MLFLOW_TRACKING_URI"]
    with urllib.request.urlopen(f"{tracking_uri}/health", timeout=5) as response:
        assert response.status == 200
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["demo"]
    s3.close()
    assert Path(directory, "env.sh").read_text().startswith("export AWS_")

    stack = LocalStack.from_state(directory)
    assert stack is not None and stack.running()
    pids = stack.pids()
    assert run_stack("status", "--dir", directory).returncode == 0
    again = run_stack("up", "--dir", directory)  # already running: the same servers
    assert again.returncode == 0 and f"MLFLOW_TRACKING_URI={tracking_uri}" in again.stdout

    down = run_stack("down", "--dir", directory)
    assert down.returncode == 0, down.stderr
    assert not port_open(endpoint) and not port_open(tracking_uri)
    assert all(not session_members(pid) for pid in pids)
    assert run_stack("status", "--dir", directory).returncode == 1
    assert run_stack("down", "--dir", directory).returncode == 0  # nothing to stop
    assert not os.path.exists(Path(directory, STATE_FILE))
