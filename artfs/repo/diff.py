"""Comparing two trees: added, removed and modified paths, skipping equal subtrees.

A change is a difference in kind, mode or content (file bytes, symlink target, device number,
which files are hard links of each other); an mtime alone is
not a change, so re-putting a copy with fresh mtimes makes no new version.

Every walk takes ``tree``, a function from a tree id to its Tree (``Repo.tree``; inside a write
transaction, one reading in that transaction, so trees made in it are seen), opens no
transaction itself, and keeps its own stack: any depth works at any recursion limit. Pages two
paged directories share (catalog/objects.py) are skipped like equal subtrees.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from ..catalog.objects import DIR, Entry, Tree

TreeOf = Callable[[bytes], Tree]


def join_path(prefix: str, name: bytes) -> str:
    return os.path.join(prefix, os.fsdecode(name)) if prefix else os.fsdecode(name)


def walk(tree: TreeOf, tid: bytes, prefix: str = "") -> Iterator[tuple[str, Entry]]:
    """Yield (path, entry) for every entry under a tree, depth first in name order, a directory
    before what it holds."""
    stack = [(prefix, iter(tree(tid).entries))]
    while stack:
        path, entries = stack[-1]
        e = next(entries, None)
        if e is None:
            stack.pop()
            continue
        here = join_path(path, e.name)
        yield here, e
        if e.kind == DIR:
            stack.append((here, iter(tree(e.ref).entries)))


def walk_files(tree: TreeOf, tid: bytes, prefix: str = "") -> Iterator[tuple[str, Entry]]:
    """Yield (path, entry) for every non-directory entry under a tree, depth first in name order."""
    return ((path, e) for path, e in walk(tree, tid, prefix) if e.kind != DIR)


def diff_trees(tree: TreeOf, old: bytes, new: bytes, prefix: str = "") -> dict[str, list[str]]:
    out = {"added": [], "removed": [], "modified": []}
    todo = [(old, new, prefix)]
    while todo:
        old, new, prefix = todo.pop()
        if old == new:
            continue
        a, b = _unshared(tree, old, new)
        a, b = {e.name: e for e in a}, {e.name: e for e in b}
        for name in a.keys() | b.keys():
            ea, eb = a.get(name), b.get(name)
            path = join_path(prefix, name)
            if ea is None:
                _all(tree, eb, path, out["added"])
            elif eb is None:
                _all(tree, ea, path, out["removed"])
            elif ea.kind == DIR and eb.kind == DIR:
                todo.append((ea.ref, eb.ref, path))
                if ea.mode != eb.mode:
                    out["modified"].append(path + "/")
            elif ea.kind == DIR or eb.kind == DIR:
                _all(tree, ea, path, out["removed"])
                _all(tree, eb, path, out["added"])
            elif not ea.same_content(eb):
                out["modified"].append(path)
    for paths in out.values():
        paths.sort()
    return out


def _all(tree: TreeOf, e: Entry, path: str, into: list[str]) -> None:
    if e.kind == DIR:
        into.append(path + "/")
        into.extend(p for p, _ in walk_files(tree, e.ref, path))
    else:
        into.append(path)


def trees_equal(tree: TreeOf, old: bytes, new: bytes) -> bool:
    """Equal content (see module doc), without building the full diff where subtrees match."""
    todo = [(old, new)]
    while todo:
        old, new = todo.pop()
        if old == new:
            continue
        a, b = _unshared(tree, old, new)
        if len(a) != len(b):
            return False
        for ea, eb in zip(a, b):
            if ea.name != eb.name or ea.kind != eb.kind or ea.mode != eb.mode:
                return False
            if ea.kind == DIR:
                todo.append((ea.ref, eb.ref))
            elif not ea.same_content(eb):
                return False
    return True


def _unshared(tree: TreeOf, old: bytes, new: bytes) -> tuple[list[Entry], list[Entry]]:
    """The entries of two directories, sorted, without those of the pages both share (a paged
    directory's unchanged pages keep their ids): only the pages around a change are read."""
    a, b = tree(old), tree(new)
    shared = {p.tid for p in a.pages} & {p.tid for p in b.pages}
    if not shared:
        return a.entries, b.entries
    return ([e for p in a.pages if p.tid not in shared for e in a.page(p).entries],
            [e for p in b.pages if p.tid not in shared for e in b.page(p).entries])
