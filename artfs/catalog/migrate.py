"""Upgrade a format-1 store (artfs 0.1: one LMDB environment in ``STORE/db/``) to format 2.

Format 1 kept objects in the catalog's environment under 17-byte ids (xxh3-128 plus a
disambiguation byte that depended on the store's history). Format 2 keeps them in their own
environment under 16-byte ids that depend only on the bytes, with a SHA-256 digest each. File
objects and trees name their children by id, so every object reachable from a version or from a
staging index is rewritten bottom-up, and reference counts are recomputed from reachability.

Runs with the store lock held exclusively (catalog/db.py), into a fresh ``data.0/``; the caller
then switches the marker. A crash before the switch leaves the format-1 store untouched (the next
open starts over); after it, the old ``db/`` is removed as stale. Objects nothing reaches, the
parked files of a mount (zombies) and interrupted ingests are not carried over: no process can be
using the store while it is migrated.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections import Counter
from dataclasses import replace

import lmdb

from ..errors import StoreError
from ..store.backend import Obj
from ..store import ids
from ..store.ids import object_id, strong_digest
from ..store.lmdb_env import Env
from ..store.local import LocalObjectStore
from .objects import DIR, FILE, LINK, FileObj, Tree, encode_ref
from .staging_index import Node, decode_head, encode_head

OLD_DATABASES = (b"blobs", b"refs", b"zombies", b"sessions", b"meta", b"artifacts", b"versions",
                 b"aliases", b"events", b"staging")
_OLD_CHUNK_REF = struct.Struct(">17sI")
_CHUNK = "c"
BATCH_BYTES = 32 << 20


class _Converter:
    """Old id -> new id for every object reachable from what it is asked to convert."""

    def __init__(self, txn, blobs, objects: LocalObjectStore):
        self.txn, self.blobs, self.objects = txn, blobs, objects
        self.new_id: dict[bytes, bytes] = {}
        self.origin: dict[bytes, bytes] = {}        # new id -> old id (a collision check)
        self.refs: Counter = Counter()
        self.sizes: dict[bytes, int] = {}
        self.chunks: set[bytes] = set()
        self._pending: list[Obj] = []
        self._pending_bytes = 0

    def _old(self, oid: bytes) -> bytes:
        data = self.txn.get(oid, db=self.blobs)
        if data is None:
            raise StoreError(f"cannot migrate the store: object {oid.hex()} is missing "
                             "(run artfs verify with the previous artfs release)")
        return bytes(data)

    def convert(self, kind: str, oid: bytes) -> bytes:
        stack = [(kind, oid, False)]
        while stack:
            kind, old, expanded = stack.pop()
            if old in self.new_id:
                continue
            data = self._old(old)
            if kind == _CHUNK:
                self._store(old, data, [], ids.CHUNK)
                continue
            children = _children(kind, data)
            if not expanded:
                stack.append((kind, old, True))
                stack.extend((k, c, False) for k, c in children if c not in self.new_id)
                continue
            if kind == FILE:
                chunks = [(self.new_id[c], n) for c, n in _OLD_CHUNK_REF.iter_unpack(data[1:])]
                self._store(old, FileObj(chunks).encode(), [c for c, _ in chunks], ids.FILE)
            else:
                tree = Tree.decode(data)
                entries = [e if e.kind == LINK else replace(e, ref=self.new_id[e.ref]) for e in tree.entries]
                self._store(old, Tree(entries).encode(), [e.ref for e in entries if e.kind != LINK], ids.TREE)
        return self.new_id[oid]

    def _store(self, old: bytes, data: bytes, children: list[bytes], kind: int) -> None:
        new = object_id(data, kind)
        seen = self.origin.setdefault(new, old)
        if seen != old:
            raise StoreError(f"cannot migrate the store: objects {seen.hex()} and {old.hex()} "
                             "share one xxh3-128 hash (a collision format 2 cannot hold)")
        self.new_id[old] = new
        if new in self.sizes:
            return
        self.sizes[new] = len(data)
        if kind == ids.CHUNK:
            self.chunks.add(new)
        for child in children:
            self.refs[child] += 1
        self._pending.append(Obj(new, strong_digest(data), data))
        self._pending_bytes += len(data)
        if self._pending_bytes >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        self.objects.put_many(self._pending)
        self._pending, self._pending_bytes = [], 0


def _children(kind: str, data: bytes) -> list[tuple[str, bytes]]:
    if kind == FILE:
        return [(_CHUNK, c) for c, _ in _OLD_CHUNK_REF.iter_unpack(data[1:])]
    return [(e.kind, e.ref) for e in Tree.decode(data).entries if e.kind != LINK]


def migrate_format1(store: str, dest: str) -> None:
    from .db import DATABASES, INITIAL_MAP
    shutil.rmtree(dest, ignore_errors=True)
    old_path = os.path.join(store, "db")
    if not os.path.exists(old_path):
        return   # marked but never used: the new format's environments are made when opened
    try:
        old = lmdb.open(old_path, max_dbs=len(OLD_DATABASES) + 1, map_size=1 << 36, create=False)
    except lmdb.Error as e:
        raise StoreError(f"{store}: cannot open the format-1 database to migrate it: {e}") from None
    os.makedirs(dest, mode=0o700)
    os.makedirs(os.path.join(dest, "catalog"), mode=0o700)
    os.makedirs(os.path.join(dest, "objects"), mode=0o700)
    catalog = Env(os.path.join(dest, "catalog"), DATABASES, initial_map=INITIAL_MAP)
    objects = LocalObjectStore(os.path.join(dest, "objects"))
    try:
        odbs = {name.decode(): old.open_db(name) for name in OLD_DATABASES}
        with old.begin(buffers=True) as txn:
            conv = _Converter(txn, odbs["blobs"], objects)
            records = _convert_catalog(txn, odbs, conv)
            conv.flush()
        catalog.write(lambda t: _write_catalog(t, catalog.dbs, records, conv), lambda t: None)
    finally:
        objects.close()
        catalog.close()
        old.close()


def _items(txn, db):
    with txn.cursor(db=db) as cur:
        return [(bytes(k), bytes(v)) for k, v in cur]


def _convert_catalog(txn, odbs, conv: _Converter) -> dict[str, list[tuple[bytes, bytes]]]:
    """Every catalog record with object ids rewritten; objects converted on the way."""
    out = {name: _items(txn, odbs[name]) for name in ("artifacts", "aliases", "events", "meta")}
    versions = []
    for key, raw in _items(txn, odbs["versions"]):
        record = json.loads(raw)
        root = conv.convert(DIR, bytes.fromhex(record["root"]))
        conv.refs[root] += 1
        record["root"] = root.hex()
        versions.append((key, json.dumps(record).encode()))
    out["versions"] = versions
    staging = []
    for key, raw in _items(txn, odbs["staging"]):
        rest = key.partition(b"\0")[2]
        if rest == b"H":
            base = decode_head(raw)
            if base.root is not None:
                raw = encode_head(replace(base, root=conv.convert(DIR, base.root)))
        elif rest[:1] == b"N":
            node = Node.decode(0, raw)
            if node.ref and node.kind in (FILE, DIR) and not node.local:
                node.ref = conv.convert(node.kind, node.ref)
            raw = node.encode()
        staging.append((key, raw))
    out["staging"] = staging
    return out


def _write_catalog(txn, dbs, records, conv: _Converter) -> None:
    for name, items in records.items():
        for key, value in items:
            if name == "meta" and key in (b"chunk_bytes", b"chunk_count"):
                continue
            txn.put(key, value, db=dbs[name])
    for oid, count in conv.refs.items():
        txn.put(oid, encode_ref(count, conv.sizes[oid]), db=dbs["refs"])
    chunk_bytes = sum(conv.sizes[c] for c in conv.chunks)
    txn.put(b"chunk_bytes", chunk_bytes.to_bytes(8, "big"), db=dbs["meta"])
    txn.put(b"chunk_count", len(conv.chunks).to_bytes(8, "big"), db=dbs["meta"])
