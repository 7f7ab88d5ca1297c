"""Content-addressed trees and files, their reference counts, and when objects may be deleted.

Like git: a *file object* is the ordered list of its chunk ids and lengths; a *tree object* is the
sorted list of entries (name, kind, mode, size, mtime, ref) where ref is a file object id, a tree
id, a symlink's target bytes, or a special file's device number (FIFOs, sockets, character and
block devices have no object). Hard-linked files carry a link group (an id unique within the
version, and how many names it has there); each name references the file object, like any file. A version points at a root tree, whose id is the version's digest.
Unchanged subtrees keep their ids, so a commit stores only what changed and a diff skips equal
subtrees. A directory entry also records how many subdirectories that directory has (its link
count is 2 + that), so a listing's attributes need no read of each child; trees written before
this have no counts (``Entry.subdirs`` None: counted from the child when asked).

A directory of more than ``FLAT_MAX`` entries is *paged*: its entries are split into pages, each
a tree object of its own holding a run of them, and the directory's object lists the pages (first
name, id, entry and subdirectory counts). Page boundaries are content-defined (after an entry
whose name hashes to a boundary, between ``PAGE_MIN`` and ``PAGE_MAX`` entries), so an edit
rewrites the pages around it and keeps every other page's id: commits store, and diffs, pushes
and pulls visit, about one page per changed name, and a lookup reads one page. Smaller
directories encode as one tree object, as they always did.

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
import heapq
import json
import stat
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from itertools import accumulate

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
_SUBDIRS = struct.Struct(">II")   # trailer: entry index, that directory's subdirectory count
_PAGED = b"T\xff\xff\xff\xffP"   # a paged directory (no flat tree has 2**32 - 1 entries)
_PAGED_HEAD = struct.Struct(">QII")   # entries, subdirectories, pages
_PAGE_REF = struct.Struct(f">{ID_LEN}sIIH")   # page id, entries, subdirectories, first name length
FLAT_MAX = 1024            # a directory of up to this many entries is one tree object
PAGE_MIN, PAGE_MAX = 128, 4096   # entries per page (but the last)
PAGE_MAX_BYTES = 1 << 20   # a page ends once its entries encode to this many bytes
_PAGE_MASK = (1 << 9) - 1  # a name whose crc32 has these bits 0 ends a page: ~512 + PAGE_MIN entries


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
    subdirs: int | None = field(default=None, compare=False)   # a directory's subdirectories
    # (None: not recorded, a tree written before counts were); derived, so not compared

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


# Tree.decode makes one Entry per entry of every directory listed: the frozen dataclass's own
# __init__ (object.__setattr__ per field) costs twice what setting its slots directly does.
# Each Entry is complete before decode returns it, and frozen from then on.
_SET_NAME, _SET_KIND, _SET_MODE, _SET_SIZE, _SET_MTIME, _SET_REF, _SET_GROUP, _SET_NLINK, \
    _SET_SUBDIRS = (Entry.__dict__[f].__set__ for f in (
        "name", "kind", "mode", "size", "mtime_ns", "ref", "group", "nlink", "subdirs"))
_KIND_OF_BYTE = {kind.encode(): kind for kind in FORMAT}


def _new_entry(name: bytes, kind: str, mode: int, size: int, mtime_ns: int, ref: bytes) -> Entry:
    """Entry(name, kind, mode, size, mtime_ns, ref), made the fast way (Tree.decode's)."""
    e = object.__new__(Entry)
    _SET_NAME(e, name)
    _SET_KIND(e, kind)
    _SET_MODE(e, mode)
    _SET_SIZE(e, size)
    _SET_MTIME(e, mtime_ns)
    _SET_REF(e, ref)
    _SET_GROUP(e, b"")
    _SET_NLINK(e, 1)
    _SET_SUBDIRS(e, None)
    return e


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
    """A parsed tree object: entries sorted by name (a paged directory's: see PagedTree)."""

    __slots__ = ("entries", "_names", "_subdirs")
    pages: tuple = ()   # a flat tree has no pages

    def __init__(self, entries: list[Entry]):
        self.entries = entries
        self._names = [e.name for e in entries]
        self._subdirs = None

    @property
    def count(self) -> int:
        return len(self.entries)

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

    def locate(self, name: bytes) -> tuple[int, Entry | None]:
        """Where NAME is or would be among the entries (its index), and its entry or None."""
        i = bisect.bisect_left(self._names, name)
        return i, self.entries[i] if i < len(self._names) and self._names[i] == name else None

    def refs(self) -> list[tuple[str, bytes]]:
        """The objects this tree object references: (DIR, tree id) or (FILE, file id)."""
        return [(e.kind, e.ref) for e in self.entries if e.holds_object]

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
        dirs = [(i, e.subdirs) for i, e in enumerate(self.entries) if e.kind == DIR]
        if dirs and all(n is not None for _, n in dirs):   # and one for subdirectory counts
            counted = [(i, n) for i, n in dirs if n]
            parts.append(b"D" + struct.pack(">I", len(counted)))
            parts.extend(_SUBDIRS.pack(i, n) for i, n in counted)
        return b"".join(parts)

    @classmethod
    def decode(cls, data, load: Callable[[bytes], "Tree"] | None = None) -> "Tree":
        """Parse a tree object; LOAD (a tree by id) reads a paged directory's pages."""
        data = bytes(data)
        if data[:1] != b"T":
            raise CorruptData("object is not a tree")
        if data.startswith(_PAGED):
            return PagedTree.decode(data, load)
        (count,) = struct.unpack_from(">I", data, 1)
        pos, entries, unpack, size_ = 5, [], _ENTRY_HEAD.unpack_from, _ENTRY_HEAD.size
        new, kinds = _new_entry, _KIND_OF_BYTE
        try:
            for _ in range(count):
                kind, mode, size, mtime, nlen, rlen = unpack(data, pos)
                pos += size_
                name = data[pos:pos + nlen]
                pos += nlen
                entries.append(new(name, kinds[kind], mode, size, mtime, data[pos:pos + rlen]))
                pos += rlen
        except KeyError as e:
            raise CorruptData(f"tree entry of unknown kind {e.args[0]!r}") from None
        if data[pos:pos + 1] == b"H":
            (count,), pos = struct.unpack_from(">I", data, pos + 1), pos + 5
            for _ in range(count):
                i, nlink, glen = _LINKS.unpack_from(data, pos)
                pos += _LINKS.size
                _SET_GROUP(entries[i], data[pos:pos + glen])   # ours until returned
                _SET_NLINK(entries[i], nlink)
                pos += glen
        if data[pos:pos + 1] == b"D":
            (count,), pos = struct.unpack_from(">I", data, pos + 1), pos + 5
            counts = dict(_SUBDIRS.iter_unpack(data[pos:pos + count * _SUBDIRS.size]))
            for i, e in enumerate(entries):
                if e.kind == DIR:
                    _SET_SUBDIRS(e, counts.get(i, 0))
        return cls(entries)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a paged directory, as its directory object lists it."""
    first: bytes    # the name of its first entry
    tid: bytes      # the page: a flat tree object
    count: int
    subdirs: int


class PagedTree(Tree):
    """A paged directory: the list of its pages, each read (through ``load``) when needed; a
    lookup reads one page. ``entries`` reads the pages as its entries are reached and keeps
    none: what stays in memory is ``load``'s to decide (the Repo's cache, bounded by bytes)."""

    __slots__ = ("pages", "starts", "_firsts", "_load")

    def __init__(self, pages: list[Page], load: Callable[[bytes], Tree] | None):
        self.pages, self._load = pages, load
        self._firsts = [p.first for p in pages]
        self.starts = list(accumulate((p.count for p in pages), initial=0))   # each page's first index, then the count
        self._subdirs = sum(p.subdirs for p in pages)

    @property
    def count(self) -> int:
        return self.starts[-1]

    @property
    def entries(self) -> "_PagedEntries":
        return _PagedEntries(self)

    def page(self, p: Page) -> Tree:
        if self._load is None:
            raise CorruptData("a paged tree was read without a way to read its pages")
        return self._load(p.tid)

    def page_of(self, name: bytes) -> int:
        """The index of the page NAME is or would be in."""
        return max(bisect.bisect_right(self._firsts, name) - 1, 0)

    def lookup(self, name: bytes) -> Entry | None:
        return self.page(self.pages[self.page_of(name)]).lookup(name)

    def locate(self, name: bytes) -> tuple[int, Entry | None]:
        """``Tree.locate``, reading NAME's page only."""
        k = self.page_of(name)
        i, entry = self.page(self.pages[k]).locate(name)
        return self.starts[k] + i, entry

    def refs(self) -> list[tuple[str, bytes]]:
        return [(DIR, p.tid) for p in self.pages]

    def encode(self) -> bytes:
        return _encode_paged(self.pages)

    @classmethod
    def decode(cls, data: bytes, load) -> "PagedTree":
        pos = len(_PAGED)
        _, _, n = _PAGED_HEAD.unpack_from(data, pos)
        pos += _PAGED_HEAD.size
        pages = []
        for _ in range(n):
            tid, count, subdirs, nlen = _PAGE_REF.unpack_from(data, pos)
            pos += _PAGE_REF.size
            pages.append(Page(data[pos:pos + nlen], tid, count, subdirs))
            pos += nlen
        return cls(pages, load)


