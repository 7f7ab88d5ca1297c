"""Inode numbers of the unmodified nodes of a staging base, derived without storing anything.

A node of base version vN that staging has not recorded gets ``offset(N) + its preorder index``
in the base tree (the root is index 0 and is always staging inode ROOT). The number is the same
in every process and every mount, costs no write (lookups on an unmodified staging write nothing),
and is never given to another node: each base version has its own range, and nodes made in
staging count up from 2 below the first range.

Finding the index of an entry needs the node counts of the subtrees before it, computed once per
tree id (trees are immutable) and cached; so the first numbering of a base reads each of its
directory trees once. Going from a number back to its base path is a bisect per level.

A large directory stored as pages (catalog/objects.py PagedTree) is numbered page by page: its
directory object lists each page's entry and subdirectory counts, so a page without
subdirectories is counted without being read, and the numbers of one page's entries need that
page only. Looking up or numbering one name of a 100,000-file directory reads one page.
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
        self._starts: OrderedDict[bytes, "Starts"] = OrderedDict()
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
            subdirs = _subdirs(self._tree(top))
            missing = [ref for ref in subdirs if ref not in counts]
            if missing:
                todo.extend(missing)
                continue
            counts[top] = self._tree(top).count + sum(counts[ref] for ref in subdirs)
            todo.pop()
        return counts[tid]

    def starts(self, tid: bytes) -> "Starts":
        """The preorder index of each entry of a tree relative to its directory's own index."""
        with self._lock:
            cached = self._starts.get(tid)
            if cached is not None:
                self._starts.move_to_end(tid)
                return cached
        out = Starts(self._tree(tid), self.count)
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
            i = starts.holding(index - at)
            entry, at = self._tree(tid).entries[i], at + starts[i]
            path.append((at, entry))
            if at == index:
                return path
            tid = entry.ref  # index lies inside this directory's subtree


class Starts:
    """``starts[i]``: the preorder index of entry i of one directory relative to the directory's
    own index (1 for its first entry). A paged directory's are found page by page: the start of
    each page from the pages' counts (reading only pages that hold subdirectories), the starts
    within a page when one of its entries is asked for. Filled idempotently, so threads may share
    it. A page's run of starts ends with the index after its last subtree."""

    __slots__ = ("_tree", "_count", "_firsts", "_offsets", "_runs")

    def __init__(self, tree: Tree, count: Callable[[bytes], int]):
        self._count = count
        self._runs: dict[int, list[int]] = {}   # page index (0 for a flat tree) -> its entries' starts
        if not tree.pages:   # numbered at once: a flat tree is one read, and is not kept
            self._tree, self._firsts, self._offsets = None, [0], [1]
            self._runs[0] = self._scan(tree.entries, 1)
            return
        self._tree = tree
        self._firsts = tree.starts   # the page's first entry index, then the count (never bisected to)
        self._offsets, pos = [], 1
        for k, p in enumerate(tree.pages):
            self._offsets.append(pos)
            pos = pos + p.count if not p.subdirs else self._run(k)[-1]

    def __getitem__(self, i: int) -> int:
        k = bisect.bisect_right(self._firsts, i) - 1
        return self._run(k)[i - self._firsts[k]]

    def holding(self, rel: int) -> int:
        """The index of the entry at preorder ``rel`` (>= 1) or whose subtree holds it."""
        k = bisect.bisect_right(self._offsets, rel) - 1
        return self._firsts[k] + bisect.bisect_right(self._run(k), rel) - 1

    def _run(self, k: int) -> list[int]:
        run = self._runs.get(k)
        if run is None:
            tree = self._tree
            run = self._runs[k] = self._scan(tree.page(tree.pages[k]).entries, self._offsets[k])
        return run

    def _scan(self, entries, pos: int) -> list[int]:
        run = []
        for e in entries:
            run.append(pos)
            pos += 1 + (self._count(e.ref) if e.kind == DIR else 0)
        run.append(pos)
        return run


def _subdirs(tree: Tree) -> list[bytes]:
    """The tree ids of a directory's subdirectories (of a paged one, read from the pages that
    have some)."""
    if not tree.pages:
        return [e.ref for e in tree.entries if e.kind == DIR]
    return [e.ref for p in tree.pages if p.subdirs for e in tree.page(p).entries if e.kind == DIR]
