"""Open files of the mount: version readers and staging files, FUSE-free.

A version file handle keeps the chunk list (FileObj) of the version it was opened in, so a reader
keeps reading those bytes while commits move ``latest``; every read goes through ``Repo.read``,
which hash-checks each chunk. Reads and writes run in worker threads (mount/model.py); what is
called from a worker thread is marked so, and may block. A read whose bytes are in memory is served
on the trio thread instead (``read_nowait``: None when it might wait for a disk), saving two
thread hand-offs, which cost more than such a read (docs/benchmarks.md).

Pins. While a file id is open it is *pinned*: deleting its last version parks it as a zombie
(catalog/objects.py) instead of freeing it, and the last close frees it. A delete runs in a worker
thread and asks ``pinned(fid)`` inside its write transaction, so pins are decided under one lock
(``OpenFiles.deciding``): the delete takes it at its first ``pinned`` call and keeps it until its
transaction has committed; an open takes it to count the file id (``pin``) and only then checks,
with a fresh read, that the file object still exists. So an open either was counted before the
delete decided (the file is parked and stays readable) or comes after the commit and finds the file
gone: NotFound (ENOENT), never freed chunks. The fresh read is skipped for a file id confirmed
since the last free: every free happens under the lock, which forgets all confirmations (a delete
that freed anything) or that file id (a zombie's), so "confirmed" always means "exists". Read-ahead
(mount/readahead.py) checks files unpinned, ahead of their opens: such a check counts only if no
free ended between reading the ``frees`` count and confirming (it may have read the store
before a free committed), and none is freeing that file id. The last close of a zombie frees it outside the lock
(the lock order is transaction, then lock: a delete takes the lock inside its transaction); an
open of that file id meanwhile waits for the free, then finds the file gone - or stored again.

A staging file open in the mount is one StagedFile shared by all its handles: it reads the base
file object until a writer copies it up, then one os-level fd on the staging data file (kept until
the last handle closes, so an unlinked open file stays readable and writable). Its fd is set and
closed only on the trio thread, never while a read or write of it is in flight (the kernel sends
the last release after them); a read in a worker thread takes the fd once.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from contextlib import contextmanager

from ..catalog.objects import FileObj
from ..errors import NotFound

EXISTS = 65536   # file ids remembered as confirmed to exist (about 6 MB), forgotten all at once


def data_fd(path: str) -> int:
    """A read-write fd on a staging data file (worker thread)."""
    return os.open(path, os.O_RDWR | os.O_CLOEXEC)


def stored_nowait(f, offset: int, size: int) -> bytes | None:   # trio thread
    """Bytes of the stored file F reads (its ``fid``, chunk list ``fobj`` once loaded) if they
    are in memory, else None; the chunk list is taken only from the repo's cache."""
    if f.fobj is None:
        f.fobj = f.fs.repo.file_nowait(f.fid)
        if f.fobj is None:
            return None
    return f.fs.repo.read_nowait(f.fobj, offset, size)


