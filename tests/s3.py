"""pytest fixtures for a local S3-compatible server (moto, see infra/local_s3.py).

Wire them in tests/conftest.py:

    from tests.s3 import s3_bucket, s3_server  # noqa: F401

That import (and `infra`) needs the repository root on sys.path: `python -m pytest` puts it
there; a bare `pytest` needs `pythonpath = ["."]` under [tool.pytest.ini_options].

- `s3_server` (session): one `LocalS3` threaded server on 127.0.0.1 per test session.
- `s3_bucket` (function): a fresh, uniquely named bucket, with the AWS_* client variables
  set for the test (and any AWS profile or session token removed), so
  `vis_core.storage.open_fs("s3://...")` needs no options; yields "s3://<bucket>". The
  bucket and its objects are deleted afterwards.

s3fs caches filesystem instances by their options; with no options, every test would get
the instance of the first one. The cache is cleared before and after each test so that an
instance (and its listing cache) never outlives the endpoint and bucket it was made for.
A Ray worker started during the test inherits the variables only if Ray starts after they
are set; otherwise pass `runtime_env={"env_vars": s3_server.env()}`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from infra.local_s3 import UNSET_VARS, LocalS3


def _clear_s3fs_cache() -> None:
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[LocalS3]:
    """One moto S3 server on 127.0.0.1 (a free port) for the whole session."""
    with LocalS3() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: LocalS3, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh bucket on `s3_server` and the AWS_* environment for it; yields "s3://name"."""
    for name in UNSET_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    _clear_s3fs_cache()
    bucket = f"test-{uuid.uuid4().hex[:16]}"
    uri = s3_server.create_bucket(bucket)
    try:
        yield uri
    finally:
        _clear_s3fs_cache()
        s3_server.delete_bucket(bucket)
