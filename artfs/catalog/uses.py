"""Consumers of versions (the lineage's "used by"): the ``uses`` named database.

Key: name \\0 u32-big-endian version number \\0 u64 sequence (the ``use_seq`` counter in ``meta``);
value: a JSON record (time, user, uid, host, pid, argv, run_id, via), oldest first. A version's
records go with the version (Catalog.drop_version), an artifact's with the artifact, so a
re-created name never inherits the consumers of its predecessor.
"""

from __future__ import annotations

import json
import struct

from .db import bump, prefix_items


def _prefix(name: str, number: int | None = None) -> bytes:
    key = name.encode() + b"\0"
    return key if number is None else key + struct.pack(">I", number) + b"\0"


class Uses:
    def __init__(self, dbs):
        self.dbs = dbs

    def add(self, txn, name: str, number: int, record: dict) -> None:
        seq = bump(txn, self.dbs["meta"], b"use_seq", 1)
        txn.put(_prefix(name, number) + seq.to_bytes(8, "big"), json.dumps(record).encode(),
                db=self.dbs["uses"])

    def of(self, txn, name: str, number: int) -> list[dict]:
        prefix = _prefix(name, number)
        return [json.loads(bytes(raw)) for _, raw in prefix_items(txn, self.dbs["uses"], prefix)]

    def drop(self, txn, name: str, number: int | None = None) -> None:
        """Forget the consumers of one version, or (number None) of every version of NAME."""
        prefix = _prefix(name, number)
        keys = [prefix + rest for rest, _ in prefix_items(txn, self.dbs["uses"], prefix)]
        for key in keys:
            txn.delete(key, db=self.dbs["uses"])
