"""Comparing two trees: added, removed and modified paths, skipping equal subtrees.

A change is a difference in kind, mode or content (file bytes, symlink target); an mtime alone is
not a change, so re-putting a copy with fresh mtimes makes no new version.
"""

from __future__ import annotations

import os

from ..catalog.objects import DIR, Entry, Objects


def join_path(prefix: str, name: bytes) -> str:
    return os.path.join(prefix, os.fsdecode(name)) if prefix else os.fsdecode(name)


def walk_files(objects: Objects, txn, tid: bytes, prefix: str = ""):
    """Yield (path, entry) for every non-directory entry under a tree."""
    for e in objects.tree(tid).entries:
        path = join_path(prefix, e.name)
        if e.kind == DIR:
            yield from walk_files(objects, txn, e.ref, path)
        else:
            yield path, e


def diff_trees(objects: Objects, txn, old: bytes, new: bytes, prefix: str = "") -> dict[str, list[str]]:
    out = {"added": [], "removed": [], "modified": []}
    _diff(objects, txn, old, new, prefix, out)
    for paths in out.values():
        paths.sort()
    return out


def _diff(objects, txn, old: bytes, new: bytes, prefix: str, out) -> None:
    if old == new:
        return
    a = {e.name: e for e in objects.tree(old).entries}
    b = {e.name: e for e in objects.tree(new).entries}
    for name in a.keys() | b.keys():
        ea, eb = a.get(name), b.get(name)
        path = join_path(prefix, name)
        if ea is None:
            _all(objects, txn, eb, path, out["added"])
        elif eb is None:
            _all(objects, txn, ea, path, out["removed"])
        elif ea.kind == DIR and eb.kind == DIR:
            _diff(objects, txn, ea.ref, eb.ref, path, out)
            if ea.mode != eb.mode:
                out["modified"].append(path + "/")
        elif ea.kind == DIR or eb.kind == DIR:
            _all(objects, txn, ea, path, out["removed"])
            _all(objects, txn, eb, path, out["added"])
        elif not ea.same_content(eb):
            out["modified"].append(path)


def _all(objects, txn, e: Entry, path: str, into: list[str]) -> None:
    if e.kind == DIR:
        into.append(path + "/")
        into.extend(p for p, _ in walk_files(objects, txn, e.ref, path))
    else:
        into.append(path)


def trees_equal(objects, old: bytes, new: bytes) -> bool:
    """Equal content (see module doc), without building the full diff where subtrees match."""
    if old == new:
        return True
    a, b = objects.tree(old).entries, objects.tree(new).entries
    if len(a) != len(b):
        return False
    for ea, eb in zip(a, b):
        if ea.name != eb.name or ea.kind != eb.kind or ea.mode != eb.mode:
            return False
        if ea.kind == DIR:
            if not trees_equal(objects, ea.ref, eb.ref):
                return False
        elif ea.ref != eb.ref:
            return False
    return True
