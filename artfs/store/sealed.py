"""An object store that seals what it stores, over any other (store/backend.py).

``SealedObjectStore(inner, master)`` is the object store of an encrypted store: ids are keyed
(``object_id`` is the keyed hasher, crypto/seal.py) and every object goes into INNER sealed
(AES-256-GCM, the id in the associated data) as ``Obj(id, SHA-256 of the sealed bytes, sealed
bytes)``: INNER keeps its own contract (its digest is of what it stores, its records are checked
against their id by the id the sealed header names), so the local store now and the remote later
hold and verify sealed objects as they are, without the key. Reads open and authenticate every
object: a wrong key, an object moved to another id or any damage is CorruptData naming the
object, never other bytes. Over the local store an object is opened in place in the LMDB map
(``LocalObjectStore.map_views``; an encrypted store keeps its objects as LMDB values, not in
segments, for this): AES-GCM reads the sealed bytes there, never copied out first,
and writes the plaintext once: a read's chunks that it takes whole straight into its reply (one
buffer, not zeroed first, every byte of which is then written), the others into a plaintext of
their own, kept (the chunk-sized objects opened last), so a sequential read whose requests split
chunks opens each chunk once (no lock: each dict operation is atomic, so a fork at any moment
leaves the child a usable cache). A read returns a bytearray (plain stores: bytes).

An ingest's chunks arrive sealed already: its chunking threads make each chunk's object with
``seal_chunk`` (store/backend.py chunk_maker), and ``put_many`` stores those ``Sealed`` objects as
they are, so the thread storing a commit's batches only stores; other objects are sealed in
``put_many``.

The same key seals the store's other places (``store_at``, ``remote_store``): the chunk cache of a
lazily read remote holds sealed chunks like the local store (it is on the same disk, and plain
bytes there would undo encryption at rest), and the remote holds the same sealed objects under
the same keyed ids, its pack indexes sealed too (``SealedRemoteStore``). The lazy store
(store/lazy.py) sees only opened objects: it reads the local store, the cache and the remote
each through this layer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from ..crypto.seal import HEADER, TAG, RecordSealer, Sealer, header_id, keyed_hasher, unfilled
from ..errors import CorruptData
from .backend import Obj
from .ids import id_matches, strong_digest
from .local import LocalObjectStore, keep_recent
from .packs import kind_of
from .remote import RemoteObjectStore

OVERHEAD = HEADER + TAG
SEAL_SPLIT = 4 << 20     # a put of this many bytes or more is sealed in two threads (_sealed)


class SealedObjectStore:
    def __init__(self, inner, master: bytes):
        self.inner = inner
        self.object_id = keyed_hasher(master)
        self._master = master
        self._sealer = Sealer(master)
        self._recent: OrderedDict[bytes, bytes] = OrderedDict()

    @classmethod
    def local(cls, path: str, master: bytes) -> "SealedObjectStore":
        """Over the local LMDB store at PATH, whose records are checked by their sealed header."""
        return cls(LocalObjectStore(path, hasher=header_id), master)

    def store_at(self, path: str) -> "SealedObjectStore":
        """Another local LMDB store at PATH sealed with this key (the chunk cache, store/cache.py)."""
        return self.local(path, self._master)

    def remote_store(self, s3, cache_dir: str, pack_size: int) -> "SealedRemoteStore":
        """The remote object store (store/remote.py) of a remote of this store: sealed objects,
        sealed pack indexes, this key."""
        return SealedRemoteStore(self._master, s3, cache_dir, pack_size)

    @property
    def env(self):
        """The inner store's LMDB environment (compaction, file sizes: catalog/db.py)."""
        return self.inner.env

    def close(self) -> None:
        self.inner.close()

    def _open(self, oid: bytes, sealed) -> bytes:
        data = self._sealer.open(oid, sealed)
        if data is None:
            raise _unopened(oid)
        return data

    def get_many(self, ids: Sequence[bytes]) -> list[bytes]:
        """Each object's plaintext: the chunks kept, the rest opened now."""
        recent = self._recent
        out = [_as_bytes(recent.get(oid)) for oid in ids]
        missing = list(dict.fromkeys(oid for oid, data in zip(ids, out) if data is None))
        if missing:
            opened = dict(zip(missing, self._each(missing, self._open, False)))
            out = [opened[oid] if data is None else data for oid, data in zip(ids, out)]
            keep_recent(self._recent, opened)
        return out

    def _each(self, ids: list[bytes], fn, nowait: bool) -> list | None:
        """``[fn(oid, sealed) for oid in ids]``: straight from the inner store's map where it has
        one (the sealed bytes are never copied out), else from its copies (a remote: never
        ``nowait``); with ``nowait``, None where it would wait for a disk."""
        views = getattr(self.inner, "map_views", None)
        if views is not None:
            return views(ids, fn, nowait)
        return None if nowait else list(map(fn, ids, self.inner.get_many(ids)))

    def read_ranges(self, spans: Sequence[tuple[bytes, int, int]]) -> bytearray:
        return self._ranges(spans, False)

    def read_ranges_resident(self, spans: Sequence[tuple[bytes, int, int]]) -> bytearray | None:
        """``read_ranges`` without waiting for a disk, or None (the caller reads in a thread): the
        chunks kept, else each sealed object whose pages the inner store has in memory, opened
        here (the mount reads on its event loop without a thread hop, as a plain store)."""
        return self._ranges(spans, True)

    def _ranges(self, spans: Sequence[tuple[bytes, int, int]], nowait: bool) -> bytearray | None:
        """The concatenated [start, end) of each (id, start, end), in one new buffer: a chunk the
        spans take whole is opened straight into it (no plaintext of its own, no copy); one they
        take in part is opened whole into a plaintext of its own and kept, for the next read to
        take the rest from; a kept one is copied from. With ``nowait``, None where it would wait
        for a disk. One pass over the spans to place them, one over the sealed objects in the
        inner store's map (a read's chunks are many: no per-chunk work that can be avoided)."""
        recent = self._recent
        todo, kept, pos = [], [], 0
        for oid, start, end in spans:
            data = recent.get(oid)
            if data is not None and end <= len(data):
                kept.append((pos, data, start, end))
            else:
                todo.append((pos, oid, start, end))
            pos += end - start
        out = unfilled(pos)
        with memoryview(out) as view:
            for pos, data, start, end in kept:
                view[pos:pos + end - start] = memoryview(data)[start:end]
            if todo and not self._open_into(todo, view, nowait):
                return None
        return out

    def _open_into(self, todo: list[tuple[int, bytes, int, int]], view: memoryview,
                   nowait: bool) -> bool:
        """Each span of TODO (its position in VIEW, id, start, end) put in its place, its object
        opened from the inner store (False where ``nowait`` would wait for a disk): in its place
        if the span takes it whole, else into a plaintext kept (``keep_recent``); an object a span
        earlier in TODO opened is not opened again."""
        sealer, opened = self._sealer, {}

        def place(sealed: list) -> None:
            for (pos, oid, start, end), stored in zip(todo, sealed):
                if stored is None:
                    raise CorruptData(f"missing object {oid.hex()}")
                size = len(stored) - OVERHEAD
                if end > size:
                    if size < 0:
                        raise _unopened(oid)
                    raise CorruptData(f"object {oid.hex()} is shorter ({size} bytes) than a file "
                                      "that holds it says (run artfs verify)")
                whole = opened.get(oid)
                if whole is not None:                # a duplicate: copied from where it was opened
                    view[pos:pos + end - start] = whole[start:end]
                elif start == 0 and end == size:     # taken whole: opened in its place
                    whole = view[pos:pos + size]
                    if not sealer.open_into(oid, stored, whole):
                        raise _unopened(oid)
                    opened[oid] = whole
                else:                                # in part: opened whole, kept for the rest
                    whole = sealer.open_new(oid, stored)
                    if whole is None:
                        raise _unopened(oid)
                    whole = opened[oid] = memoryview(whole)
                    view[pos:pos + end - start] = whole[start:end]
        ids = [span[1] for span in todo]
        stored = getattr(self.inner, "map_stored", None)
        if stored is not None:
            if stored(ids, place, nowait) is False:
                return False
        elif nowait:
            return False
        else:
            place(self.inner.get_many(ids))
        keep_recent(self._recent, {oid: whole.obj for oid, whole in opened.items() if whole.obj is not view.obj})
        return True

    def seal_chunk(self, data) -> "Sealed":
        """The object of a chunk's bytes as this store keeps it (keyed id, sealed bytes, their
        SHA-256), made by an ingest's chunking thread (store/backend.py chunk_maker): ``put_many``
        stores it as it is, so a commit's storing thread only stores."""
        return self._seal(self.object_id(data), data)

    def _seal(self, oid: bytes, data) -> "Sealed":
        blob = self._sealer.seal(oid, data)
        return Sealed(oid, strong_digest(blob), blob)

    def put_many(self, objs: Sequence[Obj]) -> int:
        return self.inner.put_many(self._sealed(objs))

    def _sealed(self, objs: Sequence[Obj]) -> list[Obj]:
        """Each object sealed, with the digest of its sealed bytes (those ``seal_chunk`` made are
        kept as they are); a batch of at least ``SEAL_SPLIT`` bytes to seal in two halves at once,
        one in a helper thread: AES-GCM and SHA-256 run without the GIL, so a pull's batch is
        sealed on both cores."""
        objs = list(objs)
        if len(objs) < 2 or sum(len(o.data) for o in objs if type(o) is not Sealed) < SEAL_SPLIT:
            return self._seal_all(objs)
        half = len(objs) // 2
        with ThreadPoolExecutor(1, thread_name_prefix="artfs-seal") as helper:
            second = helper.submit(self._seal_all, objs[half:])
            return self._seal_all(objs[:half]) + second.result()

    def _seal_all(self, objs: list[Obj]) -> list[Obj]:
        return [obj if type(obj) is Sealed else self._seal(obj.id, obj.data) for obj in objs]

    def has(self, ids: Sequence[bytes]) -> list[bool]:
        return self.inner.has(ids)

    def delete(self, ids: Sequence[bytes]) -> None:
        for oid in ids:
            self._recent.pop(oid, None)
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


