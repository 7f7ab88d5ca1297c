"""push, pull and clone: moving versions between a local store (repo/) and a remote; publishing
the versions that commit and put make while a remote is bound.

Numbers are the remote's: a version gets its number when it is published (at commit or put with a
remote bound, else at push) by a create-only write of ``versions/NAME/N.json`` for the next free
N (a host that loses the race takes N+1), and the local store then renumbers it to N (one catalog
transaction). A local version is "already there" when the remote has a live version with its root
and creation time (under any number: a crash between the remote's record and the local renumbering
is repaired by the next push); one whose tombstone is there was deleted on the remote and is not
pushed again. A pull adds the remote's versions under their numbers and is refused when the local
store has NAME:vN with other content.

Objects go up before the version records that name them (in parallel batches),
under a shared push lock (remote/locks.py) so no delete frees what the push deduplicated against,
and come down verified (store/remote.py) before they are stored locally; a pulled version is
recorded in one catalog transaction that references its objects (``Objects.adopt_tree``) and
checks, inside it, that every newly referenced object is stored.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from ..catalog.objects import DIR, FILE
from ..catalog.versions import VersionInfo
from ..errors import Conflict, NotFound
from ..names import LATEST, check_artifact
from ..repo.facade import Repo
from ..store.backend import Obj
from ..store.ids import strong_digest
from ..store.remote import PACK_SIZE, RemoteObjectStore
from ..store.s3 import S3Store
from . import bindings, keys
from .catalog import matching
from .locks import PUSH, Lock

BATCH_BYTES = 32 << 20
UPLOADS = 4          # batches of a push read, hashed and uploaded at once


class Remote:
    """A remote opened for one command: its catalog and its object store."""

    def __init__(self, store_path: str, name: str, binding: dict, *, init: bool = False):
        self.name, self.binding = name, binding
        self.s3 = S3Store.of(binding)
        self.catalog, self.config, self.objects = keys.open_remote(      # sealed when the store is
            store_path, self.s3, lambda config: os.path.join(store_path, "remotes", config["id"], "idx"),
            int(os.environ.get("ARTFS_REMOTE_PACK_SIZE", PACK_SIZE)), init=init)

    @classmethod
    def bound(cls, repo: Repo, name: str) -> "Remote":
        return cls(repo.path, name, bindings.get(repo.path, name))


def _walk(repo_tree, repo_file, root: bytes):
    """(trees, files, chunks as (id, length)) reachable from ROOT, each once."""
    trees, files, chunks, stack = {}, {}, {}, [root]
    while stack:
        tid = stack.pop()
        if tid in trees:
            continue
        trees[tid] = None
        for kind, ref in repo_tree(tid).refs():   # subtrees (or a paged directory's pages), files
            if kind == DIR:
                stack.append(ref)
            elif ref not in files:
                files[ref] = None
                fobj = repo_file(ref)
                chunks.update(zip(fobj.chunks, fobj.lengths))
    return list(trees), list(files), chunks


def _batches(ids: Iterable[bytes], size_of) -> Iterable[list[bytes]]:
    batch, size = [], 0
    for oid in ids:
        batch.append(oid)
        size += size_of(oid)
        if size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


# push ------------------------------------------------------------------------------------------
def push(repo: Repo, remote: Remote, name: str | None = None, ref: str | None = None) -> dict:
    """Publish the local versions (all, or NAME, or NAME:REF) the remote lacks, oldest first:
    each gets the remote's next free number (and is renumbered here when that differs)."""
    names = [check_artifact(name)] if name else repo.artifacts()
    sent_before = remote.objects.bytes_sent
    stats_before = remote.s3.stats.snapshot()
    pushed: list[str] = []
    with Lock(remote.s3, PUSH) as lock:
        remote.objects.refresh()
        for n in names:
            local = [repo.resolve(n, ref)] if ref else repo.versions(n)
            live, dead = remote.catalog.versions_and_tombstones(n)
            there = {_identity(v): v.number for v in live}
            gone = {_identity(v) for v in dead}
            for v in local:
                number = there.get(_identity(v))
                if number is not None:
                    if number != v.number:               # published, but a crash kept the old number here
                        _renumber(repo, v, number)
                    continue
                if _identity(v) not in gone:
                    pushed.append(f"{n}:{_publish(repo, remote, lock, v).label}")
    return {"versions": pushed, "bytes_sent": remote.objects.bytes_sent - sent_before,
            "requests": remote.s3.stats.delta(stats_before, remote.s3.stats.snapshot())["requests"]}


def publish(repo: Repo, remote: Remote, v: VersionInfo) -> VersionInfo:
    """Create the local version V on the remote (its objects, then its record under the next free
    number, then `latest` and its aliases); returns it as the local store now holds it."""
    with Lock(remote.s3, PUSH) as lock:
        remote.objects.refresh()
        return _publish(repo, remote, lock, v)


