"""Keeping the mount's inode numbers while staging is renumbered (StagingState.follow, mount/staged.py).

A commit, a reset, or a put that moves the latest version a staging without changes shows, gives
staging's nodes new staging inodes (staging/inodes.py). The mount keeps its own inode numbers:
while such a change runs (the artifact's lock keeps staging's own changes out, so every path means
the same node before and after it), each staging node the kernel knows is addressed by its path,
and a node the kernel learns meanwhile is numbered by its path too. Afterwards each takes the
staging inode now at its path - or is gone, if its path no longer exists or now holds another kind
of node. So a working directory inside staging, an open file and ``st_ino`` survive a commit.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..staging.paths import join

Stale = tuple[int, bytes]   # a kernel entry to invalidate: (directory inode, name)


@dataclass(slots=True)
class Seen:
    path: bytes | None   # where the node is (None: nowhere, e.g. unlinked while open)
    key: tuple | None    # the identity its inode number was allocated for (mount/inodes.py)
    entry: object        # the SEntry at its path before (else the last one the kernel got)


class Move:
    """One renumbering in flight: the path of every staging inode number the kernel knows."""

    def __init__(self):
        self.seen: dict[int, Seen] = {}
        self.ino_at: dict[bytes, int] = {}

    def add(self, ino: int, path: bytes | None, key: tuple | None, entry) -> None:
        if ino not in self.seen:
            self.seen[ino] = Seen(path, key, entry)
            if path is not None:
                self.ino_at.setdefault(path, ino)

    def paths(self) -> set[bytes]:
        return {s.path for s in self.seen.values() if s.path is not None}

    def place(self, inodes, key: tuple, entry, parent: int | None) -> int:
        """The inode number of an entry looked up meanwhile, ``parent`` being its directory's
        number (None: the staging root): the number of its path if the kernel knows that path."""
        above = self.seen.get(parent) if parent is not None else None
        path = b"" if parent is None else (
            join(above.path, entry.name) if above is not None and above.path is not None else None)
        known = self.ino_at.get(path) if path is not None else None
        if known is not None and self.seen[known].entry.kind == entry.kind:
            return known
        ino = inodes.inode(key)
        if ino in self.seen:   # the number of another path (the key's node moved): a new one
            ino, key = inodes.allocate(), None
        if path is not None and known is None:
            self.add(ino, path, key, entry)
        return ino

    def outcome(self, found: dict):
        """(inode number, Seen, the entry now at its path or None: gone) for every node seen;
        ``found`` maps paths to the entries now there."""
        for ino, seen in self.seen.items():
            e = found.get(seen.path) if seen.path is not None else None
            yield ino, seen, e if e is not None and e.kind == seen.entry.kind else None

    def stale(self, seen: Seen, now) -> Stale | None:
        """The kernel entry of a node to drop: gone, or a file or symlink whose attributes changed
        (a reset, a moved latest). A directory that stays keeps its entry: it may be a working
        directory."""
        if not seen.path or now is not None and (now.kind == "d" or _same(now, seen.entry)):
            return None
        parent, _, name = seen.path.rpartition(b"/")
        return (self.ino_at[parent], name) if parent in self.ino_at else None


def _same(a, b) -> bool:
    """Whether the kernel's cached attributes of ``b`` are right for ``a``."""
    return (a.mode, a.uid, a.gid, a.size, a.mtime_ns, a.target) == \
        (b.mode, b.uid, b.gid, b.size, b.mtime_ns, b.target)
