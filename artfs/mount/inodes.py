"""Inode numbers of the mount: stable identities mapped to small integers, with lookup counts.

An inode number is allocated the first time an *identity key* is seen and is never given to other
content while the daemon runs. Keys are plain tuples chosen by mount/nodes.py:

    ("A", name, created)                 an artifact directory (re-created artifact: new inode)
    ("d", parent inode, name)            a directory inside a version (and a version root ``vN``)
    ("f", file id, mode, mtime_ns, group, nlink)
                                         a version file: the same file in v3 and v4 is ONE inode,
                                         so its page cache survives commits (like a hard link),
                                         and so are the names of a link group (hard links);
                                         with --record-use + (artifact inode, N): one per version
    ("l", target, mode, mtime_ns)        a symlink inside a version
    ("n", directory inode, name)         a FIFO, socket or device node inside a version
    ("n", artifact inode, N, group)      ... with hard links: its link group in version N
    ("a", artifact inode, alias, vN)     an alias symlink; moving the alias gives a new inode
    ("s", artifact key, staging ino)     a staging entry; when a commit, reset or moved latest
                                         renumbers staging, each number the kernel knows moves
                                         to the staging ino now at its path (mount/moves.py)

The kernel's lookup count per inode is honoured: a node object is kept while the kernel knows its
inode and dropped on the last ``forget``. The key -> inode map holds the identities the kernel
knows, plus the last RECENT of those it does not: forgotten lately (a file the daemon itself just
invalidated, after a reset or a moved latest, is looked up again with its number) or not told
yet (a readdir entry that did not fit the kernel's buffer, which the next readdir request sends
with the same number). An identity forgotten longer ago gets a new number when it is looked up
again (the kernel has no cache of it left to keep warm). So the table is as big as the kernel's
inode cache, plus RECENT, however many files were ever looked up.
"""

from __future__ import annotations

from collections import OrderedDict

from ..errors import NotFound

ROOT_INODE = 1  # pyfuse3.ROOT_INODE (mount/ops.py asserts it)
RECENT = 16384  # identities the kernel does not hold (forgotten lately, not told yet) kept at most


class InodeTable:
    def __init__(self, root):
        self._ids: dict[tuple, int] = {}
        self._keys: dict[int, tuple] = {}
        self._recent: OrderedDict[int, None] = OrderedDict()   # oldest first
        self._nodes: dict[int, object] = {ROOT_INODE: root}
        self._lookups: dict[int, int] = {}
        self._next = ROOT_INODE + 1

    def inode(self, key: tuple) -> int:
        """The inode number of an identity, allocated on first sight."""
        ino = self._ids.get(key)
        if ino is None:   # once per entry of a cold listing: allocate() and _bind() inlined
            ino, self._next = self._next, self._next + 1
            self._ids[key], self._keys[ino] = ino, key
            self._unheld(ino)
        return ino

    def held(self, key: tuple) -> int | None:
        """The inode number of an identity the kernel holds now, else None (nothing allocated)."""
        ino = self._ids.get(key)
        return ino if ino in self._lookups else None

    def allocate(self) -> int:
        """A number never handed out before (not tied to an identity yet)."""
        ino, self._next = self._next, self._next + 1
        return ino

    def _bind(self, key: tuple, ino: int) -> None:
        self._ids[key], self._keys[ino] = ino, key
        if ino not in self._lookups:
            self._unheld(ino)

    def _unheld(self, ino: int) -> None:
        """``ino`` has an identity the kernel does not hold: keep it among the last RECENT."""
        self._recent[ino] = None
        if len(self._recent) > RECENT:
            self._unbind(self._recent.popitem(last=False)[0])

    def _unbind(self, ino: int) -> None:
        key = self._keys.pop(ino, None)
        if key is not None and self._ids.get(key) == ino:
            del self._ids[key]

    def rekey(self, moves: list[tuple[int, tuple | None, tuple | None]]) -> None:
        """Staging was renumbered (mount/moves.py): each (inode, old key, new key) gives an inode
        number the identity of what is now at its path; a new key None leaves it none (gone).
        A number whose identity went meanwhile (forgotten, not recent) takes no new one."""
        live = {ino for ino, _, _ in moves if ino in self._lookups or ino in self._recent}
        for ino, old, _ in moves:
            if old is not None and self._ids.get(old) == ino:
                del self._ids[old]
                self._keys.pop(ino, None)
        for ino, _, new in moves:
            if new is not None and ino in live:
                self._bind(new, ino)

    def node(self, ino: int):
        try:
            return self._nodes[ino]
        except KeyError:
            raise NotFound(f"inode {ino} is not known (forgotten or never looked up)") from None

    def remember(self, node) -> None:
        """The kernel learned of ``node`` (lookup, create or a readdir entry): count it."""
        self._nodes[node.ino] = node
        self._lookups[node.ino] = self._lookups.get(node.ino, 0) + 1
        self._recent.pop(node.ino, None)

    def forget(self, ino: int, count: int) -> None:
        left = self._lookups.get(ino, 0) - count
        if left > 0:
            self._lookups[ino] = left
            return
        self._lookups.pop(ino, None)
        if ino != ROOT_INODE:
            self._nodes.pop(ino, None)
            if ino in self._keys:
                self._unheld(ino)
