"""Hard links in staging: the link groups of a base version, found once per base tree.

A version stores the names of a hard-linked file as entries sharing a link group
(catalog/objects.py). Staging shows every name of a base link group as ONE inode: the base inode
number of its first name in preorder (staging/inodes.py). Changing any name of such a group records
all its names at once (``Staging._record``), so from then on they share one node record, one data
file and one set of attributes; names made by link(2) in staging are recorded that way from the
start (catalog/staging_index.py keeps a node's names).

Finding a base tree's groups reads every directory of it once; it is done only when staging meets
a linked entry, and kept for the last base tree.
"""

from __future__ import annotations

from ..catalog.objects import DIR


class BaseGroups:
    def __init__(self, tree, numbering):
        self._tree, self._numbering = tree, numbering
        self._known: tuple[bytes, dict] | None = None   # (root, its groups): replaced as a whole

    def of(self, root: bytes) -> dict[bytes, list[tuple[int, int, bytes]]]:
        """link group -> its names as (preorder index, parent's preorder index, name), in
        preorder (index 0 is the root)."""
        known = self._known
        if known is not None and known[0] == root:
            return known[1]
        groups: dict[bytes, list[tuple[int, int, bytes]]] = {}
        stack = [(root, 0)]
        while stack:
            tid, at = stack.pop()
            starts = self._numbering.starts(tid)
            for i, e in enumerate(self._tree(tid).entries):
                if e.group:
                    groups.setdefault(e.group, []).append((at + starts[i], at, e.name))
                if e.kind == DIR:
                    stack.append((e.ref, at + starts[i]))
        for names in groups.values():
            names.sort()
        self._known = (root, groups)
        return groups
