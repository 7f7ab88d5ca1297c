"""The Python API: ``artfs.Store`` and ``artfs.Version``.

    store = artfs.Store()                       # $ARTFS_STORE or ~/.local/share/artfs
    v = store.put("animals", "data/", aliases=["best"])
    v = store.get("animals:latest")             # pinned: v.path is .../animals/vN, not latest
    with v.open("cat.png") as f: ...
    path = v.download()                         # a writable copy in ./artifacts/animals:vN
    store.status("animals"); store.commit("animals", message="...")   # the staging of a mount
    v = store.use("animals:latest")             # the same, recorded as a consumer (lineage)

Operations that change what a mount shows go through the running daemon when this store is
mounted (so the mount is refreshed when they return); otherwise they work on the store directly.
"""

from __future__ import annotations

import io
import json
import os
from contextlib import nullcontext

from ..mount import control
from ..repo import lineage as _lineage
from ..repo import metadata as _metadata
from ..repo import retention as _retention
from .progress import daemon_reads
from ..repo.accounting import du as _du
from ..repo.residency import residency as _residency
from ..catalog.access import gid_of, group_name, parse_mode, uid_of, user_name
from ..catalog.objects import DIR, FILE, KIND_NAME, LINK, Entry
from ..catalog.versions import VersionInfo
from ..repo.diff import diff_trees, walk, walk_files
from ..catalog.db import default_store_path
from ..errors import ArtfsError, Conflict, Exists, IsADirectory, NotFound, NotPermitted, StoreError, UsageError
from ..repo.export import export_entry, export_tree, holds
from ..names import check_alias, check_artifact, parse_duration, parse_ref
from ..repo import references
from ..repo.facade import Repo
from ..repo.verify import verify as _verify
from ..staging.commit import commit as _commit, staged_bytes as _staged_bytes
from ..staging.overlay import Staging
from ..remote import bindings as _bindings
from ..remote import gc as _remote_gc
from ..remote import keys as _remote_keys
from ..remote.sync import Remote, move_alias as _move_alias, publish as _publish, pull as _pull, push as _push


class _ChunkReader(io.RawIOBase):
    """A seekable binary reader over a stored file; every chunk is hash-checked."""

    def __init__(self, repo: Repo, fid: bytes):
        self._repo, self._file, self._pos = repo, repo.file(fid), 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def readinto(self, b) -> int:
        data = self._repo.read(self._file, self._pos, len(b))
        b[:len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._file.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self):
        return self._pos


