"""The store directory and its LMDB environment.

Layout of a store directory (created private, 0700):

    ARTFS-STORE        marker: {"format": 1}; a directory without it is not an artfs store
    db/                the LMDB environment (data.mdb, lock.mdb), files 0600
    staging/           data files of modified staging files (see staging.py)

One environment holds every named database, so a user action is one write transaction.
Transactions are short: ``read()`` and ``write(fn)`` open, use and close them on the calling
thread; nothing keeps a transaction across requests.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from collections.abc import Callable
from contextlib import contextmanager
from typing import TypeVar

import lmdb

from ..errors import NoSpace, StoreError

FORMAT = 1
MARKER = "ARTFS-STORE"
DATABASES = (
    b"blobs",      # id -> immutable object bytes (chunks, file chunk lists, trees)
    b"refs",       # id -> u64 reference count
    b"zombies",    # file id -> b"" : unreferenced but held open by a mount; freed on last close
    b"sessions",   # ingest in progress -> the chunk references it holds (catalog/sessions.py)
    b"meta",       # counters: chunk bytes/count, generation, event sequence
    b"artifacts",  # name -> json record
    b"versions",   # name \0 u32 number -> json record
    b"aliases",    # name \0 alias -> u32 number
    b"events",     # u64 seq -> json audit record
    b"staging",    # staging index (see catalog/staging_index.py)
)
INITIAL_MAP = 1 << 36  # 64 GiB of address space; the file grows only as pages are used

T = TypeVar("T")


def default_store_path() -> str:
    env = os.environ.get("ARTFS_STORE")
    if env:
        return env
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "artfs")


def _prepare_dir(path: str) -> None:
    """Create the store on first use, or check it is one this artfs can read.

    Processes creating the same store at once take turns on an flock of the directory, so none
    sees another's half-made store as "not an artfs store".
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise StoreError(f"{path} is not a directory")
    os.makedirs(path, mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _check_or_mark(path)
    finally:
        os.close(fd)


def _check_or_mark(path: str) -> None:
    marker = os.path.join(path, MARKER)
    if not os.path.exists(marker):
        if os.listdir(path):
            raise StoreError(f"{path} is not an artfs store (no {MARKER} marker) and is not empty")
        os.chmod(path, 0o700)
        tmp = marker + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"format": FORMAT}, f)
        os.chmod(tmp, 0o600)
        os.replace(tmp, marker)
        return
    try:
        with open(marker) as f:
            fmt = json.load(f)["format"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StoreError(f"{path}: unreadable store marker {MARKER}: {e}") from None
    if not isinstance(fmt, int) or fmt > FORMAT:
        raise StoreError(f"{path} has store format {fmt}; this artfs reads format {FORMAT}: upgrade artfs")


class Database:
    """An open store: the LMDB environment and its named databases."""

    def __init__(self, path: str | None = None, *, readonly: bool = False):
        self.path = os.path.abspath(path or default_store_path())
        try:
            _prepare_dir(self.path)
            os.makedirs(os.path.join(self.path, "db"), mode=0o700, exist_ok=True)
            os.makedirs(os.path.join(self.path, "staging"), mode=0o700, exist_ok=True)
            self.env = lmdb.open(
                os.path.join(self.path, "db"),
                map_size=INITIAL_MAP,
                max_dbs=len(DATABASES) + 1,
                mode=0o600,
                max_readers=1024,
                readonly=readonly,
            )
        except OSError as e:
            raise _os_error(self.path, e) from None
        except lmdb.Error as e:
            raise StoreError(f"{self.path}: cannot open the store database: {e}") from None
        self.dbs = {name.decode(): self.env.open_db(name) for name in DATABASES}

    def close(self) -> None:
        self.env.close()

    @contextmanager
    def read(self):
        """A short read-only transaction whose values are zero-copy buffers."""
        with self.env.begin(buffers=True) as txn:
            yield txn

    def write(self, fn: Callable[[object], T]) -> T:
        """Run ``fn(txn)`` in one write transaction; commit on return, abort on exception.

        The map grows transparently when full (the whole action is re-run in a fresh transaction),
        and a full disk becomes NoSpace with nothing written. LMDB reuses the pages a transaction
        freed only two transactions later (the previous snapshot must stay intact), so on a full
        disk right after a delete one empty transaction is committed and the action tried again.
        """
        settled = False
        while True:
            try:
                with self.env.begin(write=True, buffers=True) as txn:
                    result = fn(txn)
                    bump(txn, self.dbs["meta"], b"generation", 1)
                return result
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)
            except lmdb.Error as e:
                error = self._write_error(e)
                if settled or not isinstance(error, NoSpace):
                    raise error from None
                settled = True
                try:
                    with self.env.begin(write=True) as txn:
                        bump(txn, self.dbs["meta"], b"generation", 1)
                except lmdb.Error:
                    raise error from None

    def _write_error(self, e: Exception) -> Exception:
        """LMDB reports a short write on a full disk as EIO; tell the two apart by free space."""
        st = os.statvfs(self.path)
        free = st.f_bavail * st.f_frsize
        if "No space left" in str(e) or free < max(64 << 20, st.f_blocks * st.f_frsize // 100):
            return NoSpace(f"{self.path}: no space left on the store's filesystem "
                           f"({free >> 20} MiB free); nothing was written")
        return StoreError(f"{self.path}: the store database failed: {e}; nothing was written")

    def generation(self) -> int:
        """A number that changes with every committed write transaction (any process)."""
        with self.env.begin() as txn:
            return counter(txn, self.dbs["meta"], b"generation")

    def sync(self) -> None:
        self.env.sync(True)


def counter(txn, db, key: bytes) -> int:
    raw = txn.get(key, db=db)
    return int.from_bytes(raw, "big") if raw is not None else 0


def bump(txn, db, key: bytes, delta: int) -> int:
    value = counter(txn, db, key) + delta
    txn.put(key, value.to_bytes(8, "big"), db=db)
    return value



def _os_error(path: str, e: OSError):
    if e.errno == errno.ENOSPC:
        return NoSpace(f"{path}: no space left on device")
    return StoreError(f"{path}: {e.strerror or e}")
