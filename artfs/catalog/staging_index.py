"""The staging index: what an artifact's staging changed, in the ``staging`` named database.

Staging is a copy-on-write overlay over a *base* version (see staging.py). Only what was changed is
recorded; every key starts with ``NAME \\0`` (artifact names contain no NUL) and then one letter:

    H                          header: base version number, base root tree id, base mtime.
                               Present exactly when staging has changes (else it follows latest).
    C                          next inode number for new nodes (kept by reset and commit, so an
                               inode number is never reused while the artifact lives)
    N u64 ino                  node record (kind, mode, owner, times, size, parent, name, ref, local;
                               a directory's number of subdirectories, for its link count)
    D u64 parent-ino name      directory overlay: child inode, or 0 for a whiteout (a base entry
                               of the parent's origin tree that was removed)
    W u64 ino                  the file is open for writing by the mount whose writer token this
                               is (catalog/sessions.py: a lock file its daemon holds); dropped
                               after the last writer closes. A token whose lock nobody holds
                               means the mount died while the file was open: it may be short.
    L u64 ino u64 parent name  every name of a node with more than one (hard links); the node
                               record holds one of them (and the link count and link group)

Directory entries are keyed by (parent inode, name), never by path, so a key is at most
128 + 2 + 8 + 255 bytes whatever the depth. Invariants kept by staging.py: every recorded node but
the root has an overlay entry under its current parent; the parent of a recorded node is recorded;
the header exists iff the root is recorded; a node with nlink > 1 has exactly its nlink L keys,
one per overlay entry naming it, and its record names one of them.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

ROOT = 1
WHITEOUT = 0
FIRST_NEW_INO = 2

_U64 = struct.Struct(">Q")
_HEAD = struct.Struct(">qq")  # base version (-1: none), base mtime_ns; then the root tree id
_NODE = struct.Struct(">cBIIIqqQQH")  # kind, flags, mode, uid, gid, mtime, ctime, size, parent, name length
_U32 = struct.Struct(">I")
_LOCAL = 1
_SUBDIRS = 2   # a u32 subdirectory count follows the head (records of older artfs lack it)
_LINKED = 4    # then a u32 link count, a u8 group length and the link group
_LINKS = struct.Struct(">IB")


@dataclass(slots=True)
class Node:
    """One staging node; ``ref`` is a file object id (unmodified file), the origin tree id of a
    directory (b"" for a directory made in staging), a symlink target, or a special file's rdev
    (objects.rdev_ref). ``subdirs`` is a directory's number of subdirectories (None: not counted
    yet); ``nlink`` and ``group`` a file's names and link group (objects.Entry). ``stored`` is not
    persisted: it says whether the node has a record (False: derived from the base tree)."""

    ino: int
    kind: str
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    ctime_ns: int
    size: int
    parent: int
    name: bytes
    ref: bytes = b""
    local: bool = False
    subdirs: int | None = None
    nlink: int = 1
    group: bytes = b""
    stored: bool = field(default=False, compare=False)

    def encode(self) -> bytes:
        counted, linked = self.subdirs is not None, bool(self.group)
        flags = (_LOCAL if self.local else 0) | (_SUBDIRS if counted else 0) | (_LINKED if linked else 0)
        head = _NODE.pack(self.kind.encode(), flags, self.mode, self.uid, self.gid, self.mtime_ns,
                          self.ctime_ns, self.size, self.parent, len(self.name))
        extra = (_U32.pack(self.subdirs) if counted else b"") + (
            _LINKS.pack(self.nlink, len(self.group)) + self.group if linked else b"")
        return head + extra + self.name + self.ref

    @classmethod
    def decode(cls, ino: int, raw) -> Node:
        raw = bytes(raw)
        kind, flags, mode, uid, gid, mtime, ctime, size, parent, nlen = _NODE.unpack_from(raw)
        pos, subdirs, nlink, group = _NODE.size, None, 1, b""
        if flags & _SUBDIRS:
            (subdirs,), pos = _U32.unpack_from(raw, pos), pos + _U32.size
        if flags & _LINKED:
            (nlink, glen), pos = _LINKS.unpack_from(raw, pos), pos + _LINKS.size
            group, pos = raw[pos:pos + glen], pos + glen
        return cls(ino, kind.decode(), mode, uid, gid, mtime, ctime, size, parent,
                   raw[pos:pos + nlen], raw[pos + nlen:], bool(flags & _LOCAL), subdirs, nlink,
                   group, True)


@dataclass(frozen=True, slots=True)
class Base:
    """The version staging shows: number and root tree (None for an artifact without versions)."""

    number: int | None
    root: bytes | None
    mtime_ns: int


def decode_head(raw) -> Base:
    raw = bytes(raw)
    number, mtime = _HEAD.unpack_from(raw)
    return Base(None if number < 0 else number, raw[_HEAD.size:] or None, mtime)


def encode_head(base: Base) -> bytes:
    return _HEAD.pack(-1 if base.number is None else base.number, base.mtime_ns) + (base.root or b"")


def staging_dir(store_path: str, name: str) -> str:
    """Where the data files of NAME's modified staging files live (named by inode number)."""
    return os.path.join(store_path, "staging", name)


