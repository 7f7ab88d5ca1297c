"""Artifacts, versions, aliases and the audit log: small JSON records in named databases.

Keys: ``artifacts`` name; ``versions`` name \\0 u32-big-endian number; ``aliases`` name \\0 alias
(``latest`` is stored like any alias but only artfs moves it); ``events`` u64 sequence; ``uses``
(catalog/uses.py) name \\0 u32 number \\0 u64 sequence.

An artifact record holds its type, creation time and next version number, who may use it
(``owner``, ``group``, ``mode``: catalog/access.py), and optionally its retention policy
(``retain``: keep_last, max_age in seconds) and its protected aliases (``protected``). A version
record holds its root, type, message, metadata, author, counts, what made it (``producer``: user,
host, argv, cwd, git commit, run id) and when it expires (``expires``, a time, or absent).
"""

from __future__ import annotations

import getpass
import json
import os
import struct
import time
from dataclasses import dataclass, field

from ..errors import InvalidInput, NotFound
from .access import Access, acting, delegated
from ..names import LATEST, version_number
from .db import bump, prefix_items
from .uses import Uses


@dataclass
class VersionInfo:
    name: str
    number: int
    root: bytes
    type: str
    created: float
    message: str = ""
    metadata: dict = field(default_factory=dict)
    author: str = ""
    uid: int = -1
    files: int = 0
    bytes: int = 0
    aliases: list[str] = field(default_factory=list)
    producer: dict = field(default_factory=dict)
    expires: float | None = None

    @property
    def label(self) -> str:
        return f"v{self.number}"

    @property
    def digest(self) -> str:
        return self.root.hex()

    def record(self) -> bytes:
        return json.dumps({
            "root": self.root.hex(), "type": self.type, "created": self.created,
            "message": self.message, "metadata": self.metadata, "author": self.author,
            "uid": self.uid, "files": self.files, "bytes": self.bytes, "producer": self.producer,
            **({"expires": self.expires} if self.expires is not None else {}),
        }).encode()

    @classmethod
    def from_record(cls, name: str, number: int, raw) -> "VersionInfo":
        r = json.loads(bytes(raw))
        return cls(name, number, bytes.fromhex(r["root"]), r["type"], r["created"], r["message"],
                   r["metadata"], r["author"], r["uid"], r["files"], r["bytes"],
                   producer=r.get("producer") or {}, expires=r.get("expires"))


def _vkey(name: str, number: int) -> bytes:
    return name.encode() + b"\0" + struct.pack(">I", number)


def _akey(name: str, alias: str) -> bytes:
    return name.encode() + b"\0" + alias.encode()


def whoami() -> tuple[str, int]:
    """The user and uid a request is for: this process's, or (in the mount daemon) the caller's."""
    if delegated():
        caller = acting()
        return caller.user, caller.uid
    uid = os.getuid()
    try:
        return getpass.getuser(), uid
    except (KeyError, OSError):
        return str(uid), uid


def check_type(name: str, rec: dict | None, type_: str | None) -> None:
    """InvalidInput if TYPE contradicts the type of an artifact that has had versions."""
    if rec is not None and type_ and type_ != rec["type"] and rec["next"] > 0:
        raise InvalidInput(f"artifact {name!r} has type {rec['type']!r}, not {type_!r}")


