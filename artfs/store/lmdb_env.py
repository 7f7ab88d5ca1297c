"""One LMDB environment, safe to use from many threads while its map grows.

LMDB maps the whole database file; a value read in a transaction is a view into that map. Growing
the map (``set_mapsize``) re-maps it, so no transaction of this process may be alive then, or a
thread still hashing a view reads unmapped memory (segfault). Every transaction here therefore
holds a shared *map lock*; growing takes it exclusively. Two ways the map needs to grow:

- this process fills it (MapFullError in a write): the action is aborted, the map doubled, the
  action re-run in a fresh transaction;
- another process grew it (MapResizedError when a transaction begins): the map is re-read from the
  file (``set_mapsize(0)``) and the transaction begun again.

The initial map is large (address space only: the file grows as pages are used), so growth is
rare; ``ARTFS_MAP_SIZE`` (bytes) overrides it, for tests that force growth with a tiny map.

Every write transaction needs free pages (LMDB copies on write), even one that deletes. So that
deleting still works when the filesystem is full, the data file is kept allocated (fallocate)
RESERVE bytes past its last used page: a full disk can always take a release, a purge, a delete.

Transactions are short: ``read()`` opens one for a ``with`` block; long scans use
``read_batches()``, which renews its transaction every few thousand steps so a long verify or du
never pins old pages (a long reader stops LMDB from reusing freed pages). Reader slots of killed
processes are cleared (``reader_check``) when the environment opens and every few hundred writes.
"""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import lmdb

from ..errors import NoSpace, StoreError

T = TypeVar("T")
MAP_SIZE_ENV = "ARTFS_MAP_SIZE"
MIN_MAP = 1 << 20
READER_CHECK_EVERY = 256     # writes between clearing stale reader slots
RESERVE = 4 << 20            # bytes allocated past the used pages, for writes on a full disk
BATCH_STEPS = 4096           # steps of a batched read between two transactions


def map_size(default: int) -> int:
    raw = os.environ.get(MAP_SIZE_ENV)
    if not raw:
        return default
    try:
        size = int(raw)
    except ValueError:
        raise StoreError(f"{MAP_SIZE_ENV}={raw!r} is not a number of bytes") from None
    return max(size, MIN_MAP)


