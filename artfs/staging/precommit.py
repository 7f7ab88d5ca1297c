"""Chunking and storing closed staging files ahead of their commit, in a mount's worker thread.

``commit`` is bound by storing the bytes of the files written into staging (chunking, hashing,
LMDB pages, fsyncs: docs/benchmarks.md). A mount knows when a staging file was last written: when
its last writer closes (mount/writing.py). From then on a worker thread of the daemon ingests the
file's data file into the store, and keeps in memory a *record*: the data file's stamp (size,
mtime, ctime, inode, device) and its chunk list. ``commit``, run in the daemon (which passes its
Precommit), first waits for the file being stored, if any (``settle``: files not started yet
are left to it), then takes the chunk list of every file whose stamp still matches and reads only
the others (staging/commit.py).

Reference before bytes, as every ingest (repo/ingest.py): the chunks of a record are held by the
daemon's session (catalog/sessions.py: the writer token's, whose lock the daemon holds), in batches
of the file's own. A commit hands a record's batches over to the file object it makes, in its
transaction; a file written again, a reset, or the daemon's exit give them back; a daemon killed
mid-ingest leaves an abandoned session that the next writer releases: nothing visible (records
are only in memory), nothing leaked.

When a record is trusted:

- a record is made only for a file that no writer of this mount opened since its ingest began
  (``invalidate`` at every open for writing drops the record or makes the running ingest give up;
  so does the removal of the file's last name, which also frees its blocks at once: the running
  ingest closes the data file at its next chunk),
  and only if the data file's stamp was the same before and after it was read;
- every other change of the data file (a truncate or utimes by path, a writer outside the mount)
  changes its ctime, and a commit uses a record only if the stamp still matches. The ctime moves
  even for a change in the same clock tick as the last write before the ingest, because an ingest
  starts only GRACE_NS after the file's last change (more than the timestamp granularity of the
  file systems a store lives on: the kernel's coarse clock, a few milliseconds), as the files
  cache does for ``put`` (repo/files_cache.py).

A file the commit will take in whole (repo/ingest.py ``can_adopt``: big, a plain store) is
only chunked, hashed and made durable ahead (``add_file`` with ``adopt``, never flushed): its
record has where each chunk is in the file and no batches (nothing stored, nothing referenced),
and the commit adopts the file with it.

Only files of at least MIN_BYTES are ingested ahead: a smaller one costs a commit little (it is
batched with others) but would cost two transactions (fsyncs) of its own here.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass

from ..catalog.sessions import Session
from ..errors import ArtfsError, StoreError
from ..repo.files_cache import Stamp
from ..repo.ingest import Ingest

GRACE_NS = 50 * 10**6
MIN_BYTES = 1 << 20

log = logging.getLogger("artfs.precommit")


@dataclass(frozen=True)
class Record:
    stamp: Stamp
    chunks: list        # [chunk id, length] each
    batches: list[int]  # the session's batches holding one reference to each chunk
    located: list | None = None   # a file read ahead to adopt (no batches): repo/ingest.py
                                  # add_file's (id, offset, length, SHA-256) of each chunk


class _Stale(Exception):
    """The file was opened for writing (or the precommit stopped) while being ingested."""


class Precommit:
    """The records of one daemon, and the worker thread that makes them."""

    def __init__(self, repo, session: Session):
        self.repo, self.session = repo, session
        self._cond = threading.Condition()
        self._queue: deque = deque()        # (staging, ino) to ingest
        self._records: dict[tuple[str, int], Record] = {}
        self._gen: dict[tuple[str, int], int] = {}   # opens for writing seen, per file
        self._busy: tuple[str, int] | None = None    # the file being ingested
        self._release: list[list[int]] = []          # batches to give back
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="artfs-precommit", daemon=True)
        self._thread.start()

    # the mount's side (trio thread: nothing here waits for the worker) -----------------------------
    def closed(self, staging, ino: int) -> None:
        """The last writer of staging file INO of STAGING (a staging/overlay.py Staging) closed."""
        with self._cond:
            self._queue.append((staging, ino))
            self._cond.notify_all()

    def invalidate(self, name: str, ino: int) -> None:
        """The file is being opened for writing or was removed: its record (or running ingest) no
        longer counts; its references are given back."""
        key = (name, ino)
        with self._cond:
            self._gen[key] = self._gen.get(key, 0) + 1
            self._drop(key)

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
        if rec is not None and rec.batches:
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
                    self._ingest(job[0], job[1], key, gen)
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

    def _ingest(self, staging, ino: int, key, gen: int) -> None:
        path = staging.files.path(ino)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:   # unlinked, committed or reset meanwhile
            return
        try:
            st = os.fstat(fd)
            if st.st_size < MIN_BYTES:
                return
            while (wait := max(st.st_mtime_ns, st.st_ctime_ns) + GRACE_NS - time.time_ns()) > 0:
                time.sleep(wait / 1e9)
                st = os.fstat(fd)
            self._current(key, gen)
            check = lambda n: self._current(key, gen)  # noqa: E731 - once a chunk
            with Ingest(self.repo, progress=check, session=self.session) as ingest:
                adopt = ingest.can_adopt(st.st_size)   # then only read (and made durable)
                chunks = ingest.add_file(fd, st.st_size, path, adopt=adopt)
                if adopt:   # nothing flushed: the commit references the chunks
                    located = ingest.take_adopting()[0][1]
                else:
                    located = None
                    ingest.flush()
                if Stamp.of(os.fstat(fd)) != Stamp.of(st):
                    raise _Stale   # written meanwhile (not through this mount): given back
                with self._cond:
                    self._current(key, gen)
                    self._records[key] = Record(Stamp.of(st), chunks, ingest.batches, located)
        finally:
            os.close(fd)

    def stop(self) -> None:
        """At the daemon's exit: end the worker (a running ingest gives up), give every record's
        references back."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join()
        batches = [b for batches in self._release for b in batches]
        batches += [b for rec in self._records.values() for b in rec.batches]
        self._records.clear()
        if batches:
            self._give_back(batches)

