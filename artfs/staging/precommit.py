"""Chunking and storing staging files ahead of their commit, in a mount's worker thread.

``commit`` is bound by storing the bytes of the files written into staging (chunking, hashing,
LMDB pages, fsyncs: docs/benchmarks.md). A mount sees every open for writing and every last close
of a staging file (mount/writing.py), so a worker thread of the daemon stores files as they are
written and once they are closed, and keeps in memory a *record* per file: the data file's stamp
(size, mtime, ctime, inode, device) and its chunk list. ``commit`` takes the chunk list of every
file whose stamp still matches and reads only the others (staging/commit.py).

- *Following*: from the open, the worker reads the data file as it grows, chunks and stores what
  was written, and at the last close checks that the file is made of those chunks (their ids: an
  overwrite of bytes already read, which the mount does not report, shows as a wrong id; then the
  file is read again whole). A file that stops growing for FOLLOW_IDLE while open is left to:
- *Ingesting*: after the last close, the worker reads the file whole and stores its chunks.

Reference before bytes, as every ingest (repo/ingest.py): the chunks of a record are held by the
daemon's session (catalog/sessions.py: the writer token's, whose lock the daemon holds), in batches
of the file's own. A commit hands a record's batches over to the file object it makes, in its
transaction; a file written again, a reset, or the daemon's exit give them back; a daemon killed
mid-ingest leaves an abandoned session that the next writer releases: nothing visible (records
are only in memory), nothing leaked.

When a record is trusted:

- a record is made only for a file that no writer of this mount opened since it was read (every
  open for writing drops the record or makes the running ingest give up), and only if the data
  file's stamp was the same before and after it was read;
- every other change of the data file (a truncate or utimes by path, a writer outside the mount)
  changes its ctime, and a commit uses a record only if the stamp still matches. The ctime moves
  even for a change in the same clock tick as the last write before the read, because a file is
  read (or checked) only GRACE_NS after its last change (more than the timestamp granularity of
  the file systems a store lives on: the kernel's coarse clock, a few milliseconds), as the files
  cache does for ``put`` (repo/files_cache.py).

Ids are xxh3-128 (store/ids.py): the check of a followed file compares ids, not SHA-256 digests,
so a writer able to make xxh3 collisions could have the commit keep bytes it wrote to the file
earlier instead of the colliding ones it wrote over them. Only files of at least MIN_BYTES are
stored ahead: a smaller one costs a commit little (it is batched with others) but would cost two
transactions (fsyncs) of its own here.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass

from ..catalog.sessions import Session
from ..errors import ArtfsError, StoreError
from ..repo.files_cache import Stamp
from ..repo.ingest import Ingest
from ..store.chunker import _cdc
from ..store.ids import strong_digest

GRACE_NS = 50 * 10**6
MIN_BYTES = 1 << 20
FOLLOW_IDLE = 1.0          # seconds without growth after which a followed file is left to its close
FOLLOW_POLL = 0.02         # seconds between looks at a followed file's size
FOLLOW_CHECK_BYTES = 8 << 20

log = logging.getLogger("artfs.precommit")
_running: dict[str, "Precommit"] = {}   # store path -> the precommit of this process (a daemon)


def running(store_path: str) -> Precommit | None:
    """The precommit of the mount this process serves for the store, if any (commit uses it)."""
    return _running.get(store_path)


@dataclass(frozen=True)
class Record:
    stamp: Stamp
    chunks: list        # [chunk id, length] each
    batches: list[int]  # the session's batches holding one reference to each chunk


class _Stale(Exception):
    """The file was opened for writing (or the precommit stopped) while being ingested."""


class _Rewritten(_Stale):
    """Bytes of a followed file were overwritten after they were read."""


class Precommit:
    """The records of one daemon, and the worker thread that makes them."""

    def __init__(self, repo, session: Session):
        self.repo, self.session = repo, session
        self._cond = threading.Condition()
        self._queue: deque = deque()        # (staging, ino) to follow or ingest
        self._records: dict[tuple[str, int], Record] = {}
        self._gen: dict[tuple[str, int], int] = {}   # opens for writing seen, per file
        self._open: set[tuple[str, int]] = set()     # files open for writing
        self._busy: tuple[str, int] | None = None    # the file being ingested
        self._release: list[list[int]] = []          # batches to give back
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="artfs-precommit", daemon=True)
        self._thread.start()
        _running[repo.path] = self

    # the mount's side (trio thread: nothing here waits for the worker) -----------------------------
    def opened(self, staging, ino: int) -> None:
        """Staging file INO of STAGING (a staging/overlay.py Staging) is being opened for writing
        (no writer of this mount has it open): its record, or its running ingest, no longer
        counts; the worker follows what is written to it."""
        key = (staging.name, ino)
        with self._cond:
            self._gen[key] = self._gen.get(key, 0) + 1
            self._drop(key)
            self._open.add(key)
            self._queue.append((staging, ino))
            self._cond.notify_all()

    def closed(self, staging, ino: int) -> None:
        """The last writer of the file closed."""
        with self._cond:
            self._open.discard((staging.name, ino))
            self._queue.append((staging, ino))
            self._cond.notify_all()

    def forget(self, name: str) -> None:
        """NAME's staging was committed or reset: its records are used or void."""
        with self._cond:
            for key in [k for k in self._records if k[0] == name]:
                self._drop(key)
            self._queue = deque(j for j in self._queue if j[0].name != name)
            self._gen = {k: g for k, g in self._gen.items() if k[0] != name or k == self._busy}
            if self._busy is not None and self._busy[0] == name:   # (a reset) it gives up
                self._gen[self._busy] = self._gen.get(self._busy, 0) + 1

    # the commit's side (worker threads) -------------------------------------------------------------
    def settle(self, name: str) -> None:
        """Before a commit of NAME (no file of it is open for writing): wait for the ingest of one
        of its files that is running; those not started yet are left to the commit."""
        with self._cond:
            self._queue = deque(j for j in self._queue if j[0].name != name)
            while self._busy is not None and self._busy[0] == name:
                self._cond.wait()

    def lookup(self, name: str, ino: int, st: os.stat_result) -> Record | None:
        """The record of a data file whose stamp is still ST's."""
        with self._cond:
            rec = self._records.get((name, ino))
        return rec if rec is not None and rec.stamp == Stamp.of(st) else None

    def hand_over(self, txn, records) -> None:
        """In the commit's transaction: the records' chunk references now belong to its files."""
        if not self.repo.sessions.take(txn, self.session.token, [b for r in records for b in r.batches]):
            raise StoreError("chunk references stored ahead of this commit were released; nothing "
                             "was recorded: run the command again")

    def used(self, name: str, inos) -> None:
        """After the commit recorded its version: those records are gone with their batches."""
        with self._cond:
            for ino in inos:
                self._records.pop((name, ino), None)

    # the worker ------------------------------------------------------------------------------------
    def _drop(self, key) -> None:
        rec = self._records.pop(key, None)
        if rec is not None:
            self._release.append(rec.batches)
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._queue or self._release or self._stopped):
                    self._cond.wait()
                if self._stopped:
                    return
                release, self._release = self._release, []
                job = self._queue.popleft() if self._queue and not release else None
                if job is not None:
                    key = (job[0].name, job[1])
                    self._busy, gen = key, self._gen.get(key, 0)
            try:
                if release:
                    self._give_back([b for batches in release for b in batches])
                else:
                    self._store(job[0], job[1], key, gen)
            except _Stale:
                pass
            except (ArtfsError, OSError) as e:   # a commit reads the file itself
                log.warning("storing staging data ahead of commit failed: %s", e)
            finally:
                with self._cond:
                    self._busy = None
                    self._cond.notify_all()

    def _give_back(self, batches: list[int]) -> None:
        token = self.session.token
        self.repo.db.write(lambda txn: self.repo.sessions.release(txn, token, batches))

    def _current(self, key, gen: int) -> None:
        if self._stopped or self._gen.get(key, 0) != gen:
            raise _Stale

    def _store(self, staging, ino: int, key, gen: int) -> None:
        """Follow the file while it is written, else ingest it if it has no record yet."""
        path = staging.files.path(ino)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:   # unlinked, committed or reset meanwhile (or not copied up yet)
            return
        try:
            with self._cond:
                following = key in self._open
                done = (rec := self._records.get(key)) is not None and rec.stamp == Stamp.of(os.fstat(fd))
            if following:
                try:
                    self._follow(fd, key, gen)
                except _Rewritten:
                    self._ingest(fd, key, gen, path)
            elif not done:
                self._ingest(fd, key, gen, path)
        finally:
            os.close(fd)

    def _ingest(self, fd: int, key, gen: int, path: str) -> None:
        """Read a closed file and store its chunks."""
        st = self._settled(fd)
        if st.st_size < MIN_BYTES:
            return
        self._current(key, gen)
        with self._ingesting(key, gen) as ingest:
            chunks = ingest.add_file(fd, st.st_size, path)
            self._keep(fd, key, gen, st, chunks, ingest)

    def _follow(self, fd: int, key, gen: int) -> None:
        """Chunk and store a file as it is written (appended to), until its last writer closes;
        then check that the file is made of the chunks stored (an overwrite of bytes already
        read, which this mount does not report, shows as a wrong chunk id) before keeping them.
        A file that does not grow for FOLLOW_IDLE seconds is left to its close."""
        reader = _Growing(self, fd, key, gen)
        hasher = self.repo.objects.store.object_id
        cut = (bytes(v.data) for v in _cdc().cut_stream(reader))
        with self._ingesting(key, gen) as ingest:   # chunked and hashed while the last is stored
            chunks = ingest.add_chunks(_ahead((hasher(c), strong_digest(c), c) for c in cut))
            if reader.pos < MIN_BYTES:
                raise _Stale
            st = self._settled(fd)
            if st.st_size != reader.pos or not _made_of(fd, chunks, hasher):
                raise _Rewritten
            self._keep(fd, key, gen, st, chunks, ingest)

    def _ingesting(self, key, gen: int) -> Ingest:
        """An ingest into the daemon's session that gives up once the file is opened again."""
        return Ingest(self.repo, progress=lambda n: self._current(key, gen), session=self.session)

    def _keep(self, fd: int, key, gen: int, st: os.stat_result, chunks, ingest: Ingest) -> None:
        """Record CHUNKS as the content of the file read with stamp ST, if it still has it."""
        ingest.flush()
        if Stamp.of(os.fstat(fd)) != Stamp.of(st):
            raise _Stale   # written meanwhile (not through this mount): given back
        with self._cond:
            self._current(key, gen)
            self._records[key] = Record(Stamp.of(st), chunks, ingest.batches)

    @staticmethod
    def _settled(fd: int) -> os.stat_result:
        """The file's stat once GRACE_NS passed since its last change (see the module doc)."""
        st = os.fstat(fd)
        while (wait := max(st.st_mtime_ns, st.st_ctime_ns) + GRACE_NS - time.time_ns()) > 0:
            time.sleep(wait / 1e9)
            st = os.fstat(fd)
        return st

    def stop(self) -> None:
        """At the daemon's exit: end the worker (a running ingest gives up), give every record's
        references back."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join()
        _running.pop(self.repo.path, None)
        batches = [b for batches in self._release for b in batches]
        batches += [b for rec in self._records.values() for b in rec.batches]
        self._records.clear()
        if batches:
            self._give_back(batches)


class _Growing:
    """A file being written, read from its start as a stream: a read waits for more bytes until
    the file's last writer closed (then the end is the end)."""

    def __init__(self, pre: Precommit, fd: int, key, gen: int):
        self.pre, self.fd, self.key, self.gen = pre, fd, key, gen
        self.pos = 0

    def readinto(self, buf) -> int:
        view, filled, idle = memoryview(buf).cast("B"), 0, time.monotonic()
        while filled < len(view):
            size = os.fstat(self.fd).st_size
            if size < self.pos:
                raise _Stale   # truncated under us
            if size > self.pos:
                n = os.preadv(self.fd, [view[filled:filled + min(len(view) - filled, size - self.pos)]],
                              self.pos)
                self.pos, filled, idle = self.pos + n, filled + n, time.monotonic()
                continue
            with self.pre._cond:
                self.pre._current(self.key, self.gen)
                if self.key not in self.pre._open:
                    if os.fstat(self.fd).st_size == self.pos:
                        break   # closed, and all of it read
                    continue
                if time.monotonic() - idle > FOLLOW_IDLE:
                    raise _Stale
                self.pre._cond.wait(FOLLOW_POLL)
        return filled


