"""The committed videos of an output now, and the files that hold each one's rows.

A video's commit is its latest claim (`vis_core.tables.claims`). Its rows are in the files
that claim names, or in a pack holding that version of the video (`vis_core.tables.packs`),
the newest such pack while a repack has not yet deleted the one it replaces. A pack member
whose version is not the latest is stale: its rows are skipped.

`iter_commits` streams the commits: the claims' names give each video's latest version
without reading a claim, the packs are read one at a time and cover most videos of a
compacted output, and only the claims no pack covers are read, a chunk at a time. What it
holds grows with the output by about 40 bytes a video (the claims' names and the table
folders' file names as sorted byte arrays), never a claim object per video.

Order against writers: the table folders are listed first, then the claims' names, then
the packs, so a file published after its folder's listing belongs to a claim or pack the
reads see, and is looked up again (staged place first). A claim whose files are gone when
checked was packed or replaced meanwhile: newer versions are followed, then the packs are
listed again for the claims still unresolved.
"""

from __future__ import annotations

from array import array
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from vis_core.storage import join
from vis_core.tables.claims import (
    COMMITS,
    WITHDRAWN,
    Claim,
    claim_name,
    file_exists,
    latest_claim,
    legacy_claim,
    parse_claim_name,
    parse_legacy_name,
    staged_folder,
    video_key,
)
from vis_core.tables.names import FolderNames, iter_names
from vis_core.tables.packs import Pack, PackMember, list_packs, read_packs
from vis_core.tables.schema import TABLE_NAMES, VIDEOS

_NEWER_TRIES = 5  # versions followed while a video's commit is replaced during a read
_CLAIMS_PER_READ = 1000  # claims read (and held) at once
DATA_FOLDERS = (*TABLE_NAMES, *(staged_folder(table) for table in TABLE_NAMES))


@dataclass(frozen=True)
class Commit:
    """A video's valid commit: its latest claim, and where each file with its rows is now
    (published, or staged until it is moved). pack: the id of the pack holding its rows
    (then `paths` are the pack's files, shared with other videos), else None."""

    claim: Claim
    paths: Mapping[str, str]
    pack: str | None = None

    @property
    def video_id(self) -> str:
        return self.claim.video_id

    @property
    def status(self) -> str:
        return self.claim.status


Listings = Mapping[str, Collection[str]]


def list_data_folders(fs: Any, root: str) -> dict[str, FolderNames]:
    """The file names in the table folders and their staging folders now."""
    return {folder: FolderNames.list(fs, join(root, folder)) for folder in DATA_FOLDERS}


def committed(
    fs: Any,
    root: str,
    *,
    run_id: str | None = None,
    video_ids: Iterable[str] | None = None,
) -> list[Commit]:
    """The valid commits under `root` now (of run `run_id`, of `video_ids`), sorted by
    run and key."""
    commits = iter_commits(fs, root, run_id=run_id, video_ids=video_ids)
    return sorted(commits, key=lambda commit: (commit.claim.run_id, commit.claim.key))