class Catalog:
    def __init__(self, dbs, default_owner: tuple[int, int] | None = None):
        self.dbs = dbs
        self.uses = Uses(dbs)
        # owner and group of artifacts recorded before access control: the store directory's
        self.default_owner = default_owner or (os.getuid(), os.getgid())

    # artifacts ---------------------------------------------------------------------------------
    def artifact_names(self, txn) -> list[str]:
        with txn.cursor(db=self.dbs["artifacts"]) as cur:
            return [bytes(k).decode() for k in cur.iternext(keys=True, values=False)]

    def artifact(self, txn, name: str) -> dict | None:
        raw = txn.get(name.encode(), db=self.dbs["artifacts"])
        return json.loads(bytes(raw)) if raw is not None else None

    def require_artifact(self, txn, name: str) -> dict:
        rec = self.artifact(txn, name)
        if rec is None:
            raise NotFound(f"no artifact named {name!r}")
        return rec

    def ensure_artifact(self, txn, name: str, type_: str | None) -> dict:
        """NAME's record, created with TYPE (default dataset) if missing. An artifact that never
        had a version (``mkdir MOUNT/NAME``) takes TYPE; one that had versions keeps its own."""
        rec = self.artifact(txn, name)
        if rec is None:
            access = Access.for_creator(acting())
            rec = {"type": type_ or "dataset", "created": time.time(), "next": 0, **access.fields()}
            self._put_artifact(txn, name, rec)
            self.event(txn, "artifact.create", name, type=rec["type"], owner=access.uid,
                       group=access.gid, mode=f"{access.mode:04o}")
        elif type_ and type_ != rec["type"]:
            check_type(name, rec, type_)
            rec["type"] = type_
            self._put_artifact(txn, name, rec)
            self.event(txn, "artifact.type", name, type=type_)
        return rec

    def _put_artifact(self, txn, name: str, rec: dict) -> None:
        txn.put(name.encode(), json.dumps(rec).encode(), db=self.dbs["artifacts"])

    def drop_artifact(self, txn, name: str) -> None:
        txn.delete(name.encode(), db=self.dbs["artifacts"])
        self.uses.drop(txn, name)

    def set_artifact_field(self, txn, name: str, key: str, value) -> dict:
        """Set (or, with None, remove) one field of an artifact record; returns the record."""
        rec = self.require_artifact(txn, name)
        if value is None:
            rec.pop(key, None)
        else:
            rec[key] = value
        self._put_artifact(txn, name, rec)
        return rec

    def access(self, txn, name: str) -> Access:
        return Access.of(self.require_artifact(txn, name), self.default_owner)

    def set_access(self, txn, name: str, new: Access) -> None:
        """Record NAME's new owner, group and mode, audited as artifact.chmod / artifact.chown."""
        old = self.access(txn, name)
        rec = self.require_artifact(txn, name)
        rec.update(new.fields())
        self._put_artifact(txn, name, rec)
        if new.mode != old.mode:
            self.event(txn, "artifact.chmod", name, mode=f"{new.mode:04o}", previous=f"{old.mode:04o}")
        if (new.uid, new.gid) != (old.uid, old.gid):
            self.event(txn, "artifact.chown", name, owner=new.uid, group=new.gid,
                       previous=f"{old.uid}:{old.gid}")

    # versions ----------------------------------------------------------------------------------
    def versions(self, txn, name: str) -> list[VersionInfo]:
        aliases = self.aliases(txn, name)
        by_number: dict[int, list[str]] = {}
        for alias, number in aliases.items():
            by_number.setdefault(number, []).append(alias)
        out = []
        for suffix, raw in prefix_items(txn, self.dbs["versions"], name.encode() + b"\0"):
            number = struct.unpack(">I", suffix)[0]
            v = VersionInfo.from_record(name, number, raw)
            v.aliases = sorted(by_number.get(number, []), key=lambda a: (a != LATEST, a))
            out.append(v)
        return out

    def version(self, txn, name: str, number: int) -> VersionInfo | None:
        raw = txn.get(_vkey(name, number), db=self.dbs["versions"])
        if raw is None:
            return None
        v = VersionInfo.from_record(name, number, raw)
        v.aliases = sorted((a for a, n in self.aliases(txn, name).items() if n == number),
                           key=lambda a: (a != LATEST, a))
        return v

    def resolve(self, txn, name: str, ref: str) -> VersionInfo:
        self.require_artifact(txn, name)
        number = version_number(ref)
        if number is None:
            number = self.aliases(txn, name).get(ref)
            if number is None:
                raise NotFound(f"artifact {name!r} has no version or alias {ref!r}")
        v = self.version(txn, name, number)
        if v is None:
            raise NotFound(f"artifact {name!r} has no version v{number}")
        return v

    def add_version(self, txn, v: VersionInfo) -> VersionInfo:
        """Record the next version of ``v.name`` (whose root reference the caller hands over)."""
        rec = self.require_artifact(txn, v.name)
        v.number = rec["next"]
        rec["next"] += 1
        self._put_artifact(txn, v.name, rec)
        txn.put(_vkey(v.name, v.number), v.record(), db=self.dbs["versions"])
        self.set_alias(txn, v.name, LATEST, v.number)
        self.event(txn, "version.create", v.name, version=v.label, digest=v.digest,
                   files=v.files, bytes=v.bytes, message=v.message)
        return v

    def update_version(self, txn, v: VersionInfo) -> None:
        """Rewrite the record of an existing version (metadata, message, expiry)."""
        txn.put(_vkey(v.name, v.number), v.record(), db=self.dbs["versions"])

    def add_version_at(self, txn, v: VersionInfo, action: str = "version.pull") -> VersionInfo:
        """Record ``v`` under its own number (a version another store numbered: pulled from a
        remote); numbers below it stay free for the versions it has, `latest` moves only forward."""
        rec = self.require_artifact(txn, v.name)
        if txn.get(_vkey(v.name, v.number), db=self.dbs["versions"]) is not None:
            raise InvalidInput(f"{v.name}:{v.label} exists already")
        rec["next"] = max(rec["next"], v.number + 1)
        self._put_artifact(txn, v.name, rec)
        txn.put(_vkey(v.name, v.number), v.record(), db=self.dbs["versions"])
        if self.aliases(txn, v.name).get(LATEST, -1) < v.number:
            self.set_alias(txn, v.name, LATEST, v.number)
        self.event(txn, action, v.name, version=v.label, digest=v.digest, files=v.files, bytes=v.bytes,
                   message=v.message)
        return v

    def drop_version(self, txn, name: str, number: int) -> None:
        txn.delete(_vkey(name, number), db=self.dbs["versions"])
        self.uses.drop(txn, name, number)

    # aliases -----------------------------------------------------------------------------------
    def aliases(self, txn, name: str) -> dict[str, int]:
        return {k.decode(): struct.unpack(">I", bytes(v))[0]
                for k, v in prefix_items(txn, self.dbs["aliases"], name.encode() + b"\0")}

    def set_alias(self, txn, name: str, alias: str, number: int) -> None:
        txn.put(_akey(name, alias), struct.pack(">I", number), db=self.dbs["aliases"])

    def drop_alias(self, txn, name: str, alias: str) -> bool:
        """Remove an alias (and its protection)."""
        if alias in self.protected(txn, name):
            self.protect(txn, name, alias, False)
        return txn.delete(_akey(name, alias), db=self.dbs["aliases"])

    def protected(self, txn, name: str) -> list[str]:
        """Aliases of NAME that need force to be moved or removed."""
        rec = self.artifact(txn, name)
        return list(rec.get("protected", ())) if rec is not None else []

    def protect(self, txn, name: str, alias: str, on: bool) -> None:
        protected = set(self.protected(txn, name))
        protected = protected | {alias} if on else protected - {alias}
        self.set_artifact_field(txn, name, "protected", sorted(protected) or None)

    # audit log ---------------------------------------------------------------------------------
    def event(self, txn, action: str, artifact: str, **details) -> None:
        seq = bump(txn, self.dbs["meta"], b"event_seq", 1)
        user, uid = whoami()
        rec = {"seq": seq, "time": time.time(), "user": user, "uid": uid, "action": action,
               "artifact": artifact, **details}
        txn.put(seq.to_bytes(8, "big"), json.dumps(rec).encode(), db=self.dbs["events"])

    def events(self, txn, name: str | None = None) -> list[dict]:
        out = []
        with txn.cursor(db=self.dbs["events"]) as cur:
            for _, raw in cur:
                rec = json.loads(bytes(raw))
                if name is None or rec["artifact"] == name:
                    out.append(rec)
        return out