def _identity(v: VersionInfo) -> tuple[bytes, float]:
    return v.root, v.created


def _publish(repo: Repo, remote: Remote, lock: Lock, v: VersionInfo) -> VersionInfo:
    _upload_version(repo, remote.objects, v.root)
    if not lock.fresh():      # suspended past the stale age: a delete may have freed what we reused
        lock.release()
        lock.acquire()
        remote.objects.refresh()
        _upload_version(repo, remote.objects, v.root)
    number = remote.catalog.allocate(v, at_least=_first_free(repo, remote, v))
    if number != v.number:
        v = _renumber(repo, v, number)
    remote.catalog.set_alias(v.name, LATEST, number)
    for alias in v.aliases:
        if alias != LATEST:
            remote.catalog.set_alias(v.name, alias, number)
    return v


def _first_free(repo: Repo, remote: Remote, v: VersionInfo) -> int:
    """The least number V may take on the remote: its own, unless the remote has taken it or a
    later one while this store has versions above V (pushing older versions made unbound): then
    above every local number, so the renumbering here meets no version and keeps their order."""
    mine = [x.number for x in repo.versions(v.name) if x.number != v.number]
    if not mine or max(mine) < v.number:
        return v.number           # every number above V is free here
    taken = remote.catalog.numbers(v.name)
    return v.number if not taken or taken[-1] < v.number else max(mine) + 1


def _renumber(repo: Repo, v: VersionInfo, number: int) -> VersionInfo:
    """Move local version V to NUMBER (the remote's), with its aliases, in one transaction."""
    def action(txn):
        current = repo.catalog.version(txn, v.name, v.number)
        if current is None or current.root != v.root:
            raise Conflict(f"{v.name}:{v.label} changed here while it was being published")
        repo.catalog.drop_version(txn, v.name, v.number)
        moved = VersionInfo(v.name, number, v.root, current.type, current.created, current.message,
                            current.metadata, current.author, current.uid, current.files, current.bytes,
                            producer=current.producer, expires=current.expires)
        repo.catalog.add_version_at(txn, moved, action="version.publish")
        for alias in current.aliases:
            repo.catalog.set_alias(txn, v.name, alias, number)
        return repo.catalog.version(txn, v.name, number)
    return repo.db.write(action)


def _upload_version(repo: Repo, objects: RemoteObjectStore, root: bytes) -> None:
    """Upload the objects of the version at ROOT that the remote lacks: batches of about 32 MiB
    read, hashed and uploaded UPLOADS at a time (the hashing of one overlaps the upload of the
    others). Their order on the remote does not matter: nothing names them before the version's
    record, written after every batch is up."""
    trees, files, chunks = _walk(repo.tree, repo.file, root)
    local = repo.db.objects
    sizes = dict(chunks)
    order = list(chunks) + files + trees
    # as refreshed under the push lock
    missing = [oid for oid, loc in zip(order, objects.index.locate(order)) if loc is None]

    def send(batch: list[bytes]) -> None:
        data = local.get_many(batch)                     # each checked against its id
        objects.put_many([Obj(oid, strong_digest(d), d) for oid, d in zip(batch, data)], refresh=False)
    with ThreadPoolExecutor(UPLOADS) as pool:
        list(pool.map(send, _batches(missing, lambda oid: sizes.get(oid, 4096))))


def move_alias(repo: Repo, remote: Remote, name: str, alias: str, ref: str | None, force: bool) -> None:
    """``alias`` (REF) or ``alias --delete`` (None) on the remote, before here: a compare-and-swap
    from the alias as this store has it (any value with FORCE). The version must be on the remote
    (published: its record there has its root and creation time). Nothing changes on a Conflict."""
    number = None
    if ref is not None:
        v = repo.resolve(name, ref)
        there = remote.catalog.live_record(name, v.number)
        if there is None or _identity(there) != _identity(v):
            raise Conflict(f"{name}:{v.label} is not on remote {remote.name} (`artfs push {name}` publishes it): "
                           f"alias {alias} not moved")
        number = v.number
    remote.catalog.move_alias(name, alias, number, repo.aliases(name).get(alias), check=not force)


# pull ------------------------------------------------------------------------------------------
class _Vanished(Exception):
    """An object fetched for a pull was purged locally before the pull referenced it."""