def iter_commits(
    fs: Any,
    root: str,
    *,
    run_id: str | None = None,
    video_ids: Iterable[str] | None = None,
    listings: Mapping[str, FolderNames] | None = None,
) -> Iterator[Commit]:
    """Each valid commit under `root` now (of run `run_id`, of `video_ids`), once, in no
    particular order (see the module docstring). listings: the data folders' names
    (`list_data_folders`) if the caller has just listed them."""
    chosen = None if video_ids is None else set(video_ids)
    keys = None if chosen is None else {video_key(video_id) for video_id in chosen}
    listings = listings if listings is not None else list_data_folders(fs, root)
    latest = LatestVersions.list(fs, root, run_id=run_id, keys=keys)
    legacy_packed: set[tuple[str, str]] = set()  # version-0 videos a pack holds
    for pack in read_packs(fs, root, list_packs(fs, root, run_id)):
        paths = resolve_files(fs, root, pack.files, listings)
        if paths is None:
            continue  # a file is gone: no commit (its members are elsewhere)
        for member in pack.members:
            if chosen is not None and member.video_id not in chosen:
                continue
            key = video_key(member.video_id)
            current = latest.take(pack.run_id, key, member.version)
            if not current and member.version == 0 and latest.version(pack.run_id, key) is None:
                current = (pack.run_id, key) not in legacy_packed  # an old-layout commit
                legacy_packed.add((pack.run_id, key))
            if current:
                yield pack_commit(pack, member, paths)
    unresolved: dict[tuple[str, str, int], Claim] = {}
    for claims in latest.unread(_CLAIMS_PER_READ):
        for claim in _read_claims(fs, root, claims):
            if chosen is not None and claim.video_id not in chosen:
                continue  # a different video whose id has the same key: not asked for
            found = _follow(fs, root, claim, listings)
            if isinstance(found, Commit):
                yield found
            elif found is not None:  # its files are gone: a pack may hold it since
                unresolved[(found.run_id, found.video_id, found.version)] = found
    for claim in _legacy_claims(fs, root, listings, latest, legacy_packed, run_id, keys):
        if chosen is None or claim.video_id in chosen:
            paths = resolve_files(fs, root, claim.files, listings)
            if paths is not None:
                yield Commit(claim, paths)
    if unresolved:
        yield from _packed_since(fs, root, run_id, unresolved)


def pack_commit(pack: Pack, member: PackMember, paths: Mapping[str, str]) -> Commit:
    """A pack member's commit: its claim as the pack states it, the pack's files."""
    claim = Claim(
        pack.run_id,
        member.video_id,
        member.version,
        member.status,
        "",
        pack.job,
        dict(pack.files),
        pack.created_at,
    )
    return Commit(claim, paths, pack.pack_id)


def resolve(
    fs: Any, root: str, claim: Claim, listings: Listings | None = None
) -> dict[str, str] | None:
    """Where each file of `claim` is now (see `resolve_files`)."""
    return resolve_files(fs, root, claim.files, listings)


def resolve_files(
    fs: Any, root: str, files: Mapping[str, str], listings: Listings | None = None
) -> dict[str, str] | None:
    """Where each file (table -> name) is now, published or still staged; None when one
    is in neither place. A file missing from the listings is looked up again, staged place
    first: it may have been moved while the folders were listed."""
    listings = listings or {}
    paths = {}
    for table, name in files.items():
        published = join(root, table, name)
        staged = join(root, staged_folder(table), name)
        if name in listings.get(table, ()):
            paths[table] = published
        elif name in listings.get(staged_folder(table), ()) or file_exists(fs, staged):
            paths[table] = staged
        elif file_exists(fs, published):
            paths[table] = published
        else:
            return None
    return paths