class MapLock:
    """Shared for transactions, exclusive for re-mapping (``alone`` for a write's abort: see
    ``Env._abort_write``); re-entrant for a thread's shared holds (a thread may open a transaction
    while it holds another), writer-preferring otherwise."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._shared = 0
        self._exclusive = False
        self._waiting = 0
        self._mine = threading.local()

    def held(self) -> int:
        return getattr(self._mine, "n", 0)

    def acquire_shared(self) -> None:
        held = self.held()
        with self._cond:
            while self._exclusive or (self._waiting and not held):
                self._cond.wait()
            self._shared += 1
        self._mine.n = held + 1

    def release_shared(self) -> None:
        self._mine.n = self.held() - 1
        with self._cond:
            self._shared -= 1
            if self._waiting:   # a re-map (or a writer's abort) waits for the holds to end
                self._cond.notify_all()

    @contextmanager
    def exclusive(self):
        if self.held():
            raise StoreError("the store's map must be re-mapped while this thread holds a "
                             "transaction; try again")
        with self._only(0):
            yield

    @contextmanager
    def alone(self):
        """Exclusive but for the calling thread's own shared holds, which it keeps: every other
        thread's transactions have ended and new ones wait. Only a writer (one at a time: it
        holds ``Env.gate``) takes it, and no thread waits for ``gate`` while it holds a
        transaction, so the holders it waits for never wait for it."""
        with self._only(self.held()):
            yield

    @contextmanager
    def _only(self, mine: int):
        with self._cond:
            self._waiting += 1
            while self._exclusive or self._shared > mine:
                self._cond.wait()
            self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class Env:
    """An LMDB environment with named databases, map growth and short transactions."""

    def __init__(self, path: str, names: tuple[bytes, ...], *, initial_map: int):
        self._names, self._initial = names, initial_map
        self._writes = 0
        self.dbs: dict[str, object] = {}   # one dict for the Env's life: holders see reopens
        self.attached: list = []   # files beside the environment its records point into
                                   # (store/segments.py): copied with it, counted in its size
        self._open(path)

    def _open(self, path: str) -> None:
        self.path = path
        self._pid = os.getpid()
        self.lock = MapLock()
        self.gate = threading.RLock()   # one writer of this process at a time; compaction holds it
        size = map_size(self._initial)
        while True:
            try:
                self.env = lmdb.open(path, map_size=size, max_dbs=len(self._names) + 1, mode=0o600,
                                     max_readers=1024, subdir=True)
                break
            except lmdb.MemoryError:   # address space limited (ulimit -v): take less
                if size <= MIN_MAP:
                    raise
                size //= 2
        self.dbs.clear()
        while True:
            try:
                self.dbs.update({name.decode(): self.env.open_db(name) for name in self._names})
                break
            except lmdb.MapResizedError:   # another process grew the map since it was opened
                self.env.set_mapsize(0)
        self._page = self.env.stat()["psize"]
        self.env.reader_check()

    def reopen(self, path: str) -> None:
        """Switch to the environment at ``path`` (a compacted copy); the caller holds ``gate``."""
        with self.lock.exclusive():
            self.env.close()
            self._open(path)

    def close(self) -> None:
        self.env.close()

    def _forked(self) -> None:
        """In a forked child, reopen: the parent's environment must not be used (and py-lmdb
        refuses a second open of it until the inherited one is closed)."""
        if self._pid != os.getpid():
            self.env.close()
            self._open(self.path)

    def _begin(self, write: bool):
        """A transaction, holding the map lock shared (``_end`` releases both)."""
        self._forked()
        while True:
            self.lock.acquire_shared()
            try:
                return self.env.begin(write=write, buffers=True)
            except lmdb.MapResizedError:
                self.lock.release_shared()
            except BaseException:
                self.lock.release_shared()
                raise
            with self.lock.exclusive():
                self.env.set_mapsize(0)   # adopt the size another process grew the map to

    def _end(self, txn, commit: bool, write: bool = False) -> None:
        try:
            if commit:
                txn.commit()
            elif write:
                self._abort_write(txn)
            else:
                txn.abort()
        finally:
            self.lock.release_shared()

    def _abort_write(self, txn) -> None:
        """Abort a write transaction with no other thread in one. py-lmdb (3.x) aborts a write
        only at an instant when no LMDB call of any thread is in flight on the environment;
        reader threads that keep one in flight nearly all the time starved it without end (a
        hang, tests/test_store_env.py). Holding the map lock ``alone`` ends that: the other
        threads' transactions end and new ones wait, so the calls it waits for are finite."""
        with self.lock.alone():
            txn.abort()

    @contextmanager
    def read(self):
        """A short read-only transaction whose values are zero-copy views, valid inside it."""
        txn = self._begin(False)
        try:
            yield txn
        finally:
            self._end(txn, False)

    def read_batches(self, steps: int = BATCH_STEPS) -> "Batches":
        return Batches(self, steps)

    def write(self, fn: Callable[[object], T], touch: Callable[[object], None]) -> T:
        """Run ``fn(txn)`` in one write transaction; commit on return, abort on exception.

        A full map is grown and the action re-run from the start in a fresh transaction. A full
        disk becomes NoSpace with nothing written; since LMDB reuses pages a transaction freed only
        two transactions later, after a delete on a full disk one empty transaction is committed
        and the action tried once more. ``touch(txn)`` makes one small write that every committed
        transaction carries (a generation counter), so even an empty action commits.
        """
        self._forked()
        with self.gate:
            return self._write(fn, touch)

    def _write(self, fn, touch):
        settled = False
        self._writes += 1
        if self._writes % READER_CHECK_EVERY == 0:
            self.env.reader_check()
        while True:
            grow = False
            try:
                txn = self._begin(True)
                committed = False
                try:
                    result = fn(txn)
                    touch(txn)
                    committed = True
                finally:
                    self._end(txn, committed, write=True)
                self._keep_reserve()
                return result
            except lmdb.MapFullError:
                grow = True
            except lmdb.Error as e:
                error = self._write_error(e)
                if settled or not isinstance(error, NoSpace):
                    raise error from None
                settled = True
                try:
                    txn = self._begin(True)
                    try:
                        touch(txn)
                    finally:
                        self._end(txn, True)
                except lmdb.Error:
                    raise error from None
            if grow:
                self.grow()

    def release_map(self) -> None:
        """Drop this process's mapped pages of the environment: they stay in the kernel's page
        cache, and a later read maps them again (madvise MADV_DONTNEED, holding a read
        transaction so the map cannot move meanwhile)."""
        data = os.path.realpath(os.path.join(self.path, "data.mdb"))
        with self.read():
            for start, end in _mappings(data):
                _libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), mmap.MADV_DONTNEED)

    def _keep_reserve(self) -> None:
        used = (self.env.info()["last_pgno"] + 1) * self._page
        data = os.path.join(self.path, "data.mdb")
        try:
            size = os.path.getsize(data)
            if size - used >= RESERVE // 2:
                return
            fd = os.open(data, os.O_RDWR | os.O_CLOEXEC)
            try:
                os.posix_fallocate(fd, size, used + RESERVE - size)
            finally:
                os.close(fd)
        except OSError:
            pass   # a full disk: keep what is allocated; the write itself succeeded

    def map_size(self) -> int:
        return self.env.info()["map_size"]

    def grow(self) -> None:
        with self.lock.exclusive():
            self.env.set_mapsize(self.env.info()["map_size"] * 2)

    def _write_error(self, e: Exception) -> Exception:
        """LMDB reports a short write on a full disk as EIO; tell the two apart by free space."""
        st = os.statvfs(self.path)
        free = st.f_bavail * st.f_frsize
        if "No space left" in str(e) or free < max(64 << 20, st.f_blocks * st.f_frsize // 100):
            return NoSpace(f"{self.path}: no space left on the store's filesystem "
                           f"({free >> 20} MiB free); nothing was written")
        return StoreError(f"{self.path}: the store database failed: {e}; nothing was written")

    def copy_compact(self, dest: str) -> None:
        """Write a compacted copy of the environment into the empty directory ``dest``, durably.
        Readers go on meanwhile; the caller holds ``gate`` so no write of this process is lost."""
        try:
            self.env.copy(dest, compact=True)
        except lmdb.Error as e:
            raise self._write_error(e) from None
        for files in self.attached:
            files.link_into(dest)
        fsync_path(os.path.join(dest, "data.mdb"))
        fsync_path(dest)

    def file_bytes(self) -> int:
        try:
            size = os.path.getsize(os.path.join(self.path, "data.mdb"))
        except OSError:
            size = 0
        return size + sum(files.file_bytes() for files in self.attached)


class Batches:
    """A read that renews its transaction every ``steps`` steps: ``txn`` is valid until the next
    ``step()``; values must be copied out before it."""

    def __init__(self, env: Env, steps: int):
        self.env, self.steps, self._n = env, steps, 0
        self._cm = None
        self.txn = None

    def __enter__(self):
        self._open()
        return self

    def __exit__(self, *exc):
        self._close()

    def _open(self):
        self._cm = self.env.read()
        self.txn = self._cm.__enter__()

    def _close(self):
        if self._cm is not None:
            cm, self._cm, self.txn = self._cm, None, None
            cm.__exit__(None, None, None)

    def step(self) -> None:
        self._n += 1
        if self._n % self.steps == 0:
            self._close()
            self._open()

    def cursor_items(self, db, values: bool = True) -> Iterator[tuple[bytes, bytes | None]]:
        """(key, value) copies of every record of ``db`` (value None unless ``values``), in a new
        transaction every ``steps`` records."""
        last = None
        while True:
            batch = []
            with self.txn.cursor(db=db) as cur:
                found = cur.first() if last is None else cur.set_range(last)
                if found and last is not None and bytes(cur.key()) == last:
                    found = cur.next()
                while found and len(batch) < self.steps:
                    batch.append((bytes(cur.key()), bytes(cur.value()) if values else None))
                    found = cur.next()
            yield from batch
            if not found:
                return
            last = batch[-1][0]
            self._close()
            self._open()


class _Buffer(ctypes.Structure):   # CPython's Py_buffer, for a view's address
    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.py_object), ("len", ctypes.c_ssize_t),
                ("itemsize", ctypes.c_ssize_t), ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p), ("strides", ctypes.c_void_p),
                ("suboffsets", ctypes.c_void_p), ("internal", ctypes.c_void_p)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p)
