"""The mount as mount/ops.py sees it, FUSE-free: requests by inode and handle, answers as Attr/bytes.

Dispatch only: which node, staging or not, read-only or not. The nodes (mount/nodes.py,
mount/staged.py) and open files (mount/files.py) do the work; every error is an ArtfsError that the
adapter maps to an errno in one place.

Threads: lookups, attributes, listings and opens are answered on the trio thread (short reads of
metadata); what may wait long runs in a worker thread, at most IO_THREADS at once, so a slow disk
holds up the requests waiting for it and never ``ls`` or the other requests on the loop: reads of
file data (LMDB page-ins and hashing, a file's chunk list), writes and fsyncs of staging data
files, opening and copying up staging data files, and an open or close that must wait for a
delete to decide which files are open (mount/files.py); a read that must wait for the remote of
a lazy store runs in threads of its own, at most REMOTE_THREADS at once (store/lazy.py
``read_here``). A thread hop costs 70-250 us on the test VM, more than a whole warm open, so
opens and closes take one only then (docs/benchmarks.md).

Rules for what cannot be done (docs/SEMANTICS.md):
  outside staging   every change is ReadOnly (EROFS), except ``mkdir MOUNT/NAME`` (new artifact)
  rename            within one staging: yes; between a staging and anything else: CrossDevice
  link                  within one staging: yes; from or into anything else: CrossDevice
  xattrs in staging: not supported
  device nodes          kept as entries; opening one is the kernel's, and the mount is nodev
"""

from __future__ import annotations

import errno
import functools
import os
import stat
import time

import trio

from ..catalog.access import Caller, acting_as
from ..staging.commit import create_artifact
from ..errors import ArtfsError, CrossDevice, InvalidInput, NotFound, NotPermitted
from ..names import check_artifact
from .files import OpenFiles, VersionHandle
from .inodes import InodeTable
from .nodes import ArtifactDir, ArtifactState, Attr, Listing, Node, Root, VersionDir, VersionEntry
from .readahead import ReadAhead
from .staged import StagedNode, StagingState
from .uses import UseRecorder
from .writing import WriteMarks


# Worker threads for file data. The kernel keeps at most 12 background requests (readahead) per
# mount in flight by default (FUSE max_background), plus one synchronous read or write per calling
# thread; 16 threads wait on a slow disk for all of those at once, within trio's default pool of
# 40 (commits, staging changes) and LMDB's 1,024 reader slots. More would not read faster: hashing
# and copying chunks hold the GIL part of the time, so extra threads mostly contend for it.
IO_THREADS = 16
# Worker threads for reads that wait for the remote of a lazy store (store/lazy.py read_here): a
# read of local or cached data is never queued behind them, however long the remote stalls.
REMOTE_THREADS = 16


class NotSupported(ArtfsError):
    errno = errno.EOPNOTSUPP