class LatestVersions:
    """Each video's latest claim version, from the claims' names alone, per run: sorted
    arrays of the keys (20 bytes each) and versions, and which videos a pack has covered
    ("taken") so far."""

    def __init__(self, found: Mapping[str, tuple[bytearray, array]]):
        self._runs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for run, (key_bytes, version_list) in found.items():
            keys = np.frombuffer(bytes(key_bytes), dtype="S20")
            versions = np.frombuffer(version_list, dtype=np.int32)
            order = np.lexsort((versions, keys))
            keys, versions = keys[order], versions[order]
            last = np.append(keys[1:] != keys[:-1], True)  # a key's highest version
            self._runs[run] = (keys[last], versions[last].copy(), np.zeros(last.sum(), bool))

    @classmethod
    def list(
        cls,
        fs: Any,
        root: str,
        *,
        run_id: str | None = None,
        keys: Collection[str] | None = None,
    ) -> LatestVersions:
        found: dict[str, tuple[bytearray, array]] = {}
        for name in iter_names(fs, join(root, COMMITS)):
            parsed = parse_claim_name(name)
            if parsed is None or (run_id is not None and parsed[0] != run_id):
                continue
            if keys is not None and parsed[1] not in keys:
                continue
            key_bytes, versions = found.setdefault(parsed[0], (bytearray(), array("i")))
            key_bytes += parsed[1].encode("ascii")
            versions.append(parsed[2])
        return cls(found)

    def version(self, run_id: str, key: str) -> int | None:
        """The video's latest claim version; None when it has no claim."""
        index = self._index(run_id, key)
        return None if index is None else int(self._runs[run_id][1][index])

    def take(self, run_id: str, key: str, version: int) -> bool:
        """Whether `version` is the video's latest and not taken yet; takes it if so."""
        index = self._index(run_id, key)
        if index is None:
            return False
        _, versions, taken = self._runs[run_id]
        if versions[index] != version or taken[index]:
            return False
        taken[index] = True
        return True

    def unread(self, chunk: int) -> Iterator[list[tuple[str, str, int]]]:
        """(run_id, key, version) of the latest claims not taken, `chunk` at a time."""
        for run, (keys, versions, taken) in self._runs.items():
            left = np.flatnonzero(~taken)
            for start in range(0, len(left), chunk):
                indices = left[start : start + chunk]
                yield [(run, keys[i].decode("ascii"), int(versions[i])) for i in indices]

    def __len__(self) -> int:
        return sum(len(keys) for keys, _, _ in self._runs.values())

    @property
    def nbytes(self) -> int:
        return sum(sum(a.nbytes for a in arrays) for arrays in self._runs.values())

    def _index(self, run_id: str, key: str) -> int | None:
        arrays = self._runs.get(run_id)
        if arrays is None:
            return None
        keys = arrays[0]
        probe = key.encode("ascii")
        index = int(np.searchsorted(keys, probe))
        return index if index < len(keys) and keys[index] == probe else None


def _read_claims(fs: Any, root: str, claims: list[tuple[str, str, int]]) -> list[Claim]:
    paths = [join(root, COMMITS, claim_name(*claim)) for claim in claims]
    if not paths:
        return []
    data = fs.cat(paths)
    # `cat` of a single path returns its bytes rather than a dict.
    contents = [data] if isinstance(data, bytes) else [data[path] for path in paths]
    return [Claim.from_bytes(content) for content in contents]


def _follow(fs: Any, root: str, claim: Claim, listings: Listings | None) -> Commit | Claim | None:
    """`claim`'s commit if its files are all there; a newer version's when a commit
    replaced it since the claims were listed; else the latest claim (its rows may be in a
    pack by now), or None when it is withdrawn."""
    for _ in range(_NEWER_TRIES):
        if claim.status == WITHDRAWN:
            return None
        paths = resolve(fs, root, claim, listings)
        if paths is not None:
            return Commit(claim, paths)
        newer = latest_claim(fs, root, claim.run_id, claim.key, since=claim.version + 1)
        if newer is None:
            return claim
        claim, listings = newer, None
    return None


def _packed_since(
    fs: Any, root: str, run_id: str | None, unresolved: dict[tuple[str, str, int], Claim]
) -> Iterator[Commit]:
    """Commits of the `unresolved` claims (files gone) that a pack listed now holds."""
    for pack in read_packs(fs, root, list_packs(fs, root, run_id)):
        held = [
            member
            for member in pack.members
            if (pack.run_id, member.video_id, member.version) in unresolved
        ]
        paths = resolve_files(fs, root, pack.files) if held else None
        for member in held if paths is not None else ():
            del unresolved[(pack.run_id, member.video_id, member.version)]
            yield pack_commit(pack, member, paths)


def _legacy_claims(
    fs: Any,
    root: str,
    listings: Mapping[str, FolderNames],
    latest: LatestVersions,
    packed: Collection[tuple[str, str]],
    run_id: str | None,
    keys: Collection[str] | None,
) -> Iterator[Claim]:
    """Version-0 claims of the commits in the old layout that have no claim (nor a pack)."""
    for name in listings[VIDEOS]:
        parsed = parse_legacy_name(name)
        if parsed is None:
            continue
        run, key = parsed
        if (run_id is not None and run != run_id) or (keys is not None and key not in keys):
            continue
        if latest.version(run, key) is not None or (run, key) in packed:
            continue
        claim = legacy_claim(fs, root, run, key, listings)
        if claim is not None:
            yield claim
