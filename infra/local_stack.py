"""The local stand-ins for a cluster's services: an S3-compatible server (moto) and an
MLflow tracking server, both on 127.0.0.1, for demos and tests.

Script:

    python -m infra.local_stack up [--dir DIR] [--bucket NAME]   # start both, print the env
    python -m infra.local_stack status [--dir DIR]                # print the env if running
    python -m infra.local_stack down [--dir DIR]                  # stop both

`up` starts `python -m infra.local_s3 serve` and `mlflow server --backend-store-uri
sqlite:///DIR/mlflow.db --artifacts-destination DIR/artifacts`, each in its own session
(MLflow starts worker processes), waits until S3 answers and MLflow's `/health`
does, writes DIR/stack.json (the PIDs, ports and environment) and DIR/env.sh, prints the
environment as shell lines (`export AWS_...`, `export MLFLOW_TRACKING_URI=...`), and
returns, leaving both running. `eval "$(python -m infra.local_stack up)"` or
`. DIR/env.sh` sets up a shell. `down` stops every process of both sessions (SIGTERM, then SIGKILL
after a grace period) and removes the state file. DIR defaults to the per-user data
folder (`~/.local/share/vis/local-stack`, or `$VIS_HOME/local-stack`); logs are
DIR/s3.log and DIR/mlflow.log.

The project's jobs take the MLflow server as `--tracking-uri` (`$MLFLOW_TRACKING_URI`).

Library (tests): `with LocalStack(directory) as stack:` starts both the same way and stops
them on exit; `stack.env()` is the client environment, `stack.tracking_uri` the MLflow
URI, `stack.bucket_uri` the bucket (`s3://vis` by default).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from infra.local_s3 import DEFAULT_HOST, client_env, export_lines

REPO_ROOT = Path(__file__).resolve().parents[1]
STATE_FILE = "stack.json"
ENV_FILE = "env.sh"
DEFAULT_BUCKET = "vis"
_ENDPOINT_LINE = re.compile(r"^export AWS_ENDPOINT_URL=(\S+)$", re.MULTILINE)
_SERVING_MARKER = "# serving local S3"


class LocalStackError(RuntimeError):
    """A service did not start, or the stack is not in the state asked for."""


@dataclass(frozen=True)
class Service:
    """One started server: its session leader (pid == sid) and where it listens."""

    name: str
    pid: int
    url: str
    log: str
    marker: str  # in the leader's command line: guards against a reused PID


def default_directory() -> Path:
    from vis_core.paths import data_dir

    return data_dir() / "local-stack"


def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LocalStack:
    """An S3-compatible server and an MLflow server on loopback (see the module docstring).

    directory: where the MLflow store, the artifacts, the logs and the state file go.
    timeout_s: how long each server may take to answer (MLflow needs ~7 s on an idle
    2-core machine, several times that on a loaded one).
    """

    def __init__(
        self,
        directory: str | os.PathLike | None = None,
        bucket: str = DEFAULT_BUCKET,
        host: str = DEFAULT_HOST,
        timeout_s: float = 180.0,
    ):
        self.directory = Path(directory) if directory is not None else default_directory()
        self.bucket = bucket
        self.host = host
        self.timeout_s = timeout_s
        self.services: dict[str, Service] = {}
        self._popens: dict[str, subprocess.Popen] = {}

    # -- what clients need ----------------------------------------------------------------

    @property
    def s3_endpoint_url(self) -> str:
        return self._service("s3").url

    @property
    def tracking_uri(self) -> str:
        return self._service("mlflow").url

    @property
    def bucket_uri(self) -> str:
        return f"s3://{self.bucket}"

    def env(self) -> dict[str, str]:
        """AWS_* variables for the S3 server (dummy credentials) and MLFLOW_TRACKING_URI."""
        return {**client_env(self.s3_endpoint_url), "MLFLOW_TRACKING_URI": self.tracking_uri}

    def shell_lines(self) -> list[str]:
        s3_lines = export_lines(self.s3_endpoint_url)
        lines = [line for line in s3_lines if line.startswith("export ")]
        lines.append(f"export MLFLOW_TRACKING_URI={shlex.quote(self.tracking_uri)}")
        lines += [line for line in s3_lines if not line.startswith("export ")]
        lines.append(
            f"# local stack: S3 at {self.s3_endpoint_url} (bucket {self.bucket_uri}), "
            f"MLflow at {self.tracking_uri}; stop with: python -m infra.local_stack down "
            f"--dir {shlex.quote(str(self.directory))}"
        )
        return lines

    def pids(self) -> list[int]:
        return [service.pid for service in self.services.values()]

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> LocalStack:
        """Start both servers and write the state file; on failure, stop what started."""
        if self.services:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            self._start_s3()
            self._start_mlflow()
        except BaseException:
            self.stop()
            raise
        self._write_state()
        return self

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop every process of both servers and remove the state file."""
        for name in ("mlflow", "s3"):
            service = self.services.pop(name, None)
            if service is not None:
                stop_session(service.pid, service.marker, grace_s)
            popen = self._popens.pop(name, None)
            if popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(timeout=grace_s)
        for name in (STATE_FILE, ENV_FILE):
            with contextlib.suppress(FileNotFoundError):
                (self.directory / name).unlink()

    def running(self) -> bool:
        return bool(self.services) and all(
            _leader_alive(s.pid, s.marker) for s in self.services.values()
        )

    @classmethod
    def from_state(cls, directory: str | os.PathLike | None = None) -> LocalStack | None:
        """The stack that `up` started in `directory`, or None when there is no state file."""
        stack = cls(directory)
        path = stack.directory / STATE_FILE
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            raise LocalStackError(f"{path}: unreadable state file: {error}") from None
        stack.bucket = state.get("bucket", DEFAULT_BUCKET)
        stack.host = state.get("host", DEFAULT_HOST)
        stack.services = {name: Service(**data) for name, data in state["services"].items()}
        return stack

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------------------

    def _service(self, name: str) -> Service:
        if name not in self.services:
            raise LocalStackError("the local stack is not started")
        return self.services[name]

    def _spawn(
        self, name: str, command: list[str], extra_env: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen, Path]:
        log = self.directory / f"{name}.log"
        env = {**os.environ, **(extra_env or {})}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own session, stopped as a whole
            )
        self._popens[name] = popen
        return popen, log

    def _start_s3(self) -> None:
        command = [sys.executable, "-m", "infra.local_s3", "serve", "--port", "0"]
        command += ["--bucket", self.bucket]
        popen, log = self._spawn("s3", command)
        # Registered before it answers, so a failed start still stops it.
        self.services["s3"] = Service("s3", popen.pid, "", str(log), "infra.local_s3")
        deadline = time.monotonic() + self.timeout_s
        while True:
            text = log.read_text(errors="replace")
            match = _ENDPOINT_LINE.search(text)
            if match and _SERVING_MARKER in text:
                break
            _check_alive(popen, "the S3 server", log)
            if time.monotonic() > deadline:
                raise LocalStackError(f"the S3 server did not start in {self.timeout_s} s: {log}")
            time.sleep(0.1)
        self.services["s3"] = Service("s3", popen.pid, match.group(1), str(log), "infra.local_s3")

    def _start_mlflow(self) -> None:
        port = free_port(self.host)
        url = f"http://{self.host}:{port}"
        artifacts = self.directory / "artifacts"
        artifacts.mkdir(exist_ok=True)
        command = [sys.executable, "-m", "mlflow", "server"]
        command += ["--backend-store-uri", f"sqlite:///{(self.directory / 'mlflow.db').resolve()}"]
        command += ["--artifacts-destination", str(artifacts.resolve())]
        command += ["--host", self.host, "--port", str(port), "--workers", "1"]
        # No server-side job runner (a dozen Huey worker processes for GenAI features that
        # tracking does not use): the server starts in seconds instead of a minute.
        popen, log = self._spawn("mlflow", command, {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        self.services["mlflow"] = Service("mlflow", popen.pid, url, str(log), "mlflow")
        deadline = time.monotonic() + self.timeout_s
        while not _healthy(f"{url}/health"):
            _check_alive(popen, "the MLflow server", log)
            if time.monotonic() > deadline:
                raise LocalStackError(f"MLflow did not answer {url}/health in time: {log}")
            time.sleep(0.5)

    def _write_state(self) -> None:
        state = {
            "directory": str(self.directory.resolve()),
            "bucket": self.bucket,
            "host": self.host,
            "services": {name: asdict(service) for name, service in self.services.items()},
            "env": self.env(),
        }
        path = self.directory / STATE_FILE
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps(state, indent=2) + "\n")
        partial.replace(path)
        (self.directory / ENV_FILE).write_text("\n".join(self.shell_lines()) + "\n")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _check_alive(popen: subprocess.Popen, what: str, log: Path) -> None:
    if popen.poll() is not None:
        tail = log.read_text(errors="replace")[-2000:]
        raise LocalStackError(f"{what} exited with status {popen.returncode}:\n{tail}")


# -- sessions (Linux /proc) ---------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, session) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[2]), int(fields[3])


def session_members(sid: int) -> list[int]:
    """Live (not zombie) processes of session `sid`: everything a process started with
    `start_new_session=True` runs, including children that made their own process group
    (Ray's workers do)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None and stat[2] == sid and stat[0] != "Z":
                members.append(int(entry.name))
    return members


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _leader_alive(pid: int, marker: str) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] != "Z" and marker in _cmdline(pid)


def stop_session(sid: int, marker: str, grace_s: float = 10.0) -> None:
    """SIGTERM every process of session `sid` (started by us as leader `sid`), SIGKILL what
    is left after `grace_s`. Nothing is signalled when the leader is alive but no longer
    runs `marker` (its PID was reused). Linux only (/proc)."""
    leader = _proc_stat(sid)
    if leader is not None and leader[0] != "Z" and marker not in _cmdline(sid):
        return
    for signum, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        deadline = time.monotonic() + wait_s
        signalled: set[int] = set()
        while time.monotonic() < deadline:
            members = session_members(sid)
            if not members:
                return
            for pid in set(members) - signalled:  # including processes started meanwhile
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)
                signalled.add(pid)
            time.sleep(0.1)


# -- command line -------------------------------------------------------------------------


def _up(directory: Path | None, bucket: str) -> int:
    existing = LocalStack.from_state(directory)
    if existing is not None:
        if existing.running():
            print("\n".join(existing.shell_lines()))
            print(
                f"# already running (state in {existing.directory / STATE_FILE})", file=sys.stderr
            )
            return 0
        existing.stop()  # a stale state file: stop what is left of it
    stack = LocalStack(directory, bucket=bucket)
    try:
        stack.start()
    except LocalStackError as error:
        print(f"local_stack: error: {error}", file=sys.stderr)
        return 1
    print("\n".join(stack.shell_lines()), flush=True)
    return 0


def _down(directory: Path | None) -> int:
    stack = LocalStack.from_state(directory)
    if stack is None:
        print("local_stack: not running (no state file)", file=sys.stderr)
        return 0
    pids = " ".join(map(str, stack.pids()))
    stack.stop()
    print(f"local_stack: stopped (sessions {pids})", file=sys.stderr)
    return 0


def _status(directory: Path | None) -> int:
    stack = LocalStack.from_state(directory)
    if stack is None or not stack.running():
        print("local_stack: not running", file=sys.stderr)
        return 1
    print("\n".join(stack.shell_lines()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local_stack",
        description="Local S3-compatible (moto) and MLflow servers on 127.0.0.1.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("up", "start both servers and print the client environment"),
        ("status", "print the client environment of the running stack"),
        ("down", "stop both servers"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument(
            "--dir", type=Path, help="state, logs, MLflow store (default: <data dir>/local-stack)"
        )
        if name == "up":
            sub.add_argument("--bucket", default=DEFAULT_BUCKET, help="bucket to create (vis)")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            return _up(args.dir, args.bucket)
        if args.command == "status":
            return _status(args.dir)
        return _down(args.dir)
    except LocalStackError as error:
        print(f"local_stack: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
