"""Turning local files into stored objects: the core of ``put`` and of ``commit``.

An ingest has two phases, so memory stays bounded whatever the input size:

1. ``scan`` / ``add_file`` read and chunk the input, storing chunks in transactions of at most
   BATCH_BYTES; an ingest session (catalog/sessions.py) holds a reference to every chunk stored or
   found, and the result is a ``Pending`` tree in memory (names, modes and chunk lists only).
2. ``build`` runs inside the caller's final transaction: it creates the file and tree objects,
   which take over the session's references, and ``finish`` drops the session.

If the ingest fails, leaving the ``with`` block releases the session's references at once; if
the process dies, the next writer does (abandoned sessions).

The walk uses directory file descriptors and O_NOFOLLOW throughout, so deep trees are not limited
by PATH_MAX and symlinks inside PATH are stored as symlinks, never followed. Sockets, FIFOs and
device nodes are skipped with a warning (they have no content to version).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from ..catalog.objects import DIR, FILE, LINK, Entry
from ..catalog.sessions import new_token
from ..errors import InvalidInput
from ..store.chunker import hashed_chunks

Warn = Callable[[str], None]
Progress = Callable[[int], None]
BATCH_BYTES = 32 << 20


@dataclass
class Pending:
    """A file, directory or symlink read but not yet recorded as an object."""

    name: bytes
    kind: str
    mode: int
    size: int
    mtime_ns: int
    chunks: list[list] = field(default_factory=list)       # FILE: [chunk id, length] each
    children: list["Pending"] = field(default_factory=list)  # DIR
    target: bytes = b""                                       # LINK


class Ingest:
    def __init__(self, repo, warn: Warn | None = None, progress: Progress | None = None):
        self.repo, self.warn = repo, warn or (lambda msg: None)
        self.progress = progress or (lambda n: None)
        self.files = 0
        self.bytes = 0
        self._token = new_token()
        self._batches = 0
        self._queue: list[tuple[bytes, bytes, list]] = []   # (digest, data, slot to fill)
        self._queued = 0

    def __enter__(self):
        self.repo.collect_abandoned()
        return self

    def __exit__(self, exc_type, exc, tb):
        """On failure give the session's references back now (else the next writer will)."""
        if exc_type is not None and self._batches:
            try:
                self.repo.db.write(lambda txn: self.repo.sessions.release(txn, self._token))
            except Exception:  # noqa: BLE001 - the original error matters more
                pass

    # phase 1: reading and storing chunks --------------------------------------------------------
    def add_file(self, fd: int, size: int, display: str) -> list[list]:
        """Chunk an open file from its start; returns its chunk list (ids filled by flushes)."""
        chunks, total = [], 0
        os.lseek(fd, 0, os.SEEK_SET)
        for digest, data in hashed_chunks(fd, size):
            slot = [None, len(data)]
            chunks.append(slot)
            self._queue.append((digest, data, slot))
            self._queued += len(data)
            total += len(data)
            if self._queued >= BATCH_BYTES:
                self.flush()
            self.progress(len(data))
        if total != size:
            raise InvalidInput(f"{display} changed size while being read ({size} -> {total} bytes)")
        self.files += 1
        self.bytes += total
        return chunks

    def flush(self) -> None:
        """Store the queued chunks in one transaction, each referenced by the session."""
        if not self._queue:
            return
        queue, self._queue, self._queued = self._queue, [], 0
        batch, self._batches = self._batches, self._batches + 1
        objects, sessions = self.repo.objects, self.repo.sessions

        def action(txn):
            ids = [objects.put_chunk(txn, data, digest) for digest, data, _ in queue]
            sessions.hold(txn, self._token, batch, ids)
            return ids
        for (_, _, slot), cid in zip(queue, self.repo.db.write(action)):
            slot[0] = cid

    def scan(self, path: str) -> Pending:
        """Read PATH (a directory, or one file) into a pending root directory."""
        try:
            st = os.stat(path)  # PATH itself may be a symlink the user named on purpose
        except OSError as e:
            raise InvalidInput(f"cannot read {path}: {e.strerror}") from None
        root = Pending(b"", DIR, 0o755, 0, st.st_mtime_ns)
        if stat.S_ISDIR(st.st_mode):
            fd = _open(None, os.fsencode(path), path, os.O_DIRECTORY, follow=True)
            try:
                root.children = self._dir(fd, path)
            finally:
                os.close(fd)
        elif stat.S_ISREG(st.st_mode):
            fd = _open(None, os.fsencode(path), path, 0, follow=True)
            try:
                name = os.fsencode(os.path.basename(os.path.normpath(path)))
                root.children = [Pending(name, FILE, stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime_ns,
                                         chunks=self.add_file(fd, os.fstat(fd).st_size, path))]
            finally:
                os.close(fd)
        else:
            raise InvalidInput(f"{path} is not a regular file or directory")
        self.flush()
        return root

    def _dir(self, dir_fd: int, display: str) -> list[Pending]:
        try:
            names = sorted(os.fsencode(n) for n in os.listdir(dir_fd))
        except OSError as e:
            raise InvalidInput(f"cannot list {display}: {e.strerror}") from None
        out = []
        for name in names:
            p = self._entry(dir_fd, name, os.path.join(display, os.fsdecode(name)))
            if p is not None:
                out.append(p)
        return out

    def _entry(self, dir_fd: int, name: bytes, display: str) -> Pending | None:
        try:
            st = os.lstat(name, dir_fd=dir_fd)
        except OSError as e:
            raise InvalidInput(f"cannot read {display}: {e.strerror}") from None
        p = Pending(name, "", stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime_ns)
        if stat.S_ISLNK(st.st_mode):
            p.kind, p.target = LINK, os.readlink(name, dir_fd=dir_fd)
            p.size = len(p.target)
        elif stat.S_ISREG(st.st_mode):
            fd = _open(dir_fd, name, display, 0)
            try:
                p.kind, p.chunks = FILE, self.add_file(fd, os.fstat(fd).st_size, display)
            finally:
                os.close(fd)
        elif stat.S_ISDIR(st.st_mode):
            fd = _open(dir_fd, name, display, os.O_DIRECTORY)
            try:
                p.kind, p.children = DIR, self._dir(fd, display)
            finally:
                os.close(fd)
            p.size = len(p.children)
        else:
            self.warn(f"skipped {display}: not a regular file, directory or symlink")
            return None
        return p

    # phase 2: inside the final transaction ------------------------------------------------------
    def file_object(self, txn, chunks: list[list]) -> bytes:
        """The file object of a chunk list from phase 1 (taking over the session's references)."""
        return self.repo.objects.put_file(txn, [(cid, n) for cid, n in chunks])

    def build(self, txn, p: Pending) -> Entry:
        """The entry of a pending node, its objects created, with one reference held."""
        if p.kind == FILE:
            ref = self.file_object(txn, p.chunks)
        elif p.kind == DIR:
            ref = self.repo.objects.put_tree(txn, [self.build(txn, c) for c in p.children])
        else:
            ref = p.target
        return Entry(p.name, p.kind, p.mode, p.size, p.mtime_ns, ref)

    def finish(self, txn) -> None:
        """Drop the session in the final transaction: its references now belong to the objects."""
        self.repo.sessions.close(txn, self._token)


def _open(dir_fd, name, display: str, flags: int, follow: bool = False) -> int:
    flags |= os.O_RDONLY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as e:
        raise InvalidInput(f"cannot read {display}: {e.strerror}") from None


def scan_bytes(path: str) -> int:
    """Total size of the regular files under PATH (for a progress bar's total)."""
    if not os.path.isdir(path):
        try:
            return os.stat(path).st_size
        except OSError:
            return 0
    total = 0
    for top, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(top, f))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total
