"""The pyfuse3 adapter, and nothing else: unpack a request, call mount/model.py, pack the answer.

Errors are mapped in ONE place, ``fuse_error``: an ArtfsError becomes its errno; an OSError from a
staging data file keeps its errno; anything else is a bug, logged with its traceback and answered
EIO. Storage errors that answer EIO (CorruptData, ...) are logged once per message.

Caching: version entries carry long entry/attr timeouts and open with keep_cache (never
direct_io), so warm re-reads and mmap never reach the daemon; artifact dirs, aliases and staging
carry one second and are invalidated by the daemon when they change. A staging file opened
write-only (``cp``, ``open(path, "wb")``) is direct_io: the kernel hands the writer's pages to the
daemon instead of first copying them into the mount's page cache, where nothing would read them
(a write-only descriptor can neither read nor map; ``cp`` of 1 GiB into staging went from about
1.4 to 2.1 GB/s, docs/benchmarks.md). Any other open of it keeps the page cache and mmap.

Not implemented on purpose (the kernel stops asking after the first ENOSYS): getxattr/listxattr,
which would cost a round trip per entry of ``ls -l``; and flush, because writes go straight into
the staging data file, so a close(2) has nothing to flush - one round trip less per close.
"""

from __future__ import annotations

import errno
import functools
import logging
from stat import S_ISDIR

import pyfuse3
import trio

from ..errors import ArtfsError
from .inodes import ROOT_INODE
from .model import Filesystem, write_only
from .nodes import Attr

assert pyfuse3.ROOT_INODE == ROOT_INODE

log = logging.getLogger("artfs.mount")
BLKSIZE = 1 << 20   # st_blksize: cp, stdio and Python size their I/O by it (1 MiB FUSE requests)
# st_blksize of directories: glibc's readdir sizes its getdents buffer by it (32 KiB to 1 MiB), the
# kernel its READDIRPLUS requests by that buffer, and pyfuse3 zeroes a reply buffer of the request's
# size for each (calloc): at 1 MiB that memset was 3.4% of a cold ``ls -lR``'s daemon samples (perf),
# for replies of ~16 KiB (100 entries); 128 KiB still holds ~800 entries a request
DIR_BLKSIZE = 1 << 17
_logged: set[str] = set()


def fuse_error(exc: BaseException) -> pyfuse3.FUSEError:
    """The errno the kernel gets for an exception raised while handling a request."""
    if isinstance(exc, pyfuse3.FUSEError):
        return exc
    if isinstance(exc, ArtfsError):
        if exc.errno == errno.EIO:
            _log_once(f"I/O error: {exc}")
        return pyfuse3.FUSEError(exc.errno)
    if isinstance(exc, OSError) and exc.errno:
        if exc.errno == errno.EIO:
            _log_once(f"I/O error on a staging file: {exc}")
        return pyfuse3.FUSEError(exc.errno)
    log.error("internal error while handling a request; answering EIO", exc_info=exc)
    return pyfuse3.FUSEError(errno.EIO)


def _log_once(message: str) -> None:
    if message not in _logged:
        if len(_logged) < 10000:
            _logged.add(message)
        log.error(message)


def _handler(fn):
    @functools.wraps(fn)
    async def handle(*args):
        try:
            return await fn(*args)
        except Exception as e:
            raise fuse_error(e) from None
    return handle


def entry(a: Attr, e: pyfuse3.EntryAttributes | None = None) -> pyfuse3.EntryAttributes:
    """A's attributes as pyfuse3's, in E if given (a READDIRPLUS request fills one for all its
    entries: ``readdir_reply`` copies them out; every field is set each time)."""
    if e is None:
        e = pyfuse3.EntryAttributes()
    e.st_ino = a.ino
    e.entry_timeout = e.attr_timeout = a.timeout
    e.st_mode, e.st_nlink, e.st_uid, e.st_gid, e.st_rdev = a.mode, a.nlink, a.uid, a.gid, a.rdev
    e.st_size, e.st_blocks = a.size, (a.size + 511) // 512
    e.st_blksize = DIR_BLKSIZE if S_ISDIR(a.mode) else BLKSIZE
    e.st_atime_ns = e.st_mtime_ns = a.mtime_ns
    e.st_ctime_ns = a.ctime_ns
    return e


def store_pages(inode: int, data: bytes) -> None:
    """Put DATA in the kernel's page cache of INODE from offset 0 (FUSE_NOTIFY_STORE; any thread:
    the kernel may wait for a page lock, never for this daemon's loop). OSError if the kernel
    holds no such inode."""
    pyfuse3.notify_store(inode, 0, data)


