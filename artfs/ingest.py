"""Turning a local file or directory into stored objects (the core of ``put``).

The walk uses directory file descriptors and O_NOFOLLOW throughout, so deep trees are not limited
by PATH_MAX and symlinks inside PATH are stored as symlinks, never followed. Sockets, FIFOs and
device nodes are skipped with a warning (they have no content to version).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

from .catalog.objects import DIR, FILE, LINK, Entry, Objects
from .errors import InvalidInput
from .store.chunker import hashed_chunks

Warn = Callable[[str], None]
Progress = Callable[[int], None]


class Ingest:
    """One ingest inside one write transaction; counts files and bytes as it goes."""

    def __init__(self, txn, objects: Objects, warn: Warn, progress: Progress | None = None):
        self.txn, self.objects, self.warn = txn, objects, warn
        self.progress = progress or (lambda n: None)
        self.files = 0
        self.bytes = 0

    def file_fd(self, fd: int, size: int, display: str) -> bytes:
        """Chunk an open file from its start; returns its file id (one reference held)."""
        chunks, total = [], 0
        os.lseek(fd, 0, os.SEEK_SET)
        for digest, data in hashed_chunks(fd):
            chunks.append((self.objects.put_chunk(self.txn, data, digest), len(data)))
            total += len(data)
            self.progress(len(data))
        if total != size:
            raise InvalidInput(f"{display} changed size while being read ({size} -> {total} bytes)")
        self.files += 1
        self.bytes += total
        return self.objects.put_file(self.txn, chunks)

    def entry(self, dir_fd: int | None, name: bytes, display: str) -> Entry | None:
        """Store the object at ``name`` (relative to dir_fd) and return its entry, or None if skipped."""
        try:
            st = os.lstat(name, dir_fd=dir_fd)
        except OSError as e:
            raise InvalidInput(f"cannot read {display}: {e.strerror}") from None
        mode, mtime = stat.S_IMODE(st.st_mode), st.st_mtime_ns
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(name, dir_fd=dir_fd)
            return Entry(os.path.basename(name), LINK, mode, len(target), mtime, target)
        if stat.S_ISREG(st.st_mode):
            fd = self._open(dir_fd, name, display, 0)
            try:
                fid = self.file_fd(fd, os.fstat(fd).st_size, display)
            finally:
                os.close(fd)
            return Entry(os.path.basename(name), FILE, mode, st.st_size, mtime, fid)
        if stat.S_ISDIR(st.st_mode):
            fd = self._open(dir_fd, name, display, os.O_DIRECTORY)
            try:
                tid, count = self.tree(fd, display)
            finally:
                os.close(fd)
            return Entry(os.path.basename(name), DIR, mode, count, mtime, tid)
        self.warn(f"skipped {display}: not a regular file, directory or symlink")
        return None

    def tree(self, dir_fd: int, display: str) -> tuple[bytes, int]:
        """Store a directory's tree; returns (tree id with one reference held, entry count)."""
        try:
            names = sorted(os.fsencode(n) for n in os.listdir(dir_fd))
        except OSError as e:
            raise InvalidInput(f"cannot list {display}: {e.strerror}") from None
        entries = []
        for name in names:
            e = self.entry(dir_fd, name, os.path.join(display, os.fsdecode(name)))
            if e is not None:
                entries.append(e)
        return self.objects.put_tree(self.txn, entries), len(entries)

    def root(self, path: str) -> tuple[bytes, int]:
        """The root tree of a version made from PATH: a directory's contents, or one file."""
        try:
            st = os.stat(path)  # PATH itself may be a symlink the user named on purpose
        except OSError as e:
            raise InvalidInput(f"cannot read {path}: {e.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            fd = self._open(None, os.fsencode(path), path, os.O_DIRECTORY, follow=True)
            try:
                return self.tree(fd, path)
            finally:
                os.close(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidInput(f"{path} is not a regular file or directory")
        fd = self._open(None, os.fsencode(path), path, 0, follow=True)
        try:
            fid = self.file_fd(fd, os.fstat(fd).st_size, path)
        finally:
            os.close(fd)
        name = os.fsencode(os.path.basename(os.path.normpath(path)))
        entry = Entry(name, FILE, stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime_ns, fid)
        return self.objects.put_tree(self.txn, [entry]), 1

    @staticmethod
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
