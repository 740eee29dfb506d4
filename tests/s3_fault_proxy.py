"""A fault-injecting HTTP proxy in front of an S3-protocol server, for reliability tests.

    with FaultProxy(upstream="http://127.0.0.1:PORT") as proxy:     # 127.0.0.1, a free port
        proxy.plan = FaultPlan([Fault("read", "truncate", first=2)], seed=0)
        ...  # point clients at proxy.endpoint_url (AWS_ENDPOINT_URL)
        proxy.injected   # Counter of (kind, fault) injected so far

Standard library only (`http.server`, `http.client`). Each request is classified by what
it does to the store:

- `list`: GET on a bucket (ListObjects/ListObjectsV2: `list-type=2`, `prefix=`,
  `delimiter=`);
- `read`: GET or HEAD of an object (reading a video or a table file, `info`, `exists`);
- `write`: PUT, POST or DELETE (uploads, copies, multipart steps, deletes);
- `other`: anything else (HEAD of a bucket, bucket locations).

The first rule of the plan that matches the request decides its fault:

- `drop`: the connection is closed without an answer (the request is not forwarded);
- `lost_answer`: the request is forwarded (a write takes effect), then the connection is
  closed without an answer;
- `500` / `503`: an S3 XML error (`InternalError` / `SlowDown`), not forwarded;
- `slow`: forwarded after `delay_s` seconds;
- `truncate`: the full `Content-Length` is announced, part of the body is sent, then the
  connection is closed (only on answers with a body; other answers pass).

A rule matches by kind, by key (a regular expression searched in the URL path, decoded;
`key=None` matches every key), and then fires for its `first` N matching requests, or with
`probability` (a seeded RNG; at most `limit` times in all when given), or always
(`persistent=True`). Counts of requests by kind and
of injected faults by (kind, fault) are kept for the report.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import re
import socket
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

KINDS = ("list", "read", "write", "other")
FAULTS = ("drop", "lost_answer", "500", "503", "slow", "truncate")
_LIST_PARAMETERS = ("list-type", "prefix", "delimiter", "max-keys", "continuation-token")
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "trailer"}
_ERRORS = {
    "500": (500, "Internal Server Error", "InternalError", "We encountered an internal error."),
    "503": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
}


@dataclass
class Fault:
    """One rule of a plan: `fault` on requests of `kind` (see the module docstring)."""

    kind: str
    fault: str
    first: int = 0
    probability: float = 0.0
    persistent: bool = False
    limit: int | None = None
    key: str | None = None
    delay_s: float = 1.0
    fired: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}, got {self.fault!r}")

    def matches(self, kind: str, method: str, path: str) -> bool:
        if self.fault == "truncate" and method != "GET":
            return False  # only GET answers carry a body worth cutting
        return kind == self.kind and (self.key is None or re.search(self.key, path) is not None)


class FaultPlan:
    """Rules tried in order; `seed` drives the probabilistic ones."""

    def __init__(self, rules: list[Fault] | None = None, seed: int = 0):
        self.rules = list(rules or [])
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def decide(self, kind: str, method: str, path: str) -> Fault | None:
        with self._lock:
            for rule in self.rules:
                if not rule.matches(kind, method, path):
                    continue
                if rule.persistent or rule.fired < rule.first:
                    rule.fired += 1
                    return rule
                if rule.limit is not None and rule.fired >= rule.limit:
                    continue
                if rule.probability and self._rng.random() < rule.probability:
                    rule.fired += 1
                    return rule
            return None


def classify(method: str, target: str) -> tuple[str, str]:
    """The kind of request (`list`, `read`, `write`, `other`) and its decoded path."""
    parsed = urllib.parse.urlsplit(target)
    path = urllib.parse.unquote(parsed.path)
    query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
    has_key = "/" in path.strip("/")  # path-style: /bucket/key
    if method in ("PUT", "POST", "DELETE"):
        return "write", path
    if method == "GET" and not has_key and any(p in query for p in _LIST_PARAMETERS):
        return "list", path
    if method == "GET" and not has_key and not query:
        return "list", path  # ListObjects (v1) with no parameters
    if method in ("GET", "HEAD") and has_key:
        return "read", path
    return "other", path


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 does: clients reuse connections
    server: _ProxyServer

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the tests read the log for credentials, and requests carry them

    def do_GET(self) -> None:
        self._proxy()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _proxy(self) -> None:
        proxy = self.server.owner
        kind, path = classify(self.command, self.path)
        body = self._read_body()
        rule = proxy.plan.decide(kind, self.command, path)
        fault = rule.fault if rule else None
        proxy.count(kind, fault)
        if fault == "drop":
            self._drop()
            return
        if fault in _ERRORS:
            self._send_error(*_ERRORS[fault], path)
            return
        if fault == "slow":
            time.sleep(rule.delay_s)
        status, reason, headers, answer = self._forward(body)
        if fault == "lost_answer":
            self._drop()
            return
        self.send_response_only(status, reason)
        for name, value in headers:
            if name.lower() not in _HOP_HEADERS and name.lower() != "content-length":
                self.send_header(name, value)
        declared = len(answer)
        if self.command == "HEAD":
            declared = int(dict((k.lower(), v) for k, v in headers).get("content-length", 0))
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        if self.command == "HEAD":
            return
        if fault == "truncate" and len(answer) > 1:
            self.wfile.write(answer[: len(answer) // 2])
            self.wfile.flush()
            self._drop()
            return
        if fault == "truncate":
            proxy.count(kind, "truncate_skipped")
        self.wfile.write(answer)

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        proxy = self.server.owner
        connection = http.client.HTTPConnection(
            proxy.upstream_host, proxy.upstream_port, timeout=60
        )
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
            headers.pop("Content-Length", None)
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            connection.request(self.command, self.path, body=body or None, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            return response.status, response.reason, response.getheaders(), answer
        finally:
            connection.close()

    def _send_error(self, status: int, reason: str, code: str, message: str, path: str) -> None:
        resource = path.replace("&", "&amp;").replace("<", "&lt;")
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<Resource>{resource}</Resource><RequestId>fault-proxy</RequestId></Error>"
        ).encode()
        self.send_response_only(status, reason)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: FaultProxy


class FaultProxy:
    """The proxy on 127.0.0.1 (port 0: a free one) in threads of this process; a context
    manager. `plan` may be replaced at any time; `reset()` clears the plan and the counts."""

    def __init__(self, upstream: str, port: int = 0, plan: FaultPlan | None = None):
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream_host = parsed.hostname or "127.0.0.1"
        self.upstream_port = parsed.port or 80
        self.plan = plan or FaultPlan()
        self.requests: Counter[str] = Counter()
        self.injected: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._server = _ProxyServer(("127.0.0.1", port), _Handler)
        self._server.owner = self
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def count(self, kind: str, fault: str | None) -> None:
        with self._lock:
            if fault != "truncate_skipped":
                self.requests[kind] += 1
            if fault is not None:
                self.injected[(kind, fault)] += 1

    def reset(self, plan: FaultPlan | None = None) -> None:
        with self._lock:
            self.plan = plan or FaultPlan()
            self.requests.clear()
            self.injected.clear()

    def injected_faults(self) -> dict[tuple[str, str], int]:
        """Faults that reached a client: (kind, fault) -> count (truncations that found no
        body to cut are left out)."""
        with self._lock:
            counts = dict(self.injected)
        for (kind, fault), skipped in list(counts.items()):
            if fault == "truncate_skipped":
                del counts[(kind, fault)]
                counts[(kind, "truncate")] = counts.get((kind, "truncate"), 0) - skipped
        return {key: value for key, value in counts.items() if value > 0}

    def start(self) -> FaultProxy:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, name="s3-fault-proxy", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
