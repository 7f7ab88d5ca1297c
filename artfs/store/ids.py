"""Content ids: the same bytes have the same id in every store.

An object's id is the 16-byte xxh3-128 of its bytes, seeded with its kind (a data chunk, a file
object, a tree): fast enough to check on every read (tens of GB/s), and a pure function of kind and
bytes, so two stores (or a store and a remote) can share objects. The seed keeps kinds apart: a
1-byte file holding ``F`` is not the empty file object (whose encoding is ``F``), so a chunk and a
file object never share an id and with it a reference count.
xxh3 is not a cryptographic hash, so each object also carries its SHA-256 *digest*, computed once
when it is first stored. See docs/ARCHITECTURE.md ("Content ids") for how the two together detect
an accidental collision or a hostile writer.
"""

from __future__ import annotations

import hashlib

import xxhash

ID_LEN = 16
DIGEST_LEN = 32


CHUNK, FILE, TREE = 0, 1, 2   # the kinds, used as the hash seed
# how file objects and trees encode (catalog/objects.py): first byte -> kind; a reference (R: a
# file whose bytes stay at their source, repo/references.py) is of the file kind
KIND_OF_PREFIX = {b"F": FILE, b"R": FILE, b"T": TREE}


def object_id(data, kind: int = CHUNK) -> bytes:
    """The content id of ``data`` (bytes or any buffer) of one kind."""
    return xxhash.xxh3_128_digest(data, seed=kind)


def id_matches(hasher, data, oid: bytes) -> bool:
    """Whether ``oid`` is the id of ``data`` as a chunk, or as the file object or tree its first
    byte says it may be (at most two hashes)."""
    if hasher(data) == oid:
        return True
    kind = KIND_OF_PREFIX.get(bytes(data[:1]))
    return kind is not None and hasher(data, kind) == oid


def strong_digest(data) -> bytes:
    """SHA-256 of ``data``: checked by verify and on every dedup hit (hashlib releases the GIL)."""
    return hashlib.sha256(data).digest()
