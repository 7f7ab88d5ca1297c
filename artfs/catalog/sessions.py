"""Ingest sessions: the references a put or commit holds while it is still storing chunks.

A big ingest stores its chunks in many bounded transactions (so neither the writer's memory nor
LMDB's dirty pages grow with the input), before the one transaction that records the version.
Until then each chunk it stored or found is referenced by its *session*, so a concurrent delete
cannot free it, and no version can see it. The final transaction hands the references over to
the file objects it creates and drops the session.

A process killed mid-ingest leaves its session behind. Sessions are keyed by the owner's pid and
process start time; one whose owner is gone is *abandoned*, and the next writer (put, commit, a
mount starting, ``artfs verify``) releases its references, which frees every chunk nothing else
uses. Until then verify counts them as held, not leaked.

Keys: token (pid u32, start time u64, sequence u32) + batch number u32 -> concatenated chunk ids.
"""

from __future__ import annotations

import itertools
import os
import struct

from ..store.chunks import ID_LEN

_TOKEN = struct.Struct(">IQI")
_counter = itertools.count()


def _start_time(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat.rsplit(b")", 1)[1].split()[19])


def new_token() -> bytes:
    pid = os.getpid()
    return _TOKEN.pack(pid, _start_time(pid) or 0, next(_counter))


def _alive(token: bytes) -> bool:
    pid, start, _ = _TOKEN.unpack(token)
    return _start_time(pid) == start


class Sessions:
    def __init__(self, dbs, objects):
        self.db = dbs["sessions"]
        self.objects = objects

    def hold(self, txn, token: bytes, batch: int, ids: list[bytes]) -> None:
        """Record that the session holds one reference to each of ``ids`` (already taken)."""
        txn.put(token + struct.pack(">I", batch), b"".join(ids), db=self.db)

    def _records(self, txn, token: bytes | None = None):
        with txn.cursor(db=self.db) as cur:
            found = cur.set_range(token) if token else cur.first()
            while found:
                key = bytes(cur.key())
                if token and not key.startswith(token):
                    return
                yield key, bytes(cur.value())
                found = cur.next()

    def close(self, txn, token: bytes) -> None:
        """Drop the session's records; its references now belong to what the caller built."""
        for key, _ in list(self._records(txn, token)):
            txn.delete(key, db=self.db)

    def release(self, txn, token: bytes) -> None:
        """Give back every reference the session holds (an ingest that failed or was killed)."""
        for key, ids in list(self._records(txn, token)):
            for i in range(0, len(ids), ID_LEN):
                self.objects.decref_chunk(txn, ids[i:i + ID_LEN])
            txn.delete(key, db=self.db)

    def tokens(self, txn) -> set[bytes]:
        return {key[:_TOKEN.size] for key, _ in self._records(txn)}

    def abandoned(self, txn) -> list[bytes]:
        return [t for t in self.tokens(txn) if not _alive(t)]

    def held(self, txn):
        """(token, chunk id) for every reference held by any session."""
        for key, ids in self._records(txn):
            for i in range(0, len(ids), ID_LEN):
                yield key[:_TOKEN.size], ids[i:i + ID_LEN]

    @staticmethod
    def owner(token: bytes) -> int:
        return _TOKEN.unpack(token)[0]
