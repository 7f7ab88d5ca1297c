"""The store's master key, wrapped, in ``STORE/ARTFS-KEY``.

The master key is 256 random bits made once, at ``artfs init --encrypt``; everything sealed in the
store depends on it (seal.py). ARTFS-KEY (JSON, mode 0600) holds it wrapped (AES-256-GCM) by a
key-encryption key derived from the user's secret:

- a passphrase: Argon2id (RFC 9106's second recommended parameters: 64 MiB, 3 passes, 4 lanes)
  with a random 16-byte salt, the parameters recorded in the file;
- a key file (32 raw bytes, or 64 hex digits): HKDF-SHA256 (it is already a full-entropy key).

So changing the passphrase rewraps 32 bytes and touches no data; a wrong secret fails the wrap's
tag: BadKey, never garbage. Losing ARTFS-KEY loses the data, exactly as losing the secret does.
"""

from __future__ import annotations

import json
import os
import secrets
import string

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import BadKey, InvalidInput
from ..store.lmdb_env import replace_json

NAME = "ARTFS-KEY"
PASSPHRASE, KEY_FILE = "passphrase", "key-file"
ARGON2 = {"memory_kib": 65536, "iterations": 3, "lanes": 4}
_AD = b"artfs master key v1"


class Secret:
    """What unlocks a store: a passphrase or the bytes of a key file."""

    def __init__(self, kind: str, value: bytes, where: str = ""):
        self.kind, self.value, self.where = kind, value, where

    @classmethod
    def passphrase(cls, text: str) -> "Secret":
        if not text:
            raise InvalidInput("the passphrase is empty")
        return cls(PASSPHRASE, text.encode())

    @classmethod
    def key_file(cls, path: str) -> "Secret":
        try:
            with open(path, "rb") as f:
                raw = f.read(129)
        except OSError as e:
            raise InvalidInput(f"cannot read key file {path}: {e.strerror}") from None
        text = raw.strip()
        if len(text) == 64 and all(chr(c) in string.hexdigits for c in text):
            raw = bytes.fromhex(text.decode())
        if len(raw) != 32:
            raise InvalidInput(f"key file {path} holds neither 32 raw bytes nor 64 hex digits")
        return cls(KEY_FILE, raw, path)


def _kek(secret: Secret, record: dict) -> bytes:
    salt = bytes.fromhex(record["salt"])
    if secret.kind == PASSPHRASE:
        p = record["kdf"]
        return Argon2id(salt=salt, length=32, iterations=p["iterations"], lanes=p["lanes"],
                        memory_cost=p["memory_kib"]).derive(secret.value)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"artfs key file v1").derive(secret.value)


def _record(master: bytes, secret: Secret) -> dict:
    record = {"format": 1, "wrap": secret.kind, "salt": secrets.token_hex(16), "aead": "AES-256-GCM"}
    if secret.kind == PASSPHRASE:
        record["kdf"] = {"name": "argon2id", **ARGON2}
    nonce = secrets.token_bytes(12)   # one wrap per fresh salt, so per key-encryption key
    record["nonce"] = nonce.hex()
    record["wrapped"] = AESGCM(_kek(secret, record)).encrypt(nonce, master, _AD).hex()
    return record


def _write(store: str, record: dict) -> None:
    replace_json(store, NAME, record, indent=1)


def valid(record, where: str) -> dict:
    """RECORD when it is a key record this artfs reads, else BadKey naming WHERE it came from."""
    try:
        if record["format"] != 1 or record["wrap"] not in (PASSPHRASE, KEY_FILE):
            raise ValueError("unknown format")
        return record
    except (ValueError, KeyError, TypeError) as e:
        raise BadKey(f"{where} is encrypted but its key record is unreadable ({e}): "
                     "restore it from a backup") from None


def read_record(store: str) -> dict:
    try:
        with open(os.path.join(store, NAME)) as f:
            return valid(json.load(f), f"{store} ({NAME})")
    except (OSError, ValueError) as e:
        raise BadKey(f"{store} is encrypted but its key record {NAME} is unreadable ({e}): "
                     "restore it from a backup") from None


def create(store: str, secret: Secret) -> bytes:
    """Make a new master key for STORE, wrap it with SECRET into ARTFS-KEY; returns it."""
    master = secrets.token_bytes(32)
    _write(store, _record(master, secret))
    return master


def adopt(store: str, record: dict) -> None:
    """Make RECORD (another store's or a remote's key record) STORE's ARTFS-KEY: the same master
    key, wrapped by the same secret (artfs clone of an encrypted remote)."""
    _write(store, record)


def unwrap(store: str, secret: Secret) -> bytes:
    """The master key of STORE; BadKey when SECRET is not the one it is wrapped with."""
    return unwrap_record(read_record(store), secret, store)


def unwrap_record(record: dict, secret: Secret, where: str) -> bytes:
    """The master key RECORD wraps (WHERE names its store or remote in errors)."""
    if record["wrap"] != secret.kind:
        need = "a passphrase (ARTFS_PASSPHRASE)" if record["wrap"] == PASSPHRASE else "its key file (--key-file or ARTFS_KEY_FILE)"
        raise BadKey(f"{where} is unlocked with {need}, not a {secret.kind}")
    try:
        return AESGCM(_kek(secret, record)).decrypt(bytes.fromhex(record["nonce"]),
                                                   bytes.fromhex(record["wrapped"]), _AD)
    except InvalidTag:
        raise BadKey(f"wrong passphrase or key for {where}") from None


def rewrap(store: str, old: Secret, new: Secret) -> bytes:
    """Wrap STORE's master key with NEW instead of OLD (atomically: ARTFS-KEY is replaced);
    returns the master key."""
    master = unwrap(store, old)
    _write(store, _record(master, new))
    return master
