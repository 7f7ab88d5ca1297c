"""Staging inodes to paths and back: what the mount needs to keep its inode numbers when a commit,
a reset or a moved ``latest`` renumbers staging (mount/staged.py).

A path is the names from the staging root joined by b"/" (b"" is the root). Finding one costs a
walk up the recorded parents (each recorded node has its current parent and name) and, for an
unmodified node, one walk down its base tree (staging/inodes.py); finding many in one call shares
the walks of common ancestors.
"""

from __future__ import annotations

from ..catalog.objects import DIR
from ..catalog.staging_index import ROOT, Base, Node


def join(parent: bytes, name: bytes) -> bytes:
    return parent + b"/" + name if parent else name


def paths(staging, txn, base: Base, inos) -> dict[int, bytes]:
    """Where each inode is in staging now; inodes that no longer exist are left out."""
    known: dict[int, bytes] = {ROOT: b""}   # recorded nodes (and the root) whose path is known
    out = {}
    for ino in inos:
        path = _path(staging, txn, base, ino, known)
        if path is not None:
            out[ino] = path
    return out


def base_paths(staging, base: Base, inos) -> dict[int, bytes]:
    """Where each inode was in a staging without changes on ``base`` (numbered by its tree)."""
    out = {ROOT: b""} if ROOT in inos else {}
    for ino in inos:
        chain = staging._base_path(base, ino) if base.root else None
        if chain is not None:
            out[ino] = b"/".join(n.name for n in chain[1:])
    return out


def nodes_at(staging, txn, base: Base, wanted) -> dict[bytes, Node]:
    """The node at each path now; paths that do not exist are left out."""
    found: dict[bytes, Node | None] = {b"": staging.resolve(txn, base, ROOT)}
    for path in wanted:
        todo, top = [], path
        while top not in found:
            todo.append(top)
            top = top.rpartition(b"/")[0]
        node = found[top]
        for prefix in reversed(todo):
            if node is not None:
                node = (staging.child(txn, base, node, prefix.rpartition(b"/")[2])
                        if node.kind == DIR else None)
            found[prefix] = node
    return {path: found[path] for path in wanted if found[path] is not None}


def _path(staging, txn, base: Base, ino: int, known: dict[int, bytes]) -> bytes | None:
    if ino in known:
        return known[ino]
    node = staging.index.node(txn, ino)
    if node is not None:
        return _recorded(staging, txn, node, known)
    chain = staging._base_path(base, ino)   # unrecorded: an unmodified node of the base tree
    at = staging._anchor(txn, chain) if chain is not None else None
    if at is None:
        return None
    path = _path(staging, txn, base, chain[at].ino, known)   # the root or a recorded node
    for n in chain[at + 1:]:
        path = join(path, n.name)
    return path


def _recorded(staging, txn, node: Node, known: dict[int, bytes]) -> bytes | None:
    """The path of a recorded node: up its recorded parents to one whose path is known."""
    chain = []
    while node.ino not in known:
        chain.append(node)
        node = staging.index.node(txn, node.parent)
        if node is None:
            return None   # not reachable: the parent of a recorded node is recorded
    path = known[node.ino]
    for n in reversed(chain):
        path = known[n.ino] = join(path, n.name)
    return path
