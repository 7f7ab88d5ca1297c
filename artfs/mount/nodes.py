"""The mount's tree, FUSE-free: root / artifact directory / version tree / alias symlink.

    MOUNT/                 Root: one directory per artifact; ``mkdir`` creates an artifact
    MOUNT/NAME/            ArtifactDir: ``vN`` directories, alias symlinks (``latest -> vN``),
                           and ``staging/`` (mount/staged.py)
    MOUNT/NAME/vN/...      VersionDir / VersionEntry (files, symlinks): immutable, read-only

Nodes answer attributes, lookups and listings; every mutation of something outside staging is
ReadOnly (EROFS). Version entries are immutable, so they carry a long cache timeout; artifact
directories and aliases change, so they carry a short one and are also invalidated by the daemon
when they change (see ArtifactState.refresh).
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass

import trio

from ..catalog.objects import DIR, FILE, LINK, SPECIAL, Entry
from ..errors import InvalidInput, NotADirectory, NotFound, ReadOnly
from ..names import STAGING, version_number
from .inodes import ROOT_INODE

SHORT = 1.0        # seconds: artifact dirs, aliases, staging (also invalidated on change)
LONG = 86400.0     # seconds: version entries never change
DIR_MODE = 0o755   # mode of the root, artifact dirs and version roots (no committed mode)


@dataclass(slots=True)
class Attr:
    ino: int
    mode: int          # full st_mode
    size: int
    mtime_ns: int
    ctime_ns: int
    nlink: int
    uid: int
    gid: int
    timeout: float
    rdev: int = 0      # a device node's device number


class Listing:
    """One opendir's entries in a fixed order; a readdir offset is an index into it."""

    __slots__ = ("length", "entry")

    def __init__(self, length: int, entry: Callable[[int], tuple[bytes, "Node"]]):
        self.length, self.entry = length, entry

    @classmethod
    def of(cls, pairs: list[tuple[bytes, "Node"]]) -> "Listing":
        return cls(len(pairs), pairs.__getitem__)


class Node:
    """Base: a read-only node that is neither a directory nor a symlink. The kernel may know
    millions of nodes at once (one per inode it caches), hence __slots__."""

    __slots__ = ()

    ino: int
    staging = None     # the Staging this node belongs to (mount/staged.py), None outside staging

    def attr(self) -> Attr:
        raise NotImplementedError

    def fresh(self) -> "Node":
        """This node with its state re-read (staging entries change; everything else is fixed)."""
        return self

    def lookup(self, name: bytes) -> "Node":
        raise NotADirectory("not a directory")

    def listing(self) -> Listing:
        raise NotADirectory("not a directory")

    def readlink(self) -> bytes:
        raise InvalidInput("not a symbolic link")

    def where(self) -> str:
        return "a version tree"

    def read_only(self, what: str = "changed") -> ReadOnly:
        return ReadOnly(f"{self.where()} is read-only and cannot be {what}; write in NAME/staging/")


def _dir_attr(fs, ino: int, size: int, mtime_ns: int, nlink: int, timeout: float,
              mode: int = DIR_MODE) -> Attr:
    return Attr(ino, stat.S_IFDIR | mode, size, mtime_ns, mtime_ns, nlink, fs.uid, fs.gid, timeout)


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class Root(Node):
    __slots__ = ("fs", "mtime_ns")
    ino = ROOT_INODE

    def __init__(self, fs, mtime_ns: int):
        self.fs, self.mtime_ns = fs, mtime_ns

    def where(self) -> str:
        return "the mount's top level"

    def attr(self) -> Attr:
        n = len(self.fs.repo.artifacts())
        return _dir_attr(self.fs, self.ino, n, self.mtime_ns, 2 + n, SHORT)

    def lookup(self, name: bytes) -> Node:
        return self.fs.artifact(name).dir()

    def listing(self) -> Listing:
        pairs = []
        for name in self.fs.repo.artifacts():
            try:
                pairs.append((name.encode(), self.fs.artifact(name).dir()))
            except NotFound:
                pass   # deleted meanwhile
        return Listing.of(pairs)


