"""A local S3-compatible server (moto) on loopback, for tests and demos.

Library:

    with LocalS3() as s3:                 # ThreadedMotoServer on 127.0.0.1, a free port
        uri = s3.create_bucket("demo")    # "s3://demo"
        os.environ.update(s3.env())       # then s3fs / open_fs("s3://demo/x") need no options

Script (for demos and for other processes such as Ray workers):

    python -m infra.local_s3 serve [--port N] [--bucket NAME ...] [--verbose]
    python -m infra.local_s3 env --port N

`serve` runs the server in the foreground until SIGINT or SIGTERM (exit status 0). Once it
is listening, it prints the client environment as shell lines (`export VAR=value`, then
`unset VAR` for the variables that would get in the way, then a `# serving ...` comment)
and flushes, so `serve ... > s3.env &` followed by `. ./s3.env` sets up a shell. `env`
prints the same lines for a server already running on `--port`.

How clients find the server: botocore (>= 1.31, so also aiobotocore and s3fs) reads
`AWS_ENDPOINT_URL`; checked with s3fs 2026.9.0 / aiobotocore 3.10 / botocore 1.43:
`fsspec.filesystem("s3")` with no options reaches the server. Where the environment cannot
be set, pass `LocalS3.storage_options()` to `open_fs`/`fsspec.filesystem("s3", ...)`.

Credentials are the dummy value "testing"; nothing here reads or prints credentials from
the environment. moto keeps its state per process: two `LocalS3` servers in one process
share buckets (a `moto_server`/`serve` subprocess has its own).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType, TracebackType
from typing import Any

DEFAULT_HOST = "127.0.0.1"
DUMMY_CREDENTIAL = "testing"
REGION = "us-east-1"

# Variables that would override or break the dummy set-up if left from the caller's
# environment: a session token or a profile (botocore fails on an unknown profile).
UNSET_VARS = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE")

_SERVING_MARKER = "# serving"


def client_env(endpoint_url: str) -> dict[str, str]:
    """The environment variables that point AWS clients (botocore, s3fs) at `endpoint_url`.

    AWS_ENDPOINT_URL_S3 is set too, since a service-specific endpoint left in the
    environment would win over AWS_ENDPOINT_URL.
    """
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ENDPOINT_URL_S3": endpoint_url,
        "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "false",
        "AWS_ACCESS_KEY_ID": DUMMY_CREDENTIAL,
        "AWS_SECRET_ACCESS_KEY": DUMMY_CREDENTIAL,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        # No instance-metadata lookups (they time out off EC2).
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def export_lines(endpoint_url: str) -> list[str]:
    """Shell lines that set `client_env(endpoint_url)` and unset `UNSET_VARS`."""
    env = client_env(endpoint_url)
    lines = [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
    lines += [f"unset {name}" for name in UNSET_VARS]
    return lines


def storage_options(endpoint_url: str) -> dict[str, Any]:
    """Explicit s3fs options for `endpoint_url`, for where the environment cannot be set."""
    return {
        "endpoint_url": endpoint_url,
        "key": DUMMY_CREDENTIAL,
        "secret": DUMMY_CREDENTIAL,
        "client_kwargs": {"region_name": REGION},
    }


def endpoint_for(port: int, host: str = DEFAULT_HOST) -> str:
    return f"http://{host}:{port}"


class LocalS3:
    """moto's S3-compatible server in a thread of this process. Use as a context manager.

    port 0 (the default) takes a free port; `port` and `endpoint_url` give the bound one.
    quiet: drop werkzeug's per-request log lines (raises the `werkzeug` logger to WARNING
    when nothing configured it).
    """

    def __init__(self, port: int = 0, host: str = DEFAULT_HOST, quiet: bool = True):
        self.host = host
        self.requested_port = port
        self.quiet = quiet
        self._server: Any = None
        self._port: int | None = None
        self._client: Any = None

    def start(self) -> LocalS3:
        if self._server is not None:
            return self
        from moto.server import ThreadedMotoServer

        if self.quiet:
            werkzeug_logger = logging.getLogger("werkzeug")
            if werkzeug_logger.level == logging.NOTSET:
                werkzeug_logger.setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address=self.host, port=self.requested_port, verbose=False)
        server.start()
        self._port = int(server.get_host_and_port()[1])
        self._server = server
        return self

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server is not started; call start() first")
        return self._port

    @property
    def endpoint_url(self) -> str:
        return endpoint_for(self.port, self.host)

    def env(self) -> dict[str, str]:
        """Environment variables for clients of this server (see `client_env`). Also remove
        `UNSET_VARS` where you set these (the `s3_bucket` fixture does)."""
        return client_env(self.endpoint_url)

    def storage_options(self) -> dict[str, Any]:
        """Explicit s3fs options for this server (see `storage_options`)."""
        return storage_options(self.endpoint_url)

    def client(self) -> Any:
        """A boto3 S3 client of this server (dummy credentials, explicit endpoint)."""
        if self._client is None:
            import boto3

            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint_url,
                aws_access_key_id=DUMMY_CREDENTIAL,
                aws_secret_access_key=DUMMY_CREDENTIAL,
                region_name=REGION,
            )
        return self._client

    def create_bucket(self, name: str) -> str:
        """Create bucket `name` (no error when it exists already); returns `s3://name`."""
        client = self.client()
        exists = (client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists)
        with contextlib.suppress(*exists):
            client.create_bucket(Bucket=name)
        return f"s3://{name}"

    def delete_bucket(self, name: str) -> None:
        """Delete bucket `name` and every object in it (nothing when it does not exist)."""
        client = self.client()
        try:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=name)
            for page in pages:
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if keys:
                    client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
            client.delete_bucket(Bucket=name)
        except client.exceptions.NoSuchBucket:
            pass

    def stop(self) -> None:
        if self._server is None:
            return
        if self._client is not None:
            self._client.close()
            self._client = None
        self._server.stop()
        self._server = None

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def serve(port: int = 0, buckets: Sequence[str] = (), verbose: bool = False) -> int:
    """Run a server in the foreground until SIGINT or SIGTERM; see the module docstring."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
    with LocalS3(port=port, quiet=not verbose) as s3:
        for bucket in buckets:
            s3.create_bucket(bucket)
        lines = export_lines(s3.endpoint_url)
        names = " ".join(buckets) or "(none)"
        lines.append(
            f"{_SERVING_MARKER} local S3 at {s3.endpoint_url}, buckets: {names}; "
            "stop with SIGINT or SIGTERM"
        )
        print("\n".join(lines), flush=True)
        while not stop.wait(0.2):
            pass
    print("local S3 server stopped", file=sys.stderr, flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local_s3",
        description="A local S3-compatible server (moto) on 127.0.0.1 for tests and demos.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser(
        "serve", help="run a server until SIGINT/SIGTERM, printing the client environment"
    )
    serve_parser.add_argument("--port", type=int, default=0, help="port (0: a free one)")
    serve_parser.add_argument(
        "--bucket", action="append", default=[], metavar="NAME", help="create this bucket"
    )
    serve_parser.add_argument("--verbose", action="store_true", help="log every request")
    env_parser = commands.add_parser(
        "env", help="print the client environment for a server on --port"
    )
    env_parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(port=args.port, buckets=args.bucket, verbose=args.verbose)
    print("\n".join(export_lines(endpoint_for(args.port))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
