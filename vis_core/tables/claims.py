"""The commit log: which files hold each committed video's rows.

A commit of one video in one run is a small JSON *claim* under `<output>/_commits/`,
named `<run_id>-<key>.v<N>.json` (`key`: `video_key(video_id)`). The claim names the
video's file in each table folder that has rows for it (`<run_id>-<key>-<attempt>.parquet`,
unique to the attempt that wrote it) and the video's status. A claim is created with
create-if-absent and never changed; a commit that replaces another creates version N+1.

The latest version is the video's commit, provided every file it names exists, or a pack
holds that version's rows (`vis_core.tables.packs`: a compaction moved them): a claim
whose file is gone otherwise (deleted as an orphan while its writer was paused, or by
hand) is no commit, so readers skip the video and the job processes it again. Which
files hold each committed video's rows now is `vis_core.tables.view`. Before a claim exists
its files are staged in `<output>/_staging/<table>/`, out of the table folders that Parquet
readers glob (DuckDB's glob matches hidden names too, so a hidden name would not do);
after, they are moved to their table folder (`publish`), the `videos` file last.

Create-if-absent is atomic on local (POSIX) disks: the claim is written under a hidden
temporary name and hard-linked to its name, which fails if the name exists. fsspec gives
no such call for object stores: there the claim is put when a check finds none and read
back, so two writers of one video within the same moment can both believe they won; the
claim that stays is the one readers use (see `TableCommitter` and the README).

Outputs written before the commit log (a `videos/<run_id>-<key>.parquet` commit record
and instance files of the same name) read as version 0 of their video.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from vis_core.storage import join
from vis_core.tables.schema import FRAME_QUERIES, TRACKLET_FRAMES, TRACKLETS, VIDEOS

COMMITS = "_commits"  # the commit log's folder under the output
STAGING = "_staging"  # data files before their claim, one folder per table under it
TEMP_PREFIX = ".tmp-"  # a claim being written, before its link (or an old-layout file)
PARQUET_SUFFIX = ".parquet"
WITHDRAWN = "withdrawn"  # the status of a claim that retracts the version before it
_NEWER_TRIES = 5  # versions followed while a video's commit is replaced during a read
# A raw reader sees the videos row last.
PUBLISH_ORDER = (TRACKLETS, TRACKLET_FRAMES, FRAME_QUERIES, VIDEOS)

_CLAIM_NAME = re.compile(r"^(?P<run>.+)-(?P<key>[0-9a-f]{20})\.v(?P<version>[0-9]+)\.json$")
_DATA_NAME = re.compile(
    r"^(?P<run>.+)-(?P<key>[0-9a-f]{20})(?:-(?P<attempt>[0-9a-f]{12}))?\.parquet$"
)


def video_key(video_id: str) -> str:
    """A file-name-safe key of a video id (20 hex digits of its SHA-256)."""
    return hashlib.sha256(video_id.encode("utf-8")).hexdigest()[:20]


def new_attempt() -> str:
    """A commit attempt's token (12 hex digits), in the names of its files."""
    return uuid.uuid4().hex[:12]


def data_name(run_id: str, key: str, attempt: str) -> str:
    """The published name of an attempt's file in a table folder ("" : the old layout)."""
    return f"{run_id}-{key}-{attempt}{PARQUET_SUFFIX}" if attempt else f"{run_id}-{key}.parquet"


def staged_folder(table: str) -> str:
    """Where a table's files wait for their claim, relative to the output."""
    return f"{STAGING}/{table}"


def claim_name(run_id: str, key: str, version: int) -> str:
    return f"{run_id}-{key}.v{version}.json"


def parse_data_name(name: str) -> tuple[str, str] | None:
    """(run_id, key) of a data file's name; None for other names."""
    match = _DATA_NAME.match(name)
    return (match["run"], match["key"]) if match else None


def parse_legacy_name(name: str) -> tuple[str, str] | None:
    """(run_id, key) of a data file's name in the old layout (no attempt); None else."""
    match = _DATA_NAME.match(name)
    return (match["run"], match["key"]) if match and match["attempt"] is None else None


def parse_claim_name(name: str) -> tuple[str, str, int] | None:
    """(run_id, key, version) of a claim's name; None for other names."""
    match = _CLAIM_NAME.match(name)
    return (match["run"], match["key"], int(match["version"])) if match else None


