"""``NAME/staging/`` in the mount: the artifact's copy-on-write staging (staging/overlay.py) as nodes.

Every mutation of one artifact's staging holds that artifact's lock (so it is serialized against
its commit and reset) and runs in a worker thread: a staging change is an LMDB write transaction,
and a write transaction waits for any other writer (a commit in progress), which must never stall
the trio loop that serves every other request. Lookups, attributes and listings are short reads on
the trio thread. Reads and writes of open files, and opening data files, run in worker threads
too (mount/model.py); writes go straight to the data file through one fd per open inode; size and
mtime of a modified file are read back from that file (staging.py), so a close needs no call.

There is one node object per inode number (StagingState.nodes), so that when a commit, a reset or
a moved latest renumbers staging, every holder - the kernel's inode, an open file, a directory
listing, a request waiting for the lock - sees the node's new staging inode (mount/moves.py).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import stat
import weakref

import trio

from ..catalog.objects import FORMAT
from ..errors import Conflict, NotFound
from ..staging.overlay import ROOT, Staging
from ..staging.paths import join
from .files import StagedFile, StagedHandle, data_fd
from .moves import Move, Stale
from .nodes import SHORT, Attr, Listing, Node

GONE = 0   # the staging inode of a node that no longer exists (no staging node has 0)


class StagedNode(Node):
    """Made only by StagingState.node (one object per inode number)."""

    def __init__(self, st: "StagingState", entry, ino: int):
        self.staging, self.entry, self.ino = st, entry, ino

    def sino(self) -> int:
        """This node's staging inode now."""
        if self._moving() is not None:
            self.fresh()
        return self.entry.ino

    def _moving(self) -> bytes | None:
        """While staging is renumbered (mount/moves.py), the path of this node, by which requests
        find it then - its staging inode may change under them. Each such request reads once."""
        move = self.staging.moving
        seen = move.seen.get(self.ino) if move is not None else None
        return seen.path if seen is not None else None

    def _at(self, path: bytes, kind: str):
        e = self.staging.model.entries([path]).get(path)
        if e is None or e.kind != kind:
            raise NotFound(f"{self.staging.art.name}/staging has no {os.fsdecode(path)!r} now")
        return e

    def where(self) -> str:
        path = self.staging.model.paths([self.entry.ino]).get(self.entry.ino, self.entry.name)
        return "/".join(p for p in (self.staging.art.name, "staging", os.fsdecode(path)) if p)

    def fresh(self) -> "StagedNode":
        try:
            path = self._moving()
            self.entry = (self.staging.model.getattr(self.entry.ino) if path is None
                          else self._at(path, self.entry.kind))
        except NotFound:
            f = self.staging.opened.get(self.ino)
            if f is None:
                raise
            # unlinked (or gone in a reset) while open: the open file is what remains
            st = f.stat()
            self.entry = dataclasses.replace(self.entry, nlink=0)
            if st is not None:
                self.entry = dataclasses.replace(self.entry, size=st.st_size,
                                                 mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns)
        return self

    def attr(self) -> Attr:
        e = self.entry
        if e.ino == ROOT:      # staging/ is the artifact's to write: its owner, group and mode
            a = self.staging.fs.repo.access(self.staging.art.name)
            return Attr(self.ino, stat.S_IFDIR | a.mode, e.size, e.mtime_ns, e.ctime_ns, e.nlink,
                        a.uid, a.gid, SHORT)
        return Attr(self.ino, FORMAT[e.kind] | e.mode, e.size, e.mtime_ns, e.ctime_ns, e.nlink,
                    e.uid, e.gid, SHORT, e.rdev)

    def is_root(self) -> bool:
        return self.entry.ino == ROOT

    def child(self, entry) -> "StagedNode":
        return self.staging.node(entry, self)

    def lookup(self, name: bytes) -> Node:
        path = self._moving()
        if path is None:
            return self.child(self.staging.model.lookup(self.entry.ino, name))
        e = self.staging.model.entries([join(path, name)]).get(join(path, name))
        if e is None:
            raise NotFound(f"{self.where()} has no {name!r}")
        return self.child(e)

    def listing(self) -> Listing:
        path, epoch = self._moving(), self.staging.epoch
        model = self.staging.model
        entries = model.readdir(self.entry.ino) if path is None else model.readdir_at(path)

        def entry(i: int):
            if self.staging.epoch != epoch:   # renumbered since opendir: the name's node now
                try:
                    return entries[i].name, self.lookup(entries[i].name)
                except NotFound:
                    pass                      # gone since: listed as the snapshot had it
            return entries[i].name, self.child(entries[i])
        return Listing(len(entries), entry)

    def readlink(self) -> bytes:
        path = self._moving()
        if path is None:
            return self.staging.model.readlink(self.entry.ino)
        return self._at(path, "l").target