def _as_bytes(data):
    """A kept plaintext as ``get_many`` returns objects: bytes (a chunk a read opened in part is
    kept as the bytearray it was opened into)."""
    return bytes(data) if type(data) is bytearray else data


def _unopened(oid: bytes) -> CorruptData:
    return CorruptData(f"object {oid.hex()} fails its authentication check: damaged, "
                       "tampered with or sealed with another key (run artfs verify)")


class Sealed(Obj):
    """An object sealed by this layer (``seal_chunk``): its data are the sealed bytes, its digest
    theirs; ``put_many`` stores it without sealing it again."""

    __slots__ = ()


class SealedRemoteStore(SealedObjectStore):
    """A remote object store (store/remote.py) under the sealing layer: what the lazy store, push,
    pull and the remote's garbage collector use of it, with objects opened on the way out and
    sealed on the way in (``upload``: a repack's objects, read opened)."""

    def __init__(self, master: bytes, s3, cache_dir: str, pack_size: int):
        super().__init__(None, master)
        self.inner = RemoteObjectStore(s3, cache_dir, pack_size, hasher=header_id,
                                       index_seal=RecordSealer(master))

    s3 = property(lambda self: self.inner.s3)
    index = property(lambda self: self.inner.index)
    bytes_sent = property(lambda self: self.inner.bytes_sent)
    cache_dir = property(lambda self: self.inner.cache_dir)
    pack_size = property(lambda self: self.inner.pack_size)

    def refresh(self) -> None:
        self.inner.refresh()

    def locate(self, ids: Sequence[bytes]) -> list:
        return self.inner.locate(ids)

    def kinds(self, ids: Sequence[bytes]) -> list[int | None]:
        return self.inner.kinds(ids)

    def put_many(self, objs: Sequence[Obj], refresh: bool = True) -> int:
        """Sealed, with each object's kind told from its plaintext (its keyed id, its first byte)."""
        return self.inner.put_many(self._sealed(objs), refresh=refresh,
                                   kinds=[kind_of(o, self.object_id) for o in objs])

    def get_located(self, ids: Sequence[bytes], locs) -> list[bytes]:
        """``get_many`` at the locations the caller looked up (store/remote.py), opened."""
        return list(map(self._open, ids, self.inner.get_located(ids, locs)))

    def drop_packs(self, pack_ids) -> None:
        self.inner.drop_packs(pack_ids)

    def upload(self, objs: Sequence[Obj]) -> str:
        return self.inner.upload(self._sealed(objs))
