"""The remote's catalog: its config, version records and aliases, as small JSON objects.

    artfs-remote.json                  {"format": 1, "id": uuid, "created": t}   create-only
    versions/NAME/NNNNNNNNNN.json      one version (VersionInfo.record())       create-only
                                       then a tombstone {"deleted": t, "root": hex, "created": t}
    aliases/NAME/ALIAS.json            {"version": N}                            compare-and-swap

A version record is written once and only ever replaced by its tombstone, so a name ``NAME:vN``
means the same content on every host and a number is never reused; aliases move by
compare-and-swap against the ETag read, ``latest`` only forward.

An encrypted remote (config format 2, with the wrapped key and the key's id: remote/keys.py)
has the same objects with NAME and ALIAS in keys replaced by opaque keyed names
(crypto/seal.py ``RecordSealer.name``) and every record sealed, its key bound to it
(``RecordSealer.seal``); the records then carry the names themselves (``name``, ``alias``).
The keys stay deterministic, so create-only numbering and compare-and-swap work unchanged.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from ..catalog.versions import VersionInfo
from ..errors import BadKey, Conflict, CorruptData, Exists, NotFound, StoreError
from ..names import LATEST, version_number
from ..store.s3 import S3Store

FORMAT = 1
SEALED_FORMAT = 2      # FORMAT with opaque names and sealed records and objects
CONFIG = "artfs-remote.json"
CAS_ATTEMPTS = 50
ALLOCATE_ATTEMPTS = 1000


def _number(filename: str) -> int | None:
    """N of a version record's file name ``NNNNNNNNNN.json``; None for any other name."""
    return int(filename[:-5]) if filename.endswith(".json") and filename[:-5].isdigit() else None


def matching(versions: list[VersionInfo], ref: str) -> list[VersionInfo]:
    """The version among VERSIONS that REF (vN or an alias) names, as a list of one or none."""
    number = version_number(ref)
    if number is None:
        number = next((v.number for v in versions if ref in v.aliases), None)
    return [v for v in versions if v.number == number]