class Filesystem:
    def __init__(self, repo, record_use: bool = False):
        self.repo = repo
        self.uses = UseRecorder(repo) if record_use else None   # artfs mount --record-use
        self.marks = WriteMarks(repo.path)   # staging files open for writing (mount/writing.py)
        self.uid, self.gid = os.getuid(), os.getgid()   # owner of everything outside staging
        self.root = Root(self, time.time_ns())
        self.inodes = InodeTable(self.root)
        # remember(node): the kernel learned of a node from a readdir entry (once per entry)
        self.remember = self.inodes.remember
        self.files = OpenFiles(repo)
        self.io = trio.CapacityLimiter(IO_THREADS)
        self.remote_io = trio.CapacityLimiter(REMOTE_THREADS)
        self.artifacts: dict[str, ArtifactState] = {}
        self.ahead = ReadAhead(self)   # the next files of a directory read in order
        # (inode, bytes) -> those bytes put in the kernel's page cache of that version file's
        # inode, from its start (any thread); set by the FUSE adapter, None: no read-ahead
        self.store_pages = None
        self._dirs: dict[int, Listing] = {}
        self._next_dir = 1

    # nodes -------------------------------------------------------------------------------------
    def artifact(self, name: bytes | str) -> ArtifactState:
        """The state of a live artifact (a deleted and re-created one gets a fresh state)."""
        text = name.decode(errors="replace") if isinstance(name, bytes) else name
        try:
            record = self.repo.artifact(check_artifact(text))
        except InvalidInput:
            raise NotFound(f"no artifact named {text!r}") from None
        state = self.artifacts.get(text)
        if state is None or state.created != record["created"]:
            if state is not None:
                state.deleted = True
            state = self.artifacts[text] = ArtifactState(self, text, record)
        return state

    def staging_of(self, art: ArtifactState) -> StagingState:
        if art.staging is None:
            art.staging = StagingState(self, art)
        return art.staging

    def _learn(self, node: Node) -> Attr:
        attr = node.attr()
        self.inodes.remember(node)
        return attr

    def _staged(self, ino: int, what: str) -> StagedNode:
        node = self.inodes.node(ino)
        if node.staging is None:
            raise node.read_only(what)
        return node

    # lookups, attributes, listings -------------------------------------------------------------
    def lookup(self, parent: int, name: bytes) -> Attr:
        return self._learn(self.inodes.node(parent).lookup(name))

    def getattr(self, ino: int) -> Attr:
        return self.inodes.node(ino).fresh().attr()

    def forget(self, ino: int, count: int) -> None:
        self.inodes.forget(ino, count)

    def readlink(self, ino: int) -> bytes:
        return self.inodes.node(ino).readlink()

    def opendir(self, ino: int) -> int:
        node = self.inodes.node(ino).fresh()
        listing = node.listing()
        if isinstance(node, VersionDir):
            self.ahead.listing(node)
        dh, self._next_dir = self._next_dir, self._next_dir + 1
        self._dirs[dh] = listing
        return dh

    def readdir(self, dh: int, start: int):
        """Yield (next offset, name, attr, node) from index ``start`` of the opendir snapshot."""
        listing = self._dirs[dh]
        for i in range(start, listing.length):
            name, node = listing.entry(i)
            yield i + 1, name, node.attr(), node

    def releasedir(self, dh: int) -> None:
        self._dirs.pop(dh, None)

    def access(self, ino: int, mode: int) -> None:
        node = self.inodes.node(ino)
        if mode & os.W_OK and node.staging is None and node is not self.root:
            raise node.read_only()

    def statfs(self) -> os.statvfs_result:
        return os.statvfs(self.repo.path)

    # changes -----------------------------------------------------------------------------------
    async def mkdir(self, parent: int, name: bytes, mode: int, uid: int, gid: int) -> Attr:
        if parent == self.root.ino:
            return self._learn(await self._create_artifact(name, Caller(uid, gid, umask=~mode & 0o777)))
        p = self._staged(parent, "written")
        return self._learn(await p.staging.mkdir(p, name, mode & 0o7777, uid, gid))

    async def _create_artifact(self, name: bytes, creator: Caller) -> Node:
        """A new artifact owned by CREATOR, its mode 0755 less what the mkdir mode leaves out."""
        text = name.decode(errors="replace")
        with acting_as(creator):
            await trio.to_thread.run_sync(create_artifact, self.repo, check_artifact(text))
        return self.artifact(text).dir()

    async def symlink(self, parent: int, name: bytes, target: bytes, uid: int, gid: int) -> Attr:
        p = self._staged(parent, "written")
        return self._learn(await p.staging.symlink(p, name, target, uid, gid))

    async def unlink(self, parent: int, name: bytes) -> None:
        p = self._staged(parent, "changed")
        await p.staging.unlink(p, name)

    async def rmdir(self, parent: int, name: bytes) -> None:
        p = self._staged(parent, "changed")
        await p.staging.rmdir(p, name)

    async def rename(self, old: int, old_name: bytes, new: int, new_name: bytes, flags: int) -> None:
        a, b = self.inodes.node(old), self.inodes.node(new)
        if a.staging is None and b.staging is None:
            raise a.read_only("renamed")
        if a.staging is not b.staging:
            raise CrossDevice(f"cannot move {old_name!r} from {a.where()} to {b.where()}: "
                              "rename only works within one artifact's staging")
        await a.staging.rename(a, old_name, b, new_name, flags)

    async def link(self, ino: int, parent: int, name: bytes) -> Attr:
        node, p = self.inodes.node(ino), self.inodes.node(parent)
        if p.staging is None:
            raise p.read_only("linked into")
        if node.staging is not p.staging:
            raise CrossDevice(f"cannot link {node.where()} into {p.where()}: hard links only work "
                              "within one artifact's staging")
        return self._learn(await p.staging.link(node, p, name))

    async def mknod(self, parent: int, name: bytes, mode: int, rdev: int, uid: int, gid: int) -> Attr:
        p = self._staged(parent, "written")
        return self._learn(await p.staging.mknod(p, name, mode, rdev, uid, gid))

    def setxattr(self, ino: int) -> None:
        node = self.inodes.node(ino)
        if node.staging is not None:
            raise NotSupported("extended attributes are not versioned")
        raise node.read_only()

    async def setattr(self, ino: int, caller: tuple[int, int, int], **changes) -> Attr:
        """CALLER is the (uid, gid, pid) of the process asking."""
        node = self.inodes.node(ino)
        if isinstance(node, ArtifactDir):
            return await self.set_access(node, Caller.of_pid(caller[2], *caller[:2]), **changes)
        node = self._staged(ino, "changed")
        access = {k: changes.pop(k) for k in ("mode", "uid", "gid") if k in changes and node.is_root()}
        if access:                      # of staging/: the artifact's owner, group and mode
            await self.set_access(node.staging.art.dir(), Caller.of_pid(caller[2], *caller[:2]), **access)
        if changes or not access:
            node = await node.staging.setattr(node, **changes)
        return node.attr()

    async def set_access(self, node: ArtifactDir, caller: Caller, mode: int | None = None,
                         uid: int | None = None, gid: int | None = None, **other) -> Attr:
        """chmod / chown / chgrp of MOUNT/NAME: the artifact's own (catalog/access.py), as CALLER
        may; its size and times cannot be changed."""
        if other:
            raise node.read_only()
        with acting_as(caller):
            await trio.to_thread.run_sync(functools.partial(
                self.repo.set_access, node.state.name, mode=mode, uid=uid, gid=gid))
        return node.attr()

    # files -------------------------------------------------------------------------------------
    async def in_thread(self, fn, *args):
        """``fn(*args)`` in a worker thread for file data (at most IO_THREADS at once)."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self.io)

    async def hold(self, fid: bytes) -> None:
        """Pin a stored file for one open (mount/files.py); NotFound if it was deleted. The pin
        lock is waited for in a worker thread (a delete may hold it for its whole transaction);
        the existence check, when needed, is one short read of metadata, like a lookup's."""
        known = self.files.pin(fid, wait=False)
        if known is None:
            known = await self.in_thread(self.files.pin, fid, True)
        if known:
            return
        if not self.repo.file_exists(fid):
            await self.unpin(fid)
            raise NotFound("the file was deleted (its version was removed)")
        self.files.confirm(fid)

    async def open(self, ino: int, flags: int, pid: int = 0, uid: int = 0) -> tuple[int, bool]:
        """A new file handle and whether the kernel may keep its page cache (immutable files).
        PID and UID are the opener's (for --record-use)."""
        node = self.inodes.node(ino)
        write = (flags & os.O_ACCMODE) != os.O_RDONLY or bool(flags & os.O_TRUNC)
        if node.staging is not None:
            handle = await node.staging.open(node, write, truncate=bool(flags & os.O_TRUNC),
                                             clears_setid=write_only(flags) and uid != 0)
            return self.files.add(handle), False
        if write:
            raise node.read_only("opened for writing")
        if not (isinstance(node, VersionEntry) and node.is_file):
            raise NotPermitted(f"{node.where()}: not a regular file")
        await self.hold(node.entry.ref)
        if self.uses is not None:
            await self.uses.opened(*node.origin, pid, uid)
        fh = self.files.add(VersionHandle(self, node.entry.ref, node.ino))
        self.ahead.opened(node)
        return fh, True

    async def create(self, parent: int, name: bytes, mode: int, flags: int, uid: int,
                     gid: int) -> tuple[int, Attr]:
        p = self._staged(parent, "written")
        write = (flags & os.O_ACCMODE) != os.O_RDONLY
        node, handle = await p.staging.create(p, name, mode & 0o7777, uid, gid, write,
                                              clears_setid=write_only(flags) and uid != 0)
        return self.files.add(handle), self._learn(node)

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        handle = self.files.get(fh)
        if isinstance(handle, VersionHandle):
            self.ahead.missed(handle.ino)
        data = handle.read_nowait(offset, size)   # bytes in memory: no thread (mount/files.py)
        if data is None:                          # local or cached data: a worker thread
            data = await self.in_thread(self.repo.db.objects.read_here, handle.read, offset, size)
        if data is None:                          # it waits for the remote: a thread of its own
            data = await trio.to_thread.run_sync(handle.read, offset, size, limiter=self.remote_io)
        return data

    async def write(self, fh: int, offset: int, data) -> int:
        """Through a write-only handle of a process that is not root, the file's set-user-ID
        bit, and its set-group-ID bit if group-executable, go first: the kernel does that for a
        write through its page cache, which a write-only open bypasses (``write_only``)."""
        handle = self.files.get(fh)
        if handle.clears_setid and (mode := without_setid(handle.node.entry.mode)) != handle.node.entry.mode:
            await handle.staging.setattr(handle.node, mode=mode)
        return await self.in_thread(handle.write, offset, data)

    async def fsync(self, fh: int) -> None:
        handle = self.files.get(fh)
        if handle.writable and handle.file.fd is not None:
            await self.in_thread(os.fsync, handle.file.fd)

    async def release(self, fh: int) -> None:
        await self.unpin(self.files.pop(fh).close())

    async def unpin(self, fid: bytes | None) -> None:
        """One open of a stored file ended; the last close of a deleted one frees it."""
        if fid is None:
            return
        last = self.files.drop(fid, wait=False)
        if last is None:   # a delete holds the pin lock
            last = await self.in_thread(self.files.drop, fid, True)
        if last:
            await self.in_thread(self.files.free, fid)


def write_only(flags: int) -> bool:
    """An open that only writes (only staging files open so: versions refuse writes). The kernel
    sends its writes straight from the writer's pages (ops.py: direct_io), not through new
    page-cache pages of the mount's inode, which such a descriptor could never read or map."""
    return (flags & os.O_ACCMODE) == os.O_WRONLY


def without_setid(mode: int) -> int:
    """MODE as a write by a process that is not root leaves it (POSIX; Linux's should_remove_suid):
    no set-user-ID bit, and no set-group-ID bit if the group may execute."""
    mode &= ~stat.S_ISUID
    return mode & ~stat.S_ISGID if mode & stat.S_IXGRP else mode
