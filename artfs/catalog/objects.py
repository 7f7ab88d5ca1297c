"""Content-addressed trees and files, and their reference counts.

Like git: a *file object* is the ordered list of its chunk ids and lengths; a *tree object* is the
sorted list of entries (name, kind, mode, size, mtime, ref) where ref is a file object id, a tree
id, or a symlink's target bytes. A version points at a root tree, whose id is the version's digest.
Unchanged subtrees keep their ids, so a commit stores only what changed and a diff skips equal
subtrees.

Reference counts make reclaim exact: an object's count is the number of places that point at it
(tree entries, file chunk lists, version roots). When a count reaches zero the object is deleted
and its children are released, all inside the caller's transaction. A file object still open in a
mount is parked in ``zombies`` instead, and freed when its last handle closes.
"""

from __future__ import annotations

import bisect
import stat
import struct
from dataclasses import dataclass
from functools import cached_property

from ..errors import CorruptData
from ..store.chunks import ID_LEN, LmdbChunkStore
from .db import bump, counter

FILE, DIR, LINK = "f", "d", "l"
_KIND_BYTE = {FILE: b"f", DIR: b"d", LINK: b"l"}
_ENTRY_HEAD = struct.Struct(">cIQqHH")  # kind, mode, size, mtime_ns, name length, ref length
_CHUNK_REF = struct.Struct(f">{ID_LEN}sI")


@dataclass(frozen=True, slots=True)
class Entry:
    name: bytes
    kind: str          # FILE, DIR or LINK
    mode: int          # permission bits (S_IMODE)
    size: int          # file bytes; entry count for a directory; target length for a link
    mtime_ns: int
    ref: bytes         # file object id, tree id, or symlink target

    @property
    def st_mode(self) -> int:
        fmt = {FILE: stat.S_IFREG, DIR: stat.S_IFDIR, LINK: stat.S_IFLNK}[self.kind]
        return fmt | self.mode

    def same_content(self, other: "Entry") -> bool:
        """Equal but for mtime: what counts as a change for diff and 'no changes'."""
        return (self.kind, self.mode, self.ref) == (other.kind, other.mode, other.ref)


class Tree:
    """A parsed tree object: entries sorted by name."""

    __slots__ = ("entries", "_names")

    def __init__(self, entries: list[Entry]):
        self.entries = entries
        self._names = [e.name for e in entries]

    def lookup(self, name: bytes) -> Entry | None:
        i = bisect.bisect_left(self._names, name)
        if i < len(self._names) and self._names[i] == name:
            return self.entries[i]
        return None

    def encode(self) -> bytes:
        parts = [b"T", struct.pack(">I", len(self.entries))]
        for e in self.entries:
            parts.append(_ENTRY_HEAD.pack(_KIND_BYTE[e.kind], e.mode, e.size, e.mtime_ns, len(e.name), len(e.ref)))
            parts.append(e.name)
            parts.append(e.ref)
        return b"".join(parts)

    @classmethod
    def decode(cls, data) -> "Tree":
        data = bytes(data)
        if data[:1] != b"T":
            raise CorruptData("object is not a tree")
        (count,) = struct.unpack_from(">I", data, 1)
        pos, entries, head = 5, [], _ENTRY_HEAD
        for _ in range(count):
            kind, mode, size, mtime, nlen, rlen = head.unpack_from(data, pos)
            pos += head.size
            name = data[pos:pos + nlen]
            pos += nlen
            entries.append(Entry(name, kind.decode(), mode, size, mtime, data[pos:pos + rlen]))
            pos += rlen
        return cls(entries)


class FileObj:
    """A parsed file object: chunk ids with their byte offsets."""

    __slots__ = ("chunks", "lengths", "__dict__")

    def __init__(self, chunks: list[tuple[bytes, int]]):
        self.chunks = [c for c, _ in chunks]
        self.lengths = [n for _, n in chunks]

    @cached_property
    def offsets(self) -> list[int]:
        out, pos = [], 0
        for n in self.lengths:
            out.append(pos)
            pos += n
        return out

    @cached_property
    def size(self) -> int:
        return sum(self.lengths)

    def span(self, offset: int, size: int):
        """Yield (chunk id, start in chunk, end in chunk) covering [offset, offset + size)."""
        offsets = self.offsets
        end = min(offset + size, self.size)
        i = bisect.bisect_right(offsets, offset) - 1
        while offset < end and 0 <= i < len(offsets) and offsets[i] < end:
            start = offsets[i]
            yield self.chunks[i], max(offset - start, 0), min(end - start, self.lengths[i])
            i += 1

    def encode(self) -> bytes:
        return b"F" + b"".join(_CHUNK_REF.pack(c, n) for c, n in zip(self.chunks, self.lengths))

    @classmethod
    def decode(cls, data) -> "FileObj":
        data = bytes(data)
        if data[:1] != b"F":
            raise CorruptData("object is not a file")
        return cls(list(_CHUNK_REF.iter_unpack(data[1:])))


