"""The store directory: its marker, its lock, the catalog's LMDB environment and the object store.

Layout of a store directory (created private, 0700):

    ARTFS-STORE        marker: {"format": 2, "data": "data.N"}; an encrypted store is format 3
                       (format 2 with sealed objects: an artfs that reads only format 2 refuses
                       it instead of writing plaintext into it); without it, not a store
    ARTFS-KEY          an encrypted store's master key, wrapped (crypto/keyfile.py)
    store.lock         flock: shared by every process using the store, exclusive to compact/migrate
    data.N/catalog/    the catalog's LMDB environment (this module's named databases), files 0600
    data.N/objects/    the local object store (store/local.py), its own LMDB environment
    sessions/          one lock file per ingest in progress (catalog/sessions.py)
    staging/           data files of modified staging files (staging/overlay.py)

``artfs compact`` writes compacted copies into ``data.N+1/`` and then atomically replaces the
marker, so a crash at any instant leaves the old store or the new one, never neither. A format-1
store (one environment in ``db/``) is migrated the same way when first opened (catalog/migrate.py).

One process opens a store once: every ``Database.open`` of the same path in a process shares the
environments (LMDB refuses a second one), and a forked child opens its own.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import TypeVar

from ..errors import Conflict, NoSpace, StoreError
from ..store.lmdb_env import Env, fsync_path, os_error, replace_json
from ..store.local import LocalObjectStore
from ..store.ids import object_id

FORMAT = 2
SEALED_FORMAT = 3   # FORMAT with every object sealed (crypto/, store/sealed.py)
MARKER = "ARTFS-STORE"
LOCK = "store.lock"
DATABASES = (
    b"refs",       # id -> u64 reference count, u32 size (catalog/objects.py)
    b"trash",      # id -> b"": unreferenced, to be deleted from the object store by the next purge
    b"zombies",    # file id -> b"" : unreferenced but held open by a mount; freed on last close
    b"sessions",   # ingest in progress -> the chunk references it holds (catalog/sessions.py)
    b"meta",       # counters: chunk bytes/count, generation, event sequence
    b"artifacts",  # name -> json record
    b"versions",   # name \0 u32 number -> json record
    b"aliases",    # name \0 alias -> u32 number
    b"events",     # u64 seq -> json audit record
    b"staging",    # staging index (see catalog/staging_index.py)
    b"uses",       # name \0 u32 number \0 u64 seq -> json consumer record (catalog/uses.py)
)
INITIAL_MAP = 1 << 36  # 64 GiB of address space; the file grows only as pages are used
PURGE_BATCH = 10_000   # trashed ids deleted per transaction
_DATA = re.compile(r"data\.(\d+)")

T = TypeVar("T")


def default_store_path() -> str:
    env = os.environ.get("ARTFS_STORE")
    if env:
        return env
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "artfs")


def _prepare_dir(path: str, create: bool = True, encrypt: Callable[[str], None] | None = None) -> None:
    """Create the store on first use (unless CREATE is false: then a path without a store is
    StoreError and nothing is made), or check it is one this artfs can read.

    Processes creating the same store at once take turns on an flock of the directory, so none
    sees another's half-made store as "not an artfs store" (or as no store). A new store is
    encrypted when ENCRYPT is given: it writes the key (ARTFS-KEY) before the marker says so.
    """
    missing = StoreError(f"no artfs store at {path}: run artfs init or put to create one")
    if os.path.exists(path) and not os.path.isdir(path):
        raise StoreError(f"{path} is not a directory")
    if not create and not os.path.isdir(path):
        raise missing
    os.makedirs(path, mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not os.path.exists(os.path.join(path, MARKER)):
            if os.listdir(path):
                raise StoreError(f"{path} is not an artfs store (no {MARKER} marker) and is not empty")
            if not create:
                raise missing
            os.chmod(path, 0o700)
            if encrypt is not None:
                encrypt(path)
            write_marker(path, {"format": SEALED_FORMAT if encrypt else FORMAT, "data": "data.0"})
    finally:
        os.close(fd)


def read_marker(path: str) -> dict:
    try:
        with open(os.path.join(path, MARKER)) as f:
            marker = json.load(f)
        fmt = marker["format"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StoreError(f"{path}: unreadable store marker {MARKER}: {e}") from None
    if not isinstance(fmt, int) or fmt > SEALED_FORMAT:
        raise StoreError(f"{path} has store format {fmt}; this artfs reads formats up to "
                         f"{SEALED_FORMAT}: upgrade artfs")
    if fmt >= FORMAT and not _DATA.fullmatch(str(marker.get("data"))):
        raise StoreError(f"{path}: store marker {MARKER} names no data directory")
    return marker


def encrypted(marker: dict) -> bool:
    return marker["format"] == SEALED_FORMAT


def write_marker(path: str, marker: dict) -> None:
    """Replace the marker atomically and durably: the switch between two data directories."""
    replace_json(path, MARKER, marker)


def flock_held(path: str) -> bool:
    """Whether a live process holds an exclusive flock on ``path`` (the kernel drops it when its
    holder dies, in any PID namespace). A missing file is held by nobody."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def lock_holders(path: str) -> list[int]:
    """PIDs (as this process sees them) holding an flock on ``path``, from /proc/locks."""
    try:
        st = os.stat(path)
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = set()
    for line in lines:
        fields = line.split()
        if "FLOCK" in fields and ident in fields:
            pid = fields[fields.index(ident) - 1]
            if pid.isdigit() and int(pid) != os.getpid():
                pids.add(int(pid))
    return sorted(pids)


