"""Repo: every store operation, with no transactions in its signatures, and no knowledge of mounts.

The CLI (without a daemon), the Python API and the daemon all call these. Each user action is one
catalog write transaction (plus, for big inputs, the bounded ingest transactions before it);
reads open short transactions and cache only immutable objects (trees and file chunk lists,
keyed by content id, bounded by bytes).
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from ..catalog.access import Access, Caller, acting_in, changed, store_owner
from ..catalog.db import Database, counter
from ..catalog.objects import FileObj, Objects, Tree
from ..catalog.sessions import Sessions, remove_dead_locks
from ..catalog.staging_index import StagingIndex, staging_dir
from ..catalog.versions import Catalog, VersionInfo, check_type, whoami
from .diff import trees_equal
from ..errors import Conflict, InvalidInput, NotFound
from . import references
from .ingest import Ingest
from .lineage import producer as this_process
from ..names import LATEST, check_alias, check_artifact, parse_duration
from ..store import lazy

TREE_CACHE_BYTES = 64 << 20
TOUCHED = 1 << 16   # chunk ids remembered as read recently (about 6 MB), forgotten all at once
FILE_CACHE_BYTES = 32 << 20
PARSED_PER_ENCODED = 11   # measured: a parsed tree takes ~6x its encoding, a file object ~10x


def stderr_warn(msg: str) -> None:
    print(f"artfs: warning: {msg}", file=sys.stderr)


class _LRU:
    """Parsed immutable objects by id, least recently used dropped first, bounded by an estimate
    of their memory (a parsed object takes several times its encoded size). Safe to share between
    threads (the mount's loop, worker threads, read-ahead): an object two threads load at once is
    kept once; loading happens outside the lock."""

    def __init__(self, budget: int):
        self.budget, self.used, self.items = budget, 0, OrderedDict()
        self._lock = threading.Lock()

    def get(self, key, load: Callable[[], tuple[object, int]]):
        with self._lock:
            item = self.items.get(key)
            if item is not None:
                self.items.move_to_end(key)
                return item[0]
        value, encoded = load()
        cost = PARSED_PER_ENCODED * encoded + 256
        with self._lock:
            item = self.items.get(key)
            if item is not None:   # loaded meanwhile by another thread: keep that one
                return item[0]
            self.items[key] = (value, cost)
            self.used += cost
            while self.used > self.budget and len(self.items) > 1:
                self.used -= self.items.popitem(last=False)[1][1]
        return value

    def peek(self, key):
        """The cached value of KEY, or None (nothing loaded)."""
        item = self.items.get(key)
        return item[0] if item is not None else None


class Repo:
    def __init__(self, path: str | None = None, *, hasher=None, create: bool = True):
        self.db = Database.open(path, hasher=hasher, create=create)
        self.path = self.db.path
        self.db.objects = lazy.attach(self.path, self.db.objects)   # chunks of a bound remote on demand
        self.objects = Objects(self.db)
        self.catalog = Catalog(self.db.dbs, store_owner(self.path))
        self.sessions = Sessions(self.db.dbs, self.objects, self.path)
        self._trees = _LRU(TREE_CACHE_BYTES)
        self._files = _LRU(FILE_CACHE_BYTES)
        self._touched: set[bytes] = set()   # chunk ids this process read (read_nowait)
        self.references = references.Reader()   # reads of files whose bytes stay at their source

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # reading -----------------------------------------------------------------------------------
    def artifacts(self) -> list[str]:
        with self.db.read() as txn:
            return self.catalog.artifact_names(txn)

    def artifact(self, name: str) -> dict:
        with self.db.read() as txn:
            return self.catalog.require_artifact(txn, check_artifact(name))

    def caller(self) -> Caller:
        """Who this request is for (catalog/access.py), an admin if it owns the store."""
        return acting_in(self.catalog.default_owner[0])

    def access(self, name: str) -> Access:
        """NAME's owner, group and mode (catalog/access.py)."""
        with self.db.read() as txn:
            return self.catalog.access(txn, check_artifact(name))

    def versions(self, name: str) -> list[VersionInfo]:
        with self.db.read() as txn:
            self.catalog.require_artifact(txn, check_artifact(name))
            return self.catalog.versions(txn, name)

    def resolve(self, name: str, ref: str | None = None) -> VersionInfo:
        with self.db.read() as txn:
            return self.catalog.resolve(txn, check_artifact(name), ref or LATEST)

    def aliases(self, name: str) -> dict[str, int]:
        with self.db.read() as txn:
            return self.catalog.aliases(txn, name)

    def events(self, name: str | None = None) -> list[dict]:
        with self.db.read() as txn:
            if name is not None:
                self.catalog.require_artifact(txn, check_artifact(name))
            return self.catalog.events(txn, name)

    def tree(self, tid: bytes) -> Tree:
        """A tree by id (immutable: cached)."""
        def load():
            data = self.objects.raw(tid)
            return Tree.decode(data, self.tree), len(data)
        return self._trees.get(tid, load)

    def file(self, fid: bytes) -> FileObj:
        """A file object by id (immutable: cached)."""
        def load():
            data = self.objects.raw(fid)
            return FileObj.decode(data), len(data)
        return self._files.get(fid, load)

    def files(self, fids: list[bytes]) -> list[FileObj]:
        """``file`` of each id; those not cached are read in one store call."""
        missing = [f for f in dict.fromkeys(fids) if self._files.peek(f) is None]
        raw = dict(zip(missing, self.objects.store.get_many(missing))) if missing else {}

        def loaded(fid):
            data = raw[fid] if fid in raw else self.objects.raw(fid)
            return FileObj.decode(data), len(data)
        return [self._files.get(fid, lambda fid=fid: loaded(fid)) for fid in fids]

    def file_nowait(self, fid: bytes) -> FileObj | None:
        """A file object if it is cached (``file`` without loading it), else None."""
        return self._files.peek(fid)

    def read(self, fobj: FileObj, offset: int, size: int) -> bytes:
        """Bytes [offset, offset+size) of a file, every chunk hash-checked (CorruptData if not);
        a reference's from its source (repo/references.py)."""
        if fobj.at_source:
            return self.references.read(fobj, offset, size)
        spans = list(fobj.span(offset, size))
        data = self.objects.store.read_file(fobj, offset, size, spans)   # store/lazy.py: read-ahead
        self._touch(cid for cid, _, _ in spans)
        return data

    def read_whole(self, fobjs: list[FileObj]) -> list[bytes | None]:
        """The bytes of each whole file, in one store read (every chunk hash-checked); None for
        a reference read from its source (repo/references.py), which this never waits for."""
        spans = [span for fobj in fobjs if not fobj.at_source for span in fobj.span(0, fobj.size)]
        data = memoryview(self.objects.store.read_ranges(spans))
        out, pos = [], 0
        for fobj in fobjs:
            if fobj.at_source:
                out.append(None)
                continue
            out.append(data[pos:pos + fobj.size])
            pos += fobj.size
        self._touch(cid for cid, _, _ in spans)
        return out

    def _touch(self, cids) -> None:
        touched = self._touched
        if len(touched) >= TOUCHED:
            touched.clear()
        touched.update(cids)

    def read_nowait(self, fobj: FileObj, offset: int, size: int) -> bytes | None:
        """``read``, or None where it might wait for a disk: for a caller on an event loop, which
        then reads in a thread. Only chunks this process read recently are read here (so the
        index pages their lookup touches were just used), and only if their bytes are in memory
        (store/lmdb_env.py resident); on a lazy store, also chunks its read-ahead fetched and
        holds in memory (store/lazy.py ``read_fetched``)."""
        if fobj.at_source:
            return self.references.read_nowait(fobj, offset, size)
        spans = list(fobj.span(offset, size))
        fetched = getattr(self.objects.store, "read_fetched", None)
        data = fetched(fobj, offset, size, spans) if fetched is not None else None
        if data is not None:
            self._touch(cid for cid, _, _ in spans)
            return data
        nowait = getattr(self.objects.store, "read_ranges_resident", None)
        if nowait is None or not all(cid in self._touched for cid, _, _ in spans):
            return None
        return nowait(spans)

    def cache_op(self, clear: bool = False):
        """The chunk cache's stats, or with ``clear`` the bytes it freed (store/cache.py)."""
        cache = self.db.objects.cache(create=False)
        if clear:
            return cache.clear() if cache is not None else 0
        return cache.stats() if cache is not None else {"chunks": 0, "bytes": 0, "limit": None, "file_bytes": 0}

    def stats(self) -> dict:
        with self.db.read() as txn:
            meta = self.db.dbs["meta"]
            return {"stored_bytes": counter(txn, meta, b"chunk_bytes"),
                    "chunks": counter(txn, meta, b"chunk_count"),
                    "file_bytes": self.db.file_bytes()}

    # writing -----------------------------------------------------------------------------------
    def put(self, name: str, path: str, *, type: str | None = None, aliases=(), message: str = "",
            metadata: dict | None = None, producer: dict | None = None, ttl=None, warn=stderr_warn,
            progress: Callable[[int], None] | None = None,
            reference: references.Options | None = None) -> tuple[VersionInfo, bool]:
        """Log PATH as the next version of NAME; returns (version, created). With ``reference``,
        PATH is a URL whose files are recorded, not stored (repo/references.py).

        When the content equals the latest version's (names, kinds, modes and bytes; mtimes are not
        content) no version is made and the latest is returned with created=False. ``producer``
        (repo/lineage.py) defaults to this process; ``ttl`` (seconds or "7d") sets its expiry.
        """
        check_artifact(name)
        aliases = [check_alias(a) for a in aliases]
        metadata = check_metadata(metadata)
        ttl = parse_duration(ttl, "--ttl") if ttl is not None else None
        producer = producer if producer is not None else this_process()

        with self.db.read() as txn:   # fail on a wrong type or a protected alias before reading input
            rec = self.catalog.artifact(txn, name)
            latest = self.catalog.aliases(txn, name).get(LATEST) if rec is not None else None
            if rec is not None:
                self.check_moves(txn, name, aliases, latest)
            reuse = reference is not None and reference.checksum and latest is not None
            base = self.catalog.version(txn, name, latest).root if reuse else None   # its references
        check_type(name, rec, type)
        with Ingest(self, warn, progress) as ingest:
            if reference is None:
                pending = ingest.scan(path)
            else:
                pending = references.scan(ingest, path, reference, references.prior_references(self, base))

            def action(txn):
                self.catalog.ensure_artifact(txn, name, type)
                root = ingest.build(txn, pending).ref
                ingest.finish(txn)
                return self.add_version(txn, name, root, ingest.files, ingest.bytes, aliases=aliases,
                                        message=message, metadata=metadata, producer=producer, ttl=ttl)
            return self.db.write(action)

    def add_version(self, txn, name: str, root: bytes, files: int, size: int, *, aliases=(),
                    message: str = "", metadata: dict | None = None, producer: dict | None = None,
                    ttl: float | None = None) -> tuple[VersionInfo, bool]:
        """Record ROOT (whose reference the caller holds) as the next version, unless unchanged.
        PRODUCER is what made it (repo/lineage.py); TTL, seconds until it expires (gc)."""
        rec = self.catalog.require_artifact(txn, name)
        latest = self.catalog.aliases(txn, name).get(LATEST)
        if latest is not None:
            current = self.catalog.version(txn, name, latest)
            if trees_equal(self.tree, current.root, root):
                self.check_moves(txn, name, aliases, latest)
                self.objects.decref_tree(txn, root)
                for alias in aliases:
                    self._set_alias(txn, name, alias, current.number)
                return self.catalog.version(txn, name, latest), False
        self.check_moves(txn, name, aliases)
        user, uid = whoami()
        now = time.time()
        v = VersionInfo(name, 0, root, rec["type"], now, message, metadata or {}, user, uid,
                        files, size, producer=producer or {},
                        expires=now + ttl if ttl is not None else None)
        self.catalog.add_version(txn, v)
        for alias in aliases:
            self._set_alias(txn, name, alias, v.number)
        return self.catalog.version(txn, name, v.number), True

    def _set_alias(self, txn, name: str, alias: str, number: int) -> None:
        old = self.catalog.aliases(txn, name).get(alias)
        if old == number:
            return
        self.catalog.set_alias(txn, name, alias, number)
        self.catalog.event(txn, "alias.move" if old is not None else "alias.set", name, alias=alias,
                           version=f"v{number}", **({"previous": f"v{old}"} if old is not None else {}))

    def check_moves(self, txn, name: str, aliases, target: int | None = None,
                    force: bool = False) -> None:
        """Conflict if one of ALIASES is protected and would move (to TARGET; None: a version
        being made) without force: a put or commit (which have no --force) never moves one."""
        current = self.catalog.aliases(txn, name)
        protected = sorted(a for a in set(aliases) & set(self.catalog.protected(txn, name))
                           if current.get(a) != target)
        if protected and not force:
            raise Conflict(f"alias {protected[0]} of {name} is protected: move it with "
                           f"'artfs alias --force {name}:REF {protected[0]}'")

    def alias(self, name: str, ref: str, alias: str, *, force: bool = False,
              protect: bool | None = None) -> VersionInfo:
        """Point ALIAS at REF; moving a protected alias needs force. protect True/False also
        (un)protects it, in the same transaction (audited as alias.protect / alias.unprotect)."""
        check_alias(alias)

        def action(txn):
            v = self.catalog.resolve(txn, check_artifact(name), ref)
            self.check_moves(txn, name, [alias], v.number, force)
            self._set_alias(txn, name, alias, v.number)
            if protect is not None and protect != (alias in self.catalog.protected(txn, name)):
                self.catalog.protect(txn, name, alias, protect)
                self.catalog.event(txn, "alias.protect" if protect else "alias.unprotect", name,
                                   alias=alias, version=v.label)
            return self.catalog.version(txn, name, v.number)
        return self.db.write(action)

    def set_access(self, name: str, *, mode: int | None = None, uid: int | None = None,
                   gid: int | None = None) -> Access:
        """chmod / chown / chgrp NAME as the caller may (catalog/access.py changed); audited."""
        caller = self.caller()

        def action(txn):
            new = changed(self.catalog.access(txn, check_artifact(name)), caller, name, mode=mode,
                          uid=uid, gid=gid)
            self.catalog.set_access(txn, name, new)
            return new
        return self.db.write(action)

    def unalias(self, name: str, alias: str, *, force: bool = False) -> None:
        check_alias(alias)

        def action(txn):
            number = self.catalog.aliases(txn, check_artifact(name)).get(alias)
            if number is None:
                raise NotFound(f"artifact {name!r} has no alias {alias!r}")
            if alias in self.catalog.protected(txn, name) and not force:
                raise Conflict(f"alias {alias} of {name} is protected: delete it with --force")
            self.catalog.drop_alias(txn, name, alias)
            self.catalog.event(txn, "alias.remove", name, alias=alias, version=f"v{number}")
        self.db.write(action)

    def delete_version(self, name: str, ref: str, *, force: bool = False, pinned=None,
                       reason: str | None = None) -> VersionInfo:
        """Delete one version and free, in the same transaction, what no other version uses
        (REASON, when given, is recorded in its audit event)."""
        def action(txn):
            v = self.catalog.resolve(txn, check_artifact(name), ref)
            staged = self._staging(name).header(txn)
            if staged is not None and staged.number == v.number:
                raise Conflict(f"staging of {name} has uncommitted changes made on {v.label}: "
                               "commit or reset it first")
            user_aliases = [a for a in v.aliases if a != LATEST]
            if user_aliases and not force:
                raise Conflict(f"{name}:{v.label} has aliases {', '.join(user_aliases)}: "
                               "move or delete them first, or use --force")
            for alias in v.aliases:
                self.catalog.drop_alias(txn, name, alias)
            self.catalog.drop_version(txn, name, v.number)
            self.objects.decref_tree(txn, v.root, pinned)
            remaining = self.catalog.versions(txn, name)
            if LATEST in v.aliases and remaining:
                self.catalog.set_alias(txn, name, LATEST, remaining[-1].number)
            self.catalog.event(txn, "version.delete", name, version=v.label, digest=v.digest,
                               aliases=v.aliases, **({"reason": reason} if reason else {}))
            return v
        return self.db.write(action)

    def delete_artifact(self, name: str, *, pinned=None) -> int:
        """Delete an artifact with all its versions, aliases and staging."""
        def action(txn):
            self.catalog.require_artifact(txn, check_artifact(name))
            versions = self.catalog.versions(txn, name)
            for alias in self.catalog.aliases(txn, name):
                self.catalog.drop_alias(txn, name, alias)
            for v in versions:
                self.catalog.drop_version(txn, name, v.number)
                self.objects.decref_tree(txn, v.root, pinned)
            self._staging(name).drop(txn)
            self.catalog.drop_artifact(txn, name)
            self.catalog.event(txn, "artifact.delete", name, versions=[v.label for v in versions])
            return len(versions)
        count = self.db.write(action)
        shutil.rmtree(staging_dir(self.path, name), ignore_errors=True)
        return count

    def _staging(self, name: str) -> StagingIndex:
        return StagingIndex(self.db.dbs, name)

    def release_zombie(self, fid: bytes) -> None:
        self.db.write(lambda txn: self.objects.release_zombie(txn, fid))

    def collect_abandoned(self) -> int:
        """Release the references of ingests whose process died, and remove the lock files dead
        owners left; returns how many sessions held references."""
        remove_dead_locks(self.path)
        with self.db.read() as txn:
            if not self.sessions.abandoned(txn):
                return 0

        def action(txn):
            tokens = self.sessions.abandoned(txn)
            for token in tokens:
                self.sessions.release(txn, token)
            return tokens
        tokens = self.db.write(action)
        for token in tokens:
            self.sessions.forget(token)
        return len(tokens)

    def recover(self) -> None:
        """At mount start: free zombies (nothing is open yet), abandoned ingests, the trash, and
        adopted segment files a killed process left (store/local.py ``sweep``)."""
        def action(txn):
            for fid in self.objects.zombies(txn):
                self.objects.release_zombie(txn, fid)
        self.db.write(action)
        self.collect_abandoned()
        self.db.purge()
        self.objects.store.sweep()

    def compact(self) -> tuple[int, int]:
        """Give free space back to the filesystem (catalog/db.py Database.compact)."""
        self.collect_abandoned()
        return self.db.compact()

    def file_exists(self, fid: bytes) -> bool:
        """Whether file object ``fid`` is stored now (referenced, or parked as a zombie): a fresh
        read, never the cache, so the mount can refuse an open that comes after a delete."""
        return self.files_exist([fid])[0]

    def files_exist(self, fids: list[bytes]) -> list[bool]:
        """``file_exists`` of each id, in one fresh read."""
        with self.db.read() as txn:
            zombies = self.db.dbs["zombies"]
            return [self.objects.refcount(txn, fid) > 0 or txn.get(fid, db=zombies) is not None
                    for fid in fids]


def check_metadata(metadata) -> dict:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidInput("metadata must be a JSON object")
    return metadata