class StagingIndex:
    """The index of one artifact's staging; every method works inside the caller's transaction."""

    def __init__(self, dbs, name: str):
        self.dbs = dbs
        self.prefix = name.encode() + b"\0"

    @property
    def db(self):
        return self.dbs["staging"]   # looked up each time: the environment may be reopened

    # header and counter ------------------------------------------------------------------------
    def header(self, txn) -> Base | None:
        raw = txn.get(self.prefix + b"H", db=self.db)
        return None if raw is None else decode_head(raw)

    def set_header(self, txn, base: Base) -> None:
        txn.put(self.prefix + b"H", encode_head(base), db=self.db)

    def new_ino(self, txn) -> int:
        key = self.prefix + b"C"
        raw = txn.get(key, db=self.db)
        ino = _U64.unpack(raw)[0] if raw is not None else FIRST_NEW_INO
        txn.put(key, _U64.pack(ino + 1), db=self.db)
        return ino

    # nodes -------------------------------------------------------------------------------------
    def _nkey(self, ino: int) -> bytes:
        return self.prefix + b"N" + _U64.pack(ino)

    def node(self, txn, ino: int) -> Node | None:
        raw = txn.get(self._nkey(ino), db=self.db)
        return Node.decode(ino, raw) if raw is not None else None

    def has(self, txn, ino: int) -> bool:
        return txn.get(self._nkey(ino), db=self.db) is not None

    def put_node(self, txn, node: Node) -> None:
        txn.put(self._nkey(node.ino), node.encode(), db=self.db)
        node.stored = True

    def drop_node(self, txn, ino: int) -> None:
        txn.delete(self._nkey(ino), db=self.db)

    def local_inos(self, txn) -> set[int]:
        """Inode numbers of every node whose bytes live in a data file."""
        prefix = self.prefix + b"N"
        return {_U64.unpack(key[len(prefix):])[0]
                for key, raw in self._items(txn, prefix) if raw[1] & _LOCAL}

    # directory overlay -------------------------------------------------------------------------
    def _dkey(self, parent: int, name: bytes = b"") -> bytes:
        return self.prefix + b"D" + _U64.pack(parent) + name

    def dirent(self, txn, parent: int, name: bytes) -> int | None:
        """The overlay entry: a child inode, WHITEOUT, or None when the base entry (if any) shows."""
        raw = txn.get(self._dkey(parent, name), db=self.db)
        return _U64.unpack(raw)[0] if raw is not None else None

    def dirents(self, txn, parent: int) -> list[tuple[bytes, int]]:
        """Every overlay entry of a directory, sorted by name (whiteouts included)."""
        prefix = self._dkey(parent)
        return [(key[len(prefix):], _U64.unpack(raw)[0]) for key, raw in self._items(txn, prefix)]

    def put_dirent(self, txn, parent: int, name: bytes, ino: int) -> None:
        txn.put(self._dkey(parent, name), _U64.pack(ino), db=self.db)

    def drop_dirent(self, txn, parent: int, name: bytes) -> None:
        txn.delete(self._dkey(parent, name), db=self.db)

    def drop_dirents(self, txn, parent: int) -> None:
        self._drop_prefix(txn, self._dkey(parent))

    # files open for writing ---------------------------------------------------------------------
    def _wkey(self, ino: int) -> bytes:
        return self.prefix + b"W" + _U64.pack(ino)

    def writer(self, txn, ino: int) -> bytes | None:
        raw = txn.get(self._wkey(ino), db=self.db)
        return None if raw is None else bytes(raw)

    def put_writer(self, txn, ino: int, token: bytes) -> None:
        txn.put(self._wkey(ino), token, db=self.db)

    def drop_writer(self, txn, ino: int) -> None:
        txn.delete(self._wkey(ino), db=self.db)

    def writers(self, txn) -> dict[int, bytes]:
        """Every file marked open for writing: ino -> writer token."""
        prefix = self.prefix + b"W"
        return {_U64.unpack(key[len(prefix):])[0]: raw for key, raw in self._items(txn, prefix)}
    # names of hard-linked nodes ---------------------------------------------------------------
    def _lkey(self, ino: int, parent: int | None = None, name: bytes = b"") -> bytes:
        return self.prefix + b"L" + _U64.pack(ino) + (b"" if parent is None else _U64.pack(parent) + name)

    def names(self, txn, ino: int) -> list[tuple[int, bytes]]:
        """Every (parent inode, name) of a node with more than one name, sorted."""
        prefix = self._lkey(ino)
        return [(_U64.unpack(key[len(prefix):len(prefix) + 8])[0], key[len(prefix) + 8:])
                for key, _ in self._items(txn, prefix)]

    def add_name(self, txn, ino: int, parent: int, name: bytes) -> None:
        txn.put(self._lkey(ino, parent, name), b"", db=self.db)

    def drop_name(self, txn, ino: int, parent: int, name: bytes) -> None:
        txn.delete(self._lkey(ino, parent, name), db=self.db)

    def drop_names(self, txn, ino: int) -> None:
        self._drop_prefix(txn, self._lkey(ino))

    # whole staging -----------------------------------------------------------------------------
    def clear(self, txn) -> None:
        """Forget every change (staging follows latest again); the inode counter stays."""
        for letter in (b"H", b"N", b"D", b"W", b"L"):
            self._drop_prefix(txn, self.prefix + letter)

    def drop(self, txn) -> None:
        """Remove everything of this artifact's staging (the artifact is being deleted)."""
        self._drop_prefix(txn, self.prefix)

    def _items(self, txn, prefix: bytes) -> list[tuple[bytes, bytes]]:
        out = []
        with txn.cursor(db=self.db) as cur:
            if cur.set_range(prefix):
                for key, raw in cur:
                    key = bytes(key)
                    if not key.startswith(prefix):
                        break
                    out.append((key, bytes(raw)))
        return out

    def _drop_prefix(self, txn, prefix: bytes) -> None:
        for key, _ in self._items(txn, prefix):
            txn.delete(key, db=self.db)
