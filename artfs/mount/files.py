"""Open files of the mount: version readers and staging files, FUSE-free.

A version file handle keeps the parsed FileObj of the version it was opened in, so a reader keeps
reading those bytes while commits move ``latest``; every read goes through ``Repo.read``, which
hash-checks each chunk. While a file id is open it is *pinned*: deleting its last version parks it
as a zombie (catalog/objects.py) instead of freeing it, and the last close frees it.

A staging file open in the mount is one StagedFile shared by all its handles: it reads the base
file object until a writer copies it up, then one os-level fd on the staging data file (kept until
the last handle closes, so an unlinked open file stays readable and writable).
"""

from __future__ import annotations

import os
from collections import Counter

from ..catalog.objects import FileObj
from ..errors import NotFound


class StagedFile:
    """The open state of one staging inode, shared by its handles."""

    def __init__(self, fs, entry):
        self.fs, self.refs = fs, 0
        self.fd: int | None = None
        self.fid = entry.base if entry.data is None else None
        self.fobj = fs.files.hold(self.fid) if self.fid is not None else FileObj([])
        if entry.data is not None:
            self.copy_up(entry.data)

    def copy_up(self, path: str) -> None:
        """Switch to the staging data file at ``path`` (once; later writers share the fd)."""
        if self.fd is None:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)

    def read(self, offset: int, size: int) -> bytes:
        if self.fd is not None:
            return os.pread(self.fd, size, offset)
        return self.fs.repo.read(self.fobj, offset, size)

    def write(self, offset: int, data) -> int:
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

    def __init__(self, fs, fid: bytes):
        self.fs, self.fid = fs, fid
        self.fobj = fs.files.hold(fid)

    def read(self, offset: int, size: int) -> bytes:
        return self.fs.repo.read(self.fobj, offset, size)

    def close(self) -> bytes | None:
        return self.fid


class StagedHandle:
    def __init__(self, staging, node, file: StagedFile, writable: bool):
        self.staging, self.node, self.file, self.writable = staging, node, file, writable

    def read(self, offset: int, size: int) -> bytes:
        return self.file.read(offset, size)

    def write(self, offset: int, data) -> int:
        return self.file.write(offset, data)

    def close(self) -> bytes | None:
        return self.staging.close_file(self)


class OpenFiles:
    """File handles by number, and how often each stored file id is open (for zombies)."""

    def __init__(self, repo):
        self.repo = repo
        self._handles: dict[int, object] = {}
        self._next = 1
        self._open: Counter[bytes] = Counter()
        self._zombies: set[bytes] = set()

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

    def hold(self, fid: bytes) -> FileObj:
        fobj = self.repo.file(fid)
        self._open[fid] += 1
        return fobj

    def unhold(self, fid: bytes) -> bool:
        """Drop one open of ``fid``; True when it was the last and the file is a zombie to free."""
        self._open[fid] -= 1
        if self._open[fid] > 0:
            return False
        del self._open[fid]
        if fid in self._zombies:
            self._zombies.discard(fid)
            return True
        return False

    def pinned(self, fid: bytes) -> bool:
        """For Repo.delete_*: a file object still open here is parked, not freed."""
        if self._open.get(fid):
            self._zombies.add(fid)
            return True
        return False
