"""Encrypted stores on the command line: ``init --encrypt``, ``--key-file``, ``artfs key``.

``prepare`` runs before a command opens its store: it notes the key file given, creates the
encrypted store for ``init --encrypt``, and unlocks the key for ``mount`` before the daemon forks
(the daemon inherits the unlocked key; it has no terminal to ask on). The remotes of an encrypted
store are encrypted (remote/keys.py): ``remote add --encrypt`` says so, and is refused for a plain
store.
"""

from __future__ import annotations

import argparse
import os

from ..catalog.db import MARKER, Database, default_store_path
from ..errors import Conflict, StoreError, UsageError
from ..remote.keys import rewrap_remotes, store_encrypted


def _path(args) -> str:
    return os.path.abspath(args.store or default_store_path())


def _make_key(path: str) -> None:
    from ..crypto import keyfile, keyring
    secret = keyring.secret_for_new(path, keyring.key_file_given(), "ARTFS_PASSPHRASE")
    keyring.remember(path, keyfile.create(path, secret))


def prepare(args) -> None:
    from ..crypto import keyring
    keyring.configure(args.key_file, may_ask=args.command != "__complete")
    if args.command == "init" and args.encrypt:
        Database.open(_path(args), encrypt=_make_key).close()
        if not store_encrypted(_path(args)):
            raise Conflict(f"{_path(args)} is a store already, not encrypted: encryption is "
                           "chosen when a store is made (init --encrypt on a new path)")
    elif args.command == "mount" and store_encrypted(_path(args)):
        keyring.master_key(_path(args))
    elif args.command == "remote" and args.action == "add" and args.encrypt and not store_encrypted(_path(args)):
        raise UsageError(f"{_path(args)} is not encrypted, so its remote cannot be: make the store with "
                         "`artfs init --encrypt`, or `artfs clone` an encrypted remote")


def cmd_change_passphrase(args) -> int:
    from ..crypto import keyfile, keyring
    path = _path(args)
    if not os.path.exists(os.path.join(path, MARKER)):
        raise StoreError(f"no artfs store at {path}")
    if not store_encrypted(path):
        raise UsageError(f"{path} is not encrypted: it has no passphrase to change")
    old = keyring.secret_for(path)
    keyring.remember(path, keyfile.rewrap(path, old, keyring.secret_for_new(path, args.new_key_file,
                                                                          "ARTFS_NEW_PASSPHRASE")))
    what = "key file" if args.new_key_file else "passphrase"
    print(f"{path}: the key is now wrapped with the new {what}")
    for name in rewrap_remotes(path):                # an old secret opens the remote's copy no more
        print(f"remote {name}: its copy of the key is now wrapped with the new {what}")
    return 0


def add_global_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key-file", metavar="PATH", help="the key file of an encrypted store (default: "
                   "$ARTFS_KEY_FILE; else the passphrase: $ARTFS_PASSPHRASE or a prompt)")


def add_init_options(c: argparse.ArgumentParser) -> None:
    c.add_argument("--encrypt", action="store_true", help="make the new store encrypted: objects "
                   "sealed (AES-256-GCM), ids keyed; its key is wrapped by a passphrase "
                   "($ARTFS_PASSPHRASE or asked twice) or by --key-file")
    c.add_argument("--key-file", metavar="PATH", default=argparse.SUPPRESS,
                   help="wrap the new store's key with this key file (32 raw bytes or 64 hex "
                   "digits, e.g. head -c 32 /dev/urandom > KEYFILE) instead of a passphrase")


def register(sub) -> None:
    c = sub.add_parser("key", help="manage the key of an encrypted store",
                       description="change-passphrase: wrap the store's key with a new passphrase "
                       "($ARTFS_NEW_PASSPHRASE, else asked twice) or --new-key-file; the current "
                       "one ($ARTFS_PASSPHRASE, a prompt, --key-file) is needed. No data is rewritten.")
    what = c.add_subparsers(dest="key_command", required=True, metavar="ACTION",
                            help="change-passphrase (artfs key ACTION --help tells more)")
    k = what.add_parser("change-passphrase", help="wrap the store's key with a new passphrase or key file",
                        description="Wrap the encrypted store's key with a new passphrase "
                        "($ARTFS_NEW_PASSPHRASE, else asked twice) or, with --new-key-file, a key "
                        "file. The current passphrase ($ARTFS_PASSPHRASE or a prompt) or key file "
                        "(--key-file, $ARTFS_KEY_FILE) is needed and stops working; no data is "
                        "rewritten.")
    k.add_argument("--new-key-file", metavar="PATH", help="use this key file from now on instead of a passphrase")
    k.set_defaults(func=cmd_change_passphrase, no_store=True)