class Version:
    """One version of an artifact, pinned by its root digest."""

    def __init__(self, store: "Store", info: VersionInfo):
        self._store, self._info = store, info
        self.name = info.name
        self.version = info.label
        self.aliases = list(info.aliases)
        self.digest = info.digest
        self.type = info.type
        self.metadata = dict(info.metadata)
        self.message = info.message
        self.created = info.created
        self.file_count = info.files    # regular files in the version
        self.size = info.bytes          # their logical bytes
        self.producer = dict(info.producer)   # what made it: user, host, argv, cwd, git commit, run id
        self.expires = info.expires     # when gc may delete it (a time), or None

    def __repr__(self):
        return f"<Version {self.name}:{self.version} {self.digest[:12]}>"

    def files(self) -> list[str]:
        """Relative paths of every file and symlink in the version, sorted."""
        return sorted(p for p, _ in walk_files(self._store._repo.tree, self._info.root))

    def _lookup(self, relpath: str) -> Entry:
        """The entry at RELPATH; the version's root is a directory entry named ""."""
        e = Entry(b"", DIR, 0o755, 0, int(self.created * 1e9), self._info.root)
        parts = [p for p in relpath.split("/") if p not in ("", ".")]
        for part in parts:
            if e.kind != DIR:
                raise NotFound(f"{self.name}:{self.version} has no {relpath!r}")
            e = self._store._repo.tree(e.ref).lookup(os.fsencode(part))
            if e is None:
                raise NotFound(f"{self.name}:{self.version} has no {relpath!r}")
        return e

    def entries(self, path: str = "") -> list[dict]:
        """What ``artfs ls NAME:REF [PATH]`` lists: every entry under PATH (the version's root by
        default; PATH may name one file), depth first in name order, as dicts: path (from the
        version's root), kind ("file", "dir", "symlink", "fifo", "socket", "char" or "block"),
        mode (octal text), size (bytes; a symlink's target length; None for a directory), mtime
        (seconds), digest (the file's or tree's content id in hex; None for other kinds), target
        (symlinks only)."""
        e = self._lookup(path)
        top = "/".join(p for p in path.split("/") if p not in ("", "."))
        pairs = walk(self._store._repo.tree, e.ref, top) if e.kind == DIR else [(top, e)]
        return [_entry_row(p, x) for p, x in pairs]

    def open(self, relpath: str):
        e = self._lookup(relpath)
        if e.kind == DIR:
            raise IsADirectory(f"{self.name}:{self.version}/{relpath} is a directory")
        if e.kind != FILE:
            raise NotFound(f"{self.name}:{self.version}/{relpath} is a {KIND_NAME[e.kind]}, not a file")
        return io.BufferedReader(_ChunkReader(self._store._repo, e.ref), buffer_size=1 << 20)

    @property
    def path(self) -> str | None:
        """This version's directory in the running mount of this store, else None. Pinned: it
        names ``vN``, never an alias, so it keeps showing this version while latest moves."""
        mountpoint = control.mountpoint_of(self._store.path)
        return os.path.join(mountpoint, self.name, self.version) if mountpoint else None

    def download(self, root: str | None = None, *, path: str = "", progress=None) -> str:
        """A writable local copy of the version (or of the file or directory PATH in it), with
        its modes and mtimes; returns where it is. ROOT must not exist or be an empty directory
        (a file is written into ROOT when ROOT is a directory). Without ROOT the copy goes to
        ``./artifacts/NAME:vN[/PATH]`` as W&B does; a copy already there that still holds
        exactly this version (names, kinds, modes, sizes, mtimes) is reused, one that differs is
        never overwritten (Exists)."""
        repo, e = self._store._repo, self._lookup(path)
        default = root is None
        if default:
            root = os.path.abspath(os.path.join(DOWNLOAD_DIR, f"{self.name}:{self.version}", path))
            if holds(repo, e, root):
                return root
            os.makedirs(os.path.dirname(root), exist_ok=True)
        try:
            if e.kind == DIR:
                return export_tree(repo, e.ref, root, progress)
            return export_entry(repo, e, root, progress)
        except Exists as err:
            if default:
                raise Exists(f"{err}: it does not hold {self.name}:{self.version} as written; "
                             "remove it or download to another root") from None
            raise


def _access_row(fields: dict) -> dict:
    """owner, group, mode (as octal text) and the user and group names."""
    return {"owner": fields["owner"], "group": fields["group"], "mode": f"{fields['mode']:04o}",
            "user": user_name(fields["owner"]), "group_name": group_name(fields["group"])}


DOWNLOAD_DIR = "artifacts"   # Version.download's default: ./artifacts/NAME:vN, like W&B


def _entry_row(path: str, e: Entry) -> dict:
    row = {"path": path, "kind": KIND_NAME[e.kind], "mode": f"{e.mode:04o}",
           "size": None if e.kind == DIR else e.size, "mtime": e.mtime_ns / 1e9,
           "digest": e.ref.hex() if e.holds_object else None}
    if e.kind == LINK:
        row["target"] = os.fsdecode(e.ref)
    return row