def _ahead(items, depth: int = 64):
    """ITEMS, produced in a helper thread up to DEPTH ahead of the caller (which may stop early:
    the helper then stops after its item at hand). The helper's exception is raised here."""
    q: queue.Queue = queue.Queue(depth)
    stop, end = threading.Event(), object()

    def hand(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in items:
                if not hand(item):
                    return
            hand(end)
        except BaseException as e:  # noqa: BLE001 - raised in the caller
            hand(e)
    helper = threading.Thread(target=produce, name="artfs-precommit-chunker", daemon=True)
    helper.start()
    try:
        while (item := q.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        helper.join()


def _made_of(fd: int, chunks, hasher) -> bool:
    """Whether the file's bytes are the chunks' (their ids compared), read FOLLOW_CHECK_BYTES at
    a time."""
    pos, i = 0, 0
    while i < len(chunks):
        j, size = i, 0
        while j < len(chunks) and (j == i or size + chunks[j][1] <= FOLLOW_CHECK_BYTES):
            size, j = size + chunks[j][1], j + 1
        data = memoryview(os.pread(fd, size, pos))
        if len(data) != size:
            return False
        at = 0
        for cid, n in chunks[i:j]:
            if hasher(data[at:at + n]) != cid:
                return False
            at += n
        pos, i = pos + size, j
    return True
