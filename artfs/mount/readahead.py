"""Read-ahead in version trees, FUSE-free: the next files of a directory read in order, and the
trees a walk of the tree will list next.

Walkers (``cp -r``, ``tar``, ``rsync``, a training loop over a dataset) open the files of a
directory in listing order. Cold, each of those opens and reads would wait for the disk in turn,
with a round trip through the kernel in between. When the opens of a version directory go in
order (an open one or two entries past the previous one), a worker thread reads the next files of
that directory ahead of the reader, and for each one:

- checks that its file object still exists, so that its open skips that check (a fresh read
  counted against concurrent frees: OpenFiles.confirm with ``frees``, mount/files.py);
- reads its bytes as any read does (``Repo.read``: every chunk hash-checked; nothing is fetched
  from the remote of a lazy store) and hands them to the kernel's page cache of its inode
  (``Filesystem.store_pages``, set by the FUSE adapter: FUSE_NOTIFY_STORE), so that its reads
  never reach the daemon. Version files are immutable and their inodes are their contents
  (mount/inodes.py), so those pages can never be stale; a file the kernel does not hold an inode
  for gets none. A file put there once is not read ahead again (a warm walk would only redo it)
  until a read of one such file reaches the daemon: the kernel dropped its pages (or never got
  them: its reader overtook the read-ahead), and may have dropped others', so all are forgotten
  and each reader's next open in order reads ahead again.

The next batch starts when the reader reaches the first file of the last one, and doubles (from
WINDOW_MIN to WINDOW_MAX files) while the reader keeps in order; any other open resets it. Only
files up to PUSH_MAX bytes are read ahead (the kernel's own read-ahead streams a big file).
Errors only end the read-ahead of that file: the reader then reads it the usual way and gets the
error.

Trees: listing a version directory gives each subdirectory's link count, from the subdirectory's
tree, so listing directory D loads the trees of D's subdirectories on the trio thread. When D is
opened for listing, a worker thread loads the trees of the subdirectories of D's subdirectories
into the Repo's cache (at most TREES), so that a walk (``ls -lR``, ``find``, ``os.walk``) listing
them next finds them there instead of waiting for the disk on the loop. Each directory is
expanded once (the last EXPANDED remembered).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import trio

from ..catalog.objects import DIR, FILE
from ..errors import NotFound

log = logging.getLogger("artfs.mount")

WINDOW_MIN, WINDOW_MAX = 4, 64   # files read ahead of the reader (doubling while in order)
PUSH_MAX = 1 << 20               # bytes: bigger files are left to the kernel's read-ahead
DIRS = 64                        # directories followed at once (the least recent forgotten)
THREADS = 2                      # worker threads reading ahead, all directories together
TREES = 1024                     # trees loaded ahead for one listing, at most
EXPANDED = 4096                  # directories whose subtrees were loaded ahead, remembered
PUSHED = 1 << 16                 # inodes whose pages were put in the kernel's cache, remembered


class _Stream:
    """The reader of one directory: the last index it opened, where the last batch read ahead
    starts (reaching it starts the next batch) and ends, and the next batch's size."""

    __slots__ = ("last", "mark", "upto", "window")

    def __init__(self, index: int):
        self.last, self.mark, self.upto, self.window = index, index + 1, index + 1, WINDOW_MIN


class ReadAhead:
    def __init__(self, fs):
        self.fs = fs
        self._streams: OrderedDict[bytes, _Stream] = OrderedDict()   # by directory tree id
        self._limiter = trio.CapacityLimiter(THREADS)
        self._expanded: set[bytes] = set()   # tree ids whose grandchildren were loaded ahead
        self._pushed: OrderedDict[int, None] = OrderedDict()   # inodes read ahead, oldest first

    def opened(self, node) -> None:
        """A version file NODE was opened (trio thread): read ahead if its directory is being
        read in order."""
        if self.fs.store_pages is None:
            return
        vdir = node.dir
        try:
            index = vdir.index(node.entry.name)
        except NotFound:   # its version was deleted meanwhile
            return
        stream = self._streams.pop(vdir.tid, None)
        if stream is not None and 0 < index - stream.last <= 2:   # in order: read ahead
            stream.last = index
            if index >= stream.mark:
                stream.mark = max(stream.upto, index + 1)
                stream.upto = stream.mark + stream.window
                stream.window = min(2 * stream.window, WINDOW_MAX)
                self._start(vdir, stream.mark, stream.upto)
        else:
            stream = _Stream(index)
        self._streams[vdir.tid] = stream
        if len(self._streams) > DIRS:
            self._streams.popitem(last=False)

    def _start(self, vdir, start: int, stop: int) -> None:
        held, pushed = self.fs.inodes.held, self._pushed
        files = []
        for e in vdir.entries()[start:stop]:
            if e.kind == FILE and 0 < e.size <= PUSH_MAX:
                ino = held(vdir.key(e))
                if ino is not None and ino not in pushed:
                    files.append((ino, e.ref, e.size))
                    pushed[ino] = None
        while len(pushed) > PUSHED:
            pushed.popitem(last=False)
        if files:
            trio.lowlevel.spawn_system_task(self._run, self._read, files)

    def missed(self, ino: int) -> None:
        """A read of version file INO reached the daemon (trio thread): if it was read ahead, the
        kernel does not have its pages (any more), nor maybe those of the others."""
        if ino in self._pushed:
            self._pushed.clear()
            for stream in self._streams.values():   # their next open in order reads ahead again
                stream.mark = stream.upto = stream.last + 1

    def listing(self, vdir) -> None:
        """Version directory VDIR is opened for listing (trio thread): load its subdirectories'
        subdirectories' trees ahead, once."""
        if vdir.tid in self._expanded:
            return
        if len(self._expanded) >= EXPANDED:
            self._expanded.clear()
        self._expanded.add(vdir.tid)
        subdirs = [e.ref for e in vdir.entries() if e.kind == DIR]
        if subdirs:
            trio.lowlevel.spawn_system_task(self._run, self._trees, subdirs)

    async def _run(self, fn, work: list) -> None:
        try:
            await trio.to_thread.run_sync(fn, work, limiter=self._limiter)
        except trio.Cancelled:
            raise
        except Exception:   # a system task must not raise: log it, the reads will tell
            log.exception("read-ahead failed")

    def _read(self, files: list[tuple[int, bytes, int]]) -> None:   # worker thread
        fs, repo = self.fs, self.fs.repo
        here = repo.db.objects.read_here
        for ino, fid, size in files:
            try:
                trio.from_thread.check_cancelled()
            except trio.Cancelled:
                return   # the daemon is stopping
            frees = fs.files.frees
            try:
                if not repo.file_exists(fid):
                    continue
                fs.files.confirm(fid, frees)
                data = here(lambda: repo.read(repo.file(fid), 0, size))
                if data is None or len(data) != size:
                    continue
                fs.store_pages(ino, data)
            except Exception:   # noqa: BLE001 - deleted meanwhile, damaged, forgotten by the kernel
                continue

    def _trees(self, subdirs: list[bytes]) -> None:   # worker thread
        tree, loaded = self.fs.repo.tree, 0
        for tid in subdirs:
            try:
                trio.from_thread.check_cancelled()
                for e in tree(tid).entries:
                    if e.kind == DIR:
                        if loaded >= TREES:
                            return
                        tree(e.ref)
                        loaded += 1
            except trio.Cancelled:
                return   # the daemon is stopping
            except Exception:   # noqa: BLE001 - damaged: listing it will tell
                continue
