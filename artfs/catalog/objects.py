"""Content-addressed trees and files, their reference counts, and when objects may be deleted.

Like git: a *file object* is the ordered list of its chunk ids and lengths; a *tree object* is the
sorted list of entries (name, kind, mode, size, mtime, ref) where ref is a file object id, a tree
id, a symlink's target bytes, or a special file's device number (FIFOs, sockets, character and
block devices have no object). Hard-linked files carry a link group (an id unique within the
version, and how many names it has there); each name references the file object, like any file. A version points at a root tree, whose id is the version's digest.
Unchanged subtrees keep their ids, so a commit stores only what changed and a diff skips equal
subtrees.

Reference counts make reclaim exact: an object's count is the number of places that point at it
(tree entries, file chunk lists, version roots, ingest sessions). The counts live in the catalog
(``refs``: count and size per id); the bytes live in the object store (store/backend.py), which has
no transactions of its own. Two rules keep the two consistent whatever crashes:

- *reference before bytes*: a chunk is referenced (in a committed catalog transaction, held by an
  ingest session) before it is put; file and tree objects a transaction creates are put into the
  object store at the end of that transaction, before it commits (``Database.write``);
- *unreferenced before deleted*: when a count reaches zero the object's children are released
  and its id goes to ``trash`` in the same transaction; only a later transaction (``purge``) deletes
  trashed ids whose count is still zero from the object store. Referencing a trashed id again takes
  it out of the trash, so a purge can never delete an object that a newer transaction uses.

A file object still open in a mount is parked in ``zombies`` instead of the trash, and freed when
its last handle closes (or when the next mount starts).
"""

from __future__ import annotations

import bisect
import json
import stat
import struct
from dataclasses import dataclass, replace
from functools import cached_property

from ..errors import CorruptData
from ..store.backend import Obj
from ..store import ids
from ..store.ids import ID_LEN, strong_digest
from .db import bump

FILE, DIR, LINK = "f", "d", "l"
FIFO, SOCKET, CHAR, BLOCK = "p", "s", "c", "b"   # special files: no object, ref = their rdev
SPECIAL = {FIFO: stat.S_IFIFO, SOCKET: stat.S_IFSOCK, CHAR: stat.S_IFCHR, BLOCK: stat.S_IFBLK}
FORMAT = {FILE: stat.S_IFREG, DIR: stat.S_IFDIR, LINK: stat.S_IFLNK, **SPECIAL}
KIND_OF = {fmt: kind for kind, fmt in FORMAT.items()}   # stat.S_IFMT(st_mode) -> kind
KIND_NAME = {FILE: "file", DIR: "dir", LINK: "symlink", FIFO: "fifo", SOCKET: "socket",
             CHAR: "char", BLOCK: "block"}   # as listings show a kind
_KIND_BYTE = {kind: kind.encode() for kind in FORMAT}
_RDEV = struct.Struct(">Q")
_LINKS = struct.Struct(">IIB")   # trailer: entry index, names in the link group, group id length
GROUP_LEN = 16
_ENTRY_HEAD = struct.Struct(">cIQqHH")  # kind, mode, size, mtime_ns, name length, ref length
_CHUNK_REF = struct.Struct(f">{ID_LEN}sI")


@dataclass(frozen=True, slots=True)
class Entry:
    name: bytes
    kind: str          # FILE, DIR, LINK or one of SPECIAL
    mode: int          # permission bits (S_IMODE)
    size: int          # file bytes; entry count for a directory; target length for a link; 0
    mtime_ns: int
    ref: bytes         # file object id, tree id, symlink target, or a special file's rdev_ref
    group: bytes = b""   # a hard-linked file's link group (b"": none), unique within its version
    nlink: int = 1       # names of that link group in the version

    @property
    def st_mode(self) -> int:
        return FORMAT[self.kind] | self.mode

    @property
    def holds_object(self) -> bool:
        """Whether ``ref`` is a referenced object (a file or a tree)."""
        return self.kind in (FILE, DIR)

    @property
    def rdev(self) -> int:
        return decode_rdev(self.ref) if self.kind in SPECIAL else 0

    def same_content(self, other: "Entry") -> bool:
        """Equal but for mtime: what counts as a change for diff and 'no changes' (a file that
        became or stopped being a hard link, or joined another link group, changed)."""
        return (self.kind, self.mode, self.ref, self.group, self.nlink) == \
            (other.kind, other.mode, other.ref, other.group, other.nlink)