def pull(repo: Repo, remote: Remote, name: str | None = None, ref: str | None = None,
         data: bool = False, drop=None) -> dict:
    """Record the remote's versions (all, NAME, or NAME:REF) here: their trees and file objects
    are fetched, every object verified; their chunks are read lazily (store/lazy.py), and with
    ``data`` fetched into the chunk cache now (also for versions recorded before). Without REF,
    the local versions deleted on the remote are deleted here first by DROP(name, ref, reason)."""
    names = [check_artifact(name)] if name else remote.catalog.artifacts()
    received, pulled, fetched, dropped, kept = 0, [], [], [], []
    for n in names:
        theirs, dead = remote.catalog.versions_and_tombstones(n)
        if ref is None and dead and drop is not None:
            _drop_deleted(repo, remote.name, n, dead, drop, dropped, kept)
        if ref:
            theirs = matching(theirs, ref)
            if not theirs:
                raise NotFound(f"remote {remote.name} has no {n}:{ref}")
        if not theirs and name:
            raise NotFound(f"remote {remote.name} has no artifact {n!r}")
        try:
            mine = {v.number: v for v in repo.versions(n)}
        except NotFound:
            mine = {}
        for v in theirs:
            if v.number in mine and mine[v.number].root != v.root:
                raise Conflict(f"{n}:{v.label} here has other content (digest {mine[v.number].digest[:12]}) "
                               f"than on remote {remote.name} ({v.digest[:12]}): nothing was pulled")
        for v in theirs:
            if v.number not in mine:
                for attempt in range(3):
                    received += _fetch(repo, remote.objects, v.root, False)
                    try:
                        _record(repo, v, [a for a in v.aliases if a != LATEST])
                        pulled.append(f"{n}:{v.label}")
                        break
                    except _Vanished:
                        continue
                else:
                    raise Conflict(f"{n}:{v.label}: local objects kept being purged during the pull; try again")
            elif data:
                pulled.append(f"{n}:{v.label}")
            if data:   # its chunks into the chunk cache (store/lazy.py): reads need no fetch
                received += repo.db.objects.prefetch(list(_walk(repo.tree, repo.file, v.root)[2]))
    return {"versions": pulled, "metadata_only": fetched, "bytes_received": received,
            "dropped": dropped, "kept": kept}


def _drop_deleted(repo: Repo, remote: str, name: str, dead: list[VersionInfo], drop,
                  dropped: list[str], kept: list[str]) -> None:
    """Delete here (DROP) NAME's versions whose remote record is a tombstone: those with its root
    and creation time, so published ones only (a version never published has no record there,
    whatever its number). The base of a staging with changes stays, said in KEPT."""
    gone = {_identity(v) for v in dead}
    try:
        mine = repo.versions(name)
    except NotFound:
        return
    for v in mine:
        if _identity(v) not in gone:
            continue
        try:
            dropped.append(drop(name, v.label, f"deleted on remote {remote}"))
        except Conflict as e:       # the base of a staging with changes
            kept.append(f"{name}:{v.label} (deleted on remote {remote}) kept here: {e}")


def _fetch(repo: Repo, objects: RemoteObjectStore, root: bytes, data: bool) -> int:
    """Copy the version's trees and file objects (and with ``data`` its chunks) that the local
    store lacks from the remote, verified. Returns the bytes fetched."""
    local = repo.db.objects
    received = 0

    def copy(ids: list[bytes]) -> int:
        missing = [oid for oid, present in zip(ids, local.has(ids)) if not present]
        got = objects.get_many(missing) if missing else []
        local.put_many([Obj(oid, strong_digest(d), d) for oid, d in zip(missing, got)])
        return sum(map(len, got))

    level = [root]                                       # trees, breadth first: one fetch per level
    chunks: dict[bytes, int] = {}
    while level:
        received += copy(level)
        refs = [ref for tid in level for ref in repo.tree(tid).refs()]   # pages count as trees
        files = list(dict.fromkeys(ref for kind, ref in refs if kind == FILE))
        received += copy(files)
        if data:
            for fid in files:
                fobj = repo.file(fid)
                chunks.update(zip(fobj.chunks, fobj.lengths))
        level = list(dict.fromkeys(ref for kind, ref in refs if kind == DIR))
    for batch in _batches(chunks, chunks.get):
        received += copy(batch)
    return received


def _record(repo: Repo, v: VersionInfo, aliases: list[str]) -> None:
    def action(txn):
        repo.catalog.ensure_artifact(txn, v.name, v.type)
        new = repo.objects.adopt_tree(txn, v.root)
        if not all(repo.db.objects.has(new)):
            raise _Vanished()
        record = VersionInfo(v.name, v.number, v.root, v.type, v.created, v.message, v.metadata,
                             v.author, v.uid, v.files, v.bytes)
        repo.catalog.add_version_at(txn, record)
        for alias in aliases:
            repo.catalog.set_alias(txn, v.name, alias, v.number)
    repo.db.write(action)