class ArtifactState:
    """What the daemon keeps per artifact: identity, staging, the commit lock, the last view.

    ``view`` is the (aliases, versions) the mount last showed; ``refresh`` compares it with the
    catalog and returns the names whose kernel entries must be invalidated (``staging`` keeps its
    inode numbers when it is renumbered: mount/staged.py).
    """

    def __init__(self, fs, name: str, record: dict):
        self.fs, self.name, self.created = fs, name, record["created"]
        self.ino = fs.inodes.inode(("A", name, self.created))
        self.lock = trio.Lock()          # staging mutations vs. commit/reset of this artifact
        self.deleted = False
        self.deleted_versions: set[int] = set()
        self.staging = None              # mount/staged.py StagingState, made on first use
        self.view = self._snapshot()

    def dir(self) -> "ArtifactDir":
        return ArtifactDir(self.fs, self)

    def alive(self, number: int) -> None:
        if self.deleted or number in self.deleted_versions:
            raise NotFound(f"{self.name}:v{number} was deleted")

    def _snapshot(self) -> tuple[dict[str, int], frozenset[int]]:
        aliases = self.fs.repo.aliases(self.name)
        versions = frozenset(v.number for v in self.fs.repo.versions(self.name))
        return aliases, versions

    def refresh(self) -> list[bytes]:
        """Names in this artifact's directory that changed since the last view (to invalidate)."""
        (old_aliases, old_versions), self.view = self.view, self._snapshot()
        aliases, versions = self.view
        self.deleted_versions = set(range(self.fs.repo.artifact(self.name)["next"])) - versions
        names = [a for a in old_aliases.keys() | aliases.keys() if old_aliases.get(a) != aliases.get(a)]
        names += [f"v{n}" for n in old_versions - versions]
        return sorted(n.encode() for n in names)


class ArtifactDir(Node):
    __slots__ = ("fs", "state", "ino")

    def __init__(self, fs, state: ArtifactState):
        self.fs, self.state, self.ino = fs, state, state.ino

    def where(self) -> str:
        return f"artifact directory {self.state.name}/"

    def attr(self) -> Attr:
        versions = self.fs.repo.versions(self.state.name)
        mtime = versions[-1].created if versions else self.state.created
        a = self.fs.repo.access(self.state.name)   # its owner, group and mode (catalog/access.py)
        return Attr(self.ino, stat.S_IFDIR | a.mode, len(versions), _ns(mtime), _ns(mtime),
                    3 + len(versions), a.uid, a.gid, SHORT)

    def lookup(self, name: bytes) -> Node:
        text = name.decode(errors="replace")
        if text == STAGING:
            return self.fs.staging_of(self.state).root()
        number = version_number(text)
        if number is not None:
            return self.version(number)
        aliases = self.fs.repo.aliases(self.state.name)
        if text not in aliases:
            raise NotFound(f"{self.state.name} has no {text!r}")
        return AliasLink(self.fs, self.state, text, aliases[text])

    def version(self, number: int) -> "VersionDir":
        self.state.alive(number)
        return self._version(self.fs.repo.resolve(self.state.name, f"v{number}"))

    def _version(self, v) -> "VersionDir":
        ino = self.fs.inodes.inode(("d", self.ino, v.label.encode()))
        return VersionDir(self.fs, self.state, v.number, v.root, ino, DIR_MODE, 0, _ns(v.created))

    def listing(self) -> Listing:
        versions = self.fs.repo.versions(self.state.name)
        numbers = {v.number for v in versions}
        pairs = [(v.label.encode(), self._version(v)) for v in versions]
        pairs += [(a.encode(), AliasLink(self.fs, self.state, a, n))
                  for a, n in sorted(self.fs.repo.aliases(self.state.name).items()) if n in numbers]
        pairs.append((STAGING.encode(), self.fs.staging_of(self.state).root()))
        return Listing.of(pairs)


class AliasLink(Node):
    """``alias -> vN``; a moved alias is another inode (the key holds the version number)."""

    __slots__ = ("fs", "state", "alias", "target", "ino")

    def __init__(self, fs, state: ArtifactState, alias: str, number: int):
        self.fs, self.state, self.alias, self.target = fs, state, alias, f"v{number}".encode()
        self.ino = fs.inodes.inode(("a", state.ino, alias, number))

    def where(self) -> str:
        return f"alias {self.state.name}/{self.alias}"

    def attr(self) -> Attr:
        return Attr(self.ino, stat.S_IFLNK | 0o777, len(self.target), _ns(self.state.created),
                    _ns(self.state.created), 1, self.fs.uid, self.fs.gid, SHORT)

    def readlink(self) -> bytes:
        return self.target


