"""Storage accounting for ``du``: logical bytes, and what deleting a version alone would free.
On a store bound to a remote, each version's distinct chunk bytes are split too: ``local`` (in
the local store), ``cached`` (in the chunk cache) and ``remote`` (only there: fetched on first
read), as ``artfs cache ls`` counts them (repo/residency.py); no request goes to the remote.

``unique_bytes`` replays the release of a version's root (or of several versions' roots deleted
together: ``artfs gc``) against the live reference counts without writing anything: an object is
freed once every reference to it comes from objects that are freed too. This visits only the version's unique objects and their direct children. Reference counts
are read in bounded transactions (a du of a huge store never holds one snapshot for long).
"""

from __future__ import annotations

from collections import Counter

from ..catalog.objects import DIR, FILE
from ..store.lazy import binding
from .residency import residency


def unique_bytes(repo, batch, *roots: bytes, dropped: Counter | None = None) -> int:
    """Chunk bytes that releasing ROOTS together frees. ``dropped`` carries the references
    released by earlier calls (gc's artifacts one after another), so their sum is exact too."""
    dropped = Counter() if dropped is None else dropped
    freed = 0
    stack = [(DIR, root) for root in roots]
    while stack:
        kind, oid = stack.pop()
        dropped[oid] += 1
        count, size = repo.objects.ref(batch.txn, oid)
        batch.step()
        if count - dropped[oid] != 0:
            continue
        if kind == DIR:
            stack.extend(repo.tree(oid).refs())   # subtrees (or pages) and files
        elif kind == FILE:
            stack.extend(("c", cid) for cid in repo.file(oid).chunks)
        else:
            freed += size
    return freed


def du(repo, name: str | None = None) -> dict:
    names = [name] if name is not None else repo.artifacts()
    artifacts = []
    with repo.db.read_batches() as batch:
        for n in names:
            versions = [{
                "version": v.label, "aliases": v.aliases, "files": v.files,
                "logical_bytes": v.bytes, "unique_bytes": unique_bytes(repo, batch, v.root),
            } for v in repo.versions(n)]
            artifacts.append({"name": n, "versions": versions})
    if binding(repo.path) is not None:         # where each version's bytes are
        for a in artifacts:
            split = {row["version"]: row for row in residency(repo, a["name"])}
            for v in a["versions"]:
                row = split[v["version"]]
                v.update(local_bytes=row["local"], cached_bytes=row["cached"], remote_bytes=row["remote"])
    store = repo.stats()
    store["logical_bytes"] = sum(v["logical_bytes"] for a in artifacts for v in a["versions"])
    return {"store": store, "artifacts": artifacts}
