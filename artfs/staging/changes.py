"""What staging changed against its base version: the walk behind ``status`` and commit totals.

The walk compares each recorded directory with the base tree at the same path. A directory whose
origin is that very tree can differ only in the names its overlay lists, so the cost follows the
change; a directory moved or made in staging is compared entry by entry. Like ``artfs diff``, a
change is a difference in kind, mode or content (mtimes are not content), and an added or deleted
directory is reported as ``dir/`` followed by its files. A file opened for writing counts as
modified without being hashed. The walk keeps its own stack (any depth works) and yields changes
in no particular order.
"""

from __future__ import annotations

from ..catalog.objects import DIR, Tree
from ..catalog.staging_index import ROOT, Base, Node
from ..repo.diff import join_path

_EMPTY = Tree([])


def changes(staging, txn, base: Base):
    """(path, base Entry or None, staged Node or None) for every change."""
    root = staging.resolve(txn, base, ROOT)
    todo = [("", base.root or b"", root)] if root.stored else []
    while todo:
        prefix, old_ref, node = todo.pop()
        for old, new in _pairs(staging, txn, base, old_ref, node):
            path = join_path(prefix, (old or new).name)
            if old is not None and new is not None and old.kind == DIR and new.kind == DIR:
                if old.mode != new.mode:
                    yield path + "/", old, new
                todo.append((path, old.ref, new))
            elif old is not None and new is not None and DIR not in (old.kind, new.kind):
                if new.local or (new.kind, new.mode, new.ref) != (old.kind, old.mode, old.ref):
                    yield path, old, new
            else:
                if old is not None:
                    yield from _whole(path, old, lambda e: staging.repo.tree(e.ref).entries,
                                      lambda p, e: (p, e, None))
                if new is not None:
                    yield from _whole(path, new, lambda n: staging.children(txn, base, n, numbered=False),
                                      lambda p, n: (p, None, n))


def _pairs(staging, txn, base: Base, old_ref: bytes, node: Node):
    """(base entry, staged node) per name that may differ between a base tree and a directory."""
    old = staging.repo.tree(old_ref) if old_ref else _EMPTY
    if node.ref == old_ref:  # same origin: only names in the overlay can differ
        names = [name for name, _ in staging.index.dirents(txn, node.ino)] if node.stored else []
        return [(old.lookup(name), staging.child(txn, base, node, name)) for name in names]
    new = {n.name: n for n in staging.children(txn, base, node, numbered=False)}
    names = sorted(new.keys() | {e.name for e in old.entries})
    return [(old.lookup(name), new.get(name)) for name in names]


def _whole(path: str, top, children, change):
    """A whole entry added or deleted: itself, and for a directory ``dir/`` and every file below."""
    if top.kind != DIR:
        yield change(path, top)
        return
    yield change(path + "/", top)
    todo = [(path, top)]
    while todo:
        prefix, directory = todo.pop()
        for c in children(directory):
            if c.kind == DIR:
                todo.append((join_path(prefix, c.name), c))
            else:
                yield change(join_path(prefix, c.name), c)