@dataclass(frozen=True)
class Claim:
    """One version of one video's commit.

    status: `ok`, `failed` or `withdrawn`; attempt: the token in its files' names ("" for
    the old layout); job: the job that wrote it; files: table -> file name in its folder.
    """

    run_id: str
    video_id: str
    version: int
    status: str
    attempt: str
    job: str
    files: Mapping[str, str] = field(default_factory=dict)
    committed_at: str = ""

    @property
    def key(self) -> str:
        return video_key(self.video_id)

    @property
    def name(self) -> str:
        return claim_name(self.run_id, self.key, self.version)

    def to_bytes(self) -> bytes:
        fields = {**self.__dict__, "files": dict(self.files)}
        return json.dumps(fields, sort_keys=True, ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> Claim:
        return cls(**json.loads(data.decode("utf-8")))


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def is_atomic(fs: Any) -> bool:
    """Whether `create_claim` is an atomic create-if-absent on `fs` (local disks)."""
    return isinstance(fs, LocalFileSystem)


def create_claim(fs: Any, root: str, claim: Claim) -> bool:
    """Create `claim` unless its version exists; True when this call created it."""
    return create_if_absent(fs, join(root, COMMITS), claim.name, claim.to_bytes())


def create_if_absent(fs: Any, folder: str, name: str, data: bytes) -> bool:
    """Create the file `name` in `folder` holding `data` unless it exists; True when this
    call created it (atomic on local disks, check-put-read-back on object stores)."""
    path = join(folder, name)
    fs.makedirs(folder, exist_ok=True)
    if is_atomic(fs):
        temporary = join(folder, f"{TEMP_PREFIX}{name}-{new_attempt()}")
        fs.pipe_file(temporary, data)
        try:
            os.link(temporary, path)  # fails when the name exists: create-if-absent
            return True
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: an exclusive create instead
            return _create_exclusive(path, data)
        finally:
            os.unlink(temporary)
    # An object store: check, put, read back (a racing writer may still overwrite it).
    fs.invalidate_cache(path)
    if fs.exists(path):
        return False
    fs.pipe_file(path, data)
    fs.invalidate_cache(path)
    return fs.cat_file(path) == data


def _create_exclusive(path: str, data: bytes) -> bool:
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    return True


def holds_claim(fs: Any, root: str, claim: Claim) -> bool:
    """Whether the stored claim of `claim`'s version is `claim` (not a racing writer's)."""
    found = read_claim(fs, root, claim.run_id, claim.key, claim.version)
    return found is not None and found.attempt == claim.attempt and found.job == claim.job


def read_claim(fs: Any, root: str, run_id: str, key: str, version: int) -> Claim | None:
    path = join(root, COMMITS, claim_name(run_id, key, version))
    fs.invalidate_cache(path)
    try:
        return Claim.from_bytes(fs.cat_file(path))
    except FileNotFoundError:
        return None


def latest_claim(fs: Any, root: str, run_id: str, key: str, since: int = 1) -> Claim | None:
    """The latest version of a video's claim (versions are 1, 2, ... without gaps, looked
    for from `since`; a commit in the old layout is version 0)."""
    latest = None
    version = since
    while (found := read_claim(fs, root, run_id, key, version)) is not None:
        latest, version = found, version + 1
    if latest is None and since <= 1:
        return legacy_claim(fs, root, run_id, key)
    return latest


def list_files(fs: Any, folder: str) -> dict[str, dict[str, Any]]:
    """The files in `folder` now, by name, with their details (an absent folder: none)."""
    fs.invalidate_cache(folder)
    try:
        entries = fs.ls(folder, detail=True)
    except FileNotFoundError:
        return {}
    return {
        entry["name"].rstrip("/").rsplit("/", 1)[-1]: entry
        for entry in entries
        if entry.get("type") == "file"
    }


def file_exists(fs: Any, path: str) -> bool:
    """Whether `path` exists now (not as a cached listing remembers it)."""
    fs.invalidate_cache(path)
    return fs.exists(path)


def legacy_claim(
    fs: Any,
    root: str,
    run_id: str,
    key: str,
    listings: Mapping[str, Mapping[str, Any]] | None = None,
) -> Claim | None:
    """A commit in the old layout as a version-0 claim: its `videos/<run_id>-<key>.parquet`
    record and the instance files of the same name that exist; None when there is none."""
    name = data_name(run_id, key, "")

    def exists(table: str) -> bool:
        if listings is not None:
            return name in listings.get(table, {})
        return file_exists(fs, join(root, table, name))

    if not exists(VIDEOS):
        return None
    try:
        with fs.open(join(root, VIDEOS, name), "rb") as file:
            row = pq.read_table(file, columns=["video_id", "status"]).to_pylist()[0]
    except FileNotFoundError:  # replaced since it was listed
        return None
    files = {table: name for table in PUBLISH_ORDER if exists(table)}
    return Claim(run_id, row["video_id"], 0, row["status"], "", "", files)
