"""``NAME/staging/`` in the mount: the artifact's copy-on-write staging (artfs/staging.py) as nodes.

Every mutation of one artifact's staging holds that artifact's lock (so it is serialized against
its commit and reset) and runs in a worker thread: a staging change is an LMDB write transaction,
and a write transaction waits for any other writer (a commit in progress), which must never stall
the trio loop that serves every other request. Lookups, attributes and listings are short reads on
the trio thread. Writes go straight to the data file through one fd per open inode; size and
mtime of a modified file are read back from that file (staging.py), so a close needs no call.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import stat

import trio

from ..errors import Conflict, NotFound
from ..staging import ROOT, Staging
from .files import StagedFile, StagedHandle
from .nodes import SHORT, Attr, Listing, Node

_FMT = {"f": stat.S_IFREG, "d": stat.S_IFDIR, "l": stat.S_IFLNK}


class StagedNode(Node):
    def __init__(self, st: "StagingState", entry, path: str):
        self.staging, self.entry, self.path = st, entry, path
        self.ino = st.fs.inodes.inode(("s", st.art.ino, entry.ino))

    def where(self) -> str:
        return "/".join(p for p in (self.staging.art.name, "staging", self.path) if p)

    def fresh(self) -> "StagedNode":
        try:
            self.entry = self.staging.model.getattr(self.entry.ino)
        except NotFound:
            f = self.staging.opened.get(self.entry.ino)
            if f is None:
                raise
            # unlinked (or renumbered by a commit) while open: the open file is what remains
            st = f.stat()
            if st is not None:
                self.entry = dataclasses.replace(self.entry, size=st.st_size,
                                                 mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns)
        return self

    def attr(self) -> Attr:
        e = self.entry
        return Attr(self.ino, _FMT[e.kind] | e.mode, e.size, e.mtime_ns, e.ctime_ns,
                    2 if e.kind == "d" else 1, e.uid, e.gid, SHORT)

    def child(self, entry) -> "StagedNode":
        return StagedNode(self.staging, entry, f"{self.path}/{os.fsdecode(entry.name)}".lstrip("/"))

    def lookup(self, name: bytes) -> Node:
        return self.child(self.staging.model.lookup(self.entry.ino, name))

    def listing(self) -> Listing:
        entries = self.staging.model.readdir(self.entry.ino)
        return Listing(len(entries), lambda i: (entries[i].name, self.child(entries[i])))

    def readlink(self) -> bytes:
        return self.staging.model.readlink(self.entry.ino)


class StagingState:
    """One artifact's staging as the mount serves it: nodes, open files, writers."""

    def __init__(self, fs, art):
        self.fs, self.art = fs, art
        self.model = Staging(fs.repo, art.name)
        self.opened: dict[int, StagedFile] = {}     # staging ino -> shared open state
        self.writers: set[StagedHandle] = set()   # handles open for writing (commit refuses)

    def root(self) -> StagedNode:
        return StagedNode(self, self.model.getattr(ROOT), "")

    def base(self) -> int | None:
        return self.model.base_version()

    async def _mutate(self, fn, *args, **kwargs):
        async with self.art.lock:
            return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    def check_no_writers(self, action: str) -> None:
        if self.writers:
            node = next(iter(self.writers)).node
            raise Conflict(f"cannot {action} {self.art.name}: {node.where()} is open for "
                           "writing in the mount; close it first")

    # tree changes ------------------------------------------------------------------------------
    async def mkdir(self, parent: StagedNode, name: bytes, mode: int, uid: int, gid: int):
        return parent.child(await self._mutate(self.model.mkdir, parent.entry.ino, name, mode, uid, gid))

    async def symlink(self, parent: StagedNode, name: bytes, target: bytes, uid: int, gid: int):
        return parent.child(await self._mutate(self.model.symlink, parent.entry.ino, name, target,
                                               uid, gid))

    async def unlink(self, parent: StagedNode, name: bytes) -> None:
        await self._mutate(self.model.unlink, parent.entry.ino, name)

    async def rmdir(self, parent: StagedNode, name: bytes) -> None:
        await self._mutate(self.model.rmdir, parent.entry.ino, name)

    async def rename(self, old: StagedNode, old_name: bytes, new: StagedNode, new_name: bytes,
                     flags: int) -> None:
        await self._mutate(self.model.rename, old.entry.ino, old_name, new.entry.ino, new_name, flags)

    async def setattr(self, node: StagedNode, **changes) -> StagedNode:
        node.entry = entry = await self._mutate(self.model.setattr, node.entry.ino, **changes)
        f = self.opened.get(entry.ino)
        if f is not None and entry.data is not None:
            f.copy_up(entry.data)   # truncated: readers of the base now read the data file
        return node

    # open files --------------------------------------------------------------------------------
    async def create(self, parent: StagedNode, name: bytes, mode: int, uid: int, gid: int,
                     write: bool):
        async with self.art.lock:
            entry = await trio.to_thread.run_sync(self.model.create, parent.entry.ino, name, mode, uid, gid)
            node = parent.child(entry)
            return node, await self._open(node, write, truncate=False)

    async def open(self, node: StagedNode, write: bool, truncate: bool) -> StagedHandle:
        node.fresh()   # base or data file: whatever it is now
        if not write:
            return await self._open(node, write, truncate)
        async with self.art.lock:
            return await self._open(node, write, truncate)

    async def _open(self, node: StagedNode, write: bool, truncate: bool) -> StagedHandle:
        f = self.opened.get(node.entry.ino)
        if f is None:
            f = self.opened[node.entry.ino] = StagedFile(self.fs, node.entry)
        f.refs += 1   # before any await: a concurrent last release must not close it
        try:
            if write and (f.fd is None or truncate):
                path = await trio.to_thread.run_sync(
                    functools.partial(self.model.open_data, node.entry.ino, truncate=truncate))
                f.copy_up(path)
        except BaseException:
            await self.fs.unpin(self._unref(node.entry.ino, f))
            raise
        handle = StagedHandle(self, node, f, write)
        if write:
            self.writers.add(handle)
        return handle

    def close_file(self, handle: StagedHandle) -> bytes | None:
        self.writers.discard(handle)
        return self._unref(handle.node.entry.ino, handle.file)

    def _unref(self, sino: int, f: StagedFile) -> bytes | None:
        """Drop one user of an open file; on the last, close it and return its pinned file id."""
        f.refs -= 1
        if f.refs > 0:
            return None
        if self.opened.get(sino) is f:
            del self.opened[sino]
        return f.close()
