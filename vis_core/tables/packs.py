"""Packs: one Parquet file per table holding the rows of many committed videos.

A compaction (`vis_core.tables.compact`) rewrites committed videos of one run into a pack:
a file `<run_id>-pack-<pack_id>.parquet` in each table folder that has rows for them, and
a pack claim `_commits/packs/<run_id>-<pack_id>.json` naming those files and its members,
each a video id and the version of the video's claim whose rows it holds.

The pack claim is the commit point of the whole pack: it is created (create-if-absent,
under a name no one else uses) after its files are staged and before any file it replaces
is deleted. A member is the video's commit while the video's latest claim has the
member's version and every file of the pack exists (staged or published, as for a claim);
a later commit of the video (a retry, a replacement) makes the member stale, and readers
skip its rows. The per-video claims stay: they keep a video's versions counting up.

A pack whose files are not all there is no commit: readers skip it, and the next
compaction deletes what is left of it.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from vis_core.storage import join
from vis_core.tables.claims import COMMITS, PARQUET_SUFFIX, create_if_absent

PACKS = f"{COMMITS}/packs"  # the pack claims' folder under the output

# A pack id is 16 hex digits: the creation time in ms, then 5 random digits, so names sort
# oldest first. Not 20 digits: a pack file's name must never read as a per-video file's.
_PACK_CLAIM_NAME = re.compile(r"^(?P<run>.+)-(?P<pack>[0-9a-f]{16})\.json$")
_PACK_FILE_NAME = re.compile(r"^(?P<run>.+)-pack-(?P<pack>[0-9a-f]{16})\.parquet$")


@dataclass(frozen=True)
class PackMember:
    """A video in a pack: its id, the claim version its rows are from, its status."""

    video_id: str
    version: int
    status: str


@dataclass(frozen=True)
class Pack:
    """One pack claim. files: table -> file name in its folder (tables without rows for
    any member have none); full: closed at its size limit (a compaction keeps it)."""

    run_id: str
    pack_id: str
    job: str
    files: Mapping[str, str]
    members: tuple[PackMember, ...]
    full: bool = False
    created_at: str = ""

    @property
    def name(self) -> str:
        return pack_claim_name(self.run_id, self.pack_id)

    def to_bytes(self) -> bytes:
        fields = {
            **self.__dict__,
            "files": dict(self.files),
            "members": [[m.video_id, m.version, m.status] for m in self.members],
        }
        return json.dumps(fields, sort_keys=True, ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> Pack:
        fields = json.loads(data.decode("utf-8"))
        fields["members"] = tuple(PackMember(*member) for member in fields["members"])
        return cls(**fields)


@dataclass(frozen=True)
class PackName:
    """A listed pack claim: its run, its id, its file name in `PACKS`."""

    run_id: str
    pack_id: str
    name: str = field(compare=False)


def new_pack_id() -> str:
    return f"{int(time.time() * 1000):011x}{uuid.uuid4().hex[:5]}"


def pack_claim_name(run_id: str, pack_id: str) -> str:
    return f"{run_id}-{pack_id}.json"


def pack_file_name(run_id: str, pack_id: str) -> str:
    """A pack's file name in each table folder (never a per-video file's name)."""
    return f"{run_id}-pack-{pack_id}{PARQUET_SUFFIX}"


def parse_pack_file_name(name: str) -> tuple[str, str] | None:
    """(run_id, pack_id) of a pack file's name; None for other names."""
    match = _PACK_FILE_NAME.match(name)
    return (match["run"], match["pack"]) if match else None


def create_pack_claim(fs: Any, root: str, pack: Pack) -> bool:
    """Create `pack`'s claim (the pack's commit point); False if its name is taken."""
    return create_if_absent(fs, join(root, PACKS), pack.name, pack.to_bytes())


def parse_pack_claim_name(name: str) -> tuple[str, str] | None:
    """(run_id, pack_id) of a pack claim's name; None for other names."""
    match = _PACK_CLAIM_NAME.match(name)
    return (match["run"], match["pack"]) if match else None


def delete_pack_claim(fs: Any, root: str, run_id: str, pack_id: str) -> None:
    with contextlib.suppress(FileNotFoundError):  # deleted by another compaction meanwhile
        fs.rm(join(root, PACKS, pack_claim_name(run_id, pack_id)))


def list_packs(fs: Any, root: str, run_id: str | None = None) -> list[PackName]:
    """The pack claims under `root` now (of run `run_id`), newest first: the newest holds
    a video's rows when two packs do (a repack, before it deletes the pack it replaces)."""
    folder = join(root, PACKS)
    fs.invalidate_cache(folder)
    try:
        paths = fs.ls(folder, detail=False)
    except FileNotFoundError:
        return []
    packs = []
    for path in paths:
        name = path.rstrip("/").rsplit("/", 1)[-1]
        parsed = parse_pack_claim_name(name)
        if parsed and (run_id is None or parsed[0] == run_id):
            packs.append(PackName(*parsed, name))
    return sorted(packs, key=lambda pack: (pack.pack_id, pack.run_id), reverse=True)


def read_packs(fs: Any, root: str, names: Iterable[PackName]) -> Iterator[Pack]:
    """The claims of the listed packs that still exist, one at a time (each holds up to a
    few thousand members)."""
    for listed in names:
        path = join(root, PACKS, listed.name)
        fs.invalidate_cache(path)
        try:
            yield Pack.from_bytes(fs.cat_file(path))
        except FileNotFoundError:
            continue  # deleted since listed: its members are in a newer pack
