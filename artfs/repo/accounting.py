"""Storage accounting for ``du``: logical bytes, and what deleting a version alone would free.

``unique_bytes`` replays the release of a version's root against the live reference counts without
writing anything: an object is freed once every reference to it comes from objects that are freed
too. This visits only the version's unique objects and their direct children.
"""

from __future__ import annotations

import os
from collections import Counter

from ..catalog.objects import DIR, FILE


def unique_bytes(objects, txn, root: bytes) -> int:
    dropped: Counter = Counter()
    freed = 0
    stack = [(DIR, root)]
    while stack:
        kind, oid = stack.pop()
        dropped[oid] += 1
        if objects.refcount(txn, oid) - dropped[oid] != 0:
            continue
        if kind == DIR:
            stack.extend((e.kind, e.ref) for e in objects.tree(txn, oid).entries if e.kind in (DIR, FILE))
        elif kind == FILE:
            stack.extend(("c", cid) for cid in objects.file(txn, oid).chunks)
        else:
            freed += objects.store.size(txn, oid)
    return freed


def du(repo, name: str | None = None) -> dict:
    with repo.db.read() as txn:
        names = [name] if name is not None else repo.catalog.artifact_names(txn)
        artifacts = []
        for n in names:
            repo.catalog.require_artifact(txn, n)
            versions = [{
                "version": v.label, "aliases": v.aliases, "files": v.files,
                "logical_bytes": v.bytes, "unique_bytes": unique_bytes(repo.objects, txn, v.root),
            } for v in repo.catalog.versions(txn, n)]
            artifacts.append({"name": n, "versions": versions})
    store = repo.stats()
    store["logical_bytes"] = sum(v["logical_bytes"] for a in artifacts for v in a["versions"])
    store["file_bytes"] = os.path.getsize(os.path.join(repo.path, "db", "data.mdb"))
    return {"store": store, "artifacts": artifacts}
