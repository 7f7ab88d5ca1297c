"""Locks on a remote: objects with expiry, as restic's repository has.

``locks/KIND-UUID.json``, KIND in the name so one LIST tells who holds what. A push (and so a commit or put publishing a version) holds a *shared* ``push`` lock for its
lifetime; a delete or gc holds an *exclusive* ``delete`` lock. A party writes its lock first, then
lists the locks: of two racing parties at least one sees the other (S3 lists are strongly
consistent after a write). A push that sees a live delete lock, or a delete that sees any other live
lock, removes its own and tries again after a random backoff; after ``ARTFS_REMOTE_LOCK_WAIT``
seconds (default 120) it gives up with RemoteBusy.

Liveness is the server's clock: a holder rewrites its lock every ``REFRESH`` seconds, and a lock
whose object was last modified more than ``STALE`` seconds before the newest lock's (the one just
written, so "now" as the server sees it) is stale and ignored, so a crashed host blocks nobody for
long. No client clock and no pid is trusted.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import uuid

from ..errors import Conflict
from ..store.s3 import S3Store

PREFIX = "locks/"
REFRESH = 30.0
STALE = 10 * 60.0
PUSH, DELETE = "push", "delete"


class RemoteBusy(Conflict):
    """The remote stayed locked by another host's delete (or push, for a delete) too long."""


def stale_age() -> float:
    return float(os.environ.get("ARTFS_REMOTE_LOCK_STALE", STALE))


class Lock:
    """A held lock; ``with`` releases it. Refreshed by a daemon thread while held."""

    def __init__(self, s3: S3Store, kind: str):
        self.s3, self.kind = s3, kind
        self.key = f"{PREFIX}{kind}-{uuid.uuid4()}.json"
        self.since = 0.0                 # server time of the lock's first write
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self) -> None:
        self.s3.put(self.key, json.dumps({"kind": self.kind, "host": socket.gethostname(), "pid": os.getpid(),
                                          "started": time.time()}).encode())

    def _blockers(self) -> tuple[list[str], float]:
        """Live locks that exclude this one, and the server's time of this lock."""
        entries = self.s3.listing(PREFIX)
        mine = next((t for k, _, t in entries if k == self.key), None)
        now = max([t for _, _, t in entries] + [mine or 0.0])
        live = [k for k, _, t in entries if k != self.key and t >= now - stale_age()]
        if self.kind == PUSH:
            live = [k for k in live if k.startswith(f"{PREFIX}{DELETE}-")]
        return live, mine or now

    def acquire(self) -> "Lock":
        deadline = time.monotonic() + float(os.environ.get("ARTFS_REMOTE_LOCK_WAIT", 120))
        attempt = 0
        while True:
            self._write()
            blockers, self.since = self._blockers()
            if not blockers:
                break
            self.s3.delete(self.key)
            attempt += 1
            if time.monotonic() > deadline:
                what = "a delete or gc" if self.kind == PUSH else "pushes or another delete"
                raise RemoteBusy(f"remote {self.s3.url} stayed locked by {what} of another host "
                                 f"({blockers[0]}); try again later, or `artfs gc --remote` once its host is gone")
            time.sleep(random.uniform(0.05, min(2.0, 0.1 * 2 ** attempt)))
        self._thread = threading.Thread(target=self._refresh, daemon=True)
        self._thread.start()
        return self

    def _refresh(self) -> None:
        while not self._stop.wait(float(os.environ.get("ARTFS_REMOTE_LOCK_REFRESH", REFRESH))):
            try:
                self._write()
            except Exception:   # the holder finds out when it next talks to the remote
                pass

    def fresh(self) -> bool:
        """Whether this lock is still there and not stale (the holder was not suspended past the
        stale age, when a delete may have ignored it)."""
        entries = self.s3.listing(PREFIX)
        mine = next((t for k, _, t in entries if k == self.key), None)
        return mine is not None and mine >= max(t for _, _, t in entries) - stale_age()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.s3.delete(self.key)

    def __enter__(self) -> "Lock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        try:
            self.release()
        except Exception:
            if exc[0] is None:
                raise


def stale_locks(s3: S3Store) -> list[str]:
    """Keys of locks older than the stale age, by the server's clock (the newest lock's time)."""
    entries = s3.listing(PREFIX)
    if not entries:
        return []
    now = max(t for _, _, t in entries)
    return [k for k, _, t in entries if t < now - stale_age()]
