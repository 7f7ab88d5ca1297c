"""Where a version's bytes are: in the local store, in the chunk cache of a remote, or only on
the remote (``artfs cache ls``; store/lazy.py). Each version's distinct chunks are counted once."""

from __future__ import annotations

from ..catalog.objects import DIR, FILE

BATCH = 4096


def version_chunks(repo, root: bytes) -> dict[bytes, int]:
    """Chunk id -> length of every distinct chunk a version's files use."""
    chunks: dict[bytes, int] = {}
    stack, seen = [root], set()
    while stack:
        tid = stack.pop()
        if tid in seen:
            continue
        seen.add(tid)
        for e in repo.tree(tid).entries:
            if e.kind == DIR:
                stack.append(e.ref)
            elif e.kind == FILE and e.ref not in seen:
                seen.add(e.ref)
                fobj = repo.file(e.ref)
                chunks.update(zip(fobj.chunks, fobj.lengths))
    return chunks


def residency(repo, name: str | None = None) -> list[dict]:
    """Per version: its distinct chunk bytes ``local``, ``cached`` and ``remote`` (only there)."""
    store = repo.db.objects
    cache = store.cache(create=False)
    out = []
    for n in [name] if name is not None else repo.artifacts():
        for v in repo.versions(n):
            chunks = version_chunks(repo, v.root)
            ids = list(chunks)
            row = {"name": n, "version": v.label, "local": 0, "cached": 0, "remote": 0}
            for i in range(0, len(ids), BATCH):
                batch = ids[i:i + BATCH]
                local = store.local.has(batch)
                cached = cache.objects.has(batch) if cache is not None else [False] * len(batch)
                for oid, here, kept in zip(batch, local, cached):
                    row["local" if here else "cached" if kept else "remote"] += chunks[oid]
            out.append(row)
    return out
