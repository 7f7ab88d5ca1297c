"""Keyed object ids and sealed objects, from a store's master key.

Two subkeys are derived from the 256-bit master key with HKDF-SHA256 (distinct ``info``): one
for ids, one for sealing. Neither is ever stored.

- **Keyed ids**: ``HMAC-SHA256(id key, kind || xxh3-128(data, seed=kind))`` truncated to 16 bytes.
  Without the key nobody can compute the id of known content, so a reader of the store (or of a
  bucket holding its objects) cannot test whether that content is stored. Collisions are exactly
  as rare, and handled exactly as, for plain ids (docs/ARCHITECTURE.md, "Content ids"): two
  contents share an id only if they share an xxh3-128, and a put then finds a different digest
  and refuses.
- **Sealing**: AES-256-GCM under a per-object key ``HMAC-SHA256(seal key, id)`` with a zero
  nonce. Each (key, nonce) pair therefore only ever encrypts the one content of that id (a second
  content under one id is a collision that put refuses before storing anything), so there is no
  nonce to run out of and no birthday bound on the number of objects; equal content sealed twice
  gives equal bytes, which dedup and the create-only compare need. The sealed form is
  ``VERSION || id || ciphertext || tag``, the first 17 bytes being the associated data: an object
  moved to another id, or damaged anywhere, fails to open. The id is itself keyed over the kind,
  so the kind is bound too.
- **Sealed records** (an encrypted remote's version records, aliases and pack indexes, which are
  rewritten in place: a tombstone replaces a record, an alias moves): AES-256-GCM under a third
  subkey with a random 96-bit nonce (a remote holds far fewer than the 2^32 records that random
  nonces are safe for), the record's bucket key in the associated data (a record moved to
  another key fails to open): ``RECORD_VERSION || nonce || ciphertext || tag``.
- **Opaque names**: an artifact or alias name in a bucket key is ``HMAC-SHA256(name key,
  name)`` (32 hex digits): deterministic, so create-only numbering and alias compare-and-swap
  keep working on keys, and without the key nobody can test a guessed name.
- **Key id**: 16 bytes of a fourth subkey, which an encrypted remote records so a store sealed
  with another key is refused before it reads or writes anything; it reveals nothing of the key.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import xxhash
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..buffers import unfilled

ID_LEN = 16
VERSION = b"\x01"
HEADER = len(VERSION) + ID_LEN
TAG = 16
_NONCE = bytes(12)
RECORD_VERSION = b"\x01"
_KINDS = [bytes([k]) for k in range(256)]


def subkey(master: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"artfs " + purpose + b" v1").derive(master)


def keyed_hasher(master: bytes):
    """``hasher(data, kind=0)``: the keyed id of ``data`` (store/ids.py's object_id, keyed)."""
    key = subkey(master, b"object id")

    def keyed_id(data, kind: int = 0) -> bytes:
        h = hmac.new(key, _KINDS[kind], hashlib.sha256)
        h.update(xxhash.xxh3_128_digest(data, seed=kind))
        return h.digest()[:ID_LEN]
    return keyed_id


def header_id(sealed, kind: int = 0) -> bytes:
    """The id a sealed object names in its header: what the store under the sealing layer checks
    its records against (a cheap check that a record is where it belongs; the AEAD tag is what
    authenticates it)."""
    return bytes(sealed[len(VERSION):HEADER])


class Sealer:
    def __init__(self, master: bytes):
        self._key = subkey(master, b"object seal")
        # HMAC-SHA256 under the seal key with its two padded key blocks hashed once: a per-object
        # key is then two copies and two short updates (RFC 2104; the same key as hmac.digest)
        block = self._key.ljust(hashlib.sha256().block_size, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block)).copy
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block)).copy

    def object_key(self, oid: bytes) -> bytes:
        """The object's own key, ``HMAC-SHA256(seal key, id)`` (module doc)."""
        inner = self._inner()
        inner.update(oid)
        outer = self._outer()
        outer.update(inner.digest())
        return outer.digest()

    def _aead(self, oid: bytes) -> AESGCM:
        return AESGCM(self.object_key(oid))

    def seal(self, oid: bytes, data) -> bytes:
        header = VERSION + oid
        return header + self._aead(oid).encrypt(_NONCE, data, header)

    def _body(self, oid: bytes, sealed) -> tuple[memoryview | None, bytes]:
        """The ciphertext and tag of ``sealed`` (None if it does not name ``oid`` in a complete
        header), and the associated data to open it with."""
        view = memoryview(sealed)
        header = VERSION + oid
        if len(view) < HEADER + TAG or view[:HEADER] != header:
            return None, header
        return view[HEADER:], header

    def open(self, oid: bytes, sealed) -> bytes | None:
        """The plaintext, or None when ``sealed`` (bytes, or a view into a store's map: it is
        read in place) is not ``oid``'s object sealed with this key (a wrong key, a moved object
        or damage: AES-GCM cannot tell them apart)."""
        body, header = self._body(oid, sealed)
        if body is None:
            return None
        try:
            return self._aead(oid).decrypt(_NONCE, body, header)
        except InvalidTag:
            return None

    def open_into(self, oid: bytes, sealed, out) -> bool:
        """``open`` into OUT (a writable buffer of exactly the plaintext's length): whether it
        opened. When not, OUT holds unauthenticated bytes: the caller discards it. (``_body``
        written out: a read calls this for most of its chunks.)"""
        view = memoryview(sealed)
        header = VERSION + oid
        if len(view) < HEADER + TAG or view[:HEADER] != header:
            return False
        return self._decrypt_into(oid, view[HEADER:], header, out)

    def open_new(self, oid: bytes, sealed) -> bytearray | None:
        """``open`` into a new bytearray (not zeroed first: ``unfilled``), or None."""
        body, header = self._body(oid, sealed)
        if body is None:
            return None
        out = unfilled(len(body) - TAG)
        return out if self._decrypt_into(oid, body, header, out) else None

    def _decrypt_into(self, oid: bytes, body, header: bytes, out) -> bool:
        """Whether BODY (ciphertext and tag) opened into OUT under OID's key (``_aead`` written
        out: most of a read's chunks come through here)."""
        try:
            AESGCM(self.object_key(oid)).decrypt_into(_NONCE, body, header, out)
        except InvalidTag:
            return False
        return True


def key_id(master: bytes) -> str:
    """A public fingerprint of the master key (hex): equal for equal keys, nothing else."""
    return subkey(master, b"key id")[:ID_LEN].hex()


class RecordSealer:
    """Sealed records and opaque names of an encrypted remote (module doc)."""

    def __init__(self, master: bytes):
        self._names = subkey(master, b"remote names")
        self._aead = AESGCM(subkey(master, b"remote records"))

    def name(self, text: str) -> str:
        return hmac.digest(self._names, text.encode(), "sha256")[:ID_LEN].hex()

    def seal(self, where: str, data: bytes) -> bytes:
        nonce = os.urandom(12)
        return RECORD_VERSION + nonce + self._aead.encrypt(nonce, data, b"artfs record " + where.encode())

    def open(self, where: str, sealed: bytes) -> bytes | None:
        """The record's plaintext, or None when it is not WHERE's record sealed with this key."""
        if sealed[:1] != RECORD_VERSION or len(sealed) < 1 + 12 + TAG:
            return None
        try:
            return self._aead.decrypt(sealed[1:13], sealed[13:], b"artfs record " + where.encode())
        except InvalidTag:
            return None
