"""push, pull and clone: moving versions between a local store (repo/) and a remote.

Numbering rule of this first slice: a version keeps its number everywhere. A push creates the
remote record ``NAME:vN`` of each local version the remote lacks, create-only; a push is refused
(Conflict, before anything is uploaded) when the remote has NAME:vN with other content, and so is
a push that loses the race for vN to another host. A pull adds the remote's versions under their
numbers and is refused when the local store has NAME:vN with other content.

Objects go up before the version records that name them (chunks, files, trees: children first),
and come down verified (store/remote.py) before they are stored locally; a pulled version is
recorded in one catalog transaction that references its objects (``Objects.adopt_tree``) and
checks, inside it, that every newly referenced object is stored.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from ..catalog.objects import DIR, FILE
from ..catalog.versions import VersionInfo
from ..errors import Conflict, NotFound
from ..names import LATEST, check_artifact, version_number
from ..repo.facade import Repo
from ..store.backend import Obj
from ..store.ids import strong_digest
from ..store.remote import PACK_SIZE, RemoteObjectStore
from ..store.s3 import S3Store
from . import bindings
from .catalog import RemoteCatalog

BATCH_BYTES = 32 << 20


class Remote:
    """A remote opened for one command: its catalog and its object store."""

    def __init__(self, store_path: str, name: str, binding: dict, *, init: bool = False):
        self.name, self.binding = name, binding
        self.s3 = S3Store(binding["url"], endpoint=binding.get("endpoint"), region=binding.get("region"),
                          allow_http=binding.get("allow_http", False))
        self.catalog = RemoteCatalog(self.s3)
        self.config = self.catalog.init() if init else self.catalog.config()
        cache = os.path.join(store_path, "remotes", self.config["id"], "idx")
        self.objects = RemoteObjectStore(self.s3, cache, int(os.environ.get("ARTFS_REMOTE_PACK_SIZE", PACK_SIZE)))

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
        for e in repo_tree(tid).entries:
            if e.kind == DIR:
                stack.append(e.ref)
            elif e.kind == FILE and e.ref not in files:
                files[e.ref] = None
                fobj = repo_file(e.ref)
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
    """Upload what the remote lacks for the local versions (all, or NAME, or NAME:REF), then
    create their records and move the remote's `latest` (and the versions' user aliases)."""
    names = [check_artifact(name)] if name else repo.artifacts()
    plan: list[tuple[str, list[VersionInfo]]] = []
    for n in names:
        local = [repo.resolve(n, ref)] if ref else repo.versions(n)
        theirs = {v.number: v for v in remote.catalog.versions(n)}
        for v in local:
            other = theirs.get(v.number)
            if other is not None and other.root != v.root:
                raise Conflict(f"{n}:{v.label} on remote {remote.name} has other content (digest "
                               f"{other.digest[:12]}, here {v.digest[:12]}): this store's history of {n} "
                               "diverged from the remote's; nothing was pushed")
        plan.append((n, [v for v in local if v.number not in theirs]))
    sent_before = remote.objects.bytes_sent
    for _, todo in plan:
        for v in todo:
            _upload_version(repo, remote.objects, v.root)
    pushed = []
    for n, todo in plan:
        for v in todo:
            remote.catalog.create_version(v)
            pushed.append(f"{n}:{v.label}")
        if todo:
            remote.catalog.set_alias(n, LATEST, max(v.number for v in todo))
            for v in todo:
                for alias in v.aliases:
                    if alias != LATEST:
                        remote.catalog.set_alias(n, alias, v.number)
    return {"versions": pushed, "bytes_sent": remote.objects.bytes_sent - sent_before}


def _upload_version(repo: Repo, objects: RemoteObjectStore, root: bytes) -> None:
    trees, files, chunks = _walk(repo.tree, repo.file, root)
    local = repo.db.objects
    sizes = dict(chunks)
    order = list(chunks) + files + trees                 # children before parents
    missing = [oid for oid, present in zip(order, objects.has(order)) if not present]
    for batch in _batches(missing, lambda oid: sizes.get(oid, 4096)):
        data = local.get_many(batch)                     # each checked against its id
        objects.put_many([Obj(oid, strong_digest(d), d) for oid, d in zip(batch, data)])


# pull ------------------------------------------------------------------------------------------
class _Vanished(Exception):
    """An object fetched for a pull was purged locally before the pull referenced it."""


def pull(repo: Repo, remote: Remote, name: str | None = None, ref: str | None = None,
         data: bool = False) -> dict:
    """Fetch the remote's versions (all, NAME, or NAME:REF): their trees and file objects, with
    ``data`` also their chunks, every object verified. With data the versions are recorded in the
    local store; without, only their metadata is fetched (lazy reads are not built yet)."""
    names = [check_artifact(name)] if name else remote.catalog.artifacts()
    received, pulled, fetched = 0, [], []
    for n in names:
        theirs = remote.catalog.versions(n)
        if ref:
            number = version_number(ref)
            if number is None:
                number = next((v.number for v in theirs if ref in v.aliases), None)
            theirs = [v for v in theirs if v.number == number]
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
    return {"versions": pulled, "metadata_only": fetched, "bytes_received": received}


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
        entries = [e for tid in level for e in repo.tree(tid).entries]
        files = list(dict.fromkeys(e.ref for e in entries if e.kind == FILE))
        received += copy(files)
        if data:
            for fid in files:
                fobj = repo.file(fid)
                chunks.update(zip(fobj.chunks, fobj.lengths))
        level = list(dict.fromkeys(e.ref for e in entries if e.kind == DIR))
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

