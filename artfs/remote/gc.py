"""Deleting versions on a remote, freeing their bytes at once, and the remote's garbage collector.

Everything here runs under the remote's exclusive delete lock (remote/locks.py), so no push runs
meanwhile: no push can be deduplicating against an object this frees. Under the lock:

1. ``rm`` replaces each deleted version's record by its tombstone (the number stays taken) and
   drops or moves back the aliases that pointed at it.
2. The sweep computes the objects reachable from every live version (trees and file objects
   fetched verified; chunks named by file objects), then walks the packs: a pack all of whose
   objects are live stays; one with no live object (that another kept pack does not already hold)
   goes, its index first; one partly live is repacked: its live objects go up in a new pack, then
   the old index and pack go (the live objects of every partly live pack go up together, in packs
   of up to the pack size). Deletes are bulk requests (DeleteObjects, 1,000 keys each). So every
   byte no live version uses is freed in the same command.
3. Orphans: a pack without an index (a push killed between the two writes), or an index whose
   pack is missing, is deleted once older than the grace period (``ARTFS_REMOTE_GRACE`` seconds,
   default 3600, by the server's clock); locks older than the stale age are deleted.

``verify`` (``artfs verify --remote``) checks, without a lock, that every live version's objects are
reachable and their bytes match their ids and SHA-256 digests, and that aliases name live versions.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from ..catalog.objects import DIR, FileObj, Tree
from ..catalog.versions import VersionInfo
from ..errors import Conflict, CorruptData, NotFound, StoreError
from ..repo import retention as _retention
from ..names import LATEST
from ..store.backend import Obj
from ..store.packs import INDEX_SUFFIX, PREFIX as PACKS, pack_key
from .catalog import matching
from .locks import DELETE, PUSH, Lock, stale_locks

GRACE = 3600.0
FETCH_BATCH = 256


def grace() -> float:
    return float(os.environ.get("ARTFS_REMOTE_GRACE", GRACE))


def delete(remote, name: str, ref: str | None, local=None) -> dict:
    """Delete NAME:REF (or every version of NAME) on the remote and free what no live version
    uses: {"versions": ["NAME:vN", ...], "freed_bytes": n}. LOCAL (the local object store) serves
    the sweep the trees and file objects it has."""
    def pick(live: list[VersionInfo]) -> list[VersionInfo]:
        targets = live if ref is None else matching(live, ref)
        if not targets:
            raise NotFound(f"remote {remote.name} has no {name}{':' + ref if ref else ''}")
        return targets
    return delete_versions(remote, {name: pick}, local)


def delete_versions(remote, pickers: dict, local=None) -> dict:
    """Under one delete lock, for each NAME of PICKERS tombstone the live versions PICKERS[NAME]
    (live versions) returns, move its aliases off them, then sweep once: {"versions": [...],
    "freed_bytes": n}. One sweep for many versions: retention deleting 50 versions reads the
    remote's live metadata once, not 50 times."""
    deleted = []
    with Lock(remote.s3, DELETE) as lock:
        for name, pick in pickers.items():
            live = remote.catalog.versions(name)
            targets = pick(live)
            for v in targets:
                remote.catalog.tombstone(v)
            gone = {v.number for v in targets}
            remaining = [v.number for v in live if v.number not in gone]
            if targets:
                for alias, number in remote.catalog.aliases(name).items():
                    if number in gone:
                        if alias == LATEST and remaining:
                            remote.catalog.set_alias(name, LATEST, remaining[-1], retreat=True)
                        else:
                            remote.catalog.drop_alias(name, alias)
            deleted += [f"{name}:{v.label}" for v in targets]
        freed = _apply(remote, _plan(remote, lock, local), local) if deleted else 0
    return {"versions": deleted, "freed_bytes": freed}


def apply_retention(repo, remote, name: str | None, local_gc) -> dict:
    """``artfs gc`` with a remote bound: the versions retention lets go here (repo/retention.py)
    are deleted on the remote first (the ones with their root and creation time: published
    ones), in one delete lock and one sweep, then here by LOCAL_GC() (whose report is returned,
    with "remote_versions" and "remote_freed_bytes"). A version never published goes only here."""
    plan = _retention.gc(repo, name, dry_run=True)
    going: dict[str, set] = {}
    for a in plan["artifacts"]:
        for d in a["deleted"]:
            v = repo.resolve(a["name"], d["version"])
            going.setdefault(a["name"], set()).add((v.root, v.created))
    pickers = {n: (lambda live, ids=ids: [v for v in live if (v.root, v.created) in ids])
               for n, ids in going.items()}
    there = delete_versions(remote, pickers, local_objects(repo)) if pickers else {"versions": [], "freed_bytes": 0}
    report = local_gc()
    return {**report, "remote_versions": there["versions"], "remote_freed_bytes": there["freed_bytes"]}


