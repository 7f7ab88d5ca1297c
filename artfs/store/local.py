"""The local object store: objects in their own LMDB environment (STORE/data.N/objects/).

Record: key = id (16 bytes), value = digest (32 bytes) + the object's bytes. ``get_many`` re-hashes
what it returns (xxh3: cheap), so a damaged object is CorruptData, never wrong bytes; ``check``
also re-computes the SHA-256 digest. Every call is its own short transaction.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ..errors import CorruptData
from .backend import Obj
from .ids import DIGEST_LEN, id_matches, object_id, strong_digest
from .lmdb_env import Env, resident

DATABASES = (b"objects", b"meta")
INITIAL_MAP = 1 << 40    # 1 TiB of address space; the file grows only as pages are used


def _touch(txn, db) -> None:
    raw = txn.get(b"generation", db=db)
    n = int.from_bytes(raw, "big") + 1 if raw is not None else 1
    txn.put(b"generation", n.to_bytes(8, "big"), db=db)


class LocalObjectStore:
    def __init__(self, path: str, hasher=object_id):
        self.env = Env(path, DATABASES, initial_map=INITIAL_MAP)
        self.object_id = hasher   # injectable so tests can force collisions

    @property
    def _db(self):
        return self.env.dbs["objects"]   # looked up each time: the environment may be reopened

    def close(self) -> None:
        self.env.close()

    def _write(self, fn):
        return self.env.write(fn, lambda txn: _touch(txn, self.env.dbs["meta"]))

    def _checked(self, txn, oid: bytes, value=None):
        """The stored bytes of ``oid`` (a view valid in ``txn``), checked against the id."""
        value = txn.get(oid, db=self._db) if value is None else value
        if value is None:
            raise CorruptData(f"missing object {oid.hex()}")
        data = value[DIGEST_LEN:]
        if not id_matches(self.object_id, data, oid):
            raise CorruptData(f"object {oid.hex()} fails its hash check")
        return data

    def get_many(self, ids: Sequence[bytes]) -> list[bytes]:
        with self.env.read() as txn:
            return [bytes(self._checked(txn, oid)) for oid in ids]

    def read_ranges(self, spans: Sequence[tuple[bytes, int, int]]) -> bytes:
        """The concatenation of bytes [start, end) of each (id, start, end), every object checked:
        one copy, straight from the map."""
        with self.env.read() as txn:
            return b"".join(self._checked(txn, oid)[start:end] for oid, start, end in spans)

    def read_ranges_resident(self, spans: Sequence[tuple[bytes, int, int]]) -> bytes | None:
        """``read_ranges``, or None when a value's pages are not all in memory (reading them
        could wait for a disk). The caller makes sure the lookups themselves touch pages in
        memory (ids it read recently: repo/facade.py)."""
        with self.env.read() as txn:
            values = []
            for oid, _, _ in spans:
                value = txn.get(oid, db=self._db)
                if value is None or not resident(value):
                    return None
                values.append(value)
            return b"".join(self._checked(txn, oid, value)[start:end]
                            for (oid, start, end), value in zip(spans, values))

    def map_views(self, ids: Sequence[bytes], fn, nowait: bool = False) -> list | None:
        """``[fn(oid, view) for oid in ids]`` in one transaction, each view an object's stored
        bytes checked against its id, straight from the map: valid only during its call, so FN
        must not keep it (the sealed store opens objects from it: no copy out). With ``nowait``,
        None when a value's pages are not all in memory (as ``read_ranges_resident``)."""
        with self.env.read() as txn:
            db = self._db
            values = [txn.get(oid, db=db) for oid in ids]
            if nowait and not all(v is not None and resident(v) for v in values):
                return None
            return [fn(oid, self._checked(txn, oid, value)) for oid, value in zip(ids, values)]

    def map_stored(self, ids: Sequence[bytes], fn, nowait: bool = False):
        """``fn(stored)`` in one transaction, STORED the bytes of each id (None where missing) as
        views straight into the map, NOT checked against the ids: for a layer that authenticates
        each object itself (the sealing layer: AES-GCM under the id's own key, the id in the
        associated data; store/sealed.py). The views are valid only during the call, so FN must
        not keep them. With ``nowait``, False (FN not called) when a value's pages are not all in
        memory (as ``read_ranges_resident``)."""
        with self.env.read() as txn:
            get, db = txn.get, self._db
            values = [get(oid, db=db) for oid in ids]
            if nowait and not all(v is not None and resident(v) for v in values):
                return False
            return fn([None if v is None else v[DIGEST_LEN:] for v in values])

    def put_many(self, objs: Sequence[Obj]) -> int:
        def action(txn):
            new = 0
            for obj in objs:
                stored = txn.get(obj.id, db=self._db)
                if stored is None:
                    txn.put(obj.id, obj.digest + obj.data, db=self._db)
                    new += len(obj.data)
                elif stored[:DIGEST_LEN] != obj.digest or stored[DIGEST_LEN:] != obj.data:
                    raise CorruptData(f"object {obj.id.hex()} is stored with different bytes: a hash "
                                      "collision or a damaged store (run artfs verify); nothing was written")
            return new
        return self._write(action) if objs else 0

    def has(self, ids: Sequence[bytes]) -> list[bool]:
        with self.env.read() as txn:
            return [txn.get(oid, db=self._db) is not None for oid in ids]

    def delete(self, ids: Sequence[bytes]) -> None:
        if ids:
            self._write(lambda txn: [txn.delete(oid, db=self._db) for oid in ids])

    def sizes(self, ids: Sequence[bytes]) -> list[int | None]:
        with self.env.read() as txn:
            out = []
            for oid in ids:
                value = txn.get(oid, db=self._db)
                out.append(None if value is None else len(value) - DIGEST_LEN)
            return out

    def check(self, ids: Sequence[bytes]) -> list[str | None]:
        out = []
        with self.env.read() as txn:
            for oid in ids:
                value = txn.get(oid, db=self._db)
                if value is None:
                    out.append("missing")
                    continue
                data = value[DIGEST_LEN:]
                ok = id_matches(self.object_id, data, oid) and strong_digest(data) == bytes(value[:DIGEST_LEN])
                out.append(None if ok else "corrupt")
        return out

    def ids(self) -> Iterator[bytes]:
        with self.env.read_batches() as batches:
            for key, _ in batches.cursor_items(self._db, values=False):
                yield key
