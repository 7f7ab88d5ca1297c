"""Staging: the writable copy-on-write view of an artifact, without FUSE.

Staging shows a *base* version with changes on top. Nothing is copied or written until something
changes: an unmodified node is read straight from the base tree and numbered by its position in
it (staging/inodes.py). A change records the node and its ancestors in the staging index
(catalog/staging_index.py); a directory's index entries list only what changed in it (added,
replaced, moved or removed children), so creating one file in a 100,000-entry directory writes a
handful of keys. A file's bytes are copied from the store into a *data file*,
``STORE/staging/NAME/<inode>`` (0600), only when it is opened for writing without O_TRUNC or
truncated; writes go straight into that real file, so they survive a daemon crash and a remount,
and size/mtime of a modified file are read from it.

A file may have several names (link(2)): its node record names one of them and the index lists
all (catalog/staging_index.py); a base version's link groups are one node too (staging/links.py).
FIFOs, sockets and device nodes are nodes without bytes (their ref is their device number).

The base is the latest version when staging first changes. A staging without changes always shows
the current latest (a ``put`` from elsewhere moves it along); a staging with changes keeps its base
if latest moves, and ``commit`` then makes a version of that base plus the changes: the last
writer wins. The base version of a staging with changes cannot be deleted (Repo.delete_version
refuses), so every object staging shows stays stored.

Ownership is not versioned: unmodified entries show the uid/gid of this process; owners set in
staging are kept until commit. Each metadata operation is one short write transaction; reads use
short read transactions. ``open_data`` copies with no transaction open, so it may run in a worker
thread.
"""

from __future__ import annotations

import heapq
import os
import stat
import time
from dataclasses import dataclass, replace

from . import paths as staging_paths
from ..catalog.objects import (DIR, FILE, GROUP_LEN, KIND_OF, LINK, SPECIAL, Tree, decode_rdev,
                               rdev_ref)
from ..catalog.sessions import alive
from ..catalog.staging_index import ROOT, WHITEOUT, Base, Node, StagingIndex, staging_dir
from ..errors import (Exists, InvalidInput, IsADirectory, NameTooLong, NotADirectory, NotEmpty,
                     NotFound, NotPermitted)
from ..names import LATEST, check_artifact
from .changes import changes
from .data import DataFiles, MissingDataFile, remove
from .inodes import BaseNumbering, Starts, base_offset, in_base
from .links import BaseGroups

__all__ = ["ROOT", "RENAME_NOREPLACE", "RENAME_EXCHANGE", "SEntry", "Staging", "check_name"]

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
NAME_MAX = 255
PATH_MAX = 4096
_EMPTY = Tree([])


@dataclass(slots=True)
class SEntry:
    """One staging node as the FUSE layer sees it (see the module doc)."""

    ino: int
    name: bytes
    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ctime_ns: int
    base: bytes | None
    data: str | None
    target: bytes | None
    nlink: int = 1
    rdev: int = 0


def check_name(name: bytes) -> bytes:
    if not isinstance(name, bytes):
        raise InvalidInput(f"file names are bytes, not {type(name).__name__}")
    if len(name) > NAME_MAX:
        raise NameTooLong(f"name of {len(name)} bytes is longer than {NAME_MAX}")
    if name in (b"", b".", b"..") or b"/" in name or b"\0" in name:
        raise InvalidInput(f"invalid file name {name!r}")
    return name


def _check_target(target: bytes) -> bytes:
    if not isinstance(target, bytes) or not target or b"\0" in target:
        raise InvalidInput(f"invalid symlink target {target!r}")
    if len(target) >= PATH_MAX:
        raise NameTooLong(f"symlink target of {len(target)} bytes is too long")
    return target


def _check_id(value: int | None) -> int | None:
    if value is not None and not 0 <= value < 1 << 32:
        raise InvalidInput(f"invalid user or group id {value}")
    return value


def _node_name(e) -> bytes:
    return e.name


