"""``artfs://`` URLs: a read-only fsspec filesystem over a store, for pandas, pyarrow, dask & co.

    pandas.read_csv("artfs://animals:v1/labels.csv")
    pandas.read_csv("artfs://animals/labels.csv", storage_options={"store": "/data/artfs"})
    fs, path = fsspec.core.url_to_fs("artfs://animals:v1/tables/")
    pyarrow.dataset.dataset(path, filesystem=fs, format="parquet")   # pyarrow takes no fsspec URL

fsspec finds this class through the ``fsspec.specs`` entry point (pyproject.toml); ``import artfs``
does not import fsspec. A path is ``NAME[:REF]/PATH`` (REF: ``vN`` or an alias, ``latest`` when
omitted); the root lists every version as ``NAME:vN``. The store is the ``store`` option, else
``$ARTFS_STORE``, else ``~/.local/share/artfs``; it must exist (nothing is ever written).

Pinned versions: a filesystem object resolves every alias once. It takes the aliases of every
artifact when it is created, and an alias that appears later when first used; it keeps reading
those versions while ``latest`` moves. fsspec's instance cache is off for this class, so each URL
call (``pandas.read_csv``, ``fsspec.open``) makes a filesystem of its own and sees the aliases of
that moment, and an open file reads the version it was opened in to its end. A forked child
(DataLoader workers) keeps the object with its pins and reopens the store's environments on first
use; a pickled copy (spawned workers) carries the pins along. Deleting a version that is being
read makes further reads fail (EIO or ENOENT), never return other bytes.

Reads go straight to the store, mounted or not: the same hash-checked bytes the mount serves.
"""

from __future__ import annotations

import errno
import os
import threading
import weakref
from contextlib import contextmanager

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem, make_instance

from ..catalog.db import MARKER, default_store_path
from ..catalog.objects import DIR, FILE, LINK
from ..errors import ArtfsError, IsADirectory, NotADirectory, NotFound
from ..names import parse_ref, version_number
from .store import Store

READ_ONLY = ("artfs:// is read-only: versions are immutable (make a new one with "
             "`artfs put`, `artfs commit` or Store.put)")


@contextmanager
def _oserrors(path: str):
    """artfs errors as the OSError subclass of their errno (FileNotFoundError, ...)."""
    try:
        yield
    except ArtfsError as e:
        raise OSError(e.errno, str(e), path) from None


