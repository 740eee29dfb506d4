"""The local S3-compatible server (infra/local_s3.py) through s3fs: storage, video, tables."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import numpy as np
import pytest
import s3fs

from infra.local_s3 import LocalS3, main
from vis_core.storage import open_fs
from vis_core.tables.commit import CommitStatus, TableCommitter
from vis_core.tables.read import read_table
from vis_core.tables.rows import VideoRecord, failed_rows
from vis_core.video.decode import open_video
from vis_core.video.encode import write_mp4

ROOT = Path(__file__).resolve().parents[1]
FAKE_SECRET = "not-a-real-secret-but-must-not-print"


def test_open_fs_writes_and_reads_bytes(s3_bucket: str, s3_server: LocalS3) -> None:
    fs, path = open_fs(f"{s3_bucket}/dir/hello.bin")
    assert isinstance(fs, s3fs.S3FileSystem)
    fs.pipe_file(path, b"hello s3")
    # A fresh client sees the object on the server: it was not only cached locally.
    bucket = s3_bucket.removeprefix("s3://")
    body = s3_server.client().get_object(Bucket=bucket, Key="dir/hello.bin")["Body"].read()
    assert body == b"hello s3"
    fs, path = open_fs(f"{s3_bucket}/dir/hello.bin")
    with fs.open(path, "rb") as file:
        assert file.read() == b"hello s3"
    assert fs.ls(f"{bucket}/dir", detail=False) == [f"{bucket}/dir/hello.bin"]


def test_each_test_gets_a_fresh_bucket(s3_bucket: str) -> None:
    fs, path = open_fs(s3_bucket)
    assert fs.ls(path, detail=False) == []


def test_mp4_round_trip(s3_bucket: str) -> None:
    num_frames, height, width = 6, 48, 64
    ys, xs = np.mgrid[0:height, 0:width]
    frames = np.stack(
        [
            np.stack([(xs * 4 + t * 8) % 256, ys * 5, np.full_like(xs, 128)], axis=-1)
            for t in range(num_frames)
        ]
    ).astype(np.uint8)
    uri = f"{s3_bucket}/videos/v.mp4"
    write_mp4(uri, frames, fps=10)
    with open_video(uri) as video:
        assert (video.info.num_frames, video.info.height, video.info.width) == (6, 48, 64)
        decoded = list(video.frames())
    assert [frame.index for frame in decoded] == list(range(num_frames))
    images = np.stack([frame.image for frame in decoded])
    assert images.shape == frames.shape
    assert np.abs(images.astype(np.int16) - frames).mean() < 12


def test_tables_commit_and_read(s3_bucket: str) -> None:
    output = f"{s3_bucket}/out"
    record = VideoRecord(
        video_id="cats/a.mp4", uri=f"{s3_bucket}/corpus/cats/a.mp4", model="test", run_id="run-1"
    )
    committer = TableCommitter(output, run_id="run-1")
    committer.commit(failed_rows(record, "err"))
    assert committer.committed() == {"cats/a.mp4": CommitStatus("cats/a.mp4", "failed")}
    videos = read_table(output, "videos")
    assert videos.num_rows == 1
    row = videos.to_pylist()[0]
    assert (row["video_id"], row["status"], row["error"]) == ("cats/a.mp4", "failed", "err")
    assert read_table(output, "tracklets").num_rows == 0
    fs, root = open_fs(output)
    names = fs.ls(f"{root}/videos", detail=False)
    assert len(names) == 1 and names[0].endswith(".parquet")


def test_env_command_prints_dummy_values_only(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    assert main(["env", "--port", "4321"]) == 0
    out = capsys.readouterr().out
    assert "export AWS_ENDPOINT_URL=http://127.0.0.1:4321" in out
    assert "export AWS_SECRET_ACCESS_KEY=testing" in out
    assert FAKE_SECRET not in out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _read_until(proc: subprocess.Popen[bytes], marker: bytes, timeout: float) -> bytes:
    assert proc.stdout is not None
    output = b""
    deadline = time.monotonic() + timeout
    while marker not in output:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or proc.poll() is not None:
            raise AssertionError(f"no {marker!r} from the server; got {output!r}")
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if ready:
            output += os.read(proc.stdout.fileno(), 65536)
    return output


def test_serve_script_serves_and_stops_on_sigterm(monkeypatch: pytest.MonkeyPatch) -> None:
    port = _free_port()
    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": FAKE_SECRET}
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra.local_s3", "serve", "--port", str(port), "--bucket", "demo"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        output = _read_until(proc, b"# serving", timeout=60).decode()
        exports = dict(
            line.removeprefix("export ").split("=", 1)
            for line in output.splitlines()
            if line.startswith("export ")
        )
        assert exports["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{port}"
        assert FAKE_SECRET not in output
        # A client configured only by the printed lines reaches the server.
        for name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE"):
            monkeypatch.delenv(name, raising=False)
        for name, value in exports.items():
            monkeypatch.setenv(name, value)
        s3fs.S3FileSystem.clear_instance_cache()
        fs = fsspec.filesystem("s3")
        fs.pipe_file("demo/x/y.bin", b"through the script")
        assert fs.cat_file("demo/x/y.bin") == b"through the script"
        s3fs.S3FileSystem.clear_instance_cache()

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
        assert proc.returncode == 0, stderr.decode()
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