class Staging:
    def __init__(self, repo, name: str):
        self.repo = repo
        self.name = check_artifact(name)
        self.index = StagingIndex(repo.db.dbs, name)
        self.numbering = BaseNumbering(repo.tree)
        self.groups = BaseGroups(repo.tree, self.numbering)
        self.files = DataFiles(staging_dir(repo.path, name))
        self._uid, self._gid = os.getuid(), os.getgid()
        self.clean_data()  # also raises NotFound for a missing artifact

    # reading -----------------------------------------------------------------------------------
    def lookup(self, parent: int, name: bytes) -> SEntry:
        name = check_name(name)

        def get(txn, base):
            node = self.child(txn, base, self.resolve(txn, base, parent), name)
            if node is None:
                raise NotFound(f"staging of {self.name} has no {name!r} in directory {parent}")
            return self.sentry(node, txn)
        return self._read(get)

    def getattr(self, ino: int) -> SEntry:
        return self._read(lambda txn, base: self.sentry(self.resolve(txn, base, ino), txn))

    def readdir(self, ino: int) -> list[SEntry]:
        def get(txn, base):
            return [self.sentry(n, txn) for n in self.children(txn, base, self._dir(txn, base, ino))]
        return self._read(get)

    def readlink(self, ino: int) -> bytes:
        node = self._read(lambda txn, base: self.resolve(txn, base, ino))
        if node.kind != LINK:
            raise InvalidInput(f"staging inode {ino} is not a symlink")
        return node.ref

    def base_version(self) -> int | None:
        return self._read(lambda txn, base: base.number)

    def status(self) -> dict[str, list[str]]:
        """Paths added, modified and deleted relative to the base version (like ``artfs diff``:
        a directory added or deleted is listed with a trailing '/' followed by its files), and
        ``interrupted``: files that were open for writing when their mount died (see
        ``interrupted``). A file opened for writing counts as modified even if its bytes ended up
        equal; commit, which hashes them, may then find no changes."""
        out: dict[str, list[str]] = {"added": [], "modified": [], "deleted": []}

        def walk(txn, base):
            for path, old, new in changes(self, txn, base):
                out["added" if old is None else "deleted" if new is None else "modified"].append(path)
        self._read(walk)
        out["interrupted"] = self.interrupted()
        for paths in out.values():
            paths.sort()
        return out

    def interrupted(self) -> list[str]:
        """Paths of the files that were open for writing in a mount whose daemon died (killed,
        crashed, or unmounted while they were open): their bytes may be short. Commit refuses
        them without ``force``; the mark goes with reset, a commit, deleting the file, or
        overwriting it (an open with O_TRUNC) in a live mount."""
        marks = self._read(lambda txn, base: self.index.writers(txn))
        dead = [ino for ino, token in marks.items() if not alive(self.repo.path, token)]
        return sorted(os.fsdecode(p) for p in self.paths(dead).values())

    def paths(self, inos) -> dict[int, bytes]:
        """Where these inodes are: ino -> path (names joined by b"/", b"" for the root); inodes
        that no longer exist are left out (staging/paths.py)."""
        return self._read(lambda txn, base: staging_paths.paths(self, txn, base, inos))

    def base_paths(self, inos, number: int | None) -> dict[int, bytes]:
        """Where these inodes were while staging had no changes and showed version ``number``
        (None: no version), which latest has since moved away from."""
        def get(txn, base):
            v = self.repo.catalog.version(txn, self.name, number) if number is not None else None
            old = Base(number, v.root if v else None, 0)
            return staging_paths.base_paths(self, old, set(inos))
        return self._read(get)

    def entries(self, paths) -> dict[bytes, SEntry]:
        """What is at these paths now; paths that do not exist are left out."""
        def get(txn, base):
            found = staging_paths.nodes_at(self, txn, base, paths)
            return {path: self.sentry(node, txn) for path, node in found.items()}
        return self._read(get)

    def readdir_at(self, path: bytes) -> list[SEntry]:
        """``readdir`` of the directory at a path, in one read."""
        def get(txn, base):
            node = staging_paths.nodes_at(self, txn, base, [path]).get(path)
            if node is None:
                raise NotFound(f"staging of {self.name} has no {path!r}")
            if node.kind != DIR:
                raise NotADirectory(f"{path!r} in staging of {self.name} is not a directory")
            return [self.sentry(n, txn) for n in self.children(txn, base, node)]
        return self._read(get)

    # changing ----------------------------------------------------------------------------------
    def create(self, parent: int, name: bytes, mode: int, uid: int, gid: int,
               writer: bytes | None = None) -> SEntry:
        """A new empty file; WRITER, a mount's writer token, marks it open for writing."""
        return self._make(parent, name, FILE, mode, uid, gid, writer=writer)

    def mkdir(self, parent: int, name: bytes, mode: int, uid: int, gid: int) -> SEntry:
        return self._make(parent, name, DIR, mode, uid, gid)

    def symlink(self, parent: int, name: bytes, target: bytes, uid: int, gid: int) -> SEntry:
        return self._make(parent, name, LINK, 0o777, uid, gid, _check_target(target))

    def mknod(self, parent: int, name: bytes, mode: int, rdev: int, uid: int, gid: int) -> SEntry:
        """A FIFO, unix socket, character or block device (kept as an entry: it has no bytes),
        or an empty regular file (``S_IFREG``)."""
        kind = KIND_OF.get(stat.S_IFMT(mode))
        if kind == FILE:
            return self.create(parent, name, mode, uid, gid)
        if kind not in SPECIAL:
            raise InvalidInput(f"mknod cannot make file type {stat.S_IFMT(mode):#o}")
        return self._make(parent, name, kind, mode, uid, gid, rdev_ref(kind, rdev))

    def link(self, ino: int, parent: int, name: bytes) -> SEntry:
        """link(2): one more name for a file, symlink or special file of this staging."""
        name = check_name(name)

        def make(txn, base):
            node = self.resolve(txn, base, ino)
            if node.kind == DIR:
                raise NotPermitted("a directory cannot be hard-linked")
            directory = self._dir(txn, base, parent)
            if self.child(txn, base, directory, name) is not None:
                raise Exists(f"{name!r} already exists in staging of {self.name}")
            now = time.time_ns()
            self._record(txn, base, node)
            self._record(txn, base, directory)
            if node.nlink == 1:   # its first other name: it joins a new link group
                self.index.add_name(txn, node.ino, node.parent, node.name)
                node.group = os.urandom(GROUP_LEN)
            self.index.add_name(txn, node.ino, directory.ino, name)
            self.index.put_dirent(txn, directory.ino, name, node.ino)
            node.nlink, node.ctime_ns = node.nlink + 1, now
            self.index.put_node(txn, node)
            self._changed(txn, directory, 1, now)
            return self.sentry(_named(node, directory.ino, name), txn)
        return self._write(make)

    def unlink(self, parent: int, name: bytes) -> SEntry:
        return self._remove(parent, name, directory=False)

    def rmdir(self, parent: int, name: bytes) -> SEntry:
        return self._remove(parent, name, directory=True)

    def rename(self, old_parent: int, old_name: bytes, new_parent: int, new_name: bytes,
               flags: int = 0) -> SEntry | None:
        """rename(2) inside this staging; returns the entry it replaced, if any."""
        old_name, new_name = check_name(old_name), check_name(new_name)
        if flags & RENAME_EXCHANGE:
            raise InvalidInput("RENAME_EXCHANGE is not supported in staging")
        if flags & ~RENAME_NOREPLACE:
            raise InvalidInput(f"unsupported rename flags {flags:#x}")

        def move(txn, base):
            src = self._dir(txn, base, old_parent)
            node = self._existing(txn, base, src, old_name)
            dst = src if new_parent == old_parent else self._dir(txn, base, new_parent)
            old = self.child(txn, base, dst, new_name)
            if old is not None and old.ino == node.ino:
                return None
            if old is not None and flags & RENAME_NOREPLACE:
                raise Exists(f"{new_name!r} already exists")
            if node.kind == DIR and self._inside(txn, base, dst, node.ino):
                raise InvalidInput("cannot move a directory into itself")
            _check_replace(node, old)
            replaced = self.sentry(old, txn) if old is not None else None
            now = time.time_ns()
            for n in (src, dst, node):
                self._record(txn, base, n)
            if old is not None and not self._drop(txn, base, dst, old):
                replaced.data = None   # its other names keep its data file
            self._unlink_slot(txn, src, old_name)
            if node.nlink > 1:
                self.index.drop_name(txn, node.ino, src.ino, old_name)
                self.index.add_name(txn, node.ino, dst.ino, new_name)
            node.parent, node.name, node.ctime_ns = dst.ino, new_name, now
            self._link(txn, dst, node)
            moved = int(node.kind == DIR)
            self._changed(txn, src, -1, now, -moved)
            self._changed(txn, dst, 0 if old is not None else 1, now,
                          moved - int(old is not None and old.kind == DIR))
            return replaced
        replaced = self._write(move)
        self._discard(replaced)
        return replaced

    def setattr(self, ino: int, *, mode=None, uid=None, gid=None, size=None, atime_ns=None,
                mtime_ns=None) -> SEntry:
        """chmod/chown/truncate/utimes. An atime alone changes nothing (atimes are not kept)."""
        uid, gid = _check_id(uid), _check_id(gid)
        if size is not None and size < 0:
            raise InvalidInput(f"invalid file size {size}")
        if size is not None:
            os.truncate(self.open_data(ino, truncate=size == 0), size)
        if mode is None and uid is None and gid is None and mtime_ns is None:
            return self.getattr(ino)

        def change(txn, base):
            node = self.resolve(txn, base, ino)
            self._record(txn, base, node)
            if mode is not None:
                node.mode = stat.S_IMODE(mode)
            node.uid = node.uid if uid is None else uid
            node.gid = node.gid if gid is None else gid
            if mtime_ns is not None:
                node.mtime_ns = mtime_ns
                if node.local:
                    atime = atime_ns or self.files.stat(ino).st_atime_ns
                    os.utime(self.files.path(ino), ns=(atime, mtime_ns))
            node.ctime_ns = time.time_ns()
            self.index.put_node(txn, node)
            return self.sentry(node, txn)
        return self._write(change)

    def open_data(self, ino: int, *, truncate: bool = False, writer: bytes | None = None) -> str:
        """The data file to write a file through, copying its stored bytes first if needed.
        WRITER, a mount's writer token, marks the file open for writing (in the copy-up's
        transaction) until ``closed``; it replaces the mark of a dead mount only with TRUNCATE."""
        node, mark = self._read(lambda txn, base: (self._file(txn, base, ino),
                                                   self.index.writer(txn, ino)))
        if node.local:
            self.files.unshare(ino)
            if truncate:
                os.truncate(self.files.path(ino), 0)
            if writer is not None and mark != writer and (mark is None or truncate):
                self._write(lambda txn, base: self._mark(txn, ino, writer, truncate))
            return self.files.path(ino)
        tmp = None if truncate else self.files.copy(self.repo, ino, node.ref, node.mtime_ns)
        try:
            return self._write(lambda txn, base: self._install(txn, base, ino, tmp, truncate, writer))
        finally:
            if tmp is not None:
                remove(tmp)

    def closed(self, inos, writer: bytes) -> None:
        """The mount with this writer token closed the last writer of these files."""
        def drop(txn, base):
            for ino in inos:
                if self.index.writer(txn, ino) == writer:
                    self.index.drop_writer(txn, ino)
        self._write(drop)

    def reset(self) -> None:
        """Discard every change: staging shows latest again."""
        self._write(lambda txn, base: self.index.clear(txn))
        self.clean_data()

    def clean_data(self) -> None:
        """Delete data files that no index entry references (left by a crash after a commit,
        reset or unlink, or by a copy-up whose process died). Writes only when there are some."""
        def strays(txn, base):
            return self.files.strays(self.index.local_inos(txn))
        if self._read(strays):
            self._write(lambda txn, base: [remove(path) for path in strays(txn, base)])

    # used by staging/commit.py, inside the caller's transaction -----------------------------------------
    def base(self, txn) -> Base:
        staged = self.index.header(txn)
        if staged is not None:
            return staged
        latest = self.repo.catalog.aliases(txn, self.name).get(LATEST)
        if latest is None:
            created = self.repo.catalog.require_artifact(txn, self.name)["created"]
            return Base(None, None, int(created * 1e9))
        v = self.repo.catalog.version(txn, self.name, latest)
        return Base(latest, v.root, int(v.created * 1e9))

    def resolve(self, txn, base: Base, ino: int) -> Node:
        node = self.index.node(txn, ino)
        if node is not None:
            return self._counted(txn, node)
        if ino == ROOT:
            return self._root(base)
        path = self._base_path(base, ino)
        if path is None or self._anchor(txn, path) is None:
            raise NotFound(f"staging inode {ino} of {self.name} no longer exists")
        return path[-1]

    def child(self, txn, base: Base, parent: Node, name: bytes) -> Node | None:
        if parent.kind != DIR:
            raise NotADirectory(f"staging inode {parent.ino} is not a directory")
        if parent.stored:
            ino = self.index.dirent(txn, parent.ino, name)
            if ino is not None:
                if ino == WHITEOUT:
                    return None
                return _named(self._counted(txn, self.index.node(txn, ino)), parent.ino, name)
        i, entry = self._origin(parent).locate(name)   # of a paged directory: one page read
        if entry is None:
            return None
        return self._derive(base, parent, i, entry, self.numbering.starts(parent.ref))

    def children(self, txn, base: Base, parent: Node, *, numbered: bool = True):
        """The entries of a directory, sorted by name: its origin tree with the overlay applied.
        ``numbered=False`` skips numbering unmodified children (their ino is then 0)."""
        entries = self._origin(parent).entries
        starts = self.numbering.starts(parent.ref) if numbered and entries else None
        overlay = self.index.dirents(txn, parent.ino) if parent.stored else []
        shadowed = {name for name, _ in overlay}
        unmodified = (self._derive(base, parent, i, e, starts)
                      for i, e in enumerate(entries) if e.name not in shadowed)
        recorded = (_named(self.index.node(txn, ino), parent.ino, name)
                    for name, ino in overlay if ino != WHITEOUT)
        return heapq.merge(unmodified, recorded, key=_node_name)

    def sentry(self, node: Node, txn=None) -> SEntry:
        """What the mount shows of a node (``txn``: for a directory's link count)."""
        size, mtime, ctime, data = node.size, node.mtime_ns, node.ctime_ns, None
        if node.local:
            st, data = self.files.stat(node.ino), self.files.path(node.ino)
            size, mtime, ctime = st.st_size, st.st_mtime_ns, max(ctime, st.st_ctime_ns)
        nlink = 2 + self.subdirs(txn, node) if node.kind == DIR else node.nlink
        rdev = decode_rdev(node.ref) if node.kind in SPECIAL else 0
        return SEntry(node.ino, node.name, node.kind, node.mode, node.uid, node.gid, size, mtime,
                      ctime, node.ref if node.kind == FILE and not node.local else None, data,
                      node.ref if node.kind == LINK else None, nlink, rdev)

    def _counted(self, txn, node: Node) -> Node:
        """A recorded node, a directory recorded by an older artfs counted now: before a change
        to its overlay, which its count is derived from."""
        if node.kind == DIR and node.subdirs is None:
            self.subdirs(txn, node)
        return node

    def subdirs(self, txn, directory: Node) -> int:
        """How many subdirectories a directory has: counted in its origin tree (trees are cached
        with their count) until it is recorded, then kept in its record by every change."""
        if directory.subdirs is None:
            count = self._origin(directory).subdirs
            if directory.stored:   # recorded by an older artfs, without the count
                overlay = self.index.dirents(txn, directory.ino)
                origin = self._origin(directory)
                for name, ino in overlay:
                    old = origin.lookup(name)
                    count -= old is not None and old.kind == DIR
                    count += ino != WHITEOUT and self.index.node(txn, ino).kind == DIR
            directory.subdirs = count
        return directory.subdirs

    # transactions ------------------------------------------------------------------------------
    def _read(self, fn):
        for again in (True, False):
            try:
                with self.repo.db.read() as txn:
                    return fn(txn, self.base(txn))
            except MissingDataFile:   # removed after this read began (a commit landed): again
                if not again:
                    raise

    def _write(self, fn):
        return self.repo.db.write(lambda txn: fn(txn, self.base(txn)))

    # the base tree -----------------------------------------------------------------------------
    def _origin(self, node: Node) -> Tree:
        return self.repo.tree(node.ref) if node.ref else _EMPTY

    def _root(self, base: Base) -> Node:
        size = self.repo.tree(base.root).count if base.root else 0
        return Node(ROOT, DIR, 0o755, self._uid, self._gid, base.mtime_ns, base.mtime_ns, size, 0,
                    b"", base.root or b"")

    def _from_entry(self, e, ino: int, parent: int) -> Node:
        return Node(ino, e.kind, e.mode, self._uid, self._gid, e.mtime_ns, e.mtime_ns, e.size,
                    parent, e.name, e.ref, nlink=e.nlink, group=e.group)

    def _derive(self, base: Base, parent: Node, i: int, e, starts: Starts | None) -> Node:
        """Child i (entry ``e``) of parent's origin tree, unmodified; numbered when ``starts`` is
        given (the names of a link group by the number of its first name: one inode)."""
        ino = 0
        if starts is not None and e.group:
            ino = base_offset(base.number) + self.groups.of(base.root)[e.group][0][0]
        elif starts is not None:
            at = 0 if parent.ino == ROOT else parent.ino - base_offset(base.number)
            ino = base_offset(base.number) + at + starts[i]
        return self._from_entry(e, ino, parent.ino)

    def _base_path(self, base: Base, ino: int) -> list[Node] | None:
        """The unmodified nodes from the root down to base inode ``ino``; None if not a base inode."""
        if not in_base(ino, base.number):
            return None
        offset = base_offset(base.number)
        located = self.numbering.locate(base.root, ino - offset)
        if located is None:
            return None
        path = [self._root(base)]
        for index, e in located:
            path.append(self._from_entry(e, offset + index, path[-1].ino))
        return path

    def _anchor(self, txn, path: list[Node]) -> int | None:
        """Where an unrecorded base node (path[-1]) hangs: the position in ``path`` of its deepest
        recorded ancestor (0: the root), or None if it no longer exists (below that ancestor, the
        overlay replaced or removed the next name)."""
        if not self.index.has(txn, ROOT):
            return 0  # nothing recorded: staging shows its base unchanged
        at = next(i for i in range(len(path) - 2, -1, -1)
                  if path[i].ino == ROOT or self.index.has(txn, path[i].ino))
        return at if self.index.dirent(txn, path[at].ino, path[at + 1].name) is None else None

    # recording changes -------------------------------------------------------------------------
    def _record(self, txn, base: Base, node: Node) -> None:
        """Give a node, and its unrecorded ancestors, index records so that it can change."""
        if node.stored:
            return
        if node.nlink > 1 and node.kind != DIR:
            return self._record_group(txn, base, node)
        chain = [node] if node.ino == ROOT else self._base_path(base, node.ino)[:-1] + [node]
        todo = []
        for n in reversed(chain):
            if self.index.has(txn, n.ino):
                break
            todo.append(n)
        for n in reversed(todo):
            if n.kind == DIR:
                self.subdirs(txn, n)   # counted in its origin tree, from now on kept in its record
            if n.ino == ROOT:
                self.index.set_header(txn, base)
            else:
                self.index.put_dirent(txn, n.parent, n.name, n.ino)
            self.index.put_node(txn, n)
        node.stored = True

    def _record_group(self, txn, base: Base, node: Node) -> None:
        """Record every name of an unmodified base link group at once, as one node."""
        offset = base_offset(base.number)
        for _, at, name in self.groups.of(base.root)[node.group]:
            parent = self.resolve(txn, base, ROOT if at == 0 else offset + at)
            self._record(txn, base, parent)
            self.index.put_dirent(txn, parent.ino, name, node.ino)
            self.index.add_name(txn, node.ino, parent.ino, name)
        self.index.put_node(txn, node)

    def _unname(self, txn, ino: int, parent: int, name: bytes, now: int) -> None:
        """One name of a node with several goes; the node stays with the others."""
        node = self.index.node(txn, ino)
        self.index.drop_name(txn, ino, parent, name)
        node.nlink, node.ctime_ns = node.nlink - 1, now
        if (node.parent, node.name) == (parent, name):
            node.parent, node.name = self.index.names(txn, ino)[0]
        if node.nlink == 1:   # a plain file again
            self.index.drop_names(txn, ino)
            node.group = b""
        self.index.put_node(txn, node)

    def _link(self, txn, parent: Node, node: Node) -> None:
        self.index.put_dirent(txn, parent.ino, node.name, node.ino)
        self.index.put_node(txn, node)

    def _unlink_slot(self, txn, parent: Node, name: bytes) -> None:
        if self._origin(parent).lookup(name) is not None:
            self.index.put_dirent(txn, parent.ino, name, WHITEOUT)
        else:
            self.index.drop_dirent(txn, parent.ino, name)

    def _drop(self, txn, base: Base, parent: Node, node: Node) -> bool:
        """Remove the name of ``node`` in ``parent``; whether the node is gone (not when it has
        other names)."""
        if node.nlink > 1 and node.kind != DIR:
            self._record(txn, base, node)
            self._unlink_slot(txn, parent, node.name)
            self._unname(txn, node.ino, parent.ino, node.name, time.time_ns())
            return False
        if node.stored:
            self.index.drop_node(txn, node.ino)
            if node.kind == DIR:
                self.index.drop_dirents(txn, node.ino)
        self._unlink_slot(txn, parent, node.name)
        return True

    def _changed(self, txn, directory: Node, delta: int, now: int, dirs: int = 0) -> None:
        """A directory gained (or lost) ``delta`` entries, ``dirs`` of them directories."""
        directory.subdirs = self.subdirs(txn, directory) + dirs
        directory.size += delta
        directory.mtime_ns = directory.ctime_ns = now
        self.index.put_node(txn, directory)

    # operations --------------------------------------------------------------------------------
    def _dir(self, txn, base: Base, ino: int) -> Node:
        node = self.resolve(txn, base, ino)
        if node.kind != DIR:
            raise NotADirectory(f"staging inode {ino} is not a directory")
        return node

    def _file(self, txn, base: Base, ino: int) -> Node:
        node = self.resolve(txn, base, ino)
        if node.kind == DIR:
            raise IsADirectory(f"staging inode {ino} is a directory")
        if node.kind != FILE:
            raise InvalidInput(f"staging inode {ino} is not a regular file")
        return node

    def _existing(self, txn, base: Base, parent: Node, name: bytes) -> Node:
        node = self.child(txn, base, parent, name)
        if node is None:
            raise NotFound(f"staging of {self.name} has no {name!r} in directory {parent.ino}")
        return node

    def _make(self, parent: int, name: bytes, kind: str, mode: int, uid: int, gid: int,
              target: bytes = b"", writer: bytes | None = None) -> SEntry:
        name, uid, gid = check_name(name), _check_id(uid), _check_id(gid)

        def make(txn, base):
            directory = self._dir(txn, base, parent)
            if self.child(txn, base, directory, name) is not None:
                raise Exists(f"{name!r} already exists in staging of {self.name}")
            now = time.time_ns()
            group, bits = gid, stat.S_IMODE(mode)
            if directory.mode & stat.S_ISGID:  # setgid directory: its group, setgid subdirs (ext4)
                group, bits = directory.gid, bits | (stat.S_ISGID if kind == DIR else 0)
            node = Node(self.index.new_ino(txn), kind, bits, uid, group, now, now,
                        len(target) if kind == LINK else 0, directory.ino, name, target,
                        local=kind == FILE, subdirs=0 if kind == DIR else None)
            self._record(txn, base, directory)
            self._link(txn, directory, node)
            self._changed(txn, directory, 1, now, int(kind == DIR))
            if node.local:
                self.files.create(node.ino)
            if writer is not None:
                self.index.put_writer(txn, node.ino, writer)
            return self.sentry(node, txn)
        return self._write(make)

    def _remove(self, parent: int, name: bytes, *, directory: bool) -> SEntry:
        name = check_name(name)

        def drop(txn, base):
            parent_node = self._dir(txn, base, parent)
            node = self._existing(txn, base, parent_node, name)
            if directory and node.kind != DIR:
                raise NotADirectory(f"{name!r} is not a directory")
            if not directory and node.kind == DIR:
                raise IsADirectory(f"{name!r} is a directory")
            if node.kind == DIR and node.size:
                raise NotEmpty(f"directory {name!r} is not empty")
            removed = self.sentry(node, txn)
            self._record(txn, base, parent_node)
            if not self._drop(txn, base, parent_node, node):
                removed.data = None   # its other names keep its data file
            self._changed(txn, parent_node, -1, time.time_ns(), -int(node.kind == DIR))
            return removed
        removed = self._write(drop)
        self._discard(removed)
        return removed

    def _inside(self, txn, base: Base, node: Node, ino: int) -> bool:
        """Whether ``node`` is ``ino`` or lies below it."""
        while node.ino != ino:
            if node.ino == ROOT:
                return False
            node = self.resolve(txn, base, node.parent)
        return True

    # data files ------------------------------------------------------------------------------
    def _discard(self, entry: SEntry | None) -> None:
        """Delete a removed node's data file, after its transaction (a crash leaves a stray)."""
        if entry is not None and entry.data is not None:
            remove(entry.data)

    def _mark(self, txn, ino: int, writer: bytes | None, truncate: bool) -> None:
        """Mark a file open for writing by WRITER, keeping the mark of a dead mount unless the
        file is being truncated (its old bytes no longer matter)."""
        if writer is None:
            return
        mark = self.index.writer(txn, ino)
        if mark is None or truncate or alive(self.repo.path, mark):
            self.index.put_writer(txn, ino, writer)

    def _install(self, txn, base: Base, ino: int, tmp: str | None, truncate: bool,
                 writer: bytes | None = None) -> str:
        """Make a file local: its data file becomes the copy (or an empty file)."""
        node = self._file(txn, base, ino)
        path = self.files.path(node.ino)
        self._mark(txn, ino, writer, truncate)
        if node.local:  # copied up meanwhile by someone else
            self.files.unshare(node.ino)
            if truncate:
                os.truncate(path, 0)
            return path
        self._record(txn, base, node)
        node.local, node.ref, node.ctime_ns = True, b"", time.time_ns()
        self.index.put_node(txn, node)
        if tmp is None:
            self.files.create(node.ino)
        else:
            self.files.install(tmp, node.ino)
        return path


def _named(node: Node, parent: int, name: bytes) -> Node:
    """A node as found under one of its names (a hard-linked node's record holds one of them)."""
    if node.nlink < 2 or (node.parent, node.name) == (parent, name):
        return node
    return replace(node, parent=parent, name=name)


def _check_replace(node: Node, old: Node | None) -> None:
    """rename(2)'s rules for replacing ``old`` with ``node``."""
    if old is None:
        return
    if node.kind == DIR and old.kind != DIR:
        raise NotADirectory(f"cannot replace non-directory {old.name!r} with a directory")
    if node.kind != DIR and old.kind == DIR:
        raise IsADirectory(f"cannot replace directory {old.name!r} with a non-directory")
    if old.kind == DIR and old.size:
        raise NotEmpty(f"directory {old.name!r} is not empty")
