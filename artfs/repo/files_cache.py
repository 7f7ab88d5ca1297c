"""The files cache of ``put``: unchanged files reuse their file object without being read.

Like borg's and restic's, an entry says "the file at this path, with this size, mtime, ctime,
inode and device, had this content (file object id) when it was last put". A file whose ``lstat``
matches its entry is not opened: ``put`` takes the file object's chunk list instead (repo/ingest.py).
The entry holds the file object itself (its encoded chunk list, as borg's holds chunk ids) when
it has at most INLINE_CHUNKS chunks (about 5 MiB of file), so a matching small file costs no store
read either: an unchanged 100,000-file tree is one ``lstat`` per file, one catalog transaction
for all their chunks, and one reference per file object. A bigger file's entry holds its id only
(the cache stays about a kilobyte per file however big the files are): its file object is read
from the store, a small cost next to the file's bytes.

Safe against same-second edits: an entry is recorded only if the file's mtime and ctime are older
than GRACE_NS before the moment the file was opened for reading. Any later write to it (or chmod,
rename over it, ...) sets its ctime to at least that moment minus the timestamp granularity, so
the file no longer matches even on a file system whose clock is GRACE_NS coarse (FAT: 2 s).
Files changed in the last seconds before a put are simply read again by the next one.

Safe against the store: the cache holds content ids, not references. A file object whose last
version was deleted may be gone; ``put`` uses an entry only if the file object is still referenced,
checked inside the catalog transaction that takes the session's references to its chunks (the
ingest session protocol of catalog/sessions.py: reference before use). If it is gone by then,
the file is read after all.

One cache file per source root (its real path) under ``STORE/cache/files/``, rewritten atomically
after each successful put and checksummed (a damaged or foreign file is an empty cache). Bounded:
an entry not seen for MAX_AGE puts of its root is dropped, and only the MAX_ROOTS most recently
used roots keep a cache.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from typing import NamedTuple

import xxhash

from ..catalog.objects import FileObj
from ..store import ids
from ..store.ids import ID_LEN

GRACE_NS = 2 * 10**9
INLINE_CHUNKS = 64
MAX_AGE = 20
MAX_ROOTS = 64
_MAGIC = b"ARTFS-FILES-CACHE 2\n"   # a cache of version 1 (file ids only) reads as empty
# size, mtime, ctime, inode, device, age, file id, path length, file object length
_RECORD = struct.Struct(f">QqqQQH{ID_LEN}sII")
_SUM = 16


class Stamp(NamedTuple):
    """What must be unchanged for a file's content to be taken as unchanged (a tuple: one is
    made and compared per file of a put)."""

    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    dev: int

    @classmethod
    def of(cls, st: os.stat_result) -> "Stamp":
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def cache_dir(store_path: str) -> str:
    return os.path.join(store_path, "cache", "files")


class FilesCache:
    """The entries of one source root: those loaded from the last puts, and those this put saw."""

    def __init__(self, store_path: str, root: str, hasher):
        real = os.fsencode(os.path.realpath(root))
        self.path = os.path.join(cache_dir(store_path), hashlib.blake2b(real, digest_size=16).hexdigest())
        self.hasher = hasher
        self.old = _load(self.path)              # path -> (Stamp, file id, age, file object bytes or b"")
        self.seen: dict[bytes, tuple] = {}       # path -> the same, or (Stamp, chunk list, 0, None)

    def lookup(self, rel: bytes, st: os.stat_result) -> tuple[bytes, FileObj | None] | None:
        """The file id and file object (None: not kept, too many chunks) recorded for REL if its
        stamp still matches ST (the caller checks that the file object is still referenced
        before it uses it)."""
        entry = self.old.get(rel)
        if entry is None or entry[0] != Stamp.of(st):
            return None
        return entry[1], FileObj.decode(entry[3]) if entry[3] else None

    def keep(self, rel: bytes) -> None:
        """REL matched and was reused: it stays, seen now."""
        stamp, fid, _, data = self.old[rel]
        self.seen[rel] = (stamp, fid, 0, data)

    def record(self, rel: bytes, st: os.stat_result, opened_ns: int, chunks: list[list]) -> None:
        """REL was read with stamp ST, after OPENED_NS (time.time_ns() before it was opened); its
        chunk list becomes a file object when the cache is saved (after the put committed)."""
        if max(st.st_mtime_ns, st.st_ctime_ns) < opened_ns - GRACE_NS:
            self.seen[rel] = (Stamp.of(st), chunks, 0, None)

    def save(self) -> None:
        """Write the entries seen by this put, and those not seen for fewer than MAX_AGE puts."""
        entries = {rel: (stamp, fid, age + 1, data) for rel, (stamp, fid, age, data) in self.old.items()
                   if age + 1 < MAX_AGE}
        for rel, (stamp, ref, age, data) in self.seen.items():
            if data is None:
                fobj = FileObj([(c, n) for c, n in ref])
                data = fobj.encode()
                ref = self.hasher(data, ids.FILE)
                data = data if len(fobj.chunks) <= INLINE_CHUNKS else b""
            entries[rel] = (stamp, ref, age, data)
        parts = [_MAGIC]
        for rel, (s, fid, age, data) in entries.items():
            parts.append(_RECORD.pack(s.size, s.mtime_ns, s.ctime_ns, s.ino, s.dev, age, fid,
                                      len(rel), len(data)))
            parts.append(rel)
            parts.append(data)
        body = b"".join(parts)
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "wb") as f:
            f.write(body)
            f.write(xxhash.xxh3_128_digest(body))
        os.replace(tmp, self.path)
        _trim(os.path.dirname(self.path))


def _load(path: str) -> dict[bytes, tuple]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return {}
    body = data[:-_SUM]
    if not body.startswith(_MAGIC) or xxhash.xxh3_128_digest(body) != data[-_SUM:]:
        return {}
    out, pos, view = {}, len(_MAGIC), memoryview(body)
    while pos < len(body):
        size, mtime, ctime, ino, dev, age, fid, n, m = _RECORD.unpack_from(body, pos)
        pos += _RECORD.size
        out[bytes(view[pos:pos + n])] = (Stamp(size, mtime, ctime, ino, dev), fid, age,
                                         bytes(view[pos + n:pos + n + m]))
        pos += n + m
    return out


def _trim(directory: str) -> None:
    """Keep the MAX_ROOTS most recently written caches (and no leftover temporary files)."""
    now = time.time()
    files = []
    for entry in os.scandir(directory):
        try:
            mtime = entry.stat().st_mtime
        except FileNotFoundError:
            continue
        if entry.name.endswith(".tmp"):
            if now - mtime > 3600:   # a put killed while saving; a running one is seconds old
                _unlink(entry.path)
        else:
            files.append((mtime, entry.path))
    for _, path in sorted(files, reverse=True)[MAX_ROOTS:]:
        _unlink(path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
