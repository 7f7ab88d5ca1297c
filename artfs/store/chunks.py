"""The chunk store: the only code that reads or writes stored bytes.

Every immutable object (data chunks, file chunk lists, trees) is kept here under a content id:
16 bytes of xxh3-128 followed by one disambiguation byte. A hash hit is never trusted: ``put``
compares the stored bytes and, on a real collision, takes the next free disambiguator, so different
bytes never share an id. ``get`` re-hashes what it returns, so corruption surfaces as CorruptData,
never as wrong bytes.

``ChunkStore`` is the small interface a remote (S3-style) store would implement; ``LmdbChunkStore``
keeps the objects in a named database of the catalog's LMDB environment so that a version and its
objects commit in one transaction.
"""

from __future__ import annotations

from typing import Protocol

from ..errors import CorruptData
from .chunker import HASH_LEN, chunk_hash

ID_LEN = HASH_LEN + 1


class ChunkStore(Protocol):
    """What the catalog needs from a chunk store. ``txn`` is the unit of atomicity the store
    shares with the catalog (an LMDB transaction here; a remote store would batch by it)."""

    def get(self, txn, cid: bytes): ...  # -> verified bytes-like, valid while txn lives
    def put(self, txn, data, digest: bytes | None = None) -> tuple[bytes, bool]: ...  # (id, new)
    def delete(self, txn, cid: bytes) -> None: ...
    def size(self, txn, cid: bytes) -> int: ...  # 0 when missing
    def verify_one(self, txn, cid: bytes) -> str | None: ...  # None, "missing" or "corrupt"
    def ids(self, txn): ...  # iterate every stored id


class LmdbChunkStore:
    def __init__(self, db, hasher=chunk_hash):
        self._db = db
        self._hash = hasher  # injectable so tests can force collisions

    def get(self, txn, cid: bytes):
        """Verified bytes of ``cid``: a memoryview valid only while ``txn`` is alive."""
        data = txn.get(cid, db=self._db)
        if data is None:
            raise CorruptData(f"missing object {cid.hex()}")
        if self._hash(data) != cid[:HASH_LEN]:
            raise CorruptData(f"object {cid.hex()} fails its hash check")
        return data

    def size(self, txn, cid: bytes) -> int:
        data = txn.get(cid, db=self._db)
        return 0 if data is None else len(data)

    def verify_one(self, txn, cid: bytes) -> str | None:
        """None when ``cid`` is present and hashes right, else 'missing' or 'corrupt'."""
        data = txn.get(cid, db=self._db)
        if data is None:
            return "missing"
        return None if self._hash(data) == cid[:HASH_LEN] else "corrupt"

    def put(self, txn, data, digest: bytes | None = None) -> tuple[bytes, bool]:
        """Store ``data`` unless equal bytes are stored; ``digest`` may be precomputed by the caller."""
        if digest is None or self._hash is not chunk_hash:
            digest = self._hash(data)
        for seq in range(256):
            cid = digest + bytes((seq,))
            stored = txn.get(cid, db=self._db)
            if stored is None:
                txn.put(cid, data, db=self._db)
                return cid, True
            if len(stored) == len(data) and stored == data:
                return cid, False
        raise CorruptData(f"256 different objects share hash {digest.hex()}")

    def delete(self, txn, cid: bytes) -> None:
        txn.delete(cid, db=self._db)

    def ids(self, txn):
        with txn.cursor(db=self._db) as cur:
            for key in cur.iternext(keys=True, values=False):
                yield bytes(key)