_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = (ctypes.py_object, ctypes.POINTER(_Buffer), ctypes.c_int)
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = (ctypes.POINTER(_Buffer),)
_PAGE = mmap.PAGESIZE


def _mappings(path: str) -> list[tuple[int, int]]:
    """(start, end) of each mapping of file PATH in this process (/proc/self/maps)."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            if line.rstrip("\n").endswith(" " + path):
                start, end = line.split(None, 1)[0].split("-")
                out.append((int(start, 16), int(end, 16)))
    return out


def resident(view) -> bool:
    """Whether every page of ``view`` (a value read from a mapped environment) is in memory, so
    reading it cannot wait for a disk (mincore(2); a page may still be evicted right after)."""
    info = _Buffer()
    _get_buffer(view, ctypes.byref(info), 0)
    try:
        start = info.buf - info.buf % _PAGE
        length = info.buf + info.len - start
        pages = (length + _PAGE - 1) // _PAGE
        vec = ctypes.create_string_buffer(pages)
        if _libc.mincore(start, length, vec) != 0:
            return False
        return all(b & 1 for b in vec.raw)
    finally:
        _release_buffer(ctypes.byref(info))


def fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_json(directory: str, name: str, value, indent: int | None = None) -> None:
    """Replace DIRECTORY/NAME (0600) with VALUE as JSON, atomically and durably."""
    tmp = os.path.join(directory, name + ".tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "w") as f:
        json.dump(value, f, indent=indent)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(directory, name))
    fsync_path(directory)


def os_error(path: str, e: OSError):
    if e.errno == errno.ENOSPC:
        return NoSpace(f"{path}: no space left on device")
    return StoreError(f"{path}: {e.strerror or e}")