class Objects:
    """The reference-counted object graph over a chunk store, used inside one transaction."""

    def __init__(self, dbs, chunks: LmdbChunkStore):
        self.dbs = dbs
        self.store = chunks

    # reading -----------------------------------------------------------------------------------
    def tree(self, txn, tid: bytes) -> Tree:
        return Tree.decode(self.store.get(txn, tid))

    def file(self, txn, fid: bytes) -> FileObj:
        return FileObj.decode(self.store.get(txn, fid))

    def refcount(self, txn, oid: bytes) -> int:
        return counter(txn, self.dbs["refs"], oid)

    # writing -----------------------------------------------------------------------------------
    def put_chunk(self, txn, data, digest: bytes | None = None) -> bytes:
        """Store a data chunk (if new) and take one reference to it."""
        cid, new = self.store.put(txn, data, digest)
        if new:
            meta = self.dbs["meta"]
            bump(txn, meta, b"chunk_bytes", len(data))
            bump(txn, meta, b"chunk_count", 1)
        self.incref(txn, cid)
        return cid

    def put_file(self, txn, chunks: list[tuple[bytes, int]]) -> bytes:
        """Store a file object whose chunks the caller already holds one reference each to.

        Returns the file id with one reference taken for the caller. If an equal file object
        already existed, the caller's chunk references are handed back.
        """
        fid, new = self.store.put(txn, FileObj(chunks).encode())
        if not new:
            for cid, _ in chunks:
                self.decref_chunk(txn, cid)
        self.incref(txn, fid)
        return fid

    def put_tree(self, txn, entries: list[Entry]) -> bytes:
        """Store a tree whose entries' objects the caller holds one reference each to.

        Same contract as put_file: the caller's references move into the tree (or are returned
        when the tree already existed), and the caller gets one reference to the tree.
        """
        entries = sorted(entries, key=lambda e: e.name)
        tid, new = self.store.put(txn, Tree(entries).encode())
        if not new:
            for e in entries:
                self.release_entry(txn, e)
        self.incref(txn, tid)
        return tid

    def incref(self, txn, oid: bytes) -> None:
        if bump(txn, self.dbs["refs"], oid, 1) == 1:
            txn.delete(oid, db=self.dbs["zombies"])

    def hold_entry(self, txn, e: Entry) -> None:
        """Take one more reference to what an entry points at (reusing it in a new tree)."""
        if e.kind != LINK:
            self.incref(txn, e.ref)

    def release_entry(self, txn, e: Entry, pinned=None) -> None:
        if e.kind == FILE:
            self.decref_file(txn, e.ref, pinned)
        elif e.kind == DIR:
            self.decref_tree(txn, e.ref, pinned)

    def _decref(self, txn, oid: bytes) -> bool:
        """Drop one reference; True when it was the last."""
        refs = self.dbs["refs"]
        left = counter(txn, refs, oid) - 1
        if left < 0:
            raise CorruptData(f"reference count of {oid.hex()} would go negative")
        if left == 0:
            txn.delete(oid, db=refs)
            return True
        txn.put(oid, left.to_bytes(8, "big"), db=refs)
        return False

    def decref_chunk(self, txn, cid: bytes) -> None:
        if self._decref(txn, cid):
            size = self.store.size(txn, cid)
            self.store.delete(txn, cid)
            meta = self.dbs["meta"]
            bump(txn, meta, b"chunk_bytes", -size)
            bump(txn, meta, b"chunk_count", -1)

    def decref_file(self, txn, fid: bytes, pinned=None) -> None:
        if self._decref(txn, fid):
            if pinned is not None and pinned(fid):
                txn.put(fid, b"", db=self.dbs["zombies"])
            else:
                self.free_file(txn, fid)

    def free_file(self, txn, fid: bytes) -> None:
        fobj = self.file(txn, fid)
        self.store.delete(txn, fid)
        txn.delete(fid, db=self.dbs["zombies"])
        for cid in fobj.chunks:
            self.decref_chunk(txn, cid)

    def decref_tree(self, txn, tid: bytes, pinned=None) -> None:
        if self._decref(txn, tid):
            tree = self.tree(txn, tid)
            self.store.delete(txn, tid)
            for e in tree.entries:
                self.release_entry(txn, e, pinned)

    def release_zombie(self, txn, fid: bytes) -> None:
        """Free a parked file object once nothing holds it open (unless re-referenced since)."""
        if txn.get(fid, db=self.dbs["zombies"]) is not None and self.refcount(txn, fid) == 0:
            self.free_file(txn, fid)

    def zombies(self, txn) -> list[bytes]:
        with txn.cursor(db=self.dbs["zombies"]) as cur:
            return [bytes(k) for k in cur.iternext(keys=True, values=False)]