def delete_here_and_there(repo, remote, name: str, ref: str | None, force: bool, delete_local) -> str:
    """``rm`` with a remote bound: on the remote first (where the version is the one with this
    store's root and creation time, never another host's vN), then here with DELETE_LOCAL(name,
    ref, force). A version here with user aliases needs force before anything goes anywhere; one
    never published goes only here; one only on the remote (a metadata clone) goes only there."""
    try:
        local = repo.resolve(name, ref) if ref is not None else repo.artifact(name)
    except NotFound:
        local = None
    deleted = None
    if ref is not None and local is not None:
        if not force and [a for a in local.aliases if a != LATEST]:
            raise Conflict(f"{name}:{local.label} has aliases {', '.join(a for a in local.aliases if a != LATEST)}: "
                           "move or delete them first, or use --force")
        identity = (local.root, local.created)   # matched under the lock; no match: never published
        delete_versions(remote, {name: lambda live: [v for v in live if (v.root, v.created) == identity]},
                        local_objects(repo))
    else:
        try:
            deleted = delete(remote, name, ref, local_objects(repo))["versions"]
        except NotFound:
            if local is None:
                raise
    if local is not None:
        return delete_local(name, ref, force)
    return deleted[0] if ref is not None else name


def collect(remote, dry_run: bool = False, local=None) -> dict:
    """``artfs gc --remote``: the sweep alone, plus orphans and stale locks. With ``dry_run``,
    what it would delete, under a shared push lock (no delete runs meanwhile), deleting nothing:
    {"freed_bytes", "dead_packs", "repacked_packs", "orphan_packs", "orphan_indexes",
    "stale_locks"} (counts; freed_bytes what would be freed)."""
    with Lock(remote.s3, PUSH if dry_run else DELETE) as lock:
        plan = _plan(remote, lock, local)
        freed = plan.freed if dry_run else _apply(remote, plan, local)
    return {"freed_bytes": freed, "dead_packs": len(plan.dead), "repacked_packs": len(plan.repack),
            "orphan_packs": len(plan.orphan_packs), "orphan_indexes": len(plan.orphan_indexes),
            "stale_locks": len(plan.stale_locks)}


def live_versions(remote) -> list[VersionInfo]:
    return [v for n in remote.catalog.artifacts() for v in remote.catalog.versions(n)]


def local_objects(repo):
    """The local object store itself: not the lazy one over it (store/lazy.py), which would ask
    the remote for what is not here."""
    return getattr(repo.db.objects, "local", repo.db.objects)


def live_roots(remote) -> list[bytes]:
    """The root of every live version on the remote: one LIST of the version records (a page per
    1,000), and a GET only of records not seen before under their current ETag (a record is
    written once and replaced only by its tombstone, which changes its ETag). What was read is
    kept in ``STORE/remotes/ID/records.json`` (rewritten only when that changed)."""
    path = os.path.join(os.path.dirname(remote.objects.cache_dir), "records.json")
    try:
        with open(path) as f:
            cached = json.load(f)
    except (OSError, ValueError):
        cached = {}
    listed = [(key, etag) for key, _, _, etag in remote.s3.tagged_listing("versions/")
              if key.count("/") == 2 and key.endswith(".json")]
    todo = [key for key, etag in listed if etag == "" or cached.get(key, [None])[0] != etag]
    with ThreadPoolExecutor(8) as pool:
        raws = list(pool.map(remote.s3.get_tagged, todo))
    for key, (raw, etag) in zip(todo, raws):
        rec = remote.catalog.read(key, raw, "version record")    # opened on an encrypted remote
        try:
            cached[key] = [etag, None if "deleted" in rec else rec["root"]]
        except (KeyError, TypeError):
            raise StoreError(f"remote version record {remote.s3.url}/{key} is malformed") from None
    kept = {key: cached[key] for key, _ in listed}
    if todo or len(kept) != len(cached):      # records read, or records gone: else the file holds KEPT
        with contextlib.suppress(OSError):
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump(kept, f)
            os.replace(tmp, path)
    return [bytes.fromhex(root) for _, root in kept.values() if root is not None]


class _LocalFirst:
    """Objects for the sweep and repacks: from LOCAL (the local object store) when it has them (a
    host has the trees and file objects of every version it made, pushed or pulled, and the
    chunks of those it made or pulled with --data), else fetched from the remote and verified.
    Same ids, same bytes: objects are content-addressed (and a repacked object is checked
    against its SHA-256 by every reader)."""

    def __init__(self, objects, local=None):
        self.objects, self.local = objects, local

    def get_many(self, ids: list[bytes]) -> list[bytes]:
        if self.local is None:
            return self.objects.get_many(ids)
        here = self.local.has(ids)
        out: dict[bytes, bytes] = {}
        mine = [oid for oid, h in zip(ids, here) if h]
        out.update(zip(mine, self.local.get_many(mine)))
        rest = [oid for oid, h in zip(ids, here) if not h]
        out.update(zip(rest, self.objects.get_many(rest)))
        return [out[oid] for oid in ids]


