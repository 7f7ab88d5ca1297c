"""The control channel between the CLI / API and a running mount daemon.

A daemon serving a store writes ``STORE/daemon.json`` ({"pid", "mountpoint", "socket"}) and listens
on a unix socket (``STORE/daemon.sock``, owner-only: srwx------). A request is one JSON line
``{"op": NAME, "args": {...}}``; the answer is one JSON line ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": ERROR_CLASS, "message": TEXT}``, re-raised here as the same ArtfsError.

Operations that change what the mount shows (commit, reset, alias, delete) are executed by the
daemon when one is running, so it can refresh the kernel's caches and keep files open in the
mount readable; ``put`` runs locally and then tells the daemon what changed.
"""

from __future__ import annotations

import json
import os
import socket

from .. import errors
from ..errors import ArtfsError, MountError

INFO = "daemon.json"
SOCKET = "daemon.sock"
TIMEOUT = 3600.0


def info_path(store: str) -> str:
    return os.path.join(store, INFO)


def daemon_info(store: str) -> dict | None:
    """The running daemon of this store, or None (a stale file from a killed daemon is ignored)."""
    try:
        with open(info_path(store)) as f:
            info = json.load(f)
        os.kill(info["pid"], 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if os.path.exists(info["socket"]) else None


def mountpoint_of(store: str) -> str | None:
    info = daemon_info(store)
    return info["mountpoint"] if info else None


def encode_error(e: BaseException) -> dict:
    if isinstance(e, ArtfsError):
        return {"ok": False, "error": type(e).__name__, "message": str(e)}
    return {"ok": False, "error": "ArtfsError", "message": f"daemon error: {type(e).__name__}: {e}"}


def _raise(answer: dict):
    cls = getattr(errors, answer.get("error", ""), None)
    if not (isinstance(cls, type) and issubclass(cls, ArtfsError)):
        cls = ArtfsError
    raise cls(answer.get("message", "daemon error"))


def request(store: str, op: str, **args):
    info = daemon_info(store)
    if info is None:
        raise MountError(f"no daemon is serving {store}")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT)
            sock.connect(info["socket"])
            sock.sendall(json.dumps({"op": op, "args": args}).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                part = sock.recv(65536)
                if not part:
                    break
                buf += part
    except (ConnectionRefusedError, FileNotFoundError):   # the socket outlived its daemon
        raise MountError(f"the mount daemon of {store} died: run artfs unmount "
                         f"{info['mountpoint']}") from None
    except OSError as e:
        raise MountError(f"cannot talk to the artfs daemon (pid {info['pid']}): {e}") from None
    if not buf:
        raise MountError(f"the artfs daemon (pid {info['pid']}) closed the connection")
    answer = json.loads(buf)
    if not answer.get("ok"):
        _raise(answer)
    return answer.get("result")


def call_or_local(store: str, op: str, local, **args):
    """Run ``op`` in the store's daemon when one is running, else ``local(**args)`` here."""
    if daemon_info(store) is not None:
        return request(store, op, **args)
    return local(**args)


def notify_changed(store: str, name: str) -> None:
    """Tell a running daemon that NAME changed behind its back, and wait until it has refreshed."""
    if daemon_info(store) is not None:
        request(store, "changed", name=name)
