"""Ingest sessions: the references a put or commit holds while it is still storing chunks.

A big ingest stores its chunks in many bounded transactions (so neither the writer's memory nor
LMDB's dirty pages grow with the input), before the one transaction that records the version.
Until then each chunk it stored or found is referenced by its *session*, so a concurrent delete
cannot free it, and no version can see it. The final transaction hands the references over to
the file objects it creates and drops the session; it fails if the session's records are gone.

Liveness comes from the kernel, not from process ids (which PID namespaces reuse and disguise):
a session is a random token plus a lock file ``STORE/sessions/<token>`` on which its owner holds
an exclusive flock for the session's life. The kernel drops that lock when the owner dies, in
whatever namespace or container it ran; a session whose lock can be taken is *abandoned*, and the
next writer (put, commit, a mount starting, ``artfs verify``) releases its references, which frees
every chunk nothing else uses. That decision is made inside a write transaction, so an owner
cannot finish (drop its records) and be judged abandoned at once.

Keys: token (16 random bytes) + batch number u32 -> concatenated chunk ids.

A mount's daemon holds a session for its whole life too: its token marks the staging files it
has open for writing (catalog/staging_index.py), so that after the daemon dies those files are
known to be possibly short (``alive`` says which marks are dead). Its records are the chunks of
staging files it stored ahead of a commit (staging/precommit.py), one or more batches per file:
a commit hands a file's batches over (``take``), a file written again gives its own back
(``release`` with ``batches``); if the daemon dies, the whole session is released as any other.
"""

from __future__ import annotations

import fcntl
import os
import struct

from ..store.ids import ID_LEN
from ..store.lmdb_env import os_error
from .db import flock_held

TOKEN_LEN = 16


class Session:
    """The owner's side: the token and the lock that says the owner is alive."""

    def __init__(self, store_path: str):
        self.token = os.urandom(TOKEN_LEN)
        self.path = lock_path(store_path, self.token)
        self._fd = None
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            os.write(self._fd, f"{os.getpid()}\n".encode())   # for people reading the directory
        except OSError as e:   # a full disk is NoSpace, as anywhere in the store
            self.end()
            raise os_error(self.path, e) from None
        self._batches = 0

    def next_batch(self) -> int:
        """A batch number not used before in this session (ingests may share a session)."""
        self._batches += 1
        return self._batches - 1

    def end(self) -> None:
        """After the session's records are gone (finished or released): drop the lock file."""
        if self._fd is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            os.close(self._fd)
            self._fd = None


def lock_path(store_path: str, token: bytes) -> str:
    return os.path.join(store_path, "sessions", token.hex())


def remove_dead_locks(store_path: str) -> int:
    """Remove the lock files whose owner died: a killed owner that held no references (a mount's
    daemon that stored nothing ahead) leaves one that no release removes. A file is judged while
    this process holds its lock and only once its owner wrote its pid into it, so an owner between
    creating the file and locking it is never taken for dead. A session without its lock file is
    dead to ``alive`` too, so removing one whose records remain changes nothing. Returns how many."""
    folder = os.path.join(store_path, "sessions")
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    removed = 0
    for name in names:
        path = os.path.join(folder, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:   # gone meanwhile (its owner ended it), or not ours to read
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_size:
                os.unlink(path)
                removed += 1
        except OSError:   # held (alive), unlinked meanwhile, or a store this user cannot write
            pass
        finally:
            os.close(fd)
    return removed


def alive(store_path: str, token: bytes) -> bool:
    """Whether the session's owner still holds its lock (a missing lock file: it never will)."""
    return flock_held(lock_path(store_path, token))


class Sessions:
    def __init__(self, dbs, objects, store_path: str):
        self.dbs = dbs
        self.objects = objects
        self.store_path = store_path

    @property
    def db(self):
        return self.dbs["sessions"]

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

    def close(self, txn, token: bytes) -> int:
        """Drop the session's records (its references now belong to what the caller built);
        returns how many batches it had."""
        keys = [key for key, _ in self._records(txn, token)]
        for key in keys:
            txn.delete(key, db=self.db)
        return len(keys)

    def take(self, txn, token: bytes, batches) -> bool:
        """Drop the records of some of the session's batches (their references now belong to what
        the caller built); whether every one of them was there."""
        found = True
        for batch in batches:
            found &= txn.delete(token + struct.pack(">I", batch), db=self.db)
        return found

    def release(self, txn, token: bytes, batches=None) -> None:
        """Give back the references the session holds (an ingest that failed or was killed), or
        those of some of its batches only (the ones still recorded)."""
        if batches is None:
            records = list(self._records(txn, token))
        else:
            keys = [token + struct.pack(">I", b) for b in batches]
            records = [(k, v) for k in keys if (v := txn.get(k, db=self.db)) is not None]
        for key, ids in records:
            ids = bytes(ids)
            for i in range(0, len(ids), ID_LEN):
                self.objects.decref_chunk(txn, ids[i:i + ID_LEN])
            txn.delete(key, db=self.db)

    def tokens(self, txn) -> set[bytes]:
        return {key[:TOKEN_LEN] for key, _ in self._records(txn)}

    def abandoned(self, txn) -> list[bytes]:
        return [t for t in self.tokens(txn) if not alive(self.store_path, t)]

    def forget(self, token: bytes) -> None:
        """Remove the lock file of a released abandoned session."""
        try:
            os.unlink(lock_path(self.store_path, token))
        except FileNotFoundError:
            pass

    def held(self, txn):
        """(token, chunk id) for every reference held by any session."""
        for key, ids in self._records(txn):
            for i in range(0, len(ids), ID_LEN):
                yield key[:TOKEN_LEN], ids[i:i + ID_LEN]