class StagedFile:
    """The open state of one staging inode, shared by its handles.

    ``fid``: the pinned base file it reads until copied up (its chunk list is loaded by the first
    read); ``fd``: the data file."""

    def __init__(self, fs, fid: bytes | None, fd: int | None):
        self.fs, self.refs = fs, 0
        self.fid, self.fd = fid, fd
        self.fobj = None if fid is not None else FileObj([])

    def copy_up(self, fd: int) -> None:
        """Switch to the staging data file open at ``fd``: once, while open (else ``fd`` is
        closed: a later copy-up shares the first fd, and a closed file takes none)."""
        if self.fd is None and self.refs > 0:
            self.fd = fd
        else:
            os.close(fd)

    def read(self, offset: int, size: int) -> bytes:   # worker thread
        fd = self.fd
        if fd is not None:
            return os.pread(fd, size, offset)
        if self.fobj is None:
            self.fobj = self.fs.repo.file(self.fid)
        return self.fs.repo.read(self.fobj, offset, size)

    def read_nowait(self, offset: int, size: int) -> bytes | None:   # trio thread
        """``read`` if it needs no disk (the bytes are in memory), else None."""
        fd = self.fd
        if fd is None:
            return stored_nowait(self, offset, size)
        buf = bytearray(size)
        try:
            n = os.preadv(fd, [buf], offset, os.RWF_NOWAIT)
        except (BlockingIOError, OSError):
            return None
        if n < size and offset + n < os.fstat(fd).st_size:   # short: the rest is not in memory
            return None
        return bytes(memoryview(buf)[:n])

    def write(self, offset: int, data) -> int:   # worker thread
        return os.pwrite(self.fd, data, offset)

    def stat(self) -> os.stat_result | None:
        return os.fstat(self.fd) if self.fd is not None else None

    def close(self) -> bytes | None:
        """Close the fd; returns the pinned base file id to release, if any."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        return self.fid


class VersionHandle:
    writable = False

    def __init__(self, fs, fid: bytes, ino: int):
        self.fs, self.fid, self.ino, self.fobj = fs, fid, ino, None

    def read(self, offset: int, size: int) -> bytes:   # worker thread
        if self.fobj is None:   # the chunk list, loaded by the first read (concurrent ones agree)
            self.fobj = self.fs.repo.file(self.fid)
        return self.fs.repo.read(self.fobj, offset, size)

    def read_nowait(self, offset: int, size: int) -> bytes | None:   # trio thread
        """``read`` if it needs no disk (repo/facade.py read_nowait), else None."""
        return stored_nowait(self, offset, size)

    def close(self) -> bytes | None:
        return self.fid


class StagedHandle:
    def __init__(self, staging, node, file: StagedFile, writable: bool, clears_setid: bool = False):
        self.staging, self.node, self.file, self.writable = staging, node, file, writable
        self.clears_setid = clears_setid   # a write drops set-ID bits first (model.py write)

    def read(self, offset: int, size: int) -> bytes:   # worker thread
        return self.file.read(offset, size)

    def read_nowait(self, offset: int, size: int) -> bytes | None:   # trio thread
        return self.file.read_nowait(offset, size)

    def write(self, offset: int, data) -> int:   # worker thread
        return self.file.write(offset, data)

    def close(self) -> bytes | None:
        return self.staging.close_file(self)


class OpenFiles:
    """File handles by number, and how often each stored file id is open (pins, for zombies).

    ``pin`` and ``drop`` take the pin lock - without waiting on the trio thread, where a busy lock
    (a delete deciding) sends the caller to a worker thread; ``free`` frees a zombie whose last
    open was dropped (worker thread)."""

    def __init__(self, repo):
        self.repo = repo
        self._handles: dict[int, object] = {}
        self._next = 1
        self._lock = threading.Lock()             # pins: see the module doc
        self._freed = threading.Condition(self._lock)
        self._open: Counter[bytes] = Counter()
        self._zombies: set[bytes] = set()         # open file ids a delete parked
        self._freeing: set[bytes] = set()         # zombies whose last close is freeing them
        self._exists: set[bytes] = set()          # confirmed to exist since the last free
        self.frees = 0                            # frees ended so far (confirm)

    def add(self, handle) -> int:
        fh, self._next = self._next, self._next + 1
        self._handles[fh] = handle
        return fh

    def get(self, fh: int):
        try:
            return self._handles[fh]
        except KeyError:
            raise NotFound(f"file handle {fh} is not open") from None

    def pop(self, fh: int):
        return self._handles.pop(fh)

    def pin(self, fid: bytes, wait: bool) -> bool | None:
        """Count one open of ``fid``: None (nothing done) if the lock is busy or ``fid`` is being
        freed and ``wait`` is False; else whether ``fid`` is known to exist (confirmed since the
        last free). If not, the caller checks with a fresh read, and ``confirm``s it."""
        if not self._lock.acquire(blocking=wait):
            return None
        try:
            while fid in self._freeing:
                if not wait:
                    return None
                self._freed.wait()
            self._open[fid] += 1
            return fid in self._exists
        finally:
            self._lock.release()

    def open_ids(self) -> list[bytes]:
        """The stored files open now (any thread: a snapshot under the pin lock)."""
        with self._lock:
            return list(self._open)

    def confirm(self, fid: bytes, frees: int | None = None) -> None:
        """``fid`` exists: remember it, unless the lock is busy (never waits: it is only a
        shortcut). Checked while pinned, no delete could free it meanwhile; checked unpinned
        (read-ahead, mount/readahead.py) by a fresh read begun after ``frees`` was read, it is
        remembered only if no free ended since (that read may predate a free which has committed
        since; a delete deciding holds the lock, and its end counts as a free) and it is not
        being freed (a zombie exists until its free commits)."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            if (frees is None or frees == self.frees) and fid not in self._freeing:
                if len(self._exists) >= EXISTS:
                    self._exists.clear()
                self._exists.add(fid)
        finally:
            self._lock.release()

    def drop(self, fid: bytes, wait: bool) -> bool | None:
        """Drop one open of ``fid``: None (nothing done) if the lock is busy and ``wait`` is False;
        else whether that was the last open of a zombie, which the caller must then ``free``."""
        if not self._lock.acquire(blocking=wait):
            return None
        try:
            self._open[fid] -= 1
            if self._open[fid] > 0:
                return False
            del self._open[fid]
            if fid not in self._zombies:
                return False
            self._zombies.discard(fid)
            self._exists.discard(fid)
            self._freeing.add(fid)
            return True
        finally:
            self._lock.release()

    def free(self, fid: bytes) -> None:   # worker thread
        """Free a zombie nobody has open any more; opens of it wait for this, then find it gone."""
        try:
            self.repo.release_zombie(fid)
        finally:
            with self._lock:
                self._freeing.discard(fid)
                self.frees += 1
                self._freed.notify_all()

    @contextmanager
    def deciding(self):
        """The ``pinned`` callback for one Repo.delete_* call made inside this block (in the same
        worker thread): its first call takes the pin lock, kept until the block ends - after the
        delete's transaction committed (or failed)."""
        held = freed = False

        def pinned(fid: bytes) -> bool:
            nonlocal held, freed
            if not held:
                self._lock.acquire()
                held = True
            if self._open.get(fid):
                self._zombies.add(fid)
                return True
            freed = True
            return False
        try:
            yield pinned
        finally:
            if freed:
                self._exists.clear()   # which file ids went is not known here: all are checked again
                self.frees += 1
            if held:
                self._lock.release()
