"""The remote object store: the ObjectStore interface (store/backend.py) over packs in a bucket.

Objects go up in packs (store/packs.py) of about ``pack_size`` bytes, each pack create-only and
before its index; ``put_many`` may run in several threads at once (a push's batches). The
remote's index (id -> pack, offset, length, SHA-256, kind) is the union of every
``packs/HH/PACKID.idx``: one LIST finds new ones, and each index is fetched once per host and kept
in ``cache_dir`` (indexes are immutable, so a cached one never goes stale). In memory it is a
``PackIndex`` (store/pack_index.py: the entries as read, ~82 bytes an object), ``index``: what
the lazy store, push and the garbage collector look up in it.

Reads are ranged GETs of exactly the objects asked for (neighbours coalesced, packs in parallel);
every object is checked against its id *and* the SHA-256 its index lists before it is returned,
so a damaged or tampered pack is CorruptData naming the object, never wrong bytes.

The remote of an encrypted store (store/sealed.py ``SealedObjectStore.remote_store``) is this
store under the sealing layer: its objects are sealed bytes checked against the id their header
names (``hasher``) and their SHA-256, its pack indexes are sealed records (``index_seal``, in the
bucket and in ``cache_dir``), and ``put_many`` is told the objects' kinds (sealed bytes do not say).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from ..errors import CorruptData, Exists, NotFound, UsageError
from .backend import Obj
from .ids import CHUNK, FILE, TREE, id_matches, object_id, strong_digest
from .pack_index import PackIndex
from .packs import Location, build, index_key, kind_of, pack_id_of_index, pack_key, parse_index, PREFIX
from .s3 import S3Store

PACK_SIZE = 64 << 20
PARALLEL = 8
_ORDER = {CHUNK: 0, FILE: 1, TREE: 2}


class _PackGone(CorruptData):
    """A pack named by an index read earlier is gone: after a refresh, CorruptData if still so."""


class RemoteObjectStore:
    def __init__(self, s3: S3Store, cache_dir: str, pack_size: int = PACK_SIZE, hasher=object_id,
                 index_seal=None):
        self.s3, self.cache_dir, self.pack_size = s3, cache_dir, pack_size
        self.object_id, self._seal = hasher, index_seal
        self.index = PackIndex()
        self.bytes_sent = 0                                   # pack and index bytes uploaded
        self._sent_lock = threading.Lock()
        os.makedirs(cache_dir, exist_ok=True)

    def close(self) -> None:
        pass

    # the index -------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read every pack index the remote lists and this one has not read yet, and forget the
        packs whose index is gone (a gc deleted or repacked them)."""
        listed = {pid for key, _ in self.s3.list(PREFIX) if (pid := pack_id_of_index(key)) is not None}
        known = set(self.index.pack_ids())
        new = sorted(listed - known)
        with ThreadPoolExecutor(PARALLEL) as pool:
            self.index.add(list(zip(new, pool.map(self._read_index, new))))
        gone = known - listed
        if gone:
            self._forget(gone)

    def _read_index(self, pack_id: str) -> memoryview:
        """The entries of pack PACKID's index (opened and checked once, packs.parse_index): cached
        here, else fetched and cached once they parse."""
        path = os.path.join(self.cache_dir, pack_id + ".idx")
        try:
            with open(path, "rb") as f:
                return parse_index(pack_id, self._open_index(pack_id, f.read()))
        except FileNotFoundError:
            pass
        data = self.s3.get(index_key(pack_id))
        entries = parse_index(pack_id, self._open_index(pack_id, data))   # never cache a malformed index
        self._cache(pack_id, data)
        return entries

    def _open_index(self, pack_id: str, data: bytes) -> bytes:
        """The index as packs.py reads it: opened when the remote seals its indexes."""
        if self._seal is None:
            return data
        opened = self._seal.open(index_key(pack_id), data)
        if opened is None:
            raise CorruptData(f"remote pack index {index_key(pack_id)} fails its authentication check: "
                              "damaged, tampered with or sealed with another key")
        return opened

    def _cache(self, pack_id: str, data: bytes) -> None:
        path = os.path.join(self.cache_dir, pack_id + ".idx")
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def _forget(self, pack_ids) -> None:
        """Drop these packs from the index (and the cache); their objects fall back to another
        pack holding them, if any."""
        self.index.forget(pack_ids)
        for pid in pack_ids:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.cache_dir, pid + ".idx"))

    def locate(self, ids: Sequence[bytes]) -> list[Location | None]:
        """Where the index lists each id (None: not listed), the pack indexes not read yet read
        first when one is unknown."""
        locs = self.index.locate(ids)
        if any(loc is None for loc in locs):
            self.refresh()
            locs = self.index.locate(ids)
        return locs

    # ObjectStore -----------------------------------------------------------------------------
    def get_many(self, ids: Sequence[bytes]) -> list[bytes | memoryview]:
        """The objects' bytes, each verified against its id and the SHA-256 its index lists (data
        chunks as views of the responses, not copied: s3.py ``get_ranges``)."""
        return self.get_located(ids, self.index.locate(ids))

    def get_located(self, ids: Sequence[bytes], locs: Sequence[Location | None]) -> list[bytes | memoryview]:
        """``get_many`` of ids the caller has looked up in ``index`` already (LOCS, as ``locate``
        gives them): looked up again only if one was not found then (after a refresh) or its pack
        is gone (a gc repacked it meanwhile: the objects are in another pack now)."""
        if any(loc is None for loc in locs):
            locs = self.locate(ids)
        try:
            return self._read(ids, locs)
        except _PackGone:
            self.refresh()
            return self._read(ids, self.index.locate(ids))

    def _read(self, ids: Sequence[bytes], locs: Sequence[Location | None]) -> list[bytes | memoryview]:
        by_pack: dict[str, list[int]] = defaultdict(list)
        for i, (oid, loc) in enumerate(zip(ids, locs)):
            if loc is None:
                raise CorruptData(f"remote {self.s3.url} has no object {oid.hex()}")
            by_pack[loc.pack].append(i)
        out: list[bytes | None] = [None] * len(ids)

        def fetch(pack: str) -> None:
            where = sorted(by_pack[pack], key=lambda i: locs[i].offset)
            try:
                got = self.s3.get_ranges(pack_key(pack), [(locs[i].offset, locs[i].offset + locs[i].length)
                                                          for i in where])
            except NotFound:
                raise _PackGone(f"remote pack {pack_key(pack)} is missing (its index names it)") from None
            for i, data in zip(where, got):
                oid, loc = ids[i], locs[i]
                if (len(data) != loc.length or not id_matches(self.object_id, data, oid)
                        or strong_digest(data) != loc.digest):
                    raise CorruptData(f"remote object {oid.hex()} (pack {pack_key(pack)}) fails its hash "
                                      "check: the remote is damaged or was tampered with")
                out[i] = data if loc.kind == CHUNK else bytes(data)   # trees, file objects: decoded
        if len(by_pack) == 1:      # one pack (a lazy read's batch): no thread pool
            fetch(next(iter(by_pack)))
        else:
            with ThreadPoolExecutor(PARALLEL) as pool:
                list(pool.map(fetch, by_pack))
        return out

    def put_many(self, objs: Sequence[Obj], refresh: bool = True,
                 kinds: Sequence[int] | None = None) -> int:
        """Upload the objects the remote lacks in packs; returns their bytes. CorruptData, before
        anything is uploaded, when the remote lists one of these ids with another SHA-256. Without
        ``refresh``, against the index as last read (a push that refreshed it under its lock: no
        delete runs meanwhile, so what it lacks is only what other hosts uploaded since, at worst
        uploaded twice), sparing a LIST of every pack per batch. KINDS: each object's kind
        (ids.CHUNK, FILE, TREE), given when the bytes do not tell it (sealed objects), else told
        from them (packs.kind_of)."""
        if refresh:
            self.locate([o.id for o in objs])
        new: dict[bytes, Obj] = {}
        for obj in objs:
            loc = self.index.get(obj.id)
            if loc is not None and loc.digest != obj.digest:
                raise CorruptData(f"remote object {obj.id.hex()} has different bytes than the local one: "
                                  "a hash collision or a hostile writer; nothing was uploaded")
            if loc is None:
                new.setdefault(obj.id, obj)
        given = dict(zip((o.id for o in objs), kinds)) if kinds is not None else None
        kinds = {oid: given[oid] if given is not None else kind_of(o, self.object_id) for oid, o in new.items()}
        todo = sorted(new.values(), key=lambda o: _ORDER[kinds[o.id]])   # children before parents
        batch, size = [], 0
        for obj in todo:
            batch.append(obj)
            size += len(obj.data)
            if size >= self.pack_size:
                self._upload(batch, kinds)
                batch, size = [], 0
        if batch:
            self._upload(batch, kinds)
        return sum(len(o.data) for o in todo)

    def _upload(self, objs: list[Obj], kinds: dict[bytes, int]) -> str:
        pack_id, pack, index = build(objs, [kinds[o.id] for o in objs])
        stored = index if self._seal is None else self._seal.seal(index_key(pack_id), index)
        for key, data in ((pack_key(pack_id), pack), (index_key(pack_id), stored)):
            try:
                self.s3.put(key, data, create=True)
                with self._sent_lock:             # pushes upload several packs at once
                    self.bytes_sent += len(data)
            except Exists:
                pass      # named by its SHA-256: another host uploaded these very bytes
        self._cache(pack_id, stored)
        self.index.add([(pack_id, parse_index(pack_id, index))])
        return pack_id

    def has(self, ids: Sequence[bytes]) -> list[bool]:
        return [loc is not None for loc in self.locate(ids)]

    def sizes(self, ids: Sequence[bytes]) -> list[int | None]:
        return [loc.length if loc is not None else None for loc in self.locate(ids)]

    def kinds(self, ids: Sequence[bytes]) -> list[int | None]:
        return [loc.kind if loc is not None else None for loc in self.locate(ids)]

    def check(self, ids: Sequence[bytes]) -> list[str | None]:
        out = []
        for oid in ids:
            try:
                self.get_many([oid])
                out.append(None)
            except CorruptData as e:
                out.append(str(e))
        return out

    def ids(self) -> Iterator[bytes]:
        self.refresh()
        yield from self.index.ids()

    def delete(self, ids: Sequence[bytes]) -> None:
        raise UsageError("objects leave a remote only through its garbage collector (remote/gc.py), "
                         "which holds the remote's delete lock")

    def drop_packs(self, pack_ids: Sequence[str]) -> None:
        """Delete these packs, their indexes first (an index always names a complete pack), each
        kind in bulk requests. Only the garbage collector calls this, holding the remote's delete
        lock."""
        if not pack_ids:
            return
        self.s3.delete_many([index_key(pid) for pid in pack_ids])
        self.s3.delete_many([pack_key(pid) for pid in pack_ids])
        self._forget(set(pack_ids) & set(self.index.pack_ids()))

    def upload(self, objs: Sequence[Obj]) -> str:
        """Put these objects, which the remote lists (the garbage collector's repack: their kinds
        are in the index), in one new pack; returns its id."""
        return self._upload(list(objs), {o.id: self.index.get(o.id).kind for o in objs})
