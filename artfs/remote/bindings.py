"""Which remotes a local store is bound to: ``STORE/remotes.json`` (name -> url, endpoint, region,
allow_http). Credentials are never stored: they come from the AWS environment at each use."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re

from ..errors import Exists, InvalidInput, NotFound

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _path(store: str) -> str:
    return os.path.join(store, "remotes.json")


@contextlib.contextmanager
def _locked(store: str):
    with open(os.path.join(store, "remotes.lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def load(store: str) -> dict[str, dict]:
    try:
        with open(_path(store)) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def _save(store: str, remotes: dict) -> None:
    tmp = _path(store) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(remotes, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, _path(store))


def make(url: str, endpoint: str | None = None, region: str | None = None, allow_http: bool = False,
         ca_bundle: str | None = None) -> dict:
    """A binding: where the remote is and how to reach it (the CA bundle kept by absolute path)."""
    return {"url": url, "endpoint": endpoint, "region": region, "allow_http": allow_http,
            **({"ca_bundle": os.path.abspath(ca_bundle)} if ca_bundle else {})}


def get(store: str, name: str) -> dict:
    remotes = load(store)
    if name not in remotes:
        raise NotFound(f"no remote named {name!r} (artfs remote ls lists them; artfs remote add binds one)")
    return remotes[name]


def default(store: str) -> str | None:
    """The remote commits, puts and deletes go to: ``origin`` when bound, else the only bound
    remote, else None (they stay local)."""
    remotes = load(store)
    if "origin" in remotes:
        return "origin"
    return next(iter(remotes)) if len(remotes) == 1 else None


def add(store: str, name: str, binding: dict) -> None:
    if not _NAME.fullmatch(name):
        raise InvalidInput(f"bad remote name {name!r}: 1-64 of A-Z a-z 0-9 . _ -")
    with _locked(store):
        remotes = load(store)
        if name in remotes:
            raise Exists(f"remote {name!r} exists ({remotes[name]['url']}): artfs remote rm it first")
        remotes[name] = binding
        _save(store, remotes)


def remove(store: str, name: str) -> dict:
    with _locked(store):
        remotes = load(store)
        if name not in remotes:
            raise NotFound(f"no remote named {name!r}")
        binding = remotes.pop(name)
        _save(store, remotes)
        return binding
