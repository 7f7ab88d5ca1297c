"""Read-ahead in version trees, FUSE-free: the next files of a directory read in order, and the
trees a walk of the tree will list next.

Walkers (``cp -r``, ``tar``, ``rsync``, a training loop over a dataset) open the files of a
directory in listing order. Cold, each of those opens and reads would wait for the disk in turn,
with a round trip through the kernel in between. When the opens of a version directory go in
order (an open one or two entries past the previous one; a listing of the directory counts as an
open just before its first entry, as a walk lists a directory and then opens its files, so its
first open already counts), a worker thread reads the next files of that directory ahead of the
reader, and for each one:

- checks that its file object still exists, so that its open skips that check (a fresh read
  counted against concurrent frees: OpenFiles.confirm with ``frees``, mount/files.py);
- (for all the files it reads ahead, first) has the disk read their chunks at once
  (``will_need``: one request per run of neighbouring chunks, all in flight together, instead
  of each read below waiting for the disk in turn);
- reads its bytes as any read does (``Repo.read``: every chunk hash-checked) and hands them to
  the kernel's page cache of its inode
  (``Filesystem.store_pages``, set by the FUSE adapter: FUSE_NOTIFY_STORE), so that its reads
  never reach the daemon. Version files are immutable and their inodes are their contents
  (mount/inodes.py), so those pages can never be stale; a file the kernel does not hold an inode
  for gets none. A file put there once is not read ahead again (a warm walk would only redo it)
  until a read of it reaches the daemon after they were put there: the kernel dropped them. That
  also stops the read-ahead of that reader, which may be dropping them itself
  (``fadvise(DONTNEED)`` before each read), until its next walk.

On a lazy store (store/lazy.py) the chunks of those files that only the remote holds are first
all scheduled for fetching at once (``LazyObjectStore.fetch_soon``: neighbours in one ranged GET,
within its bound on bytes in flight, every one verified before use); the worker thread then waits
for those fetches only, once (a failure leaves each file to its open, which waits for the same
fetch if it is still on its way or tries again). The walk itself never waits for the read-ahead.
Beyond the bound nothing more is fetched ahead, and only what is here is read ahead.

The next batch starts when the reader reaches the first file of the last one, and doubles (from
WINDOW_MIN to WINDOW_MAX files) while the reader keeps in order; any other open resets it. Only
files up to PUSH_MAX bytes are read ahead (the kernel's own read-ahead streams a big file).
Errors only end the read-ahead of that file: the reader then reads it the usual way and gets the
error.

Trees: a walk (``ls -lR``, ``find``, ``os.walk``) lists a directory's subdirectories next. When
version directory D is opened for listing, a worker thread loads the trees of D's subdirectories
into the Repo's cache, then those of their subdirectories (TREES in all), so that those listings
find them there instead of waiting for the disk on the loop. Listing D itself reads none of its
subdirectories' trees (their entries hold their link counts), but for trees written before
entries held them: it reads each one on the loop, for its count, and the next level is what the
walk waits for then. Each directory is expanded once (the last EXPANDED remembered).
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
TREES = 1024                     # trees loaded ahead for one listing, at most (two levels)
EXPANDED = 4096                  # directories whose subtrees were loaded ahead, remembered
PUSHED = 1 << 16                 # inodes whose pages were put in the kernel's cache, remembered
BATCH = 8                        # files read in one go (one transaction per store)


class _Stream:
    """The reader of one directory: the last index it opened, where the last batch read ahead
    starts (reaching it starts the next batch) and ends, the next batch's size, and whether it
    is read ahead (not once it has dropped pages read ahead for it before reading them)."""

    __slots__ = ("last", "mark", "upto", "window", "on")

    def __init__(self, index: int):
        self.last, self.mark, self.upto, self.window = index, index + 1, index + 1, WINDOW_MIN
        self.on = True


class ReadAhead:
    def __init__(self, fs):
        self.fs = fs
        self._streams: OrderedDict[bytes, _Stream] = OrderedDict()   # by directory tree id
        self._limiter = trio.CapacityLimiter(THREADS)
        self._expanded: set[bytes] = set()   # tree ids whose grandchildren were loaded ahead
        # inodes read ahead (-> their directory's tree id), oldest first, and those of them whose
        # pages are in the kernel's cache (added by the worker threads)
        self._pushed: OrderedDict[int, bytes] = OrderedDict()
        self._stored: set[int] = set()

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
            if index >= stream.mark and stream.on:
                stream.mark = max(stream.upto, index + 1)
                stream.upto = stream.mark + stream.window
                stream.window = min(2 * stream.window, WINDOW_MAX)
                self._start(vdir, stream.mark, stream.upto)
        else:
            stream = _Stream(index)
        self._follow(vdir.tid, stream)

    def _follow(self, tid: bytes, stream: _Stream) -> None:
        self._streams[tid] = stream
        if len(self._streams) > DIRS:
            self._streams.popitem(last=False)

    def _start(self, vdir, start: int, stop: int) -> None:
        held, pushed = self.fs.inodes.held, self._pushed
        files = []
        for e in vdir.entries(start, stop):
            if e.kind == FILE and 0 < e.size <= PUSH_MAX:
                ino = held(vdir.key(e))
                if ino is not None and ino not in pushed:
                    files.append((ino, e.ref, e.size))
                    pushed[ino] = vdir.tid
        while len(pushed) > PUSHED:
            self._stored.discard(pushed.popitem(last=False)[0])
        if files:
            trio.lowlevel.spawn_system_task(self._run, self._read, files)

    def missed(self, ino: int) -> None:
        """A read of version file INO reached the daemon (trio thread). If its pages were put in
        the kernel's cache, they were dropped before it was read: it may be read ahead again,
        and its reader is not read ahead any more (its next walk in order is). If its read-ahead
        is on its way (the reader overtook it), nothing changes."""
        tid = self._pushed.get(ino)
        if tid is not None and ino in self._stored:
            del self._pushed[ino]
            self._stored.discard(ino)
            stream = self._streams.get(tid)
            if stream is not None:
                stream.on = False

    def listing(self, vdir) -> None:
        """Version directory VDIR is opened for listing (trio thread): a walk opens its files
        next, so the listing counts as an open just before its first entry (the open of its
        first or second entry then starts the read-ahead); and its subdirectories'
        subdirectories' trees are loaded ahead, once."""
        if self.fs.store_pages is not None:
            old = self._streams.pop(vdir.tid, None)   # one that stopped stays stopped
            self._follow(vdir.tid, _Stream(-1) if old is None or old.on else old)
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
        fobjs = self._objects([fid for _, fid, _ in files])
        fetching = self._fetch(list(fobjs.values()))
        self._will_need(list(fobjs.values()))
        for i in range(0, len(files), BATCH):
            try:
                trio.from_thread.check_cancelled()
            except trio.Cancelled:
                return   # the daemon is stopping
            batch = [file for file in files[i:i + BATCH] if file[1] in fobjs]
            frees = fs.files.frees
            try:
                exist = repo.files_exist([fid for _, fid, _ in batch])
            except Exception:   # noqa: BLE001 - the catalog cannot be read: the opens will tell
                continue
            batch = [file for file, ok in zip(batch, exist) if ok]
            for _, fid, _ in batch:
                fs.files.confirm(fid, frees)
            for (ino, _, size), data in zip(batch, self._bytes([fobjs[fid] for _, fid, _ in batch], fetching)):
                if data is not None and len(data) == size:
                    try:
                        fs.store_pages(ino, data)
                    except OSError:   # the kernel forgot the inode meanwhile
                        continue
                    self._stored.add(ino)

    def _objects(self, fids: list[bytes]) -> dict:   # worker thread
        """The file objects (chunk lists) of FIDS by id, loaded once for both the fetch and the
        reads, in one store read; those that cannot be loaded (deleted meanwhile, damaged) are
        left out, for their opens to tell."""
        repo = self.fs.repo
        try:
            return dict(zip(fids, repo.files(fids)))
        except Exception:   # noqa: BLE001 - one is damaged or gone: load each on its own
            pass
        out = {}
        for fid in fids:
            try:
                out[fid] = repo.file(fid)
            except Exception:   # noqa: BLE001 - the reader will read it, and get the error
                continue
        return out

    def _fetch(self, fobjs: list) -> bool:   # worker thread
        """Start fetching the chunks of FOBJS that only the remote of a lazy store holds, without
        waiting (neighbours in one ranged GET); True if they are all here or on their way."""
        objects = self.fs.repo.db.objects
        if objects.remote() is None:
            return False
        try:
            return objects.fetch_soon([c for f in fobjs for c in f.chunks])
        except Exception:   # noqa: BLE001 - remote unreadable: the opens will tell
            return False

    def _will_need(self, fobjs: list) -> None:   # worker thread
        """Have the disk read the local chunks of FOBJS all at once, ahead of their reads."""
        try:
            self.fs.repo.db.objects.will_need([c for f in fobjs for c in f.chunks])
        except Exception:   # noqa: BLE001 - only a hint: the reads will tell
            pass

    def _bytes(self, fobjs: list, fetching: bool = False) -> list:   # worker thread
        """The bytes of the files FOBJS, each None if it cannot be read here (damaged, or only on
        the remote of a lazy store). Only with FETCHING (their chunks are on their way,
        ``_fetch``) does it wait for the remote, and only once: if that fails, it reads what is
        here."""
        repo = self.fs.repo
        here = repo.db.objects.read_here
        try:
            data = repo.read_whole(fobjs) if fetching else here(repo.read_whole, fobjs)
            if data is not None:
                return data
        except Exception:   # noqa: BLE001 - one file is damaged: read each on its own
            pass
        out = []
        for fobj in fobjs:
            try:
                out.append((here(repo.read_whole, [fobj]) or [None])[0])
            except Exception:   # noqa: BLE001 - the reader will read it, and get the error
                out.append(None)
        return out

    def _trees(self, subdirs: list[bytes]) -> None:   # worker thread
        """Load the trees of SUBDIRS (the listings a walk makes next), then those of their
        subdirectories: TREES in all."""
        tree, level, left = self.fs.repo.tree, subdirs[:TREES], TREES
        for _ in range(2):
            below = []
            for tid in level:
                try:
                    trio.from_thread.check_cancelled()
                    below += [e.ref for e in tree(tid).entries if e.kind == DIR]
                except trio.Cancelled:
                    return   # the daemon is stopping
                except Exception:   # noqa: BLE001 - damaged: listing it will tell
                    continue
            left -= len(level)
            level = below[:left]
