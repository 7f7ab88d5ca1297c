"""The control channel between the CLI / API and a running mount daemon.

A daemon serving a store writes ``STORE/daemon.json`` ({"pid", "mountpoint", "socket"}) and listens
on a unix socket (``STORE/daemon.sock``, owner-only: srwx------). A request is one JSON line
``{"op": NAME, "args": {...}}``; the answer is one JSON line ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": ERROR_CLASS, "message": TEXT}``, re-raised here as the same ArtfsError.

Who may ask: without ``--allow-other`` the socket is owner-only, as the whole store is. With it,
every local user may connect (srw-rw-rw-, the store directory 0711 while mounted: its contents
stay 0700/0600), and ``authorize`` decides each request by the caller's uid and groups as the
kernel reports them for the connection (SO_PEERCRED, SO_PEERGROUPS): write on the artifact to
commit, reset or set an alias; its owner to rm it, chmod/chown it (catalog/access.py) or touch a
protected alias; read for status and a version's record; the store-wide operations (gc,
compact, unmount, changed) only for root and the store's owner. The daemon then acts *as* the
caller (catalog/access.py acting_as): the audit log and the version's author and producer name
the caller.

Operations that change what the mount shows (commit, reset, alias, delete) are executed by the
daemon when one is running, so it can refresh the kernel's caches and keep files open in the
mount readable; ``put`` runs locally and then tells the daemon what changed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import struct

from .. import errors
from ..catalog.access import R, W, Caller, require, require_owner
from ..errors import ArtfsError, MountError, NotPermitted

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
        try:
            os.kill(info["pid"], 0)
        except PermissionError:   # another user's daemon (mounted with --allow-other): it runs
            pass
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


# the daemon's side: who is asking, and may they -------------------------------------------------
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)   # Linux >= 4.13
STORE_WIDE = ("gc", "compact", "unmount", "changed")
WRITE = ("commit", "reset", "alias", "unalias")


def peer(sock, store_uid: int) -> Caller:
    """The process at the other end of a unix socket: uid, gid and groups the kernel recorded
    when it connected (its groups from /proc where SO_PEERGROUPS is missing); an admin when it
    is STORE_UID, the store's owner."""
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                        struct.calcsize("3i")))
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * 65536)
        caller = Caller(uid, gid, frozenset(struct.unpack(f"{len(raw) // 4}I", raw)))
    except OSError:
        caller = Caller.of_pid(pid, uid, gid)
    return dataclasses.replace(caller, admin=uid == store_uid)


def authorize(repo, caller: Caller, op: str, args: dict) -> dict:
    """NotPermitted unless CALLER may run OP with ARGS on this store (module doc); returns the
    arguments to run it with (a commit's producer is the caller, whatever the request says)."""
    if caller.root:
        return args
    if op in STORE_WIDE:
        raise NotPermitted(f"{caller.user} (uid {caller.uid}) may not {op} this store: only root "
                           "and the store's owner may")
    name = args.get("name")
    if not isinstance(name, str):
        raise NotPermitted(f"{op} needs an artifact name")
    access = repo.access(name)
    if op in ("status", "version"):
        require(access, caller, R, name, "read")
    elif op in WRITE:
        require(access, caller, W, name, op)
        alias = args.get("alias")
        if op in ("alias", "unalias") and (args.get("force") or args.get("protect") is not None
                                           or alias in repo.artifact(name).get("protected", ())):
            require_owner(access, caller, name, f"change the protected alias {alias} of")
    elif op in ("delete_version", "delete_artifact"):
        require_owner(access, caller, name, "delete")
    elif op != "access":   # chmod/chown: Repo.set_access checks, as the caller
        raise NotPermitted(f"{caller.user} (uid {caller.uid}) may not {op}")
    if op == "commit":
        args = {**args, "producer": {**(args.get("producer") or {}), "user": caller.user,
                                     "uid": caller.uid}}
    return args
