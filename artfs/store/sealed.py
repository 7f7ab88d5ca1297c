"""An object store that seals what it stores, over any other (store/backend.py).

``SealedObjectStore(inner, master)`` is the object store of an encrypted store: ids are keyed
(``object_id`` is the keyed hasher, crypto/seal.py) and every object goes into INNER sealed
(AES-256-GCM, the id in the associated data) as ``Obj(id, SHA-256 of the sealed bytes, sealed
bytes)``: INNER keeps its own contract (its digest is of what it stores, its records are checked
against their id by the id the sealed header names), so the local store now and the remote later
hold and verify sealed objects as they are, without the key. Reads open and authenticate every
object: a wrong key, an object moved to another id or any damage is CorruptData naming the
object, never other bytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ..crypto.seal import HEADER, TAG, Sealer, header_id, keyed_hasher
from ..errors import CorruptData
from .backend import Obj
from .ids import id_matches, strong_digest
from .local import LocalObjectStore

OVERHEAD = HEADER + TAG


class SealedObjectStore:
    def __init__(self, inner, master: bytes):
        self.inner = inner
        self.object_id = keyed_hasher(master)
        self._sealer = Sealer(master)

    @classmethod
    def local(cls, path: str, master: bytes) -> "SealedObjectStore":
        """Over the local LMDB store at PATH, whose records are checked by their sealed header."""
        return cls(LocalObjectStore(path, hasher=header_id), master)

    @property
    def env(self):
        """The inner store's LMDB environment (compaction, file sizes: catalog/db.py)."""
        return self.inner.env

    def close(self) -> None:
        self.inner.close()

    def _open(self, oid: bytes, sealed) -> bytes:
        data = self._sealer.open(oid, sealed)
        if data is None:
            raise CorruptData(f"object {oid.hex()} fails its authentication check: damaged, "
                              "tampered with or sealed with another key (run artfs verify)")
        return data

    def get_many(self, ids: Sequence[bytes]) -> list[bytes]:
        return [self._open(oid, sealed) for oid, sealed in zip(ids, self.inner.get_many(ids))]

    def read_ranges(self, spans: Sequence[tuple[bytes, int, int]]) -> bytes:
        data = self.get_many([oid for oid, _, _ in spans])
        return b"".join(d[start:end] for d, (_, start, end) in zip(data, spans))

    def put_many(self, objs: Sequence[Obj]) -> int:
        sealed = []
        for obj in objs:
            blob = self._sealer.seal(obj.id, obj.data)
            sealed.append(Obj(obj.id, strong_digest(blob), blob))
        return self.inner.put_many(sealed)

    def has(self, ids: Sequence[bytes]) -> list[bool]:
        return self.inner.has(ids)

    def delete(self, ids: Sequence[bytes]) -> None:
        self.inner.delete(ids)

    def sizes(self, ids: Sequence[bytes]) -> list[int | None]:
        return [None if n is None else n - OVERHEAD for n in self.inner.sizes(ids)]

    def check(self, ids: Sequence[bytes]) -> list[str | None]:
        """The inner store's check (present, header, SHA-256 of the sealed bytes), then each
        object opened and its content hashed against its keyed id."""
        out = self.inner.check(ids)
        for i, oid in enumerate(ids):
            if out[i] is None:
                data = self._sealer.open(oid, self.inner.get_many([oid])[0])
                if data is None or not id_matches(self.object_id, data, oid):
                    out[i] = "corrupt"
        return out

    def ids(self) -> Iterator[bytes]:
        return self.inner.ids()
