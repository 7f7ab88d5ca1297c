"""Encrypted remotes: the key a remote is sealed with, and opening a remote as a store sees it.

A remote is encrypted when its config (``artfs-remote.json``, remote/catalog.py) has format 2; it
then also holds the store's key record (``key``: the master key wrapped exactly as in
``STORE/ARTFS-KEY``, crypto/keyfile.py) and the key's id (``key_id``, crypto/seal.py). A remote is
made encrypted by ``remote add`` from an encrypted store (``--encrypt`` says so explicitly; the
remote of an encrypted store is never plain), and an encrypted remote binds only a store sealed
with its key (the same ``key_id``): its objects, ids and records are sealed with that key, so a
plain store, or one with another key, could neither read nor add to it. ``artfs clone`` of an
encrypted remote unwraps the key record with the user's secret (a passphrase or a key file, as
the record says; wrong: BadKey, exit 12) and makes the new store encrypted with it.
``artfs key change-passphrase`` then puts the store's rewrapped record into each bound encrypted
remote (``rewrap_remotes``), so the old secret no longer opens the remote's copy of the key.
"""

from __future__ import annotations

import os

from ..catalog.db import MARKER, Database, encrypted, read_marker
from ..errors import BadKey, UsageError
from ..store.remote import RemoteObjectStore
from ..store.s3 import S3Store
from . import bindings
from .catalog import SEALED_FORMAT, RemoteCatalog


def store_encrypted(store: str) -> bool:
    return os.path.exists(os.path.join(store, MARKER)) and encrypted(read_marker(store))


def _master(store: str) -> bytes:
    from ..crypto.keyring import master_key
    return master_key(store)


def open_remote(store: str, s3, index_dir, pack_size: int, *, init: bool = False):
    """(catalog, config, object store) of the remote S3 as the store at STORE uses it, its pack
    indexes cached in ``index_dir(config)`` (with INIT, its config is created when absent:
    encrypted when the store is). UsageError (exit 2)
    when one of them is encrypted and the other not; BadKey (exit 12) when the remote is
    sealed with another key than the store."""
    sealed = store_encrypted(store)
    master = _master(store) if sealed else None
    plain = RemoteCatalog(s3)
    if init:
        config = plain.init(_key_config(store, master) if sealed else None)
    else:
        config = plain.config()
    remote_sealed = config["format"] == SEALED_FORMAT
    if remote_sealed and not sealed:
        raise UsageError(f"remote {s3.url} is encrypted and {store} is not: `artfs clone {s3.url}` "
                         "makes an encrypted store of it")
    if sealed and not remote_sealed:
        raise UsageError(f"{store} is encrypted and remote {s3.url} is not (it would hold its data "
                         "in the clear): bind an empty prefix, which becomes an encrypted remote")
    if not sealed:
        return plain, config, RemoteObjectStore(s3, index_dir(config), pack_size)
    from ..crypto.seal import RecordSealer, key_id           # cryptography: encrypted stores only
    from ..store.sealed import SealedRemoteStore
    if config.get("key_id") != key_id(master):
        raise BadKey(f"remote {s3.url} is encrypted with another key than {store}: clone it into a "
                     "new store instead")
    return RemoteCatalog(s3, RecordSealer(master)), config, SealedRemoteStore(master, s3, index_dir(config), pack_size)


def _key_config(store: str, master: bytes) -> dict:
    from ..crypto import keyfile
    from ..crypto.seal import key_id
    return {"key": keyfile.read_record(store), "key_id": key_id(master)}


def prepare_clone(path: str, binding: dict) -> None:
    """Before ``artfs clone`` makes the store at PATH: when the remote is encrypted, unwrap its
    key with the user's secret (BadKey, exit 12, nothing made, when wrong) and make PATH an
    encrypted store with that key."""
    s3 = S3Store.of(binding)
    config = RemoteCatalog(s3).config()
    if config["format"] != SEALED_FORMAT:
        return
    from ..crypto import keyfile, keyring
    from ..crypto.seal import key_id
    record = keyfile.valid(config.get("key"), f"remote {s3.url}")
    master = keyfile.unwrap_record(record, keyring.secret_for_record(record, f"remote {s3.url}"), f"remote {s3.url}")
    if key_id(master) != config.get("key_id"):
        raise BadKey(f"remote {s3.url}: its key record does not match its key id (tampered with?)")

    def make_key(store: str) -> None:
        keyfile.adopt(store, record)
        keyring.remember(store, master)
    Database.open(path, encrypt=make_key).close()
    if not store_encrypted(path):
        raise UsageError(f"{path} is a store already, not encrypted: clone into a new directory")


def rewrap_remotes(store: str) -> list[str]:
    """After STORE's key was rewrapped (``artfs key change-passphrase``): its new key record into
    the config of each bound encrypted remote of its key. Returns their names."""
    key = _key_config(store, _master(store))
    return [name for name, binding in sorted(bindings.load(store).items())
            if RemoteCatalog(S3Store.of(binding)).set_key(**key)]