class VersionDir(Node):
    """A directory of a version: its tree is immutable (and cached by the Repo). Its link count
    is 2 + its subdirectories, as on ext4: counted in its parent's entry (``subdirs``), or, for
    a version's root and trees written before entries held the count, in its own tree."""

    __slots__ = ("fs", "state", "number", "tid", "ino", "mode", "size", "mtime_ns", "subdirs")

    def __init__(self, fs, state: ArtifactState, number: int, tid: bytes, ino: int, mode: int,
                 size: int, mtime_ns: int, subdirs: int | None = None):
        self.fs, self.state, self.number, self.tid = fs, state, number, tid
        self.ino, self.mode, self.size, self.mtime_ns = ino, mode, size, mtime_ns
        self.subdirs = subdirs

    def where(self) -> str:
        return f"{self.state.name}/v{self.number}"

    def _tree(self):
        self.state.alive(self.number)
        return self.fs.repo.tree(self.tid)

    def attr(self) -> Attr:
        if self.subdirs is None:
            subdirs = self._tree().subdirs
        else:
            self.state.alive(self.number)
            subdirs = self.subdirs
        return _dir_attr(self.fs, self.ino, self.size, self.mtime_ns, 2 + subdirs, LONG, self.mode)

    def child(self, e: Entry) -> Node:
        if e.kind == DIR:
            ino = self.fs.inodes.inode(("d", self.ino, e.name))
            return VersionDir(self.fs, self.state, self.number, e.ref, ino, e.mode, e.size, e.mtime_ns,
                              e.subdirs)
        return VersionEntry(self.fs, e, self)

    def key(self, e: Entry) -> tuple:
        """The inode identity (mount/inodes.py) of E, a file, symlink or special file here."""
        if e.kind in SPECIAL:   # hard links of one: its link group in this version
            return ("n",) + ((self.state.ino, self.number, e.group) if e.group else (self.ino, e.name))
        return _content_key(e, self._per_version())

    def _per_version(self) -> tuple:
        """What a file's or symlink's identity adds: its version, with ``--record-use``."""
        return (self.state.ino, self.number) if self.fs.uses is not None else ()

    def entries(self, start: int = 0, stop: int | None = None) -> list[Entry]:
        """The entries from START to STOP, in listing order (of a paged directory, only the pages
        holding them are read: catalog/objects.py)."""
        return self._tree().entries[start:stop]

    def index(self, name: bytes) -> int:
        """The position of NAME among the entries (of a paged directory: reading its page)."""
        return self._tree().locate(name)[0]

    def lookup(self, name: bytes) -> Node:
        e = self._tree().lookup(name)
        if e is None:
            raise NotFound(f"{self.where()} has no {name!r}")
        return self.child(e)

    def listing(self) -> Listing:
        """Its entries' nodes, made as they are listed. Once per entry of a cold ``ls -lR``: what
        is the same for the whole directory is bound once, and a file's identity (``key``) is
        made inline."""
        entries, child, fs, per_version = self._tree().entries, self.child, self.fs, self._per_version()
        inode = fs.inodes.inode

        def entry(i: int) -> tuple[bytes, Node]:
            e = entries[i]
            if e.kind != FILE:
                return e.name, child(e)
            ino = inode(_content_key(e, per_version))
            return e.name, VersionEntry(fs, e, self, ino)
        return Listing(len(entries), entry)


def _content_key(e: Entry, per_version: tuple) -> tuple:
    """The inode identity of a file or symlink entry (VersionDir.key; its listing inline)."""
    return (e.kind, e.ref, e.mode, e.mtime_ns, e.group, e.nlink) + per_version


class VersionEntry(Node):
    """A file, symlink or special file of a version. A file's or symlink's inode is its entry
    identity (kind, content, mode, mtime, link group), so the same file in every version holding
    it is one kernel inode, and so are the names of one link group (hard links); with ``--record-use`` the version is part of the identity, so an open tells
    which one is read. A FIFO or socket is one kernel object per inode, so a special file's inode
    is its place (directory inode, name), or its link group in its version: two equal FIFOs are
    never one pipe."""

    __slots__ = ("fs", "entry", "dir", "ino")

    def __init__(self, fs, e: Entry, parent: VersionDir, ino: int | None = None):
        self.fs, self.entry, self.dir = fs, e, parent
        self.ino = fs.inodes.inode(parent.key(e)) if ino is None else ino   # given: by a listing

    @property
    def origin(self) -> tuple[str, int]:
        """(artifact, version number) of the directory it was found in."""
        return self.dir.state.name, self.dir.number

    @property
    def is_file(self) -> bool:
        return self.entry.kind == FILE

    def attr(self) -> Attr:   # once per entry of a listing: Entry.st_mode and .rdev inlined
        e, fs = self.entry, self.fs
        if e.kind == FILE:
            return Attr(self.ino, stat.S_IFREG | e.mode, e.size, e.mtime_ns, e.mtime_ns, e.nlink,
                        fs.uid, fs.gid, LONG)
        size = len(e.ref) if e.kind == LINK else e.size
        return Attr(self.ino, e.st_mode, size, e.mtime_ns, e.mtime_ns, e.nlink, fs.uid, fs.gid,
                    LONG, e.rdev)

    def readlink(self) -> bytes:
        if self.entry.kind != LINK:
            return super().readlink()
        return self.entry.ref
