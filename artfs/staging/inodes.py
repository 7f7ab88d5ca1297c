"""Inode numbers of the unmodified nodes of a staging base, derived without storing anything.

A node of base version vN that staging has not recorded gets ``offset(N) + its preorder index``
in the base tree (the root is index 0 and is always staging inode ROOT). The number is the same
in every process and every mount, costs no write (lookups on an unmodified staging write nothing),
and is never given to another node: each base version has its own range, and nodes made in
staging count up from 2 below the first range.

Finding the index of an entry needs the node counts of the subtrees before it, computed once per
tree id (trees are immutable) and cached; so the first numbering of a base reads each of its
directory trees once. Going from a number back to its base path is a bisect per level.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from collections.abc import Callable

from ..catalog.objects import DIR, Entry, Tree

BASE_SHIFT = 40  # inodes below 2**40 are for nodes made in staging


def base_offset(number: int) -> int:
    return (number + 1) << BASE_SHIFT


def in_base(ino: int, number: int | None) -> bool:
    return number is not None and (ino >> BASE_SHIFT) == number + 1


class BaseNumbering:
    """Preorder numbering of base trees. Safe to share between threads: counts live in a plain
    dict (atomic operations, idempotent values), the bounded cache of starts under a lock."""

    def __init__(self, tree: Callable[[bytes], Tree], cache_trees: int = 256):
        self._tree = tree
        self._counts: dict[bytes, int] = {}
        self._starts: OrderedDict[bytes, list[int]] = OrderedDict()
        self._capacity = cache_trees
        self._lock = threading.Lock()

    def count(self, tid: bytes) -> int:
        """Number of nodes below a tree (all depths); iterative, so any depth works."""
        counts, todo = self._counts, [tid]
        while todo:
            top = todo[-1]
            if top in counts:
                todo.pop()
                continue
            subdirs = [e.ref for e in self._tree(top).entries if e.kind == DIR]
            missing = [ref for ref in subdirs if ref not in counts]
            if missing:
                todo.extend(missing)
                continue
            counts[top] = len(self._tree(top).entries) + sum(counts[ref] for ref in subdirs)
            todo.pop()
        return counts[tid]

    def starts(self, tid: bytes) -> list[int]:
        """starts[i]: preorder index of entry i relative to its directory's own index."""
        with self._lock:
            cached = self._starts.get(tid)
            if cached is not None:
                self._starts.move_to_end(tid)
                return cached
        out, pos = [], 1
        for e in self._tree(tid).entries:
            out.append(pos)
            pos += 1 + (self.count(e.ref) if e.kind == DIR else 0)
        with self._lock:
            self._starts[tid] = out
            if len(self._starts) > self._capacity:
                self._starts.popitem(last=False)
        return out

    def locate(self, root: bytes, index: int) -> list[tuple[int, Entry]] | None:
        """The base path to preorder ``index``: [(index, entry)] from the root's child down."""
        if not 1 <= index <= self.count(root):
            return None
        path, tid, at = [], root, 0
        while True:
            starts = self.starts(tid)
            i = bisect.bisect_right(starts, index - at) - 1
            entry, at = self._tree(tid).entries[i], at + starts[i]
            path.append((at, entry))
            if at == index:
                return path
            tid = entry.ref  # index lies inside this directory's subtree