def link_group(first_name: bytes) -> bytes:
    """The id of a link group found by a walk, from the path of its first name (unique within a
    version, and the same for the same tree wherever it is read)."""
    return strong_digest(b"artfs link group\0" + first_name)[:GROUP_LEN]


def rdev_ref(kind: str, rdev: int) -> bytes:
    """The ref of a special file: its device number for a device node, nothing for a FIFO or socket."""
    return _RDEV.pack(rdev) if kind in (CHAR, BLOCK) else b""


def decode_rdev(ref: bytes) -> int:
    return _RDEV.unpack(ref)[0] if len(ref) == _RDEV.size else 0


class Tree:
    """A parsed tree object: entries sorted by name."""

    __slots__ = ("entries", "_names", "_subdirs")

    def __init__(self, entries: list[Entry]):
        self.entries = entries
        self._names = [e.name for e in entries]
        self._subdirs = None

    @property
    def subdirs(self) -> int:
        """How many entries are directories (a directory's link count is 2 + this)."""
        if self._subdirs is None:
            self._subdirs = sum(e.kind == DIR for e in self.entries)
        return self._subdirs

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
        linked = [(i, e) for i, e in enumerate(self.entries) if e.group]
        if linked:   # a trailer: trees without hard links encode as they always did
            parts.append(b"H" + struct.pack(">I", len(linked)))
            parts.extend(_LINKS.pack(i, e.nlink, len(e.group)) + e.group for i, e in linked)
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
        if data[pos:pos + 1] == b"H":
            (count,), pos = struct.unpack_from(">I", data, pos + 1), pos + 5
            for _ in range(count):
                i, nlink, glen = _LINKS.unpack_from(data, pos)
                pos += _LINKS.size
                entries[i] = replace(entries[i], group=data[pos:pos + glen], nlink=nlink)
                pos += glen
        return cls(entries)


_REF = struct.Struct(">QI")    # reference count, object size


def encode_ref(count: int, size: int) -> bytes:
    return _REF.pack(count, size)


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
        """A file object, or a Reference (its own encoding, first byte R)."""
        data = bytes(data)
        if data[:1] == b"R":
            return Reference.decode(data)
        if data[:1] != b"F":
            raise CorruptData("object is not a file")
        return cls(list(_CHUNK_REF.iter_unpack(data[1:])))


_REFERENCE_HEAD = struct.Struct(">III")   # record length, block size, block count
BLOCK_DIGEST_LEN = 32


class Reference(FileObj):
    """A file whose bytes stay at their source (repo/references.py): ``record`` (JSON: url, how to
    reach it, size, what the source reported, the checksum), the SHA-256 of each ``block_size``
    block (none with --no-checksum), and the chunks of its bytes when put kept them (--cache;
    else none). Its chunks are held like a file object's."""

    __slots__ = ("record", "block_size", "blocks")

    def __init__(self, record: dict, block_size: int = 0, blocks=(), chunks=()):
        super().__init__(list(chunks))
        self.record, self.block_size, self.blocks = record, block_size, list(blocks)

    @property
    def size(self) -> int:
        return self.record["size"]

    def encode(self) -> bytes:
        record = json.dumps(self.record, sort_keys=True, separators=(",", ":")).encode()
        return b"".join([b"R", _REFERENCE_HEAD.pack(len(record), self.block_size, len(self.blocks)),
                         record, *self.blocks,
                         *(_CHUNK_REF.pack(c, n) for c, n in zip(self.chunks, self.lengths))])

    @classmethod
    def decode(cls, data) -> "Reference":
        data = bytes(data)
        if data[:1] != b"R":
            raise CorruptData("object is not a reference")
        length, block_size, count = _REFERENCE_HEAD.unpack_from(data, 1)
        pos = 1 + _REFERENCE_HEAD.size
        record = json.loads(data[pos:pos + length])
        pos += length
        blocks = [data[p:p + BLOCK_DIGEST_LEN] for p in range(pos, pos + count * BLOCK_DIGEST_LEN, BLOCK_DIGEST_LEN)]
        return cls(record, block_size, blocks, _CHUNK_REF.iter_unpack(data[pos + count * BLOCK_DIGEST_LEN:]))