class Operations(pyfuse3.Operations):
    supports_dot_lookup = False     # the kernel then never looks up "." or ".."
    enable_writeback_cache = False

    def __init__(self, fs: Filesystem):
        super().__init__()
        self.fs = fs
        fs.store_pages = store_pages

    @_handler
    async def lookup(self, parent_inode, name, ctx=None):
        return entry(self.fs.lookup(parent_inode, name))

    async def forget(self, inode_list):
        for inode, count in inode_list:
            self.fs.forget(inode, count)

    @_handler
    async def getattr(self, inode, ctx=None):
        return entry(self.fs.getattr(inode))

    @_handler
    async def setattr(self, inode, attr, fields, fh, ctx):
        changes = {}
        if fields.update_mode:
            changes["mode"] = attr.st_mode & 0o7777
        if fields.update_uid:
            changes["uid"] = attr.st_uid
        if fields.update_gid:
            changes["gid"] = attr.st_gid
        if fields.update_size:
            changes["size"] = attr.st_size
        if fields.update_atime:
            changes["atime_ns"] = attr.st_atime_ns
        if fields.update_mtime:
            changes["mtime_ns"] = attr.st_mtime_ns
        return entry(await self.fs.setattr(inode, (ctx.uid, ctx.gid, ctx.pid), **changes))

    @_handler
    async def readlink(self, inode, ctx):
        return self.fs.readlink(inode)

    @_handler
    async def access(self, inode, mode, ctx):
        self.fs.access(inode, mode)
        return True

    @_handler
    async def opendir(self, inode, ctx):
        return self.fs.opendir(inode)

    @_handler
    async def readdir(self, fh, start_id, token):
        e, reply, remember = pyfuse3.EntryAttributes(), pyfuse3.readdir_reply, self.fs.remember
        for next_id, name, attr, node in self.fs.readdir(fh, start_id):
            if not reply(token, name, entry(attr, e), next_id):
                return
            remember(node)

    @_handler
    async def releasedir(self, fh):
        self.fs.releasedir(fh)

    @_handler
    async def mkdir(self, parent_inode, name, mode, ctx):
        return entry(await self.fs.mkdir(parent_inode, name, mode, ctx.uid, ctx.gid))

    @_handler
    async def symlink(self, parent_inode, name, target, ctx):
        return entry(await self.fs.symlink(parent_inode, name, target, ctx.uid, ctx.gid))

    @_handler
    async def unlink(self, parent_inode, name, ctx):
        await self.fs.unlink(parent_inode, name)

    @_handler
    async def rmdir(self, parent_inode, name, ctx):
        await self.fs.rmdir(parent_inode, name)

    @_handler
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        await self.fs.rename(parent_inode_old, name_old, parent_inode_new, name_new, flags)

    @_handler
    async def link(self, inode, new_parent_inode, new_name, ctx):
        return entry(await self.fs.link(inode, new_parent_inode, new_name))

    @_handler
    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        return entry(await self.fs.mknod(parent_inode, name, mode, rdev, ctx.uid, ctx.gid))

    @_handler
    async def setxattr(self, inode, name, value, ctx):
        self.fs.setxattr(inode)

    @_handler
    async def open(self, inode, flags, ctx):
        fh, keep_cache = await self.fs.open(inode, flags, ctx.pid, ctx.uid)
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep_cache, direct_io=write_only(flags))

    @_handler
    async def create(self, parent_inode, name, mode, flags, ctx):
        fh, attr = await self.fs.create(parent_inode, name, mode, flags, ctx.uid, ctx.gid)
        return pyfuse3.FileInfo(fh=fh, keep_cache=False, direct_io=write_only(flags)), entry(attr)

    @_handler
    async def read(self, fh, off, size):
        return await self.fs.read(fh, off, size)

    @_handler
    async def write(self, fh, off, buf):
        return await self.fs.write(fh, off, buf)

    @_handler
    async def fsync(self, fh, datasync):
        await self.fs.fsync(fh)

    @_handler
    async def release(self, fh):
        await self.fs.release(fh)

    @_handler
    async def statfs(self, ctx):
        sv, s = self.fs.statfs(), pyfuse3.StatvfsData()
        for name in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                     "f_ffree", "f_favail", "f_namemax"):
            setattr(s, name, getattr(sv, name))
        return s


async def invalidate(entries: list[tuple[int, bytes | None]]) -> None:
    """Make the kernel drop these (directory inode, name) entries, and the attributes of each
    (inode, None) (an artifact's new mode and owner); returns once it has.

    pyfuse3.invalidate_entry blocks until the kernel has processed the notification, so it runs
    in a worker thread: the trio loop keeps answering the requests the kernel may need answered
    first (the deadlock its docs warn about is calling it inside a request handler). Waiting, unlike
    invalidate_entry_async, is what makes ``ls MOUNT/NAME`` right as soon as the CLI returns.
    """
    def run():
        for parent, name in entries:
            try:
                if name is None:
                    pyfuse3.invalidate_inode(parent, attr_only=True)
                else:
                    pyfuse3.invalidate_entry(parent, name)
            except FileNotFoundError:
                pass   # the kernel had no such entry cached
            except OSError as e:
                log.warning("could not invalidate %r in inode %d: %s", name, parent, e)
    if entries:
        await trio.to_thread.run_sync(run)
