#!/usr/bin/env python3
"""Minimal pyfuse3 + trio passthrough filesystem: read-only, or writable and slow.

Mirrors SRC at MOUNTPOINT, in the foreground, until unmounted
(``fusermount3 -u MOUNTPOINT``), SIGINT or SIGTERM.

Read-only (the default), it is the "Python FUSE ceiling" that scripts/bench.py
compares artfs with: the same FUSE plumbing (pyfuse3, trio, long entry/attr
timeouts, keep_cache) but no store behind it, just os.pread on the source files.

With ``--writable`` it also creates, writes, renames and deletes (enough for an
artfs store: LMDB, its lock files, the control socket), and ``--delay-read S``
makes every read request wait S seconds first (other requests go on meanwhile):
a slow disk that tests can put a store on (tests/test_reliability_mount.py).

    python scripts/passthrough.py SRC MOUNTPOINT [--writable] [--delay-read S] [--debug]
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import signal
import stat

import pyfuse3
import trio

log = logging.getLogger("passthrough")

TIMEOUT = 3600.0  # entry/attr cache lifetime (s): the source is read-only


class Passthrough(pyfuse3.Operations):
    def __init__(self, root: str, delay_read: float = 0.0) -> None:
        super().__init__()
        self.delay_read = delay_read
        self.root = os.path.abspath(root)
        self.paths: dict[int, str] = {pyfuse3.ROOT_INODE: self.root}
        self.root_ino = os.lstat(self.root).st_ino
        self.dirs: dict[int, list[tuple[bytes, os.stat_result]]] = {}
        self.next_dh = 1

    # -- helpers -----------------------------------------------------------
    def _ino(self, st: os.stat_result) -> int:
        # Source inode numbers are reused as FUSE inodes (one source file
        # system assumed); the source root and a source inode that happens
        # to be 1 are swapped so ROOT_INODE stays the root.
        if st.st_ino == self.root_ino:
            return pyfuse3.ROOT_INODE
        if st.st_ino == pyfuse3.ROOT_INODE:
            return self.root_ino
        return st.st_ino

    def _path(self, inode: int) -> str:
        try:
            return self.paths[inode]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ESTALE) from None

    def _attr(self, st: os.stat_result) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = self._ino(st)
        for name in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_rdev",
                     "st_size", "st_blksize", "st_blocks",
                     "st_atime_ns", "st_mtime_ns", "st_ctime_ns"):
            setattr(a, name, getattr(st, name))
        a.entry_timeout = TIMEOUT
        a.attr_timeout = TIMEOUT
        a.generation = 0
        return a

    def _lstat(self, path: str) -> os.stat_result:
        try:
            return os.lstat(path)
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None

    # -- handlers (only FUSEError may escape) --------------------------------
    async def lookup(self, parent_inode, name, ctx=None):
        parent = self._path(parent_inode)
        if name == b".":
            path = parent
        elif name == b"..":
            path = os.path.dirname(parent) if parent != self.root else parent
        else:
            path = os.path.join(parent, os.fsdecode(name))
        return self._entry(path)

    def _entry(self, path: str) -> pyfuse3.EntryAttributes:
        attr = self._attr(self._lstat(path))
        self.paths[attr.st_ino] = path
        return attr

    async def getattr(self, inode, ctx=None):
        return self._attr(self._lstat(self._path(inode)))

    async def readlink(self, inode, ctx):
        try:
            return os.fsencode(os.readlink(self._path(inode)))
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None

    async def opendir(self, inode, ctx):
        path = self._path(inode)
        entries = []
        try:
            with os.scandir(path) as it:
                for de in it:
                    entries.append((os.fsencode(de.name), de.stat(follow_symlinks=False)))
                    self.paths[self._ino(entries[-1][1])] = de.path
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        entries.sort(key=lambda e: e[0])
        dh = self.next_dh
        self.next_dh += 1
        self.dirs[dh] = entries
        return dh

    async def readdir(self, fh, start_id, token):
        entries = self.dirs.get(fh)
        if entries is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        for i in range(start_id, len(entries)):
            name, st = entries[i]
            if not pyfuse3.readdir_reply(token, name, self._attr(st), i + 1):
                break

    async def releasedir(self, fh):
        self.dirs.pop(fh, None)

    async def open(self, inode, flags, ctx):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_TRUNC):
            raise pyfuse3.FUSEError(errno.EROFS)
        try:
            fd = os.open(self._path(inode), os.O_RDONLY)
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        return pyfuse3.FileInfo(fh=fd, keep_cache=True)

    async def read(self, fh, off, size):
        if self.delay_read:
            await trio.sleep(self.delay_read)
        try:
            return os.pread(fh, size, off)
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None

    async def release(self, fh):
        try:
            os.close(fh)
        except OSError:
            pass

    async def statfs(self, ctx):
        try:
            sv = os.statvfs(self.root)
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        s = pyfuse3.StatvfsData()
        for name in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail",
                     "f_files", "f_ffree", "f_favail", "f_namemax"):
            setattr(s, name, getattr(sv, name))
        return s


class WritablePassthrough(Passthrough):
    """The passthrough plus what changes the source (``--writable``)."""

    def _child(self, parent_inode: int, name: bytes) -> str:
        return os.path.join(self._path(parent_inode), os.fsdecode(name))

    async def open(self, inode, flags, ctx):
        try:
            fd = os.open(self._path(inode), flags & ~(os.O_CREAT | os.O_EXCL | os.O_NOCTTY))
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        return pyfuse3.FileInfo(fh=fd, keep_cache=True)

    async def create(self, parent_inode, name, mode, flags, ctx):
        path = self._child(parent_inode, name)
        with _errors():
            fd = os.open(path, flags | os.O_CREAT, mode)
        return pyfuse3.FileInfo(fh=fd), self._entry(path)

    async def write(self, fh, off, buf):
        with _errors():
            return os.pwrite(fh, buf, off)

    async def fsync(self, fh, datasync):
        with _errors():
            os.fsync(fh)

    async def setattr(self, inode, attr, fields, fh, ctx):
        path = self._path(inode)
        with _errors():
            if fields.update_size:
                if fh is not None:
                    os.ftruncate(fh, attr.st_size)
                else:
                    os.truncate(path, attr.st_size)
            if fields.update_mode:
                os.chmod(path, stat.S_IMODE(attr.st_mode), follow_symlinks=False)
            if fields.update_uid or fields.update_gid:
                os.chown(path, attr.st_uid if fields.update_uid else -1,
                         attr.st_gid if fields.update_gid else -1, follow_symlinks=False)
            if fields.update_atime or fields.update_mtime:
                st = os.lstat(path)
                os.utime(path, ns=(attr.st_atime_ns if fields.update_atime else st.st_atime_ns,
                                   attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns),
                         follow_symlinks=False)
        return self._entry(path)

    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        path = self._child(parent_inode, name)
        with _errors():
            os.mknod(path, mode, rdev)
        return self._entry(path)

    async def mkdir(self, parent_inode, name, mode, ctx):
        path = self._child(parent_inode, name)
        with _errors():
            os.mkdir(path, mode)
        return self._entry(path)

    async def symlink(self, parent_inode, name, target, ctx):
        path = self._child(parent_inode, name)
        with _errors():
            os.symlink(os.fsdecode(target), path)
        return self._entry(path)

    async def unlink(self, parent_inode, name, ctx):
        with _errors():
            os.unlink(self._child(parent_inode, name))

    async def rmdir(self, parent_inode, name, ctx):
        with _errors():
            os.rmdir(self._child(parent_inode, name))

    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        if flags:
            raise pyfuse3.FUSEError(errno.EINVAL)
        old, new = self._child(parent_inode_old, name_old), self._child(parent_inode_new, name_new)
        with _errors():
            os.rename(old, new)
        for ino, path in list(self.paths.items()):   # the moved entry and everything below it
            if path == old or path.startswith(old + os.sep):
                self.paths[ino] = new + path[len(old):]


@contextlib.contextmanager
def _errors():
    try:
        yield
    except OSError as e:
        raise pyfuse3.FUSEError(e.errno or errno.EIO) from None


async def serve() -> None:
    async with trio.open_nursery() as nursery:
        async def stop_on_signal():
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as sigs:
                async for _ in sigs:
                    pyfuse3.terminate()
                    return
        nursery.start_soon(stop_on_signal)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src")
    p.add_argument("mountpoint")
    p.add_argument("--writable", action="store_true", help="also change the source (not read-only)")
    p.add_argument("--delay-read", type=float, default=0.0, metavar="S",
                   help="wait S seconds before answering each read (a slow disk)")
    p.add_argument("--debug", action="store_true", help="log FUSE requests")
    args = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO)
    if not stat.S_ISDIR(os.stat(args.src).st_mode):
        p.error(f"{args.src} is not a directory")

    options = set(pyfuse3.default_options)  # {'default_permissions'}
    options |= {"fsname=passthrough", "subtype=passthrough"}
    if not args.writable:
        options.add("ro")
    if args.debug:
        options.add("debug")
    fs = (WritablePassthrough if args.writable else Passthrough)(args.src, args.delay_read)
    pyfuse3.init(fs, args.mountpoint, options)
    try:
        trio.run(serve)
    except BaseException:
        pyfuse3.close(unmount=False)
        raise
    pyfuse3.close(unmount=True)


if __name__ == "__main__":
    main()