class Objects:
    """The reference-counted object graph over an object store. Methods that take ``txn`` work
    inside the caller's catalog write transaction (``Database.write``)."""

    def __init__(self, db):
        self.db = db
        self.dbs = db.dbs
        self.store = db.objects

    # reading -----------------------------------------------------------------------------------
    def raw(self, oid: bytes) -> bytes:
        """An object's bytes, also when the running write created it and has not put it yet."""
        pending = self.db.pending.get(oid)
        return pending.data if pending is not None else self.store.get_many([oid])[0]

    def tree(self, tid: bytes) -> Tree:
        return Tree.decode(self.raw(tid))

    def file(self, fid: bytes) -> FileObj:
        return FileObj.decode(self.raw(fid))

    def ref(self, txn, oid: bytes) -> tuple[int, int]:
        """(reference count, size) of an object; (0, 0) when unreferenced."""
        raw = txn.get(oid, db=self.dbs["refs"])
        return self.decode_ref(raw) if raw is not None else (0, 0)

    @staticmethod
    def decode_ref(raw) -> tuple[int, int]:
        return _REF.unpack(raw)

    def refcount(self, txn, oid: bytes) -> int:
        return self.ref(txn, oid)[0]

    # referencing -------------------------------------------------------------------------------
    def _take(self, txn, oid: bytes, size: int | None = None) -> bool:
        """One more reference to ``oid``; True when its children must be referenced anew: it was
        new, or unreferenced in the trash (taken out of it). A parked zombie still holds its
        children, so taking it back is not new."""
        count, stored = self.ref(txn, oid)
        txn.put(oid, _REF.pack(count + 1, stored if size is None else size), db=self.dbs["refs"])
        if count:
            return False
        if txn.pop(oid, db=self.dbs["zombies"]) is not None:
            return False
        txn.delete(oid, db=self.dbs["trash"])
        return True

    def hold_chunks(self, txn, chunks) -> None:
        """One reference to each (chunk id, size): an ingest's, before it puts the bytes."""
        meta = self.dbs["meta"]
        for cid, size in chunks:
            if self._take(txn, cid, size):
                bump(txn, meta, b"chunk_bytes", size)
                bump(txn, meta, b"chunk_count", 1)

    def _put_object(self, txn, data: bytes, kind: int) -> tuple[bytes, bool]:
        """Reference a file or tree object and queue its bytes for the end of the transaction
        (also when it exists: the object store then compares them, so a collision is caught)."""
        oid = self.store.object_id(data, kind)
        self.db.pending[oid] = Obj(oid, strong_digest(data), data)
        return oid, self._take(txn, oid, len(data))

    def put_file(self, txn, chunks: list[tuple[bytes, int]]) -> bytes:
        """Store a file object whose chunks the caller already holds one reference each to.

        Returns the file id with one reference taken for the caller. If an equal file object
        already existed, the caller's chunk references are handed back.
        """
        return self.put_file_object(txn, FileObj(chunks))

    def put_file_object(self, txn, fobj: FileObj) -> bytes:
        """put_file of a parsed file object or Reference (same contract for its chunks)."""
        fid, new = self._put_object(txn, fobj.encode(), ids.FILE)
        if not new:
            for cid in fobj.chunks:
                self.decref_chunk(txn, cid)
        return fid

    def put_tree(self, txn, entries: list[Entry]) -> bytes:
        """Store a tree whose entries' objects the caller holds one reference each to.

        Same contract as put_file: the caller's references move into the tree (or are returned
        when the tree already existed), and the caller gets one reference to the tree.
        """
        entries = sorted(entries, key=lambda e: e.name)
        tid, new = self._put_object(txn, Tree(entries).encode(), ids.TREE)
        if not new:
            for e in entries:
                self.release_entry(txn, e)
        return tid

    def adopt_tree(self, txn, root: bytes) -> list[bytes]:
        """One reference to a tree whose objects are all in the object store but may be
        unreferenced (a version pulled from a remote): children are referenced anew where their
        parent is new. Returns the ids that were unreferenced: the caller checks, inside this
        transaction, that they are still stored (a purge may have deleted a trashed one)."""
        new, stack = [], [root]
        while stack:
            tid = stack.pop()
            data = self.raw(tid)
            if not self._take(txn, tid, len(data)):
                continue
            new.append(tid)
            for e in Tree.decode(data).entries:
                if e.kind == DIR:
                    stack.append(e.ref)
                elif e.kind == FILE:
                    fdata = self.raw(e.ref)
                    if self._take(txn, e.ref, len(fdata)):
                        new.append(e.ref)
                        fobj = FileObj.decode(fdata)
                        fresh = [c for c in fobj.chunks if self.refcount(txn, c) == 0]
                        self.hold_chunks(txn, zip(fobj.chunks, fobj.lengths))
                        new.extend(fresh)
        return new

    def incref(self, txn, oid: bytes) -> None:
        """One more reference to an object that is referenced (or parked as a zombie)."""
        if self._take(txn, oid):
            raise CorruptData(f"object {oid.hex()} was referenced after it was released")

    def hold_entry(self, txn, e: Entry) -> None:
        """Take one more reference to what an entry points at (reusing it in a new tree)."""
        if e.holds_object:
            self.incref(txn, e.ref)

    # releasing ---------------------------------------------------------------------------------
    def _drop(self, txn, oid: bytes) -> int | None:
        """Drop one reference; the object's size when it was the last, else None."""
        refs = self.dbs["refs"]
        count, size = self.ref(txn, oid)
        if count <= 0:
            raise CorruptData(f"reference count of {oid.hex()} would go negative")
        if count > 1:
            txn.put(oid, _REF.pack(count - 1, size), db=refs)
            return None
        txn.delete(oid, db=refs)
        return size

    def _trash(self, txn, oid: bytes) -> None:
        txn.put(oid, b"", db=self.dbs["trash"])

    def release_entry(self, txn, e: Entry, pinned=None) -> None:
        if e.kind == FILE:
            self.decref_file(txn, e.ref, pinned)
        elif e.kind == DIR:
            self.decref_tree(txn, e.ref, pinned)

    def decref_chunk(self, txn, cid: bytes) -> None:
        size = self._drop(txn, cid)
        if size is not None:
            self._trash(txn, cid)
            meta = self.dbs["meta"]
            bump(txn, meta, b"chunk_bytes", -size)
            bump(txn, meta, b"chunk_count", -1)

    def decref_file(self, txn, fid: bytes, pinned=None) -> None:
        if self._drop(txn, fid) is not None:
            if pinned is not None and pinned(fid):
                txn.put(fid, b"", db=self.dbs["zombies"])
            else:
                self.free_file(txn, fid)

    def free_file(self, txn, fid: bytes) -> None:
        fobj = self.file(fid)
        self._trash(txn, fid)
        txn.delete(fid, db=self.dbs["zombies"])
        for cid in fobj.chunks:
            self.decref_chunk(txn, cid)

    def decref_tree(self, txn, tid: bytes, pinned=None) -> None:
        """Release one reference to a tree; the last frees it and releases its entries (any depth)."""
        stack = [tid]
        while stack:
            tid = stack.pop()
            if self._drop(txn, tid) is None:
                continue
            tree = self.tree(tid)
            self._trash(txn, tid)
            for e in tree.entries:
                if e.kind == DIR:
                    stack.append(e.ref)
                elif e.kind == FILE:
                    self.decref_file(txn, e.ref, pinned)

    def release_zombie(self, txn, fid: bytes) -> None:
        """Free a parked file object once nothing holds it open (unless re-referenced since)."""
        if txn.get(fid, db=self.dbs["zombies"]) is not None and self.refcount(txn, fid) == 0:
            self.free_file(txn, fid)

    def zombies(self, txn) -> list[bytes]:
        with txn.cursor(db=self.dbs["zombies"]) as cur:
            return [bytes(k) for k in cur.iternext(keys=True, values=False)]