class Store:
    def __init__(self, path: str | None = None, *, create: bool = True):
        """The store at PATH (default $ARTFS_STORE, else ~/.local/share/artfs), created on first
        use; with create=False a path without a store is StoreError (exit 6) and stays untouched.

        Another user's store that its owner mounted with --allow-other is reached through its
        daemon only (its files are private): then get, commit, reset, status, alias, rm, chmod
        and chown work, as the artifact's owner, group and mode allow; the files of a version
        are read through the mount (``Version.path``); everything else is NotPermitted."""
        try:
            self.__repo = Repo(path, create=create)
        except StoreError:
            path = os.path.abspath(path or default_store_path())
            if os.access(path, os.R_OK) or control.daemon_info(path) is None:
                raise
            self.__repo = None   # someone else's store, served by its daemon
        self.path = self.__repo.path if self.__repo is not None else path

    @property
    def _repo(self) -> Repo:
        if self.__repo is None:
            raise NotPermitted(f"the store {self.path} is private to its owner: other users reach "
                               f"it through its mount at {control.mountpoint_of(self.path)} and "
                               "commit, reset, status, alias, rm, chmod and chown only")
        return self.__repo

    def close(self) -> None:
        if self.__repo is not None:
            self.__repo.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _version(self, info: VersionInfo) -> Version:
        return Version(self, info)

    # reading -----------------------------------------------------------------------------------
    def artifacts(self) -> list[str]:
        return self._repo.artifacts()

    def artifact_type(self, name: str) -> str:
        return self._repo.artifact(name)["type"]

    def artifact(self, name: str) -> dict:
        """NAME's type, creation time, retention policy (None, or keep_last and max_age in
        seconds), protected aliases, and owner (uid), group (gid), mode (octal text) with
        user and group names (``chmod``, ``chown``)."""
        rec = self._repo.artifact(name)
        return {"name": name, "type": rec["type"], "created": rec["created"],
                "retain": rec.get("retain"), "protected": list(rec.get("protected", ())),
                **_access_row(self._repo.access(name).fields())}

    def versions(self, name: str, where=None) -> list[Version]:
        """NAME's versions, oldest first; WHERE ({key: value} or ["key=value", ...]) keeps those
        whose metadata has every key with that value (artfs.repo.metadata: scalars compared as
        JSON text)."""
        conditions = _metadata.parse_where(where or {})
        return [self._version(v) for v in self._repo.versions(name)
                if _metadata.matches(v.metadata, conditions)]

    def get(self, spec: str) -> Version:
        name, ref = parse_ref(spec)
        if self.__repo is None:   # another user's store: ask its daemon
            found = control.request(self.path, "version", name=name, ref=ref)
            info = VersionInfo.from_record(name, found["number"], json.dumps(found["record"]).encode())
            info.aliases = found["aliases"]
            return self._version(info)
        return self._version(self._repo.resolve(name, ref))

    def use(self, spec: str) -> Version:
        """``get``, recording this process as a consumer of the version (user, host, argv, run
        id from ARTFS_RUN_ID or WANDB_RUN_ID, time): see ``lineage``."""
        v = self.get(spec)
        _lineage.record_uses(self._repo, [(v.name, v._info.number, _lineage.consumer("api"))])
        return v

    def lineage(self, spec: str) -> dict:
        """What made the version (producer) and what used it (consumers, oldest first)."""
        name, ref = parse_ref(spec)
        return _lineage.lineage(self._repo, name, ref)

    def log(self, name: str | None = None) -> list[dict]:
        return self._repo.events(name)

    def diff(self, a: str, b: str) -> dict[str, list[str]]:
        return diff_trees(self._repo.tree, self.get(a)._info.root, self.get(b)._info.root)

    def du(self, name: str | None = None) -> dict:
        return _du(self._repo, name)

    def cache(self, name: str | None = None) -> dict:
        """The chunk cache of the bound remote (store/cache.py: chunks, bytes, limit, file_bytes;
        the mount's own count while one runs) and, per version (of NAME), its bytes local, cached
        and only on the remote."""
        stats = control.call_or_local(self.path, "cache", self._cache_op, clear=False)
        return {"cache": stats, "versions": _residency(self._repo, check_artifact(name) if name else None)}

    def cache_clear(self) -> int:
        """Drop every cached chunk no open file of the mount uses; returns the bytes freed."""
        return control.call_or_local(self.path, "cache", self._cache_op, clear=True)

    def _cache_op(self, clear: bool):
        return self._repo.cache_op(clear)

    def verify(self, spec: str | None = None, progress=None):
        """Collect what interrupted ingests left, then check (see artfs.repo.verify)."""
        self._repo.collect_abandoned()
        if spec is None:
            return _verify(self._repo, progress=progress)
        name, ref = parse_ref(spec, default=None)
        return _verify(self._repo, name, ref, progress=progress)

    def compact(self) -> tuple[int, int]:
        """Give the space of deleted versions back to the filesystem: rewrite the store's database
        files without free pages (through the daemon when mounted). Returns (bytes before, after)."""
        if control.daemon_info(self.path) is not None:
            with self._repo.db.stepping_aside():   # the daemon needs the store to itself
                result = control.request(self.path, "compact")
            return result["before_bytes"], result["after_bytes"]
        return self._repo.compact()

    # changing ----------------------------------------------------------------------------------
    def put(self, name: str, path: str, *, type: str | None = None, aliases=(), message: str = "",
            metadata: dict | None = None, ttl=None, progress=None, **reference) -> Version:
        return self.put_ex(name, path, type=type, aliases=aliases, message=message,
                           metadata=metadata, ttl=ttl, progress=progress, **reference)[0]

    def put_ex(self, name, path, *, type=None, aliases=(), message="", metadata=None, ttl=None,
               progress=None, reference: bool = False, checksum: bool = True, cache: bool = False,
               endpoint: str | None = None, region: str | None = None, ca_bundle: str | None = None,
               allow_http: bool = False):
        """Like put, also saying whether a new version was made (False: content unchanged).
        TTL (seconds, or "7d") lets ``gc`` delete the version once it has passed.

        ``reference=True``: PATH is a URL (``file://``, ``s3://BUCKET/PREFIX``, ``https://``; a
        plain path means ``file://``) whose files are recorded, not stored: their URL, size, what
        the source reports and, unless ``checksum=False``, their SHA-256; ``cache=True`` stores
        their bytes too. ENDPOINT, REGION, CA_BUNDLE and ALLOW_HTTP reach an S3-compatible or
        https source as for a remote (docs/SEMANTICS.md "Reference files")."""
        remote = self._bound_remote()      # unreachable: exit 11 before anything is made
        options = None
        if reference:
            path = references.as_url(path)
            options = references.options(path, checksum=checksum, cache=cache, endpoint=endpoint,
                                         region=region, ca_bundle=ca_bundle, allow_http=allow_http)
        elif (endpoint, region, ca_bundle, allow_http, checksum, cache) != (None, None, None, False, True, False):
            raise UsageError("endpoint, region, ca_bundle, allow_http, checksum and cache are for reference=True")
        else:
            path = os.path.abspath(path)
        info, created = self._repo.put(name, path, type=type, aliases=list(aliases),
                                       message=message, metadata=metadata, ttl=ttl, progress=progress,
                                       reference=options)
        if created and remote is not None:
            info = self._publish(remote, info)
        control.notify_changed(self.path, name)
        return self._version(info), created

    def alias(self, spec: str, alias: str, *, force: bool = False, protect: bool | None = None) -> Version:
        """Point ALIAS at ``NAME:REF``. Moving a protected alias needs force; protect=True/False
        also (un)protects it (a protected alias needs force to be moved or deleted)."""
        name, ref = parse_ref(spec)
        self._alias_on_remote(name, alias, ref, force)
        control.call_or_local(self.path, "alias", lambda **a: self._repo.alias(**a), name=name, ref=ref,
                              alias=alias, force=force, protect=protect)
        return self.get(f"{name}:{alias}")

    def unalias(self, name: str, alias: str, *, force: bool = False) -> None:
        self._alias_on_remote(name, alias, None, force)
        control.call_or_local(self.path, "unalias", lambda **a: self._repo.unalias(**a), name=name,
                              alias=alias, force=force)

    def _alias_on_remote(self, name: str, alias: str, ref: str | None, force: bool) -> None:
        """With a remote bound, move (REF) or delete (None) ALIAS there first, by compare-and-swap
        (remote/sync.py move_alias); a protected alias without FORCE is refused before that."""
        remote = self._bound_remote()
        if remote is None:
            return
        check_alias(alias)
        current = self._repo.aliases(check_artifact(name)).get(alias)
        if ref is not None and self._repo.resolve(name, ref).number == current:
            return                                   # not moving (--protect / --unprotect)
        if not force and alias in self._repo.artifact(name).get("protected", ()):
            raise Conflict(f"alias {alias} of {name} is protected: {'move' if ref else 'delete'} it with --force")
        _move_alias(self._repo, remote, name, alias, ref, force)

    def chmod(self, name: str, mode: int | str) -> dict:
        """Set NAME's mode (permission bits: an int, or octal text "750"); its owner or root may.
        Returns NAME's access as ``artifact`` gives it; audited as artifact.chmod."""
        return self._set_access(name, mode=parse_mode(mode) if isinstance(mode, str) else mode)

    def chown(self, name: str, owner: int | str | None = None, group: int | str | None = None) -> dict:
        """Give NAME another OWNER (root only) and/or GROUP (its owner may choose a group it is
        in): uids/gids or user/group names. Audited as artifact.chown."""
        return self._set_access(name, uid=None if owner is None else uid_of(owner),
                                gid=None if group is None else gid_of(group))

    def _set_access(self, name: str, **change) -> dict:
        check_artifact(name)
        fields = control.call_or_local(self.path, "access",
                                       lambda **a: self._repo.set_access(**a).fields(), name=name,
                                       **change)
        return _access_row(fields)

    def edit(self, spec: str, *, metadata: dict | None = None, delete=(), description: str | None = None,
             ttl=None) -> Version:
        """Change a version's labels (its content never changes): set METADATA keys, DELETE keys,
        replace its DESCRIPTION (the message), set its expiry to now + TTL ("never": none).
        Audited as version.meta."""
        name, ref = parse_ref(spec)
        _metadata.edit(self._repo, name, ref, values=metadata, delete=list(delete),
                       description=description, ttl=ttl)
        return self.get(spec)

    def retain(self, name: str, *, keep_last: int | None = None, max_age=None) -> dict | None:
        """Set NAME's retention policy, applied by ``gc``: keep the KEEP_LAST newest versions
        and those younger than MAX_AGE (seconds, or "30d"); both None removes the policy."""
        return _retention.set_policy(self._repo, name, keep_last, max_age)

    def gc(self, name: str | None = None, *, dry_run: bool = False) -> dict:
        """Delete what retention lets go (every artifact's, or NAME's): versions beyond their
        artifact's policy and expired ones, never latest nor a version with a user alias.
        Returns {"dry_run", "versions", "freed_bytes", "artifacts": [{"name", "freed_bytes",
        "deleted": [{"version", "reason", "logical_bytes"}]}]}; dry_run deletes nothing. With a
        remote bound they go there first (its versions with their root and creation time), in one
        sweep, and the report adds "remote_versions" and "remote_freed_bytes"."""
        if dry_run:
            return _retention.gc(self._repo, name, dry_run=True)

        def local() -> dict:
            return control.call_or_local(self.path, "gc", lambda name: _retention.gc(self._repo, name), name=name)
        remote = self._bound_remote()      # on the remote first, as delete (remote/gc.py apply_retention)
        return local() if remote is None else _remote_gc.apply_retention(self._repo, remote, name, local)

    def delete(self, spec: str, *, force: bool = False) -> str:
        """Delete ``NAME:REF`` (one version) or ``NAME`` (the artifact), reclaiming storage.
        Returns what went: ``NAME:vN`` for a version (never the alias it was named by), else NAME."""
        name, ref = parse_ref(spec, default=None)
        remote = self._bound_remote()      # unreachable: exit 11 before anything is deleted
        if remote is not None:
            return _remote_gc.delete_here_and_there(self._repo, remote, name, ref, force, self._delete_local)
        return self._delete_local(name, ref, force)

    def _delete_local(self, name: str, ref: str | None, force: bool, reason: str | None = None) -> str:
        if ref is None:
            control.call_or_local(self.path, "delete_artifact", lambda **a: self._repo.delete_artifact(**a),
                                  name=name)
            return name
        result = control.call_or_local(
            self.path, "delete_version", lambda **a: {"version": self._repo.delete_version(**a).label},
            name=name, ref=ref, force=force, **({"reason": reason} if reason else {}))
        return f"{name}:{result['version']}"

    # staging (what ``STORE/NAME/staging`` of a mount shows; no mount needed) ----------------------
    def status(self, name: str) -> dict[str, list[str]]:
        """Paths the staging of NAME added, modified and deleted against its base version (a
        directory as ``dir/`` followed by its files), and ``interrupted``: files that were open for
        writing when their mount died (they may be short; commit refuses them without force);
        each list sorted."""
        check_artifact(name)
        return control.call_or_local(self.path, "status", lambda name: Staging(self._repo, name).status(),
                                     name=name)

    def commit(self, name: str, *, aliases=(), message: str = "", metadata: dict | None = None,
               type: str | None = None, ttl=None, progress=None, force: bool = False) -> Version | None:
        """Turn the staging of NAME into its next version; see commit_ex."""
        return self.commit_ex(name, aliases=aliases, message=message, metadata=metadata, type=type,
                              ttl=ttl, progress=progress, force=force)[0]

    def commit_ex(self, name: str, *, aliases=(), message: str = "", metadata: dict | None = None,
                  type: str | None = None, ttl=None, progress=None,
                  force: bool = False) -> tuple[Version | None, bool]:
        """Like commit, also saying whether a new version was made: (latest, False) when staging
        equals latest (the aliases then move to latest), (None, False) when NAME has no versions
        and an empty staging. A running daemon refuses while staging files are open for writing.
        METADATA, TYPE and TTL as for put (TYPE may set the type of an artifact made by mkdir);
        the version's producer is this process, also when the daemon commits. ``progress(n)`` is
        called as the modified files are read (n bytes each time, in all ``staged_bytes(NAME)``);
        through a daemon that is an estimate (api/progress.py). Files that were open for writing
        when their mount died may be short (``status(NAME)["interrupted"]``): the commit is
        refused (Conflict) unless FORCE."""
        check_artifact(name)
        if ttl is not None:
            ttl = parse_duration(ttl, "--ttl")

        def local(**args):
            info, created = _commit(self._repo, progress=progress, **args)
            return {"version": info.label if info else None, "created": created}
        remote = self._bound_remote()      # unreachable: exit 11 before anything is committed
        daemon = control.daemon_info(self.path) if progress is not None and self.__repo else None
        with daemon_reads(daemon["pid"], self.staged_bytes(name), progress) if daemon else nullcontext():
            result = control.call_or_local(self.path, "commit", local, name=name, aliases=list(aliases),
                                           message=message, metadata=metadata, type=type,
                                           producer=_lineage.producer(), ttl=ttl, force=force)
        if result["version"] is None:
            return None, False
        v = self.get(f"{name}:{result['version']}")
        if result["created"] and remote is not None:
            v = self._version(self._publish(remote, v._info))
            control.notify_changed(self.path, name)
        return v, result["created"]

    def staged_bytes(self, name: str) -> int | None:
        """Bytes a commit of NAME will read: the sizes of the files its staging added or modified
        (None in another user's store)."""
        return _staged_bytes(self.__repo, name) if self.__repo is not None else None

    def reset(self, name: str) -> None:
        """Discard every change in the staging of NAME: it shows latest again."""
        check_artifact(name)
        control.call_or_local(self.path, "reset", lambda name: Staging(self._repo, name).reset(), name=name)

    # remotes (docs/REMOTE.md; credentials come from the AWS environment, never stored) -------------
    def remote_add(self, name: str, url: str, *, endpoint: str | None = None, region: str | None = None,
                   allow_http: bool = False, ca_bundle: str | None = None, profile: str | None = None) -> dict:
        """Bind remote NAME (``s3://BUCKET[/PREFIX]``): its config is created there when absent,
        checked when present. Plain http only to loopback or with allow_http; CA_BUNDLE (a PEM
        file, kept by path) is trusted for an https endpoint; PROFILE names the AWS profile
        (~/.aws/config, ~/.aws/credentials) its credentials come from. Returns the remote's config."""
        binding = _bindings.make(url, endpoint, region, allow_http, ca_bundle, profile)
        remote = Remote(self.path, name, binding, init=True)
        _bindings.add(self.path, name, binding)
        return remote.config

    def remotes(self) -> dict[str, dict]:
        """Bound remotes: name -> url, endpoint, region, allow_http."""
        return _bindings.load(self.path)

    def remote_remove(self, name: str) -> None:
        """Unbind remote NAME (nothing on the remote changes)."""
        _bindings.remove(self.path, name)

    def remote_versions(self, remote: str = "origin", name: str | None = None) -> dict[str, list[Version]]:
        """What the remote has: artifact -> its versions (of NAME only when given; not local
        unless pulled: their files cannot be opened from here)."""
        r = Remote.bound(self._repo, remote)
        names = [check_artifact(name)] if name else r.catalog.artifacts()
        found = {n: vs for n in names if (vs := [self._version(v) for v in r.catalog.versions(n)])}
        if name and name not in found:
            raise NotFound(f"remote {remote} has no artifact {name!r}")
        return found

    def _bound_remote(self) -> Remote | None:
        """The remote commits, puts and deletes go to (remote/bindings.py default), opened. None
        for another user's store (its bindings are private): its owner publishes (``push``)."""
        if self.__repo is None:
            return None
        name = _bindings.default(self.path)
        return Remote.bound(self._repo, name) if name is not None else None

    def _publish(self, remote: Remote, info: VersionInfo) -> VersionInfo:
        """Create the new local version INFO on REMOTE (remote/sync.py publish)."""
        try:
            return _publish(self._repo, remote, info)
        except ArtfsError as e:
            raise type(e)(f"{info.name}:{info.label} was made here but not on remote {remote.name} ({e}); "
                          f"`artfs push {info.name}` publishes it") from None

    def remote_gc(self, remote: str = "origin", *, dry_run: bool = False) -> dict:
        """Free what no live version on the remote uses: dead packs, orphans, stale locks
        (``dry_run``: say what and how many bytes, deleting nothing). remote/gc.py collect."""
        return _remote_gc.collect(Remote.bound(self._repo, remote), dry_run, _remote_gc.local_objects(self._repo))

    def remote_verify(self, remote: str = "origin") -> dict:
        """Check every live version on the remote: objects reachable, bytes matching their ids."""
        return _remote_gc.verify(Remote.bound(self._repo, remote))

    def push(self, spec: str | None = None, remote: str = "origin") -> dict:
        """Upload the versions (all, ``NAME`` or ``NAME:REF``) the remote lacks:
        {"versions": ["NAME:vN", ...], "bytes_sent": n, "requests": {S3 operation: n}}."""
        name, ref = parse_ref(spec, default=None) if spec else (None, None)
        return _push(self._repo, Remote.bound(self._repo, remote), name, ref)

    def pull(self, spec: str | None = None, remote: str = "origin", data: bool = False) -> dict:
        """Fetch the remote's versions (all, ``NAME`` or ``NAME:REF``), every object verified. With
        ``data`` they become local versions; without, only their metadata is fetched.
        Without a REF, local versions deleted on the remote (published here or pulled, then
        tombstoned there) are deleted here, audited with the reason "deleted on remote R"; the
        base of a staging with changes is kept. {"versions": [...recorded], "metadata_only": [...],
        "bytes_received": n, "dropped": ["NAME:vN", ...], "kept": [one line each]}."""
        name, ref = parse_ref(spec, default=None) if spec else (None, None)

        def drop(name: str, ref: str, reason: str) -> str:
            return self._delete_local(name, ref, True, reason)
        report = _pull(self._repo, Remote.bound(self._repo, remote), name, ref, data, drop)
        for changed in sorted({v.split(":")[0] for v in report["versions"] + report["dropped"]}):
            control.notify_changed(self.path, changed)
        return report

    @classmethod
    def clone(cls, url: str, path: str | None = None, *, endpoint: str | None = None,
              region: str | None = None, allow_http: bool = False, ca_bundle: str | None = None,
              data: bool = False, profile: str | None = None) -> "Store":
        """A new local store at PATH bound to the remote as ``origin``, its metadata pulled (and
        with ``data`` its versions). An encrypted remote makes an encrypted store with its key,
        unwrapped with the passphrase or key file (remote/keys.py; a wrong one: BadKey)."""
        if path is not None and os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
            raise Exists(f"{path} exists and is not an empty directory")
        _remote_keys.prepare_clone(os.path.abspath(path or default_store_path()),
                                   _bindings.make(url, endpoint, region, allow_http, ca_bundle, profile))
        store = cls(path)
        try:
            store.remote_add("origin", url, endpoint=endpoint, region=region, allow_http=allow_http,
                             ca_bundle=ca_bundle, profile=profile)
            store.pull(data=data)
        except BaseException:
            store.close()
            raise
        return store
