"""Segment files of the local object store: the bytes of its larger objects, appended.

Storing a chunk's bytes as an LMDB value costs two copies (into freshly allocated dirty pages,
then their write at commit) on the storing thread, the bottleneck of an ingest. So objects of
``MIN_BYTES`` or more are appended to segment files instead (``OBJECTS/segments/NNNNNNNN``, at most
``SEGMENT_BYTES`` each; one ``pwritev`` per batch), and LMDB keeps only where each one is (store/
local.py: the ``located`` database, id -> ``LOCATION``: segment, offset, length, SHA-256).

Crash safety (docs/RELIABILITY.md): every append happens inside the LMDB write transaction that
records it, which holds LMDB's writer lock, so one writer appends at a time across processes. The
segment and its end (``TAIL`` in the ``meta`` database) are read in that transaction; the bytes are
written at that end and made durable (fdatasync, and the directory when a segment was created)
before the transaction commits their locations and the new end. A writer killed in between leaves
bytes past the recorded end, which the next writer overwrites: no location ever names bytes that
were not durable, and nothing is ever written below a committed end.

Each object starts on an ``ALIGN`` boundary (zeros pad the one before), as an LMDB value over
a page fills whole pages. Deleting: the transaction drops the locations; once it has committed,
each object's blocks are punched out of its segment (``fallocate(PUNCH_HOLE)``), which gives the
space back to the filesystem at once and exactly, as LMDB's freed pages did. A reader that looked
an object up just before its delete committed may read zeros: the hash check turns that into an
error (store/local.py says "missing" when the location is gone by then), never wrong bytes. On a
filesystem that cannot punch holes, deleted objects keep their bytes on disk (``artfs du`` counts
them in the store's file bytes). Segments are never truncated or removed in place: compaction
hard-links them into the new data directory (no byte copied, every location still valid).

Adopted segments: a commit hands over a staging data file (a file the store owns, written once
and never again once committed) as a segment of its own, hard-linked in, instead of copying its
bytes (``adopt``; store/local.py ``LocalObjectStore.adopt``). Their numbers are ``ADOPTED`` and up
(random, so two processes never pick the same name); their objects keep the offsets the chunker
cut, not block-aligned. A punch there frees only the blocks wholly inside an object (its edge
blocks are shared with the neighbours), and only once the store's name is the file's last
(``nlink`` 1): until the commit that handed it over has removed the staging name, or when a failed
commit left staging its data file, a punch would hole staging's bytes, so it waits as a record
(``PUNCH`` in ``meta``, done by ``LocalObjectStore.settle``). A segment whose last object is
deleted is removed whole (``LIVE`` counts them), which gives its edge blocks back too.

Reads are one ``pread`` of the object's bytes (the page cache's copy), not views of a map
(``read_into``: straight into a read's reply, store/local.py ``_ranges``): a read waiting for a disk releases the GIL and holds no lock of the process's address space, so
a read of bytes in memory on the mount's event loop (``RWF_NOWAIT``) never waits behind it. (An
earlier version mapped the segments; a resident read then could wait for worker threads
faulting pages in from a slow disk: tests/test_resident_reads.py.)
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import struct
import threading
from collections.abc import Iterable, Sequence

from ..buffers import unfilled
from ..errors import StoreError
from .ids import DIGEST_LEN
from .lmdb_env import fsync_path, os_error

MIN_BYTES = 4096                 # smaller objects stay LMDB values
ALIGN = 4096                     # each object starts at a multiple of this (a filesystem block)
SEGMENT_BYTES = 256 << 20        # a segment takes appends until it is this long
IOV_MAX = 1024                   # buffers per pwritev call
GAP = 64 << 10                   # will_need: objects at most this far apart read as one range
OPEN_READERS = 256               # segments kept open for reading (4 TiB of objects by default)
DIR = "segments"
TAIL = b"segment-tail"           # meta key: (segment number, end of its committed bytes)
LOCATION = struct.Struct(f"<IQI{DIGEST_LEN}s")   # segment, offset, length, SHA-256 of the bytes
_TAIL = struct.Struct("<IQ")
ADOPTED = 0x80000000             # adopted segments' numbers: this and up
LIVE = b"adopted-live:"          # meta: + segment (u32 BE) -> objects located in it (u64 BE)
PUNCH = b"adopted-punch:"        # meta: + segment (u32 BE) + offset (u64 BE) -> length (u64 BE)
_SEG = struct.Struct(">I")
_PUNCH_KEY = struct.Struct(">IQ")
_U64 = struct.Struct(">Q")

_ZEROS = memoryview(bytes(ALIGN))
_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long)


class _CacheRange(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _CacheStat(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in
                ("nr_cache", "nr_dirty", "nr_writeback", "nr_evicted", "nr_recently_evicted")]


_SYS_CACHESTAT = 451   # the same number on every Linux architecture (since 6.5)
_PAGE = os.sysconf("SC_PAGE_SIZE")


def cached_pages(fd: int, offset: int, length: int) -> int | None:
    """How many pages of bytes [offset, offset + length) of file FD are in the page cache
    (cachestat(2); None where the kernel lacks it). A page may be evicted right after."""
    stat = _CacheStat()
    if _libc.syscall(_SYS_CACHESTAT, fd, ctypes.byref(_CacheRange(offset, length)), ctypes.byref(stat), 0):
        return None
    return stat.nr_cache


def cached(fd: int, offset: int, length: int) -> bool:
    """Whether every page of bytes [offset, offset + length) of file FD is in the page cache
    (False where the kernel cannot tell)."""
    pages = cached_pages(fd, offset, length)
    return pages is not None and pages >= (offset + length + _PAGE - 1) // _PAGE - offset // _PAGE


class Syncing:
    """``fdatasync`` of an open file in a thread of its own, started now (``with``: waited for at
    the end of the block, its error raised there): a file to be adopted is written to disk while
    it is being hashed, so the fdatasync that then makes it durable finds little left to do."""

    def __init__(self, fd: int):
        self._fd = os.dup(fd)
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._sync, name="artfs-sync", daemon=True)
        self._thread.start()

    def _sync(self) -> None:
        try:
            os.fdatasync(self._fd)
        except OSError as e:
            self._error = e
        finally:
            os.close(self._fd)

    def __enter__(self) -> "Syncing":
        return self

    def __exit__(self, *exc) -> None:
        self._thread.join()
        if self._error is not None and exc[0] is None:
            raise self._error


def segment_name(number: int) -> str:
    return f"{number:08x}"


def live_key(segment: int) -> bytes:
    return LIVE + _SEG.pack(segment)


def punch_key(segment: int, offset: int) -> bytes:
    return PUNCH + _PUNCH_KEY.pack(segment, offset)


def punch_record(key: bytes, value: bytes) -> tuple[int, int, int]:
    """(segment, offset, length) of a ``PUNCH`` record."""
    return (*_PUNCH_KEY.unpack(key[len(PUNCH):]), _U64.unpack(value)[0])


def count(value) -> int:
    return _U64.unpack(value)[0]


def pack_count(n: int) -> bytes:
    return _U64.pack(n)


def inner_blocks(offset: int, length: int) -> tuple[int, int]:
    """[start, end) of the whole blocks inside bytes [offset, offset + length) (start >= end
    when there are none)."""
    return -(-offset // ALIGN) * ALIGN, (offset + length) // ALIGN * ALIGN


def merged(ranges: Iterable[tuple[int, int]], gap: int = 0) -> list[tuple[int, int]]:
    """(offset, length) ranges, touching ones (at most GAP bytes apart) joined (a punch of the
    join frees the blocks across their boundary too; a read of it is one disk request)."""
    out: list[list[int]] = []
    for offset, length in sorted(ranges):
        if out and offset <= out[-1][0] + out[-1][1] + gap:
            out[-1][1] = max(out[-1][1], offset + length - out[-1][0])
        else:
            out.append([offset, length])
    return [(o, n) for o, n in out]


def _pwrite_all(fd: int, data, offset: int) -> None:
    view = memoryview(data)
    while len(view):
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


class _Reader:
    """A segment's read descriptor, closed when the last reference to it goes (a reader that
    got it before it was dropped from the open ones keeps a valid descriptor)."""

    __slots__ = ("fd",)

    def __init__(self, fd: int):
        self.fd = fd

    def __del__(self):
        os.close(self.fd)


class Segments:
    """The segment files under ``OBJECTS/segments``; appends and punches are called from
    store/local.py inside (appends) or right after (punches) its write transactions."""

    def __init__(self, env):
        self.env = env   # the path follows the environment (a compaction switches directory)
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        env.attached.append(self)
        self._readers: dict[int, _Reader] = {}   # segment -> its read descriptor, oldest first
        self._lock = threading.Lock()
        self._writer: tuple[int, int] | None = None   # (segment, fd) of the last append
        self._nowait = True   # preadv(RWF_NOWAIT) works here (not on FUSE)

    @property
    def path(self) -> str:
        return os.path.join(self.env.path, DIR)

    def close(self) -> None:
        with self._lock:
            self._readers.clear()   # each descriptor closes when the last read using it ends
            if self._writer is not None:
                os.close(self._writer[1])
                self._writer = None

    # appending (inside a write transaction) ----------------------------------------------------
    @staticmethod
    def tail(raw) -> tuple[int, int]:
        return _TAIL.unpack(raw) if raw is not None else (0, 0)

    @staticmethod
    def pack_tail(segment: int, end: int) -> bytes:
        return _TAIL.pack(segment, end)

    def append(self, tail: tuple[int, int], blobs: Sequence[tuple[bytes, bytes]]) -> tuple[list[bytes], tuple[int, int]]:
        """Write each ``(digest, data)`` at the committed end ``tail`` (starting a new segment when
        the current one is full), durably; returns each one's ``LOCATION`` record and the new tail."""
        segment, end = tail
        records, pending = [], []
        for digest, data in blobs:
            if end and end + len(data) > SEGMENT_BYTES:
                self._write(segment, pending)
                segment, end, pending = segment + 1, 0, []
            pad = -len(data) % ALIGN   # zeros up to the next block: a punch frees whole blocks
            pending.append((end, data))
            if pad:
                pending.append((end + len(data), _ZEROS[:pad]))
            records.append(LOCATION.pack(segment, end, len(data), digest))
            end += len(data) + pad
        self._write(segment, pending)
        if tail[0] != segment or tail[1] == 0:
            fsync_path(self.path)   # a segment created: its name must last too
        return records, (segment, end)

    def _write(self, segment: int, pending: list[tuple[int, bytes]]) -> None:
        """Write ``(offset, bytes)`` pieces into ``segment``, durably."""
        if not pending:
            return
        fd = self._fd(segment)
        try:
            for i in range(0, len(pending), IOV_MAX):
                group = pending[i:i + IOV_MAX]   # contiguous pieces
                start, end = group[0][0], group[-1][0] + len(group[-1][1])
                if os.pwritev(fd, [d for _, d in group], start) != end - start:
                    for offset, data in group:   # a short write: the same bytes again, one by one
                        _pwrite_all(fd, data, offset)
            os.fdatasync(fd)
        except OSError as e:
            raise os_error(self.path, e) from None

    def _fd(self, segment: int) -> int:
        with self._lock:
            if self._writer is not None and self._writer[0] == segment:
                return self._writer[1]
            if self._writer is not None:
                os.close(self._writer[1])
                self._writer = None
            fd = os.open(os.path.join(self.path, segment_name(segment)),
                         os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._writer = (segment, fd)
            return fd

    # reading -----------------------------------------------------------------------------------
    def will_need(self, records) -> None:
        """Start reading the objects at RECORDS (``LOCATION``s) from disk, all at once, without
        waiting (``POSIX_FADV_WILLNEED``; neighbours less than GAP apart in one range): the
        ``pread``s that follow find them read or on their way, instead of each waiting for the
        disk in turn."""
        by_segment: dict[int, list[tuple[int, int]]] = {}
        for record in records:
            segment, offset, length, _ = LOCATION.unpack(record)
            by_segment.setdefault(segment, []).append((offset, length))
        for segment, ranges in by_segment.items():
            fd = self._reader(segment).fd
            for offset, length in merged(ranges, GAP):
                os.posix_fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)

    def read(self, record, nowait: bool = False) -> tuple[bytes, bytes | bytearray] | None:
        """(SHA-256, the bytes) of the object at ``record`` (a ``LOCATION``), read with one
        ``pread`` (the GIL released while it waits for a disk). With ``nowait``, None unless all
        of its bytes are in the page cache (``RWF_NOWAIT``: a read on the mount's event loop
        must never wait for a disk)."""
        segment, offset, length, digest = LOCATION.unpack(record)
        if not nowait:
            reader = self._reader(segment)
            try:
                data = os.pread(reader.fd, length, offset)
            except OSError as e:
                raise os_error(self.path, e) from None
            if len(data) < length:
                raise self._short(segment, offset, length)
            return digest, data
        data = unfilled(length)
        return (digest, data) if self.read_into(segment, offset, data, True) else None

    def read_into(self, segment: int, offset: int, buf, nowait: bool = False) -> bool:
        """Read the ``len(buf)`` bytes at ``offset`` of ``segment`` into BUF (a writable buffer:
        a read's reply in place, no copy of its own) with one ``preadv``. With ``nowait``, False
        (BUF partly written or not) unless they are all in the page cache."""
        fd, length = self._reader(segment).fd, len(buf)
        try:
            if nowait:
                return self._read_nowait(fd, offset, buf)
            got = os.preadv(fd, [buf], offset)
        except OSError as e:
            raise os_error(self.path, e) from None
        if got < length:
            raise self._short(segment, offset, length)
        return True

    def _short(self, segment: int, offset: int, length: int) -> StoreError:
        return StoreError(f"{os.path.join(self.path, segment_name(segment))}: segment ends before "
                          f"its object at {offset} ({length} bytes): a damaged store (run artfs verify)")

    def _read_nowait(self, fd: int, offset: int, buf) -> bool:
        """Whether all of BUF was read, without waiting for a disk: ``RWF_NOWAIT``, or where the
        filesystem lacks it (FUSE), the page cache asked first (``cachestat``, Linux 6.5)."""
        length = len(buf)
        if self._nowait:
            try:
                got = os.preadv(fd, [buf], offset, os.RWF_NOWAIT)
            except BlockingIOError:
                return False
            except OSError as e:
                if e.errno != errno.EOPNOTSUPP:
                    raise
                self._nowait = False
            else:
                return got == length
        if not cached(fd, offset, length):
            return False
        return os.preadv(fd, [buf], offset) == length

    def _reader(self, segment: int) -> "_Reader":
        reader = self._readers.get(segment)
        if reader is not None:
            return reader
        with self._lock:
            reader = self._readers.get(segment)
            if reader is None:
                name = os.path.join(self.path, segment_name(segment))
                try:
                    reader = _Reader(os.open(name, os.O_RDONLY | os.O_CLOEXEC))
                except OSError as e:
                    raise os_error(name, e) from None
                if len(self._readers) >= OPEN_READERS:
                    self._readers.pop(next(iter(self._readers)))   # closed once no read uses it
                self._readers[segment] = reader
            return reader

    # adopting (inside a write transaction) -----------------------------------------------------
    def link_in(self, path: str) -> int:
        """Hard-link the file at PATH (its bytes already durable) in as a new adopted segment,
        durably; its number. OSError where the filesystem cannot (another filesystem: EXDEV)."""
        while True:
            number = ADOPTED + secrets.randbelow(ADOPTED)
            try:
                os.link(path, os.path.join(self.path, segment_name(number)))
            except FileExistsError:
                continue
            fsync_path(self.path)
            return number

    def unlink(self, numbers: Iterable[int]) -> None:
        """Remove adopted segments (nothing is located in them any more)."""
        with self._lock:
            for number in numbers:
                self._readers.pop(number, None)
                try:
                    os.unlink(os.path.join(self.path, segment_name(number)))
                except FileNotFoundError:
                    pass

    def adopted(self) -> list[int]:
        """The numbers of the adopted segments on disk."""
        out = []
        for name in os.listdir(self.path):
            try:
                number = int(name, 16)
            except ValueError:
                continue
            if number >= ADOPTED and name == segment_name(number):
                out.append(number)
        return out

    def punch_alone(self, segment: int, ranges: Sequence[tuple[int, int]]) -> bool:
        """Punch the whole blocks inside each (offset, length) of adopted SEGMENT if the store's
        name is its only one; whether the ranges are done with (punched, or the segment gone)."""
        try:
            fd = os.open(os.path.join(self.path, segment_name(segment)), os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return True
        try:
            if os.fstat(fd).st_nlink > 1:
                return False
            for offset, length in ranges:
                start, end = inner_blocks(offset, length)
                if end > start and _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE,
                                                   start, end - start):
                    break   # not supported here (or a failing disk): the blocks stay
            return True
        finally:
            os.close(fd)

    # freeing -----------------------------------------------------------------------------------
    def punch(self, records: Iterable[bytes]) -> None:
        """Give the bytes of deleted objects back to the filesystem (their locations are gone, in
        a committed transaction). Best effort: a filesystem without hole punching keeps them."""
        by_segment: dict[int, list[tuple[int, int]]] = {}
        for record in records:
            segment, offset, length, _ = LOCATION.unpack(record)
            by_segment.setdefault(segment, []).append((offset, length + -length % ALIGN))
        for segment, ranges in by_segment.items():
            try:
                fd = os.open(os.path.join(self.path, segment_name(segment)), os.O_WRONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                for offset, length in ranges:
                    if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length):
                        return   # not supported here (or a failing disk): compaction reclaims
            finally:
                os.close(fd)

    # size and compaction -----------------------------------------------------------------------
    def file_bytes(self) -> int:
        """Bytes the segments take on disk (holes excluded)."""
        total = 0
        for entry in os.scandir(self.path):
            try:
                total += entry.stat().st_blocks * 512
            except OSError:
                pass
        return total

    def link_into(self, env_dest: str) -> None:
        """Hard-link every segment into the environment directory ``env_dest`` (a compacted copy:
        locations stay valid, no byte is copied), durably."""
        dest = os.path.join(env_dest, DIR)
        os.makedirs(dest, mode=0o700, exist_ok=True)
        for name in sorted(os.listdir(self.path)):
            os.link(os.path.join(self.path, name), os.path.join(dest, name))
        fsync_path(dest)