def _describe(pids: list[int]) -> str:
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = " ".join(f.read().replace(b"\0", b" ").decode(errors="replace").split())
        except OSError:
            cmd = "?"
        out.append(f"pid {pid} ({cmd[:80]})")
    return ", ".join(out) or "a process in another namespace"


_registry: dict[str, "Database"] = {}
_registry_lock = threading.RLock()   # re-entrant: a finalizer may close a Store while one opens


def _after_fork() -> None:
    """A forked child keeps sharing its parent's Database objects; each environment reopens
    itself on first use in the child (store/lmdb_env.py). Only the registry's lock is new."""
    global _registry_lock
    _registry_lock = threading.RLock()


os.register_at_fork(after_in_child=_after_fork)


class Database:
    """An open store: the catalog environment, its named databases, and the object store."""

    @classmethod
    def open(cls, path: str | None = None, *, hasher=None, create: bool = True, encrypt=None) -> "Database":
        """The store at PATH, created on first use unless CREATE is false: then a path without a
        store is StoreError and nothing is made there. ENCRYPT (see _prepare_dir) makes a new
        store an encrypted one."""
        path = os.path.abspath(path or default_store_path())
        with _registry_lock:
            db = _registry.get(path)
            if db is None or hasher is not None:
                db = cls(path, hasher=hasher or object_id, create=create, encrypt=encrypt)
                if hasher is None:
                    _registry[path] = db
            db._users += 1
            return db

    def __init__(self, path: str, *, hasher=object_id, create: bool = True, encrypt=None):
        self.path = path
        self._users = 0
        self._lockfd = None
        try:
            _prepare_dir(path, create, encrypt)
            for sub in ("staging", "sessions"):
                os.makedirs(os.path.join(path, sub), mode=0o700, exist_ok=True)
            self._lockfd = os.open(os.path.join(path, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._lockfd, fcntl.LOCK_SH)
            marker = read_marker(path)
            if marker["format"] < FORMAT:
                marker = self._migrate()
            self.data = marker["data"]
            self._clean_stale()
            master = _master_key(path) if encrypted(marker) else None   # BadKey: nothing opened
            self.catalog_env = Env(self._dir("catalog"), DATABASES, initial_map=INITIAL_MAP)
            self.objects = (LocalObjectStore(self._dir("objects"), hasher, segments=True) if master is None
                            else _sealed(self._dir("objects"), master))
        except OSError as e:
            self._unlock()
            raise os_error(path, e) from None
        except BaseException:
            self._unlock()
            raise
        self.dbs = self.catalog_env.dbs
        self.pending: dict[bytes, object] = {}   # objects the running write created (catalog/objects.py)

    def _dir(self, name: str, data: str | None = None) -> str:
        top = os.path.join(self.path, data or self.data)
        os.makedirs(top, mode=0o700, exist_ok=True)
        os.makedirs(os.path.join(top, name), mode=0o700, exist_ok=True)
        return os.path.join(top, name)

    def _unlock(self) -> None:
        if self._lockfd is not None:
            os.close(self._lockfd)
            self._lockfd = None

    def close(self) -> None:
        with _registry_lock:
            self._users -= 1
            if self._users > 0:
                return
            if _registry.get(self.path) is self:
                del _registry[self.path]
        self.objects.close()
        self.catalog_env.close()
        self._unlock()

    # transactions ------------------------------------------------------------------------------
    def read(self):
        """A short read-only transaction of the catalog (values are views valid inside it)."""
        return self.catalog_env.read()

    def read_batches(self):
        """A long catalog scan in bounded transactions (store/lmdb_env.py Batches)."""
        return self.catalog_env.read_batches()

    def _touch(self, txn) -> None:
        bump(txn, self.dbs["meta"], b"generation", 1)

    def write(self, fn: Callable[[object], T]) -> T:
        """Run ``fn(txn)`` as one catalog write transaction (see store/lmdb_env.py Env.write).

        File and tree objects the action created (``pending``, catalog/objects.py) are put into
        the object store before the transaction commits; what it left unreferenced (``trash``) is
        deleted from the object store by a following transaction (``purge``).
        """
        def action(txn):   # runs under the catalog's write gate: one writer of this process
            self.pending.clear()
            result = fn(txn)
            self.objects.put_many(list(self.pending.values()))
            self.pending.clear()
            return result, txn.stat(self.dbs["trash"])["entries"] > 0
        result, trashed = self.catalog_env.write(action, self._touch)
        if trashed:
            self.purge()
        return result

    def purge(self) -> None:
        """Delete from the object store every trashed object that is still unreferenced."""
        trash, refs = self.dbs["trash"], self.dbs["refs"]

        def action(txn):
            with txn.cursor(db=trash) as cur:
                ids = [bytes(k) for k, _ in zip(cur.iternext(keys=True, values=False), range(PURGE_BATCH))]
            self.objects.delete([oid for oid in ids if txn.get(oid, db=refs) is None])
            for oid in ids:
                txn.delete(oid, db=trash)
            return len(ids) == PURGE_BATCH
        while self.catalog_env.write(action, self._touch):
            pass

    def sweep(self) -> int:
        """Delete objects nothing references, parks or trashes: what a write killed between
        putting its objects and committing left behind. Only safe while no write can run
        (compaction holds the store alone); returns how many were deleted."""
        refs, zombies = self.dbs["refs"], self.dbs["zombies"]
        orphans = []
        with self.read_batches() as batch:
            for oid in self.objects.ids():
                batch.step()
                if batch.txn.get(oid, db=refs) is None and batch.txn.get(oid, db=zombies) is None:
                    orphans.append(oid)
        for i in range(0, len(orphans), PURGE_BATCH):
            self.objects.delete(orphans[i:i + PURGE_BATCH])
        return len(orphans)

    def generation(self) -> int:
        """A number that changes with every committed write transaction (any process)."""
        with self.read() as txn:
            return counter(txn, self.dbs["meta"], b"generation")

    def file_bytes(self) -> int:
        """Bytes the store's databases take on disk."""
        return self.catalog_env.file_bytes() + self.objects.env.file_bytes()

    # exclusive work: migration, compaction -----------------------------------------------------
    def _exclusive(self, wait: bool) -> None:
        """Turn this process's shared store lock exclusive; Conflict naming the other users."""
        try:
            fcntl.flock(self._lockfd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            others = lock_holders(os.path.join(self.path, LOCK))
            fcntl.flock(self._lockfd, fcntl.LOCK_SH)   # the failed conversion dropped it
            raise Conflict(f"the store {self.path} is in use by {_describe(others)}: let it finish "
                           "or stop it, then try again") from None

    def _shared(self) -> None:
        fcntl.flock(self._lockfd, fcntl.LOCK_SH)

    def _migrate(self) -> dict:
        from .migrate import migrate_format1
        if flock_held(os.path.join(self.path, "daemon.lock")):   # mount/daemon.py LOCK
            raise Conflict(f"{self.path} is a format-1 store that an older artfs still has mounted: "
                           "unmount it with that artfs, then open it with this one to upgrade it")
        self._exclusive(wait=True)
        try:
            marker = read_marker(self.path)
            if marker["format"] < FORMAT:
                marker = {"format": FORMAT, "data": "data.0"}
                migrate_format1(self.path, os.path.join(self.path, marker["data"]))
                write_marker(self.path, marker)
            return marker
        finally:
            self._shared()

    def _clean_stale(self) -> None:
        """Remove data directories a compaction or migration left behind (only when alone)."""
        stale = [n for n in os.listdir(self.path) if (_DATA.fullmatch(n) and n != self.data) or n == "db"]
        if not stale:
            return
        try:
            fcntl.flock(self._lockfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._shared()   # the failed conversion dropped it
            return           # another process uses the store: a later open cleans up
        try:
            for name in stale:
                shutil.rmtree(os.path.join(self.path, name), ignore_errors=True)
        finally:
            self._shared()

    def compact(self) -> tuple[int, int]:
        """Rewrite both databases without free pages; returns (bytes before, bytes after).

        Needs the store to itself in this process's hands (other processes: Conflict naming
        them). Writes of this process wait meanwhile; reads go on, and pause only for the switch.
        Trashed and orphaned objects are deleted first, so the copy holds only what is live.
        """
        self._exclusive(wait=False)
        try:
            cat, obj = self.catalog_env, self.objects.env
            with cat.gate, obj.gate:
                old = self.file_bytes()
                self.purge()
                self.sweep()
                number = int(_DATA.fullmatch(self.data).group(1)) + 1
                new = f"data.{number}"
                shutil.rmtree(os.path.join(self.path, new), ignore_errors=True)
                try:
                    cat.copy_compact(self._dir("catalog", new))
                    obj.copy_compact(self._dir("objects", new))
                    fsync_path(os.path.join(self.path, new))
                except (OSError, NoSpace, StoreError) as e:
                    shutil.rmtree(os.path.join(self.path, new), ignore_errors=True)
                    if isinstance(e, OSError):
                        raise os_error(self.path, e) from None
                    raise
                write_marker(self.path, {**read_marker(self.path), "data": new})
                previous = self.data
                self._switch(new)
                shutil.rmtree(os.path.join(self.path, previous), ignore_errors=True)
                return old, self.file_bytes()
        finally:
            self._shared()

    def _switch(self, data: str) -> None:
        """Use the environments of data directory ``data``; the caller holds both write gates."""
        self.data = data
        self.catalog_env.reopen(self._dir("catalog"))
        self.objects.env.reopen(self._dir("objects"))

    @contextmanager
    def stepping_aside(self):
        """Let another process (the daemon compacting) have the store to itself meanwhile: this
        process's writes wait, its store lock is let go, and afterwards it follows a switch to a
        new data directory. Reads of this process go on in the old, still mapped files."""
        cat, obj = self.catalog_env, self.objects.env
        with cat.gate, obj.gate:
            fcntl.flock(self._lockfd, fcntl.LOCK_UN)
            try:
                yield
            finally:
                self._shared()
                data = read_marker(self.path)["data"]
                if data != self.data:
                    self._switch(data)


def _master_key(path: str) -> bytes:
    from ..crypto.keyring import master_key   # cryptography is imported for encrypted stores only
    return master_key(path)


def _sealed(path: str, master: bytes):
    from ..store.sealed import SealedObjectStore
    return SealedObjectStore.local(path, master)   # LMDB values: opened in place (store/sealed.py)


def counter(txn, db, key: bytes) -> int:
    raw = txn.get(key, db=db)
    return int.from_bytes(raw, "big") if raw is not None else 0


def bump(txn, db, key: bytes, delta: int) -> int:
    value = counter(txn, db, key) + delta
    txn.put(key, value.to_bytes(8, "big"), db=db)
    return value


def prefix_items(txn, db, prefix: bytes):
    """(key without PREFIX, value) of every key of DB that starts with PREFIX, in key order."""
    with txn.cursor(db=db) as cur:
        if not cur.set_range(prefix):
            return
        for key, value in cur:
            key = bytes(key)
            if not key.startswith(prefix):
                return
            yield key[len(prefix):], value
