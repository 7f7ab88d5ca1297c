"""``artfs mount --record-use``: the first open of a version's file by a process, as a consumer.

Nothing here is on the read path. ``opened`` (called by an open of a version file) costs a set
lookup for a (pid, artifact, version) already seen. The first time, the process's argv and run id
are read from /proc/PID in a worker thread (the opener is blocked in open(2) meanwhile, so it is
still there; the trio loop never touches another process's /proc files, which can wait on that
process's memory lock), and the record is queued. ``run`` (a task of the daemon's nursery) writes
the queue in one transaction per batch, in a worker thread, at most every BATCH_SECONDS; ``flush``
writes what is left when the daemon stops.

A process is known by its pid for as long as it lives: every SWEEP_SECONDS the pids that no longer
exist are forgotten, so a later process reusing the pid is recorded again. A process in a PID
namespace the daemon cannot see has pid 0 and is recorded once per version, without argv.
"""

from __future__ import annotations

import functools
import logging
import os

import trio

from ..repo.lineage import process_consumer, record_uses

log = logging.getLogger("artfs.mount")
BATCH_SECONDS = 0.5
SWEEP_SECONDS = 30.0


class UseRecorder:
    def __init__(self, repo):
        self.repo = repo
        self._seen: set[tuple[int, str, int]] = set()
        self._queue: list[tuple[str, int, dict]] = []
        self._wake = trio.Event()

    async def opened(self, name: str, number: int, pid: int, uid: int) -> None:
        key = (pid, name, number)
        if key in self._seen:
            return
        self._seen.add(key)
        record = await trio.to_thread.run_sync(functools.partial(process_consumer, pid, uid))
        self._queue.append((name, number, record))
        self._wake.set()

    async def run(self) -> None:
        """Write queued records in batches, and forget dead processes, until cancelled."""
        while True:
            with trio.move_on_after(SWEEP_SECONDS):
                await self._wake.wait()
                await trio.sleep(BATCH_SECONDS)   # let a burst of opens share one transaction
            self._wake = trio.Event()
            batch, self._queue = self._queue, []
            pids = {pid for pid, _, _ in self._seen}
            gone = await trio.to_thread.run_sync(self._write, batch, pids)
            self._seen = {key for key in self._seen if key[0] not in gone}

    def _write(self, batch, pids=()) -> set[int]:
        """Record BATCH; returns which of PIDS no longer exist."""
        try:
            record_uses(self.repo, batch)
        except Exception:   # a failed record must not end the daemon; reads go on regardless
            log.exception("could not record %d uses of versions", len(batch))
        return {pid for pid in pids if pid and not os.path.exists(f"/proc/{pid}")}

    def flush(self) -> None:
        """Write what is queued (the daemon is stopping: no trio loop runs any more)."""
        batch, self._queue = self._queue, []
        self._write(batch)