class StagingState:
    """One artifact's staging as the mount serves it: nodes, open files, writers."""

    def __init__(self, fs, art):
        self.fs, self.art = fs, art
        self.model = Staging(fs.repo, art.name)
        self.nodes: weakref.WeakValueDictionary[int, StagedNode] = weakref.WeakValueDictionary()
        self.opened: dict[int, StagedFile] = {}     # inode number -> shared open state
        self.writers: set[StagedHandle] = set()   # handles open for writing (commit refuses)
        self.moving: Move | None = None             # a renumbering in flight (follow)
        self.epoch = 0                              # renumberings so far
        self.shown = self.base()                    # the version staging was numbered by

    def root(self) -> StagedNode:
        return self.node(self.model.getattr(ROOT), None)

    def node(self, entry, parent: StagedNode | None) -> StagedNode:
        """The node of an entry looked up in ``parent`` (None: the staging root)."""
        key = self._key(entry.ino)
        move = self.moving
        ino = self.fs.inodes.inode(key) if move is None else move.place(
            self.fs.inodes, key, entry, parent.ino if parent is not None else None)
        node = self.nodes.get(ino)
        if node is None:
            node = self.nodes[ino] = StagedNode(self, entry, ino)
        else:
            node.entry = entry
        return node

    def _key(self, sino: int) -> tuple:
        return ("s", self.art.ino, sino)

    def base(self) -> int | None:
        return self.model.base_version()

    async def _mutate(self, fn, *args, **kwargs):
        """fn(*args) under the artifact's lock; node arguments become their staging inodes there
        (after a commit that the request waited for, not before)."""
        async with self.art.lock:
            args = [a.sino() if isinstance(a, StagedNode) else a for a in args]
            return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    def check_no_writers(self, action: str) -> None:
        if self.writers:
            node = next(iter(self.writers)).node
            raise Conflict(f"cannot {action} {self.art.name}: {node.where()} is open for "
                           "writing in the mount; close it first")

    # tree changes ------------------------------------------------------------------------------
    async def mkdir(self, parent: StagedNode, name: bytes, mode: int, uid: int, gid: int):
        return parent.child(await self._mutate(self.model.mkdir, parent, name, mode, uid, gid))

    async def symlink(self, parent: StagedNode, name: bytes, target: bytes, uid: int, gid: int):
        return parent.child(await self._mutate(self.model.symlink, parent, name, target,
                                               uid, gid))

    async def mknod(self, parent: StagedNode, name: bytes, mode: int, rdev: int, uid: int, gid: int):
        return parent.child(await self._mutate(self.model.mknod, parent, name, mode, rdev,
                                               uid, gid))

    async def link(self, node: StagedNode, parent: StagedNode, name: bytes):
        return parent.child(await self._mutate(self.model.link, node, parent, name))

    async def unlink(self, parent: StagedNode, name: bytes) -> None:
        self._gone(await self._mutate(self.model.unlink, parent, name))

    async def rmdir(self, parent: StagedNode, name: bytes) -> None:
        await self._mutate(self.model.rmdir, parent, name)

    async def rename(self, old: StagedNode, old_name: bytes, new: StagedNode, new_name: bytes,
                     flags: int) -> None:
        self._gone(await self._mutate(self.model.rename, old, old_name, new, new_name, flags))

    def _gone(self, entry) -> None:
        """A file removed or replaced with its data file (not one keeping other names)."""
        if entry is not None and entry.data is not None:
            self.fs.marks.removed(self, entry.ino)

    async def setattr(self, node: StagedNode, **changes) -> StagedNode:
        try:
            node.entry = entry = await self._mutate(self.model.setattr, node, **changes)
        except NotFound:
            f = self.opened.get(node.ino)
            if f is None:
                raise
            return _set_unlinked(node, f, **changes)
        f = self.opened.get(node.ino)
        if f is not None and f.fd is None and entry.data is not None:
            # truncated: readers of the base now read the data file
            f.copy_up(await self.fs.in_thread(data_fd, entry.data))
        return node

    # open files --------------------------------------------------------------------------------
    async def create(self, parent: StagedNode, name: bytes, mode: int, uid: int, gid: int,
                     write: bool, clears_setid: bool = False):
        async with self.art.lock:
            entry = await trio.to_thread.run_sync(self.model.create, parent.sino(), name, mode, uid,
                                                  gid, self.fs.marks.token() if write else None)
            node = parent.child(entry)
            return node, await self._open(node, write, False, clears_setid)

    async def open(self, node: StagedNode, write: bool, truncate: bool,
                   clears_setid: bool = False) -> StagedHandle:
        """A handle on NODE; CLEARS_SETID: its writes drop set-user/group-ID bits (model.py)."""
        node.fresh()   # base or data file: whatever it is now
        if not write:
            return await self._open(node, write, truncate, clears_setid)
        async with self.art.lock:
            return await self._open(node, write, truncate, clears_setid)

    async def _open(self, node: StagedNode, write: bool, truncate: bool,
                    clears_setid: bool) -> StagedHandle:
        f = await self._file(node)
        f.refs += 1   # before any await: a concurrent last release must not close it
        try:
            if write and (f.fd is None or truncate or not self._writing(node)):
                # copy up if needed; mark the file open for writing (mount/writing.py)
                self.fs.marks.opened(self, node.entry.ino)
                try:
                    fd = await trio.to_thread.run_sync(functools.partial(
                        self._copy_up, node.entry.ino, truncate=truncate, want_fd=f.fd is None))
                except NotFound:
                    if f.fd is None or truncate:
                        raise
                    fd = None   # unlinked while open (a reopen by /proc/PID/fd): nothing to mark
                if fd is not None:
                    f.copy_up(fd)
        except BaseException:
            await self.fs.unpin(self._unref(node.ino, f))
            raise
        handle = StagedHandle(self, node, f, write, clears_setid)
        if write:
            self.writers.add(handle)
        return handle

    async def _file(self, node: StagedNode) -> StagedFile:
        """The open state of ``node``: the one open already, or a new one once its base file is
        pinned or its data file opened (both may wait) - kept if meanwhile no other open made one
        and the node's bytes did not move (a truncate copies a file up), else made again."""
        while True:
            f = self.opened.get(node.ino)
            if f is not None:
                return f
            entry = node.entry
            fid, fd = None, None
            if entry.data is not None:
                fd = await self.fs.in_thread(data_fd, entry.data)
            elif entry.base is not None:
                fid = entry.base
                await self.fs.hold(fid)
            now = node.entry
            if node.ino not in self.opened and (now.data, now.base) == (entry.data, entry.base):
                f = self.opened[node.ino] = StagedFile(self.fs, fid, fd)
                return f
            if fd is not None:
                os.close(fd)
            await self.fs.unpin(fid)

    def _copy_up(self, sino: int, *, truncate: bool, want_fd: bool) -> int | None:
        """Make the data file of staging inode ``sino`` (worker thread); an fd on it if wanted."""
        path = self.model.open_data(sino, truncate=truncate, writer=self.fs.marks.token())
        return data_fd(path) if want_fd else None

    def _writing(self, node: StagedNode) -> bool:
        """Whether this mount has NODE open for writing (so its file is marked: mount/writing.py)."""
        return any(h.node is node for h in self.writers)

    def close_file(self, handle: StagedHandle) -> bytes | None:
        self.writers.discard(handle)
        if handle.writable and not self._writing(handle.node):
            self.fs.marks.closed(self, handle.node.entry.ino)
        return self._unref(handle.node.ino, handle.file)

    def _unref(self, ino: int, f: StagedFile) -> bytes | None:
        """Drop one user of an open file; on the last, close it and return its pinned file id."""
        f.refs -= 1
        if f.refs > 0:
            return None
        if self.opened.get(ino) is f:   # else set apart by a renumbering (_rebind)
            del self.opened[ino]
        return f.close()

    # renumbering (mount/moves.py) -----------------------------------------------------------------
    async def follow(self, change):
        """Run ``change``, a blocking call that renumbers staging (a commit, a reset, deleting the
        version a staging without changes shows), in a worker thread - the caller holds the
        artifact's lock - keeping the inode number of every node whose path survives it. Returns
        its result and the kernel entries to invalidate."""
        await self._start()
        try:
            result = await trio.to_thread.run_sync(change)
            self.fs.marks.forget(self)   # the change cleared the index, marks included
        finally:
            with trio.CancelScope(shield=True):
                stale = await self._settle()
        return result, stale

    async def rebased(self) -> list[Stale]:
        """After a put from another process: if staging (without changes) now shows another
        latest, its nodes follow their paths into it, as in ``follow``."""
        if self.base() == self.shown:
            return []   # what it showed (a staging with changes keeps its base)
        async with self.art.lock:
            await self._start()
            return await self._settle()

    async def _start(self) -> None:
        held = dict(self.nodes.items())
        sinos = {n.entry.ino for n in held.values()}
        where, was = await trio.to_thread.run_sync(self._survey, sinos)
        late = {ino: n for ino, n in list(self.nodes.items()) if ino not in held}  # made meanwhile
        if late:
            more, also = self._survey({n.entry.ino for n in late.values()} - where.keys())
            where, was = where | more, was | also
        move = Move()
        for ino, node in {**held, **late}.items():
            path = where.get(node.entry.ino)
            move.add(ino, path, self._key(node.entry.ino), was.get(path, node.entry))
        self.moving = move

    def _survey(self, sinos: set[int]) -> tuple[dict[int, bytes], dict]:
        """Where staging inodes are and what is there - or, for a staging without changes whose
        latest moved on under it (a put), where they were in the version it showed (what is there
        is then what the kernel was last told)."""
        found = self.model.paths(sinos)
        if self.model.base_version() == self.shown:
            return found, self.model.entries(set(found.values()))
        found.update(self.model.base_paths(sinos - found.keys(), self.shown))
        return found, {}

    async def _settle(self) -> list[Stale]:
        move = self.moving
        try:
            asked = move.paths()
            found = await trio.to_thread.run_sync(self.model.entries, asked)
            found.update(self.model.entries(move.paths() - asked))   # placed meanwhile: few
            stale = self._rebind(move, found)
            self.shown = self.base()
            return stale
        finally:
            self.moving, self.epoch = None, self.epoch + 1

    def _rebind(self, move: Move, found: dict) -> list[Stale]:
        """Each node takes the staging inode now at its path, or is gone."""
        keys, stale = [], []
        for ino, seen, now in move.outcome(found):
            keys.append((ino, seen.key, self._key(now.ino) if now is not None else None))
            node = self.nodes.get(ino)
            if node is not None:
                node.entry = now if now is not None else dataclasses.replace(node.entry, ino=GONE)
            f = self.opened.get(ino)
            if f is not None and now is not None and not (f.fd is None and now.data is None
                                                          and f.fid == now.base):
                del self.opened[ino]   # other bytes now: its handles keep theirs, opens start anew
            entry = move.stale(seen, now)
            if entry is not None:
                stale.append(entry)
        self.fs.inodes.rekey(keys)
        return stale


def _set_unlinked(node: StagedNode, f: StagedFile, *, mode=None, uid=None, gid=None, size=None,
                  atime_ns=None, mtime_ns=None) -> StagedNode:
    """ftruncate/fchmod/fchown/futimens of a file unlinked while open apply to the open file, as on
    ext4: size and mtime to its data file, the rest to the entry it keeps until its last close."""
    if f.fd is not None:
        if size is not None:
            os.ftruncate(f.fd, size)
        if mtime_ns is not None:
            os.utime(f.fd, ns=(atime_ns or mtime_ns, mtime_ns))
    elif size is not None:
        raise NotFound(f"{node.where()} was unlinked")   # not reachable: a reader cannot truncate
    e = node.fresh().entry
    node.entry = dataclasses.replace(e, mode=e.mode if mode is None else stat.S_IMODE(mode),
                                     uid=e.uid if uid is None else uid,
                                     gid=e.gid if gid is None else gid,
                                     mtime_ns=e.mtime_ns if mtime_ns is None else mtime_ns)
    return node
