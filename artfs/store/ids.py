"""Content ids: the same bytes have the same id in every store.

An object's id is the 16-byte xxh3-128 of its bytes: fast enough to check on every read (tens of
GB/s), and a pure function of the bytes, so two stores (or a store and a remote) can share objects.
xxh3 is not a cryptographic hash, so each object also carries its SHA-256 *digest*, computed once
when it is first stored. See docs/ARCHITECTURE.md ("Content ids") for how the two together detect
an accidental collision or a hostile writer.
"""

from __future__ import annotations

import hashlib

import xxhash

ID_LEN = 16
DIGEST_LEN = 32


def object_id(data) -> bytes:
    """The content id of ``data`` (bytes or any buffer)."""
    return xxhash.xxh3_128_digest(data)


def strong_digest(data) -> bytes:
    """SHA-256 of ``data``: checked by verify and on every dedup hit (hashlib releases the GIL)."""
    return hashlib.sha256(data).digest()
