"""Deleting versions on a remote, freeing their bytes at once, and the remote's garbage collector.

Everything here runs under the remote's exclusive delete lock (remote/locks.py), so no push runs
meanwhile: no push can be deduplicating against an object this frees. Under the lock:

1. ``rm`` replaces each deleted version's record by its tombstone (the number stays taken) and
   drops or moves back the aliases that pointed at it.
2. The sweep computes the objects reachable from every live version (trees and file objects
   fetched verified; chunks named by file objects), then walks the packs: a pack all of whose
   objects are live stays; one with no live object (that another kept pack does not already hold)
   goes, its index first; one partly live is repacked: its live objects go up in a new pack, then
   the old index and pack go. So every byte no live version uses is freed in the same command.
3. Orphans: a pack without an index (a push killed between the two writes), or an index whose
   pack is missing, is deleted once older than the grace period (``ARTFS_REMOTE_GRACE`` seconds,
   default 3600, by the server's clock); locks older than the stale age are deleted.

``verify`` (``artfs verify --remote``) checks, without a lock, that every live version's objects are
reachable and their bytes match their ids and SHA-256 digests, and that aliases name live versions.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from ..catalog.objects import DIR, FileObj, Tree
from ..catalog.versions import VersionInfo
from ..errors import Conflict, CorruptData, NotFound
from ..names import LATEST
from ..store.backend import Obj
from ..store.packs import INDEX_SUFFIX, PREFIX as PACKS, pack_key
from .catalog import matching
from .locks import DELETE, PUSH, Lock, stale_locks

GRACE = 3600.0
FETCH_BATCH = 256


def grace() -> float:
    return float(os.environ.get("ARTFS_REMOTE_GRACE", GRACE))


def delete(remote, name: str, ref: str | None) -> dict:
    """Delete NAME:REF (or every version of NAME) on the remote and free what no live version
    uses: {"versions": ["NAME:vN", ...], "freed_bytes": n}."""
    with Lock(remote.s3, DELETE) as lock:
        live = remote.catalog.versions(name)
        targets = live if ref is None else matching(live, ref)
        if not targets:
            raise NotFound(f"remote {remote.name} has no {name}{':' + ref if ref else ''}")
        for v in targets:
            remote.catalog.tombstone(v)
        gone = {v.number for v in targets}
        remaining = [v.number for v in live if v.number not in gone]
        for alias, number in remote.catalog.aliases(name).items():
            if number in gone:
                if alias == LATEST and remaining:
                    remote.catalog.set_alias(name, LATEST, remaining[-1], retreat=True)
                else:
                    remote.catalog.drop_alias(name, alias)
        freed = _apply(remote, _plan(remote, lock))
    return {"versions": [f"{name}:{v.label}" for v in targets], "freed_bytes": freed}


def delete_here_and_there(repo, remote, name: str, ref: str | None, force: bool, delete_local) -> str:
    """``rm`` with a remote bound: on the remote first (where the version is the one with this
    store's root and creation time, never another host's vN), then here with DELETE_LOCAL(name,
    ref, force). A version here with user aliases needs force before anything goes anywhere; one
    never published goes only here; one only on the remote (a metadata clone) goes only there."""
    try:
        local = repo.resolve(name, ref) if ref is not None else repo.artifact(name)
    except NotFound:
        local = None
    there = ref
    if ref is not None and local is not None:
        if not force and [a for a in local.aliases if a != LATEST]:
            raise Conflict(f"{name}:{local.label} has aliases {', '.join(a for a in local.aliases if a != LATEST)}: "
                           "move or delete them first, or use --force")
        there = next((f"v{v.number}" for v in remote.catalog.versions(name)
                      if (v.root, v.created) == (local.root, local.created)), None)
    deleted = None
    if there is not None or ref is None:
        try:
            deleted = delete(remote, name, there)["versions"]
        except NotFound:
            if local is None:
                raise
    if local is not None:
        return delete_local(name, ref, force)
    return deleted[0] if ref is not None else name


def collect(remote, dry_run: bool = False) -> dict:
    """``artfs gc --remote``: the sweep alone, plus orphans and stale locks. With ``dry_run``,
    what it would delete, under a shared push lock (no delete runs meanwhile), deleting nothing:
    {"freed_bytes", "dead_packs", "repacked_packs", "orphan_packs", "orphan_indexes",
    "stale_locks"} (counts; freed_bytes what would be freed)."""
    with Lock(remote.s3, PUSH if dry_run else DELETE) as lock:
        plan = _plan(remote, lock)
        freed = plan.freed if dry_run else _apply(remote, plan)
    return {"freed_bytes": freed, "dead_packs": len(plan.dead), "repacked_packs": len(plan.repack),
            "orphan_packs": len(plan.orphan_packs), "orphan_indexes": len(plan.orphan_indexes),
            "stale_locks": len(plan.stale_locks)}


def live_versions(remote) -> list[VersionInfo]:
    return [v for n in remote.catalog.artifacts() for v in remote.catalog.versions(n)]


def reachable(objects, roots: Iterable[bytes]) -> dict[bytes, None]:
    """Every object id reachable from ROOTS (trees and file objects fetched and verified)."""
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


def _plan(remote, lock: Lock) -> _Plan:
    objects, s3, plan = remote.objects, remote.s3, _Plan()
    objects.refresh()
    live = reachable(objects, [v.root for v in live_versions(remote)])
    listing = {key: (size, t) for key, size, t in s3.listing(PACKS)}
    old = lock.since - grace()
    for key, (size, t) in listing.items():        # orphans: a pack without index, an index without pack
        pid = key.rsplit("/", 1)[1]
        if key.endswith(INDEX_SUFFIX):
            if key[:-len(INDEX_SUFFIX)] not in listing and t < old:
                plan.orphan_indexes.append(pid[:-len(INDEX_SUFFIX)])
        elif pid not in objects.packs and t < old:
            plan.orphan_packs.append((key, size))
    kept: set[bytes] = set()
    packs = sorted(((pid, entries) for pid, entries in objects.packs.items()
                    if pack_key(pid) in listing),
                   key=lambda kv: not all(oid in live for oid in kv[1]))
    for pid, entries in packs:
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


def _apply(remote, plan: _Plan) -> int:
    objects, s3 = remote.objects, remote.s3
    for pid in plan.orphan_indexes:
        objects.drop_pack(pid)
    for key, _ in plan.orphan_packs:
        s3.delete(key)
    freed = sum(size for _, size in plan.orphan_packs)
    for pid, need, size in plan.repack:
        entries = objects.packs[pid]
        data = objects.get_many(need)
        objects.upload([Obj(oid, entries[oid].digest, d) for oid, d in zip(need, data)])
        objects.drop_pack(pid)
        freed += size
    for pid, size in plan.dead:
        objects.drop_pack(pid)
        freed += size
    for key in plan.stale_locks:
        s3.delete(key)
    return freed


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
