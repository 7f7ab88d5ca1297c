"""The Python API: ``artfs.Store`` and ``artfs.Version``.

    store = artfs.Store()                       # $ARTFS_STORE or ~/.local/share/artfs
    v = store.put("animals", "data/", aliases=["best"])
    v = store.get("animals:latest")
    with v.open("cat.png") as f: ...
    path = v.download()                         # the mounted path when the store is mounted
    store.status("animals"); store.commit("animals", message="...")   # the staging of a mount

Operations that change what a mount shows go through the running daemon when this store is
mounted (so the mount is refreshed when they return); otherwise they work on the store directly.
"""

from __future__ import annotations

import io
import os
import tempfile
from contextlib import nullcontext

from ..mount import control
from .progress import daemon_reads
from ..repo.accounting import du as _du
from ..catalog.objects import DIR
from ..catalog.versions import VersionInfo
from ..repo.diff import diff_trees, walk_files
from ..errors import IsADirectory, NotFound
from ..repo.export import export_tree
from ..names import check_artifact, parse_ref
from ..repo.facade import Repo
from ..repo.verify import verify as _verify
from ..staging.commit import commit as _commit, staged_bytes as _staged_bytes
from ..staging.overlay import Staging


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

    def __repr__(self):
        return f"<Version {self.name}:{self.version} {self.digest[:12]}>"

    def files(self) -> list[str]:
        """Relative paths of every file and symlink in the version, sorted."""
        return sorted(p for p, _ in walk_files(self._store._repo.tree, self._info.root))

    def _lookup(self, relpath: str):
        tid = self._info.root
        parts = [p for p in relpath.split("/") if p]
        for i, part in enumerate(parts):
            e = self._store._repo.tree(tid).lookup(os.fsencode(part))
            if e is None:
                raise NotFound(f"{self.name}:{self.version} has no {relpath!r}")
            if i < len(parts) - 1:
                if e.kind != DIR:
                    raise NotFound(f"{self.name}:{self.version} has no {relpath!r}")
                tid = e.ref
        if not parts:
            raise IsADirectory(f"{relpath!r} is a directory")
        return e

    def open(self, relpath: str):
        e = self._lookup(relpath)
        if e.kind == DIR:
            raise IsADirectory(f"{self.name}:{self.version}/{relpath} is a directory")
        if e.kind != "f":
            raise NotFound(f"{self.name}:{self.version}/{relpath} is a symlink, not a file")
        return io.BufferedReader(_ChunkReader(self._store._repo, e.ref), buffer_size=1 << 20)

    @property
    def path(self) -> str | None:
        """This version's directory in the running mount of this store, else None."""
        mountpoint = control.mountpoint_of(self._store.path)
        return os.path.join(mountpoint, self.name, self.version) if mountpoint else None

    def download(self, dest: str | None = None, progress=None) -> str:
        """The mounted path when mounted and no DEST is asked for; else a copy written to DEST."""
        if dest is None:
            if self.path is not None:
                return self.path
            dest = os.path.join(tempfile.mkdtemp(prefix="artfs-"), f"{self.name}-{self.version}")
        return export_tree(self._store._repo, self._info.root, dest, progress)


class Store:
    def __init__(self, path: str | None = None):
        self._repo = Repo(path)
        self.path = self._repo.path

    def close(self) -> None:
        self._repo.close()

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

    def versions(self, name: str) -> list[Version]:
        return [self._version(v) for v in self._repo.versions(name)]

    def get(self, spec: str) -> Version:
        name, ref = parse_ref(spec)
        return self._version(self._repo.resolve(name, ref))

    def log(self, name: str | None = None) -> list[dict]:
        return self._repo.events(name)

    def diff(self, a: str, b: str) -> dict[str, list[str]]:
        return diff_trees(self._repo.tree, self.get(a)._info.root, self.get(b)._info.root)

    def du(self, name: str | None = None) -> dict:
        return _du(self._repo, name)

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
            metadata: dict | None = None, progress=None) -> Version:
        return self.put_ex(name, path, type=type, aliases=aliases, message=message,
                           metadata=metadata, progress=progress)[0]

    def put_ex(self, name, path, *, type=None, aliases=(), message="", metadata=None, progress=None):
        """Like put, also saying whether a new version was made (False: content unchanged)."""
        info, created = self._repo.put(name, os.path.abspath(path), type=type, aliases=list(aliases),
                                       message=message, metadata=metadata, progress=progress)
        control.notify_changed(self.path, name)
        return self._version(info), created

    def alias(self, spec: str, alias: str) -> Version:
        name, ref = parse_ref(spec)
        control.call_or_local(self.path, "alias", self._repo.alias, name=name, ref=ref, alias=alias)
        return self.get(f"{name}:{alias}")

    def unalias(self, name: str, alias: str) -> None:
        control.call_or_local(self.path, "unalias", self._repo.unalias, name=name, alias=alias)

    def delete(self, spec: str, *, force: bool = False) -> None:
        """Delete ``NAME:REF`` (one version) or ``NAME`` (the artifact), reclaiming storage."""
        name, ref = parse_ref(spec, default=None)
        if ref is None:
            control.call_or_local(self.path, "delete_artifact", self._repo.delete_artifact, name=name)
        else:
            control.call_or_local(self.path, "delete_version", self._repo.delete_version,
                                  name=name, ref=ref, force=force)

    # staging (what ``STORE/NAME/staging`` of a mount shows; no mount needed) ----------------------
    def status(self, name: str) -> dict[str, list[str]]:
        """Paths the staging of NAME added, modified and deleted against its base version (a
        directory as ``dir/`` followed by its files), each list sorted."""
        check_artifact(name)
        return control.call_or_local(self.path, "status", lambda name: Staging(self._repo, name).status(),
                                     name=name)

    def commit(self, name: str, *, aliases=(), message: str = "", progress=None) -> Version | None:
        """Turn the staging of NAME into its next version; see commit_ex."""
        return self.commit_ex(name, aliases=aliases, message=message, progress=progress)[0]

    def commit_ex(self, name: str, *, aliases=(), message: str = "",
                  progress=None) -> tuple[Version | None, bool]:
        """Like commit, also saying whether a new version was made: (latest, False) when staging
        equals latest (the aliases then move to latest), (None, False) when NAME has no versions
        and an empty staging. A running daemon refuses while staging files are open for writing.
        ``progress(n)`` is called as the modified files are read (n bytes each time, in all
        ``staged_bytes(NAME)``); through a daemon that is an estimate (api/progress.py)."""
        check_artifact(name)

        def local(name, aliases, message):
            info, created = _commit(self._repo, name, aliases=aliases, message=message, progress=progress)
            return {"version": info.label if info else None, "created": created}
        daemon = control.daemon_info(self.path) if progress is not None else None
        with daemon_reads(daemon["pid"], self.staged_bytes(name), progress) if daemon else nullcontext():
            result = control.call_or_local(self.path, "commit", local, name=name, aliases=list(aliases),
                                           message=message)
        if result["version"] is None:
            return None, False
        return self.get(f"{name}:{result['version']}"), result["created"]

    def staged_bytes(self, name: str) -> int:
        """Bytes a commit of NAME will read: the sizes of the files its staging added or modified."""
        return _staged_bytes(self._repo, name)

    def reset(self, name: str) -> None:
        """Discard every change in the staging of NAME: it shows latest again."""
        check_artifact(name)
        control.call_or_local(self.path, "reset", lambda name: Staging(self._repo, name).reset(), name=name)