class _PagedEntries(Sequence):
    """A paged directory's entries in order, as a sequence (index, slice, len, iteration); it
    keeps the page it last read, so a listing by index reads each page once."""

    __slots__ = ("_tree", "_last")

    def __init__(self, tree: PagedTree):
        self._tree, self._last = tree, (-1, ())   # (page index, its entries): one assignment

    def __len__(self) -> int:
        return self._tree.count

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._entry(j) for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError("entry index out of range")
        return self._entry(i % n)

    def _entry(self, i: int) -> Entry:
        tree, (k, entries) = self._tree, self._last
        starts = tree.starts
        if k < 0 or not starts[k] <= i < starts[k + 1]:
            k = bisect.bisect_right(starts, i) - 1
            entries = tree.page(tree.pages[k]).entries
            self._last = k, entries
        return entries[i - starts[k]]

    def __iter__(self):
        for p in self._tree.pages:
            yield from self._tree.page(p).entries


def _encode_paged(pages: list[Page]) -> bytes:
    parts = [_PAGED, _PAGED_HEAD.pack(sum(p.count for p in pages), sum(p.subdirs for p in pages),
                                      len(pages))]
    for p in pages:
        parts.append(_PAGE_REF.pack(p.tid, p.count, p.subdirs, len(p.first)))
        parts.append(p.first)
    return b"".join(parts)