def reachable(objects, roots: Iterable[bytes], local=None) -> dict[bytes, None]:
    """Every object id reachable from ROOTS (trees and file objects fetched and verified, or
    read from LOCAL when it has them)."""
    objects = _LocalFirst(objects, local)
    seen: dict[bytes, None] = {}
    level = list(dict.fromkeys(roots))
    while level:
        level = [t for t in level if t not in seen]
        seen.update(dict.fromkeys(level))
        subdirs, files = [], []
        for data in _fetch(objects, level):
            for kind, ref in Tree.decode(data).refs():   # subtrees (or pages) and files
                (subdirs if kind == DIR else files).append(ref)
        files = [f for f in dict.fromkeys(files) if f not in seen]
        seen.update(dict.fromkeys(files))
        for data in _fetch(objects, files):
            seen.update(dict.fromkeys(FileObj.decode(data).chunks))
        level = list(dict.fromkeys(subdirs))
    return seen


def _fetch(objects, ids: list[bytes]) -> Iterable[bytes]:
    for i in range(0, len(ids), FETCH_BATCH):
        yield from objects.get_many(ids[i:i + FETCH_BATCH])


class _Plan:
    """What a sweep deletes: orphan packs (key, size) and indexes (pack id), dead packs (id, size),
    packs to repack (id, live ids, bytes freed), stale lock keys; ``freed`` in all."""

    def __init__(self):
        self.orphan_packs, self.orphan_indexes, self.dead, self.repack, self.stale_locks = [], [], [], [], []

    @property
    def freed(self) -> int:
        return (sum(size for _, size in self.orphan_packs) + sum(size for _, size in self.dead)
                + sum(size for _, _, size in self.repack))


def _plan(remote, lock: Lock, local=None) -> _Plan:
    objects, s3, plan = remote.objects, remote.s3, _Plan()
    objects.refresh()
    live = reachable(objects, live_roots(remote), local)
    listing = {key: (size, t) for key, size, t in s3.listing(PACKS)}
    old = lock.since - grace()
    read = objects.index.pack_ids()                # in the order their indexes were read
    known = set(read)
    for key, (size, t) in listing.items():        # orphans: a pack without index, an index without pack
        pid = key.rsplit("/", 1)[1]
        if key.endswith(INDEX_SUFFIX):
            if key[:-len(INDEX_SUFFIX)] not in listing and t < old:
                plan.orphan_indexes.append(pid[:-len(INDEX_SUFFIX)])
        elif pid not in known and t < old:
            plan.orphan_packs.append((key, size))
    kept: set[bytes] = set()
    packs = sorted((pid for pid in read if pack_key(pid) in listing),   # all-live packs first
                   key=lambda pid: not all(oid in live for oid in objects.index.object_ids(pid)))
    for pid in packs:
        entries = objects.index.entries(pid)      # one pack's entries in memory at a time
        need = [oid for oid in entries if oid in live and oid not in kept]
        if len(need) == len(entries):
            kept.update(need)
            continue
        size = listing[pack_key(pid)][0]
        if need:
            plan.repack.append((pid, need, size - sum(entries[oid].length for oid in need)))
            kept.update(need)
        else:
            plan.dead.append((pid, size))
    plan.stale_locks = [key for key in stale_locks(s3) if key != lock.key]
    return plan


def _apply(remote, plan: _Plan, local=None) -> int:
    """Delete what PLAN says, in bulk requests; the live objects of partly live packs (read from
    LOCAL when it has them) go up together, in new packs of up to the pack size, before the packs
    they came from go. Returns the bytes freed (``plan.freed``)."""
    objects, s3 = remote.objects, remote.s3
    reader = _LocalFirst(objects, local)
    objects.drop_packs(plan.orphan_indexes)
    s3.delete_many([key for key, _ in plan.orphan_packs])
    moved: list[Obj] = []
    sources: list[str] = []
    size = 0
    for pid, need, _ in plan.repack:
        entries = objects.index.entries(pid)
        data = reader.get_many(need)
        moved += [Obj(oid, entries[oid].digest, d) for oid, d in zip(need, data)]
        sources.append(pid)
        size += sum(map(len, data))
        if size >= objects.pack_size or pid == plan.repack[-1][0]:
            objects.upload(moved)
            objects.drop_packs(sources)
            moved, sources, size = [], [], 0
    objects.drop_packs([pid for pid, _ in plan.dead])
    s3.delete_many(plan.stale_locks)
    return plan.freed


def verify(remote) -> dict:
    """Every live version's objects present and matching their ids and digests; aliases live.
    {"versions": n, "objects": n, "bytes": n, "problems": [...]}"""
    objects = remote.objects
    objects.refresh()
    problems, count, size = [], 0, 0
    versions = live_versions(remote)
    for v in versions:
        try:
            ids = list(reachable(objects, [v.root]))
            for data in _fetch(objects, ids):
                count, size = count + 1, size + len(data)
        except CorruptData as e:
            problems.append(f"{v.name}:{v.label}: {e}")
    numbers = {(v.name, v.number) for v in versions}
    for name in remote.catalog.artifacts():
        for alias, number in remote.catalog.aliases(name).items():
            if (name, number) not in numbers:
                problems.append(f"alias {name}:{alias} points at v{number}, which the remote does not have")
    return {"versions": len(versions), "objects": count, "bytes": size, "problems": problems}