class RemoteCatalog:
    def __init__(self, s3: S3Store, sealer=None):
        self.s3, self.sealer = s3, sealer
        self._names: dict[str, str] = {}       # opaque name -> artifact name (encrypted remote)

    # config ----------------------------------------------------------------------------------
    def init(self, key: dict | None = None) -> dict:
        """Create the remote's config if absent (create-only: one creator wins), else check it.
        KEY (remote/keys.py) makes a new remote an encrypted one."""
        try:
            return self.config(self.s3.get(CONFIG))
        except NotFound:
            pass
        config = {"format": SEALED_FORMAT if key else FORMAT, "id": str(uuid.uuid4()),
                  "created": time.time(), **(key or {})}
        try:
            self.s3.put(CONFIG, json.dumps(config).encode(), create=True)
            return config
        except Exists:           # another creator won: theirs
            return self.config()

    def config(self, raw: bytes | None = None) -> dict:
        """The remote's config, checked (read, or RAW as read)."""
        if raw is None:
            try:
                raw = self.s3.get(CONFIG)
            except NotFound:
                raise StoreError(f"{self.s3.url} is not an artfs remote (no {CONFIG}): "
                                 "`artfs remote add` creates one") from None
        try:
            config = json.loads(raw)
            fmt, rid = config["format"], config["id"]
        except (ValueError, KeyError, TypeError):
            raise StoreError(f"{self.s3.url}/{CONFIG} is not an artfs remote config") from None
        if fmt not in (FORMAT, SEALED_FORMAT):
            raise StoreError(f"{self.s3.url} has remote format {fmt}; this artfs reads formats "
                             f"{FORMAT} and {SEALED_FORMAT}")
        if not isinstance(rid, str) or not rid.replace("-", "").isalnum():
            raise StoreError(f"{self.s3.url}/{CONFIG} has a malformed id")
        return config

    def set_key(self, key: dict, key_id: str) -> bool:
        """Replace the wrapped key in an encrypted remote's config by KEY, the same key (KEY_ID)
        wrapped by a new secret, by compare-and-swap (Conflict when it changed meanwhile).
        False, nothing changed, when the remote is not encrypted."""
        raw, etag = self.s3.get_tagged(CONFIG)
        config = self.config(raw)
        if config["format"] != SEALED_FORMAT:
            return False
        if config.get("key_id") != key_id:
            raise BadKey(f"remote {self.s3.url} is encrypted with another key: its key record is not changed")
        self.s3.put(CONFIG, json.dumps({**config, "key": key}).encode(), if_match=etag)
        return True

    # keys and records ------------------------------------------------------------------------
    def _dir(self, name: str) -> str:
        return name if self.sealer is None else self.sealer.name(name)

    def _version_key(self, name: str, number: int) -> str:
        return f"versions/{self._dir(name)}/{number:010d}.json"

    def _alias_key(self, name: str, alias: str) -> str:
        return f"aliases/{self._dir(name)}/{alias if self.sealer is None else self.sealer.name(alias)}.json"

    def _pack(self, key: str, record: dict, **names: str) -> bytes:
        """RECORD as stored at KEY; on an encrypted remote sealed, with NAMES (the names its opaque
        key hides: ``name``, ``alias``) in it."""
        if self.sealer is None:
            return json.dumps(record).encode()
        return self.sealer.seal(key, json.dumps({**names, **record}).encode())

    def read(self, key: str, raw: bytes, what: str) -> dict:
        """The record RAW read at KEY (opened on an encrypted remote); StoreError when malformed,
        CorruptData when it fails to open."""
        if self.sealer is not None:
            raw = self.sealer.open(key, raw)
            if raw is None:
                raise CorruptData(f"remote {what} {self.s3.url}/{key} fails its authentication check: "
                                  "damaged, tampered with or sealed with another key")
        try:
            record = json.loads(raw)
            if not isinstance(record, dict):
                raise ValueError
            return record
        except ValueError:
            raise StoreError(f"remote {what} {self.s3.url}/{key} is malformed") from None

    def _get(self, key: str, what: str) -> dict:
        return self.read(key, self.s3.get(key), what)

    # versions --------------------------------------------------------------------------------
    def artifacts(self) -> list[str]:
        return sorted(self.all_numbers())

    def all_numbers(self) -> dict[str, set[int]]:
        """Every artifact's taken version numbers, from one LIST (on an encrypted remote, plus one
        GET per artifact not seen before by this catalog: its name is inside its records)."""
        listed: dict[str, tuple[str, set[int]]] = {}
        for key, _ in self.s3.list("versions/"):
            parts = key.split("/")
            if len(parts) == 3 and (number := _number(parts[2])) is not None:
                listed.setdefault(parts[1], (key, set()))[1].add(number)
        if self.sealer is None:
            return {d: numbers for d, (_, numbers) in listed.items()}
        new = [key for d, (key, _) in listed.items() if d not in self._names]
        with ThreadPoolExecutor(8) as pool:       # opaque names: the name is in its records
            for key, record in zip(new, pool.map(lambda key: self._get(key, "version record"), new)):
                self._names[key.split("/")[1]] = str(record["name"])
        return {self._names[d]: numbers for d, (_, numbers) in listed.items()}

    def numbers(self, name: str) -> list[int]:
        """Every number NAME's versions took on the remote, deleted ones too (one LIST)."""
        return sorted(n for key, _ in self.s3.list(f"versions/{self._dir(name)}/")
                      if (n := _number(key.rsplit("/", 1)[1])) is not None)

    def _records(self, name: str) -> list[tuple[int, dict]]:
        numbers = self.numbers(name)
        with ThreadPoolExecutor(8) as pool:
            return list(zip(numbers, pool.map(lambda n: self._get(self._version_key(name, n), "version record"),
                                              numbers)))

    def _version(self, name: str, number: int, rec: dict) -> VersionInfo:
        """NAME:vN from its record REC (a tombstone: its root and created time only)."""
        try:
            if "deleted" in rec:
                return VersionInfo(name, number, bytes.fromhex(rec["root"]), "", rec["created"])
            return VersionInfo.from_record(name, number, json.dumps(rec).encode())
        except (ValueError, KeyError, TypeError):
            raise StoreError(f"remote version record {self.s3.url}/{self._version_key(name, number)} "
                             "is malformed") from None

    def versions(self, name: str) -> list[VersionInfo]:
        """Every live version of NAME, by number, with its aliases."""
        return self.versions_and_tombstones(name)[0]

    def versions_and_tombstones(self, name: str) -> tuple[list[VersionInfo], list[VersionInfo]]:
        """NAME's live versions (with their aliases) and its tombstones, by number, from one listing."""
        records = self._records(name)
        aliases = self.aliases(name) if any("deleted" not in rec for _, rec in records) else {}
        live, dead = [], []
        for number, rec in records:
            v = self._version(name, number, rec)
            if "deleted" in rec:
                dead.append(v)
                continue
            v.aliases = sorted((a for a, n in aliases.items() if n == number), key=lambda a: (a != LATEST, a))
            live.append(v)
        return live, dead

    def create_version(self, v: VersionInfo) -> None:
        """Write NAME:vN create-only. When another host created it first, fine if it has the same
        root (the same content), else Conflict."""
        key = self._version_key(v.name, v.number)
        try:
            self.s3.put(key, self._pack(key, json.loads(v.record()), name=v.name), create=True)
        except Exists:
            theirs = self._get(key, "version record")
            if theirs.get("root") != v.root.hex() or "deleted" in theirs:
                raise Conflict(f"{v.name}:{v.label} was just created on the remote by another host with "
                               f"other content (digest {str(theirs.get('root'))[:12]}); nothing of "
                               f"{v.name}:{v.label} was recorded there") from None

    def allocate(self, v: VersionInfo, at_least: int = 0) -> int:
        """Record V under the next free number (at least AT_LEAST) by create-only writes: of hosts
        racing for one number exactly one wins, the others take the next. Returns the number."""
        numbers = self.numbers(v.name)
        number = max(numbers[-1] + 1 if numbers else 0, at_least)
        record = json.loads(v.record())
        for _ in range(ALLOCATE_ATTEMPTS):
            key = self._version_key(v.name, number)
            try:
                self.s3.put(key, self._pack(key, record, name=v.name), create=True)
                return number
            except Exists:
                number += 1
        raise Conflict(f"{v.name}: {ALLOCATE_ATTEMPTS} version numbers in a row were taken meanwhile")

    def tombstone(self, v: VersionInfo) -> None:
        """Replace NAME:vN's record by its tombstone: the number stays taken, the version is gone."""
        key = self._version_key(v.name, v.number)
        record = {"deleted": time.time(), "root": v.root.hex(), "created": v.created}
        self.s3.put(key, self._pack(key, record, name=v.name))

    # aliases ---------------------------------------------------------------------------------
    def aliases(self, name: str) -> dict[str, int]:
        keys = [key for key, _ in self.s3.list(f"aliases/{self._dir(name)}/") if key.endswith(".json")]
        out = {}
        for key in keys:
            try:
                record = self._get(key, "alias")
                alias = key.rsplit("/", 1)[1][:-5] if self.sealer is None else str(record["alias"])
                out[alias] = int(record["version"])
            except NotFound:
                continue
            except (ValueError, KeyError, TypeError):
                raise StoreError(f"remote alias {self.s3.url}/{key} is malformed") from None
        return out

    def set_alias(self, name: str, alias: str, number: int, *, retreat: bool = False) -> int:
        """Point ALIAS at vN by compare-and-swap; ``latest`` only ever moves to a higher number
        (unless ``retreat``: a delete moving it back). Returns where the alias points afterwards."""
        key = self._alias_key(name, alias)
        for attempt in range(CAS_ATTEMPTS):
            try:
                raw, etag = self.s3.get_tagged(key)
                current = int(self.read(key, raw, "alias")["version"])
            except NotFound:
                raw, etag, current = None, None, None
            if current == number or (alias == LATEST and not retreat and current is not None and current > number):
                return current
            try:
                self.s3.put(key, self._pack(key, {"version": number}, alias=alias), create=etag is None, if_match=etag)
                return number
            except Conflict:      # another host moved it (or created it) meanwhile: read again
                time.sleep(random.uniform(0, 0.02 * (attempt + 1)))
        raise Conflict(f"alias {name}:{alias} on the remote kept changing ({CAS_ATTEMPTS} attempts)")

    def move_alias(self, name: str, alias: str, number: int | None, expect: int | None, *, check: bool = True) -> None:
        """A user's ``alias`` (NUMBER) or ``alias --delete`` (None): one compare-and-swap from what
        this host knows (EXPECT, None: absent). Conflict, nothing changed, when another host moved
        it first (unless not ``check``) or while this runs (S3 deletes take no If-Match: a delete
        checks just before it goes)."""
        key = self._alias_key(name, alias)
        try:
            raw, etag = self.s3.get_tagged(key)
            current = int(self.read(key, raw, "alias")["version"])
        except NotFound:
            etag, current = None, None
        except (ValueError, KeyError, TypeError):
            raise StoreError(f"remote alias {self.s3.url}/{key} is malformed") from None
        label = lambda n: "nothing" if n is None else f"v{n}"   # noqa: E731
        if current == number:
            return
        if check and current != expect:
            raise Conflict(f"alias {name}:{alias} on the remote points at {label(current)}, set by another host "
                           f"(here: {label(expect)}): nothing changed; --force moves it anyway")
        try:
            if number is None:
                self.s3.delete(key)
            else:
                self.s3.put(key, self._pack(key, {"version": number}, alias=alias), create=etag is None, if_match=etag)
        except (Conflict, Exists):
            raise Conflict(f"alias {name}:{alias} was moved on the remote by another host meanwhile: "
                           "nothing changed") from None

    def live_record(self, name: str, number: int) -> VersionInfo | None:
        """NAME:vN as the remote has it, None when absent or deleted (one GET)."""
        try:
            rec = self._get(self._version_key(name, number), "version record")
        except NotFound:
            return None
        return None if "deleted" in rec else self._version(name, number, rec)

    def drop_alias(self, name: str, alias: str) -> None:
        self.s3.delete(self._alias_key(name, alias))
