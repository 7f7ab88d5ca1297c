"""The object-store interface: immutable, content-addressed objects, and no transactions.

Everything the catalog stores as bytes (data chunks, file chunk lists, trees) goes through this
interface, implemented by the local LMDB store (store/local.py) and, later, a remote one. Calls
are independent: the store knows nothing about references, versions or the catalog's
transactions. The catalog keeps reference counts and decides when an object may be deleted
(catalog/objects.py: take a reference first, then put; delete only what was unreferenced in an
earlier, committed transaction).

An object is ``Obj(id, digest, data)``: ``id`` = object_id(data), ``digest`` = strong_digest(data)
(store/ids.py). ``put_many`` stores the objects it does not have; for those it has, it compares
the digest (and, where it can, the bytes), so different bytes under one id are reported as a
collision instead of being deduplicated away.

An ingest makes its chunks' objects in its chunking thread (store/chunker.py), with the store's
``chunk_maker``: a store that keeps chunks in another form (a sealed store: store/sealed.py) makes
them there as it keeps them, so that its ``put_many`` only stores them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import NamedTuple, Protocol

from .ids import object_id, strong_digest


class Obj(NamedTuple):
    id: bytes
    digest: bytes
    data: bytes


class ObjectStore(Protocol):
    def get_many(self, ids: Sequence[bytes]) -> list[bytes]:
        """The bytes of each id, each checked against its id (CorruptData when missing or bad)."""

    def put_many(self, objs: Sequence[Obj]) -> int:
        """Store the objects not already stored; returns how many bytes were new.
        CorruptData when an id is stored with different content (a collision)."""

    def has(self, ids: Sequence[bytes]) -> list[bool]: ...

    def delete(self, ids: Sequence[bytes]) -> None:
        """Remove these objects; ids not stored are ignored (deletes are idempotent)."""

    def sizes(self, ids: Sequence[bytes]) -> list[int | None]:
        """Byte length of each object, None when not stored."""

    def check(self, ids: Sequence[bytes]) -> list[str | None]:
        """Deep check: None when present and both the id and the digest match, else the problem."""

    def ids(self) -> Iterator[bytes]:
        """Every stored id (in batches: no long-lived transaction or listing)."""

    def close(self) -> None: ...


def plain_chunk(data, hasher=object_id) -> Obj:
    """A plain store's object of a chunk's bytes: id, SHA-256 digest, the bytes."""
    return Obj(hasher(data), strong_digest(data), data)


def chunk_maker(store) -> Callable[[bytes], Obj]:
    """How an ingest makes the object of a chunk's bytes for STORE's ``put_many``: the store's own
    ``seal_chunk`` where it has one (a sealed store: keyed id, sealed bytes, their digest), else
    ``plain_chunk`` with the store's ``object_id``."""
    seal = getattr(store, "seal_chunk", None)
    if seal is not None:
        return seal
    return partial(plain_chunk, hasher=store.object_id)
