"""The local object store: objects in their own LMDB environment (STORE/data.N/objects/).

Record: key = id (16 bytes), value = digest (32 bytes) + the object's bytes; in the main store,
objects of ``segments.MIN_BYTES`` or more are appended to segment files instead and the
``located`` database says where (store/segments.py: one copy less on the storing thread; the
chunk cache, store/cache.py, keeps every object in LMDB). ``get_many`` re-hashes what it returns
(xxh3: cheap), so a damaged object is CorruptData, never wrong bytes; ``check`` also re-computes
the SHA-256 digest. Every call is its own short transaction.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence

from ..buffers import unfilled
from ..errors import CorruptData
from .backend import Obj
from .ids import DIGEST_LEN, id_matches, object_id, strong_digest
from .lmdb_env import Env, resident
from .segments import (ADOPTED, LOCATION, MIN_BYTES, PUNCH, TAIL, Segments, count, live_key,
                       merged, pack_count, punch_key, punch_record)

DATABASES = (b"objects", b"meta", b"located")
INITIAL_MAP = 1 << 40    # 1 TiB of address space; the file grows only as pages are used
RECENT = 32              # objects read in part kept (checked): a few read requests' worth
RECENT_MAX = 256 << 10   # only objects up to the largest chunk (store/chunker.py): at most 8 MiB


def keep_recent(recent: OrderedDict, objects: dict) -> None:
    """Keep each of OBJECTS (id -> checked or opened bytes) up to RECENT_MAX bytes in RECENT, the
    RECENT newest only (no lock: each dict operation is atomic)."""
    for oid, data in objects.items():
        if len(data) <= RECENT_MAX:
            recent[oid] = data
    while len(recent) > RECENT:
        try:
            recent.popitem(last=False)
        except KeyError:   # another thread emptied it meanwhile
            break


def _touch(txn, db) -> None:
    raw = txn.get(b"generation", db=db)
    n = int.from_bytes(raw, "big") + 1 if raw is not None else 1
    txn.put(b"generation", n.to_bytes(8, "big"), db=db)


class LocalObjectStore:
    def __init__(self, path: str, hasher=object_id, segments: bool = False):
        self.env = Env(path, DATABASES, initial_map=INITIAL_MAP)
        self.object_id = hasher   # injectable so tests can force collisions
        self.segments = Segments(self.env) if segments else None
        self._recent: OrderedDict[bytes, bytes] = OrderedDict()   # _ranges: no lock, each dict
        # operation is atomic (a fork at any moment leaves the child a usable one)

    @property
    def _db(self):
        return self.env.dbs["objects"]   # looked up each time: the environment may be reopened

    def close(self) -> None:
        self.env.close()
        if self.segments is not None:
            self.segments.close()

    def _write(self, fn):
        return self.env.write(fn, lambda txn: _touch(txn, self.env.dbs["meta"]))

    def _record(self, txn, oid: bytes):
        """``(True, location)`` of an object in a segment, ``(False, digest + bytes)`` of one kept
        in LMDB, or None when ``oid`` is not stored."""
        if self.segments is not None:
            location = txn.get(oid, db=self.env.dbs["located"])
            if location is not None:
                return True, location
        value = txn.get(oid, db=self._db)
        return None if value is None else (False, value)

    def _find(self, txn, oid: bytes, nowait: bool = False):
        """(digest, bytes) of ``oid`` (an LMDB value's views, valid in ``txn``, or a segment
        object's bytes read for the call), or None when it is not stored. With ``nowait``, None
        also when its bytes are not all in memory (reading them could wait for a disk)."""
        record = self._record(txn, oid)
        if record is None:
            return None
        segmented, value = record
        if segmented:
            return self.segments.read(value, nowait)
        if nowait and not resident(value):
            return None
        return value[:DIGEST_LEN], value[DIGEST_LEN:]

    def _checked(self, txn, oid: bytes, found=False):
        """The stored bytes of ``oid`` (a view valid in ``txn``), checked against the id."""
        found = self._find(txn, oid) if found is False else found
        if found is None:
            raise CorruptData(f"missing object {oid.hex()}")
        return self._verified(oid, found[1])

    def _verified(self, oid: bytes, data):
        """DATA, the bytes read of ``oid``, if they are its bytes (else CorruptData)."""
        if not id_matches(self.object_id, data, oid):
            if not self.has([oid])[0]:   # deleted (its bytes punched out) since txn began
                raise CorruptData(f"missing object {oid.hex()}")
            raise CorruptData(f"object {oid.hex()} fails its hash check")
        return data

    def get_many(self, ids: Sequence[bytes]) -> list[bytes]:
        with self.env.read() as txn:
            return [bytes(self._checked(txn, oid)) for oid in ids]

    def read_ranges(self, spans: Sequence[tuple[bytes, int, int]]) -> bytes | bytearray:
        """The concatenation of bytes [start, end) of each (id, start, end), every object checked
        (``_ranges``)."""
        with self.env.read() as txn:
            return self._ranges(txn, spans, False)

    def read_ranges_resident(self, spans: Sequence[tuple[bytes, int, int]]) -> bytes | bytearray | None:
        """``read_ranges``, or None when a value's pages are not all in memory (reading them
        could wait for a disk). The caller makes sure the lookups themselves touch pages in
        memory (ids it read recently: repo/facade.py)."""
        with self.env.read() as txn:
            return self._ranges(txn, spans, True)

    def _ranges(self, txn, spans, nowait: bool) -> bytes | bytearray | None:
        """``read_ranges`` in TXN (with ``nowait``: None where it would wait for a disk). Without
        segments, one copy straight from the map. With them, one new buffer (not zeroed): an
        object in a segment that the spans take whole is read by ``pread`` straight into its
        place there and checked in place; one taken in part is read whole into a buffer of its
        own, checked, copied from and kept (``RECENT``), so the next request of a sequential read,
        which takes the rest of it, copies from those checked bytes instead of reading and
        hashing the whole object again. Every byte returned is a byte that was checked."""
        if self.segments is None:
            found = [self._find(txn, oid, nowait) for oid, _, _ in spans]
            if nowait and not all(found):
                return None
            return b"".join(memoryview(self._checked(txn, oid, f))[start:end]
                            for (oid, start, end), f in zip(spans, found))
        out = unfilled(sum(end - start for _, start, end in spans))
        recent, kept, pos = self._recent, {}, 0
        with memoryview(out) as view:
            for oid, start, end in spans:
                place, pos = view[pos:pos + end - start], pos + end - start
                data = recent.get(oid)
                if data is None or end > len(data):
                    record = self._record(txn, oid)
                    if record is None:
                        if nowait:   # not here (a lazy store's chunk: its cache has it)
                            return None
                        raise CorruptData(f"missing object {oid.hex()}")
                    segmented, value = record
                    if segmented:
                        segment, offset, length, _ = LOCATION.unpack(value)
                        if start == 0 and end == length:          # whole: read into its place
                            if not self.segments.read_into(segment, offset, place, nowait):
                                return None
                            self._verified(oid, place)
                            continue
                        found = self.segments.read(value, nowait)
                        if found is None:
                            return None
                        data = kept[oid] = self._verified(oid, found[1])
                    else:
                        if nowait and not resident(value):
                            return None
                        data = self._verified(oid, value[DIGEST_LEN:])
                if end > len(data):
                    raise CorruptData(f"object {oid.hex()} is shorter ({len(data)} bytes) than a "
                                      "file that holds it says (run artfs verify)")
                place[:] = memoryview(data)[start:end]
        keep_recent(recent, kept)
        return out

    def will_need(self, ids: Sequence[bytes]) -> None:
        """Start reading the objects IDS from disk without waiting (those in segments: their
        values in LMDB are pages of the map, which the kernel reads as they are touched)."""
        if self.segments is None:
            return
        with self.env.read() as txn:
            records = [self._record(txn, oid) for oid in ids]
            self.segments.will_need([r[1] for r in records if r is not None and r[0]])

    def map_views(self, ids: Sequence[bytes], fn, nowait: bool = False) -> list | None:
        """``[fn(oid, view) for oid in ids]`` in one transaction, each view an object's stored
        bytes checked against its id, straight from the map: valid only during its call, so FN
        must not keep it (the sealed store opens objects from it: no copy out). With ``nowait``,
        None when a value's pages are not all in memory (as ``read_ranges_resident``)."""
        with self.env.read() as txn:
            found = [self._find(txn, oid, nowait) for oid in ids]
            if nowait and not all(found):
                return None
            return [fn(oid, self._checked(txn, oid, f)) for oid, f in zip(ids, found)]

    def map_stored(self, ids: Sequence[bytes], fn, nowait: bool = False):
        """``fn(stored)`` in one transaction, STORED the bytes of each id (None where missing) as
        views straight into the map, NOT checked against the ids: for a layer that authenticates
        each object itself (the sealing layer: AES-GCM under the id's own key, the id in the
        associated data; store/sealed.py, over a store without segments). The views are valid
        only during the call, so FN must not keep them. With ``nowait``, False (FN not called)
        when a value's pages are not all in memory (as ``read_ranges_resident``)."""
        with self.env.read() as txn:
            get, db = txn.get, self._db
            values = [get(oid, db=db) for oid in ids]
            if nowait and not all(v is not None and resident(v) for v in values):
                return False
            return fn([None if v is None else v[DIGEST_LEN:] for v in values])

    def put_many(self, objs: Sequence[Obj]) -> int:
        def action(txn):
            new, appended, batch = 0, [], {}
            for obj in objs:
                stored = batch.get(obj.id) or self._find(txn, obj.id)
                if stored is None:
                    batch[obj.id] = (obj.digest, obj.data)
                    if self.segments is not None and len(obj.data) >= MIN_BYTES:
                        appended.append(obj)
                    else:
                        txn.put(obj.id, obj.digest + obj.data, db=self._db)
                    new += len(obj.data)
                elif stored[0] != obj.digest or stored[1] != obj.data:
                    raise CorruptData(f"object {obj.id.hex()} is stored with different bytes: a hash "
                                      "collision or a damaged store (run artfs verify); nothing was written")
            if appended:
                meta, located = self.env.dbs["meta"], self.env.dbs["located"]
                records, tail = self.segments.append(Segments.tail(txn.get(TAIL, db=meta)),
                                                     [(o.digest, o.data) for o in appended])
                for obj, record in zip(appended, records):
                    txn.put(obj.id, record, db=located)
                txn.put(TAIL, Segments.pack_tail(*tail), db=meta)
            return new
        return self._write(action) if objs else 0

    @property
    def adopts(self) -> bool:
        """Whether ``adopt`` takes files in (the main store, with segments)."""
        return self.segments is not None

    def adopt(self, path: str, chunks: Sequence[tuple[bytes, int, int, bytes]]) -> bool:
        """Store the chunks (id, offset, length, SHA-256) of the file at PATH by taking the file
        itself in as a segment (store/segments.py, "Adopted segments"; hard-linked, no byte
        copied): each chunk not stored yet is located where it is in the file, the bytes of the
        others are punched out once the store's link is the file's only one (``settle``). The
        caller has made the file durable and never writes it again, and holds the chunks'
        references. Returns whether the chunks are stored; False (nothing stored) where the store
        cannot adopt (no segments, or a file on another filesystem): the caller stores by copy."""
        if self.segments is None:
            return False
        linked: list[int] = []

        def action(txn):
            located, meta = self.env.dbs["located"], self.env.dbs["meta"]
            new, dups, seen = [], [], set()
            for oid, offset, length, digest in chunks:
                stored = None if oid in seen else self._record(txn, oid)
                if oid in seen or stored is not None:
                    if stored is not None and _digest(stored) != digest:
                        raise CorruptData(f"object {oid.hex()} is stored with different bytes: a "
                                          "hash collision or a damaged store (run artfs verify); "
                                          "nothing was written")
                    dups.append((offset, length))
                else:
                    seen.add(oid)
                    new.append((oid, offset, length, digest))
            if not new:
                return True
            if not linked:
                linked.append(self.segments.link_in(path))
            segment = linked[0]
            for oid, offset, length, digest in new:
                txn.put(oid, LOCATION.pack(segment, offset, length, digest), db=located)
            txn.put(live_key(segment), pack_count(len(new)), db=meta)
            for offset, length in merged(dups):
                txn.put(punch_key(segment, offset), pack_count(length), db=meta)
            return True
        taken = False
        try:
            taken = self._write(action)
        except OSError:
            pass
        finally:
            if linked and not taken:
                self.segments.unlink(linked)
        return taken

    def settle(self) -> None:
        """Punch what waits to be punched in adopted segments whose only name is the store's
        (segments.PUNCH records), and drop those records."""
        if self.segments is None:
            return
        with self.env.read() as txn:
            with txn.cursor(db=self.env.dbs["meta"]) as cur:
                waiting: dict[int, list] = {}
                if cur.set_range(PUNCH):
                    for key, value in cur:
                        key = bytes(key)
                        if not key.startswith(PUNCH):
                            break
                        segment, offset, length = punch_record(key, bytes(value))
                        waiting.setdefault(segment, []).append((key, offset, length))
        done = [key for segment, records in waiting.items()
                if self.segments.punch_alone(segment, [(o, n) for _, o, n in records])
                for key, _, _ in records]
        if done:
            self._write(lambda txn: [txn.delete(key, db=self.env.dbs["meta"]) for key in done])

    def sweep(self) -> None:
        """Remove adopted segments nothing is located in (a process killed between a
        segment's adoption and its transaction's commit, or between its last delete and its
        removal). Inside a write transaction, so no adoption is under way."""
        if self.segments is None:
            return

        def action(txn):
            meta = self.env.dbs["meta"]
            self.segments.unlink([n for n in self.segments.adopted()
                                  if txn.get(live_key(n), db=meta) is None])
        self._write(action)
        self.settle()

    def has(self, ids: Sequence[bytes]) -> list[bool]:
        with self.env.read() as txn:
            return [self._record(txn, oid) is not None for oid in ids]

    def delete(self, ids: Sequence[bytes]) -> None:
        if not ids:
            return
        freed, dead = [], []
        for oid in ids:
            self._recent.pop(oid, None)

        def action(txn):
            freed.clear()
            dead.clear()
            meta, adopted = self.env.dbs["meta"], {}
            for oid in ids:
                record = self._record(txn, oid)
                if record is not None and record[0]:
                    location = bytes(record[1])   # (a view into the page the delete changes)
                    txn.delete(oid, db=self.env.dbs["located"])
                    segment, offset, length, _ = LOCATION.unpack(location)
                    if segment < ADOPTED:
                        freed.append(location)
                        continue
                    adopted[segment] = adopted.get(segment, 0) + 1
                    txn.put(punch_key(segment, offset), pack_count(length), db=meta)
                elif record is not None:
                    txn.delete(oid, db=self._db)
            for segment, n in adopted.items():
                live = txn.get(live_key(segment), db=meta)
                if live is None:
                    raise CorruptData(f"adopted segment {segment:#x} has objects but no count of "
                                      "them: a damaged store; its objects stay stored")
                left = count(live) - n
                if left > 0:
                    txn.put(live_key(segment), pack_count(left), db=meta)
                    continue
                txn.delete(live_key(segment), db=meta)
                _drop_prefix(txn, meta, punch_key(segment, 0)[:-8])
                dead.append(segment)
            return bool(adopted)
        adopted = self._write(action)
        if freed:
            self.segments.punch(freed)
        if dead:
            self.segments.unlink(dead)
        if adopted:
            self.settle()

    def sizes(self, ids: Sequence[bytes]) -> list[int | None]:
        with self.env.read() as txn:
            out = []
            for oid in ids:
                record = self._record(txn, oid)
                out.append(None if record is None else
                           LOCATION.unpack(record[1])[2] if record[0] else len(record[1]) - DIGEST_LEN)
            return out

    def check(self, ids: Sequence[bytes]) -> list[str | None]:
        out = []
        with self.env.read() as txn:
            for oid in ids:
                found = self._find(txn, oid)
                if found is None:
                    out.append("missing")
                    continue
                digest, data = found
                ok = id_matches(self.object_id, data, oid) and strong_digest(data) == bytes(digest)
                out.append(None if ok else "corrupt")
        return out

    def ids(self) -> Iterator[bytes]:
        for name in ("objects", "located") if self.segments is not None else ("objects",):
            with self.env.read_batches() as batches:
                for key, _ in batches.cursor_items(self.env.dbs[name], values=False):
                    yield key


def _drop_prefix(txn, db, prefix: bytes) -> None:
    with txn.cursor(db=db) as cur:
        if cur.set_range(prefix):
            while bytes(cur.key()).startswith(prefix):
                if not cur.delete():
                    break


def _digest(record) -> bytes:
    """The SHA-256 a ``_record`` names."""
    segmented, value = record
    return LOCATION.unpack(value)[3] if segmented else bytes(value[:DIGEST_LEN])