class ArtfsFileSystem(AbstractFileSystem):
    protocol = "artfs"
    root_marker = ""
    cachable = False          # every URL call resolves its aliases anew (see the module doc)
    blocksize = 1 << 20

    def __init__(self, store: str | None = None, _pins: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        path = os.path.abspath(store or default_store_path())
        if not os.path.exists(os.path.join(path, MARKER)):
            raise FileNotFoundError(errno.ENOENT, "no artfs store here (set store= or $ARTFS_STORE)", path)
        self.store = Store(path)
        weakref.finalize(self, self.store.close)
        self._lock = threading.Lock()
        if _pins is None:
            _pins = {(name, alias): number for name in self.store.artifacts()
                     for alias, number in self.store._repo.aliases(name).items()}
        self._pins: dict[tuple[str, str], int] = dict(_pins)

    def __reduce__(self):
        return make_instance, (type(self), (), {**self.storage_options, "store": self.store.path,
                                                "_pins": self._pins})

    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        return "/".join(p for p in super()._strip_protocol(path).split("/") if p not in ("", "."))

    # resolving paths ---------------------------------------------------------------------------
    def _version(self, head: str):
        """The pinned version a path's first component (NAME[:REF]) names."""
        name, ref = parse_ref(head)
        number = version_number(ref)
        if number is None:
            with self._lock:
                number = self._pins.get((name, ref))
                if number is None:
                    number = version_number(self.store.get(f"{name}:{ref}").version)
                    self._pins[(name, ref)] = number
        return self.store.get(f"{name}:v{number}")

    def _locate(self, path: str):
        """(stripped path, version, entry): the entry is None for the version's own directory."""
        path = self._strip_protocol(path)
        head, *parts = path.split("/")
        with _oserrors(path):
            v = self._version(head)
            tree, entry = self.store._repo.tree, None
            tid = v._info.root
            for i, part in enumerate(parts):
                if entry is not None:
                    if entry.kind != DIR:
                        raise NotADirectory(f"{'/'.join([head, *parts[:i]])} is not a directory")
                    tid = entry.ref
                entry = tree(tid).lookup(os.fsencode(part))
                if entry is None:
                    raise NotFound(f"{v.name}:{v.version} has no {'/'.join(parts[:i + 1])!r}")
        return path, v, entry

    @staticmethod
    def _describe(name: str, e) -> dict:
        info = {"name": name, "size": 0 if e.kind == DIR else e.size, "mode": e.st_mode,
                "mtime": e.mtime_ns / 1e9,
                "type": {DIR: "directory", FILE: "file"}.get(e.kind, "other")}
        if e.kind == FILE:
            info["id"] = e.ref.hex()   # the content id: equal ids, equal bytes
        elif e.kind == LINK:
            info.update(islink=True, destination=os.fsdecode(e.ref))
        return info

    # reading -----------------------------------------------------------------------------------
    def ls(self, path, detail=True, **kwargs):
        path = self._strip_protocol(path)
        if not path:
            with _oserrors(path):
                out = [{"name": f"{name}:{v.version}", "size": 0, "type": "directory"}
                       for name in self.store.artifacts() for v in self.store.versions(name)]
        else:
            path, v, e = self._locate(path)
            if e is not None and e.kind != DIR:
                out = [self._describe(path, e)]
            else:
                with _oserrors(path):
                    entries = self.store._repo.tree(v._info.root if e is None else e.ref).entries
                out = [self._describe(f"{path}/{os.fsdecode(c.name)}", c) for c in entries]
        return out if detail else [i["name"] for i in out]

    def info(self, path, **kwargs):
        path = self._strip_protocol(path)
        if not path:
            return {"name": "", "size": 0, "type": "directory"}
        path, v, e = self._locate(path)
        if e is None:
            return {"name": path, "size": 0, "type": "directory", "version": v.version,
                    "digest": v.digest}
        return self._describe(path, e)

    def _reader(self, path: str):
        """(the API's seekable raw reader of a file, its size)."""
        path, v, e = self._locate(path)
        with _oserrors(path):
            if e is None or e.kind == DIR:
                raise IsADirectory(f"{path} is a directory")
            return v.open(path.partition("/")[2]).raw, e.size

    def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None, **kwargs):
        if mode != "rb":
            raise OSError(errno.EROFS, READ_ONLY, path)
        reader, size = self._reader(path)
        return ArtfsFile(self, path, reader, size, block_size=block_size, cache_options=cache_options,
                         **kwargs)

    def cat_file(self, path, start=None, end=None, **kwargs):
        reader, size = self._reader(path)
        start = 0 if start is None else max(0, size + start) if start < 0 else start
        end = size if end is None else max(0, size + end) if end < 0 else min(end, size)
        return read_range(reader, start, end, path)

    # writing -----------------------------------------------------------------------------------
    def _read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, READ_ONLY)

    mkdir = makedirs = rmdir = rm = rm_file = _rm = cp_file = copy = mv = touch = _read_only
    pipe = pipe_file = put = put_file = _read_only


def read_range(reader, start: int, end: int, path: str) -> bytes:
    """Bytes [start, end) through the API's reader (every chunk hash-checked)."""
    if end <= start:
        return b""
    with _oserrors(path):
        reader.seek(start)
        return reader.read(end - start)


class ArtfsFile(AbstractBufferedFile):
    """A file of one version opened for reading; fsspec's block cache over the API's reader."""

    def __init__(self, fs, path, reader, size, **kwargs):
        self._raw = reader
        super().__init__(fs, path, mode="rb", size=size, **kwargs)

    def _fetch_range(self, start, end):
        return read_range(self._raw, start, min(end, self.size), self.path)