class _Pager:
    """Where pages end: a left-to-right scan whose state restarts at every boundary, so a scan
    resumed at any old boundary finds the boundaries a scan from the start would."""

    __slots__ = ("n", "bytes")

    def __init__(self):
        self.n = self.bytes = 0

    def ends_after(self, e: Entry) -> bool:
        self.n += 1
        self.bytes += _ENTRY_HEAD.size + len(e.name) + len(e.ref)
        if (self.n >= PAGE_MAX or self.bytes >= PAGE_MAX_BYTES
                or (self.n >= PAGE_MIN and zlib.crc32(e.name) & _PAGE_MASK == 0)):
            self.n = self.bytes = 0
            return True
        return False


def _merged(entries: list[Entry], changed: dict[bytes, Entry | None]):
    """Sorted ENTRIES with CHANGED's names replaced by its entries (None: left out)."""
    kept = (e for e in entries if e.name not in changed)
    new = sorted((e for e in changed.values() if e is not None), key=lambda e: e.name)
    return heapq.merge(kept, new, key=lambda e: e.name)


_REF = struct.Struct(">QI")    # reference count, object size


def encode_ref(count: int, size: int) -> bytes:
    return _REF.pack(count, size)


class FileObj:
    """A parsed file object: chunk ids with their byte offsets."""

    __slots__ = ("chunks", "lengths", "__dict__")
    at_source = False   # whether its bytes are read from a source, not from chunks (Reference)

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

    @property
    def at_source(self) -> bool:
        return not self.chunks   # with chunks (put --cache) it reads like a file object

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
        return Tree.decode(self.raw(tid), self.tree)

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
        when the tree already existed), and the caller gets one reference to the tree. A
        directory of more than FLAT_MAX entries is stored as pages (see the module doc).
        """
        return self._put_dir(txn, sorted(entries, key=lambda e: e.name))[0]

    def edit_tree(self, txn, origin: bytes | None, changed: dict[bytes, Entry | None]) -> tuple[bytes, int, int]:
        """Store the tree ORIGIN (None: empty) with the entries of CHANGED's names replaced
        (None: removed); returns (tree id, entries, subdirectories). The caller holds one
        reference to each new entry's object, as for put_tree. Only the pages of a paged
        directory that hold a changed name are read and rewritten (and their neighbours until
        the boundaries meet the old ones again); the others keep their ids."""
        old = self.tree(origin) if origin else Tree([])
        # more than FLAT_MAX entries remain even if each None removes one (else, near the bound,
        # the directory is built from all its entries: the same result, flat or paged)
        if old.pages and old.count - sum(e is None for e in changed.values()) > FLAT_MAX:
            return self._edit_pages(txn, old, changed)
        entries = []
        for e in _merged(old.entries, changed):
            if changed.get(e.name) is not e:
                self.hold_entry(txn, e)
            entries.append(e)
        return self._put_dir(txn, entries)

    def _put_dir(self, txn, entries: list[Entry]) -> tuple[bytes, int, int]:
        """put_tree of sorted entries: (id, entries, subdirectories)."""
        entries = [replace(e, subdirs=self.tree(e.ref).subdirs)
                   if e.kind == DIR and e.subdirs is None else e for e in entries]
        subdirs = sum(e.kind == DIR for e in entries)
        if len(entries) <= FLAT_MAX:
            return self._put_flat(txn, entries), len(entries), subdirs
        pages, pager, start = [], _Pager(), 0
        for i, e in enumerate(entries):
            if pager.ends_after(e) or i == len(entries) - 1:
                pages.append(self._put_page(txn, entries[start:i + 1]))
                start = i + 1
        return self._put_index(txn, pages), len(entries), subdirs

    def _put_flat(self, txn, entries: list[Entry]) -> bytes:
        tid, new = self._put_object(txn, Tree(entries).encode(), ids.TREE)
        if not new:
            for e in entries:
                self.release_entry(txn, e)
        return tid

    def _put_page(self, txn, entries: list[Entry]) -> Page:
        return Page(entries[0].name, self._put_flat(txn, entries), len(entries),
                    sum(e.kind == DIR for e in entries))

    def _put_index(self, txn, pages: list[Page]) -> bytes:
        """The object of a paged directory, whose pages the caller holds one reference each to."""
        tid, new = self._put_object(txn, _encode_paged(pages), ids.TREE)
        if not new:
            for p in pages:
                self.decref_tree(txn, p.tid)
        return tid

    def _edit_pages(self, txn, old: "PagedTree", changed: dict) -> tuple[bytes, int, int]:
        touched: dict[int, list[bytes]] = {}
        for name in sorted(changed):
            touched.setdefault(old.page_of(name), []).append(name)
        pages, pager, run = [], _Pager(), []   # run: entries of the page being built
        for k, p in enumerate(old.pages):
            if k not in touched and not run:   # boundaries agree here: reuse the page as is
                self.incref(txn, p.tid)
                pages.append(p)
                continue
            names = touched.get(k, [])
            for e in _merged(old.page(p).entries, {n: changed[n] for n in names}):
                if changed.get(e.name) is not e:
                    self.hold_entry(txn, e)
                run.append(e)
                if pager.ends_after(e):
                    pages.append(self._put_page(txn, run))
                    run = []
        if run:
            pages.append(self._put_page(txn, run))
        return (self._put_index(txn, pages), sum(p.count for p in pages),
                sum(p.subdirs for p in pages))

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
            for kind, ref in Tree.decode(data).refs():
                if kind == DIR:
                    stack.append(ref)
                else:
                    fdata = self.raw(ref)
                    if self._take(txn, ref, len(fdata)):
                        new.append(ref)
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
        """Release one reference to a tree; the last frees it and releases its entries or
        pages (any depth)."""
        stack = [tid]
        while stack:
            tid = stack.pop()
            if self._drop(txn, tid) is None:
                continue
            refs = Tree.decode(self.raw(tid)).refs()
            self._trash(txn, tid)
            for kind, ref in refs:
                if kind == DIR:
                    stack.append(ref)
                else:
                    self.decref_file(txn, ref, pinned)

    def release_zombie(self, txn, fid: bytes) -> None:
        """Free a parked file object once nothing holds it open (unless re-referenced since)."""
        if txn.get(fid, db=self.dbs["zombies"]) is not None and self.refcount(txn, fid) == 0:
            self.free_file(txn, fid)

    def zombies(self, txn) -> list[bytes]:
        with txn.cursor(db=self.dbs["zombies"]) as cur:
            return [bytes(k) for k in cur.iternext(keys=True, values=False)]
