"""Where a store's secret comes from, and the master keys this process has unlocked.

A key file (``--key-file`` or ``ARTFS_KEY_FILE``) for stores wrapped with one; a passphrase from
``ARTFS_PASSPHRASE``, else a prompt when stdin is a terminal and the command allows one (the
CLI's commands do; the Python API and shell completion never ask). A master key, once unwrapped, is kept
in this process's memory by store path, so the mount daemon (forked by ``artfs mount``) has the
key the starting command unlocked, and a prompt is shown once per command.
"""

from __future__ import annotations

import getpass
import os
import sys

from ..errors import BadKey, InvalidInput
from . import keyfile
from .keyfile import Secret

_key_file: str | None = None
_may_ask = False
_unlocked: dict[str, bytes] = {}


def configure(key_file: str | None, may_ask: bool) -> None:
    """The key file the command was given (--key-file; else ARTFS_KEY_FILE is used), and whether
    it may ask for a passphrase on the terminal."""
    global _key_file, _may_ask
    _key_file, _may_ask = key_file, may_ask


def _passphrase(env: str, prompt: str, confirm: bool) -> Secret:
    text = os.environ.get(env)
    if text is None:
        if not (_may_ask and sys.stdin.isatty()):
            raise BadKey(f"the {prompt} is needed: set {env}")
        text = getpass.getpass(f"{prompt}: ")
        if confirm and getpass.getpass(f"{prompt} (again): ") != text:
            raise InvalidInput("the passphrases differ")
    return Secret.passphrase(text)


def secret_for_new(store: str, key_file: str | None, env: str) -> Secret:
    """The secret a new wrapping of STORE's master key uses: KEY_FILE when given, else a
    passphrase from the environment variable ENV, else asked twice on the terminal."""
    if key_file:
        return Secret.key_file(key_file)
    return _passphrase(env, f"new passphrase for {store}", confirm=True)


def key_file_given() -> str | None:
    """The key file of this command: --key-file, else ARTFS_KEY_FILE."""
    return _key_file or os.environ.get("ARTFS_KEY_FILE") or None


def remember(store: str, master: bytes) -> None:
    _unlocked[os.path.abspath(store)] = master


def secret_for(store: str) -> Secret:
    """The secret that unlocks STORE as its ARTFS-KEY says it is wrapped."""
    return secret_for_record(keyfile.read_record(store), store)


def secret_for_record(record: dict, where: str) -> Secret:
    """The secret that unlocks the key RECORD (of WHERE: a store or a remote) as it is wrapped."""
    if record["wrap"] == keyfile.KEY_FILE:
        path = key_file_given()
        if not path:
            raise BadKey(f"{where} is encrypted with a key file: give --key-file PATH or ARTFS_KEY_FILE")
        return Secret.key_file(path)
    return _passphrase("ARTFS_PASSPHRASE", f"passphrase for {where}", confirm=False)


def master_key(store: str) -> bytes:
    """STORE's master key: unlocked before in this process, else unwrapped now."""
    store = os.path.abspath(store)
    master = _unlocked.get(store)
    if master is None:
        master = keyfile.unwrap(store, secret_for(store))
        remember(store, master)
    return master
