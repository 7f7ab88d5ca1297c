"""``verify``: re-hash every object a version uses and check every reference.

For the whole store it also recomputes every reference count from the version roots (and the
parked zombies) and compares it with the stored counts, finds objects nothing references, checks
the chunk byte counters, and checks that aliases point at versions and ``latest`` at the newest.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..catalog.db import counter
from ..catalog.objects import DIR, FILE, LINK
from .diff import join_path
from ..errors import ArtfsError
from ..names import LATEST


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    objects: int = 0
    bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


class _Checker:
    def __init__(self, repo, txn, report: Report, progress):
        self.repo, self.txn, self.report, self.progress = repo, txn, report, progress
        self.store = repo.objects.store
        self.status: dict[bytes, str | None] = {}    # object id -> None (ok) or the problem
        self.tree_ok: dict[bytes, bool] = {}

    def obj(self, oid: bytes) -> str | None:
        if oid not in self.status:
            problem = self.store.verify_one(self.txn, oid)
            self.status[oid] = problem
            self.report.objects += 1
            if problem is None:
                n = self.store.size(self.txn, oid)
                self.report.bytes += n
                self.progress(n)
        return self.status[oid]

    def file_ok(self, fid: bytes) -> bool:
        if self.obj(fid):
            return False
        fobj = self.repo.objects.file(self.txn, fid)
        return all(self.obj(cid) is None for cid in fobj.chunks)

    def tree(self, tid: bytes) -> bool:
        if tid not in self.tree_ok:
            ok = self.obj(tid) is None
            if ok:
                for e in self.repo.objects.tree(self.txn, tid).entries:
                    if e.kind == DIR:
                        ok &= self.tree(e.ref)
                    elif e.kind == FILE:
                        ok &= self.file_ok(e.ref)
            self.tree_ok[tid] = ok
        return self.tree_ok[tid]

    def bad_paths(self, tid: bytes, prefix: str = ""):
        """(path, problem) for every damaged object under a damaged tree."""
        if self.status.get(tid):
            yield (prefix or "/"), f"tree {tid.hex()} is {self.status[tid]}"
            return
        for e in self.repo.objects.tree(self.txn, tid).entries:
            path = join_path(prefix, e.name)
            if e.kind == DIR and not self.tree_ok.get(e.ref, True):
                yield from self.bad_paths(e.ref, path)
            elif e.kind == FILE:
                if self.status.get(e.ref):
                    yield path, f"file object {e.ref.hex()} is {self.status[e.ref]}"
                    continue
                for cid in self.repo.objects.file(self.txn, e.ref).chunks:
                    if self.status.get(cid):
                        yield path, f"chunk {cid.hex()} is {self.status[cid]}"

    def version(self, v) -> None:
        if not self.tree(v.root):
            for path, problem in self.bad_paths(v.root):
                self.report.problems.append(f"{v.name}:{v.label} {path}: {problem}")


def verify(repo, name: str | None = None, ref: str | None = None, progress=None) -> Report:
    report = Report()
    progress = progress or (lambda n: None)
    with repo.db.read() as txn:
        checker = _Checker(repo, txn, report, progress)
        if name is not None and ref is not None:
            versions = [repo.catalog.resolve(txn, name, ref)]
        elif name is not None:
            repo.catalog.require_artifact(txn, name)
            versions = repo.catalog.versions(txn, name)
        else:
            versions = [v for n in repo.catalog.artifact_names(txn) for v in repo.catalog.versions(txn, n)]
        for v in versions:
            checker.version(v)
        if name is None:
            for token in repo.sessions.abandoned(txn):
                report.notes.append(f"an interrupted ingest (pid {repo.sessions.owner(token)}) "
                                    "holds chunks that the next write frees")
            _check_catalog(repo, txn, report)
            _check_references(repo, txn, report, versions)
    return report


def _check_catalog(repo, txn, report: Report) -> None:
    for n in repo.catalog.artifact_names(txn):
        numbers = [v.number for v in repo.catalog.versions(txn, n)]
        aliases = repo.catalog.aliases(txn, n)
        for alias, number in aliases.items():
            if number not in numbers:
                report.problems.append(f"{n}: alias {alias!r} points at missing version v{number}")
        if numbers and aliases.get(LATEST) != max(numbers):
            report.problems.append(f"{n}: latest is not the newest version v{max(numbers)}")


def _check_references(repo, txn, report: Report, versions) -> None:
    objects, dbs = repo.objects, repo.db.dbs
    expected: Counter = Counter(v.root for v in versions)
    seen: set[bytes] = set()
    chunks: set[bytes] = set()
    stack = [(DIR, v.root) for v in versions] + [(FILE, z) for z in objects.zombies(txn)]
    while stack:
        kind, oid = stack.pop()
        if oid in seen:
            continue
        seen.add(oid)
        try:
            if kind == DIR:
                for e in objects.tree(txn, oid).entries:
                    if e.kind != LINK:
                        expected[e.ref] += 1
                        stack.append((e.kind, e.ref))
            else:
                for cid in objects.file(txn, oid).chunks:
                    expected[cid] += 1
                    chunks.add(cid)
        except ArtfsError:
            continue  # already reported as damaged by the version walk
    for _token, cid in repo.sessions.held(txn):          # an ingest in progress, or abandoned
        expected[cid] += 1
        chunks.add(cid)
    stored: dict[bytes, int] = {}
    with txn.cursor(db=dbs["refs"]) as cur:
        for k, v in cur:
            stored[bytes(k)] = int.from_bytes(v, "big")
    for oid in expected.keys() | stored.keys():
        if expected.get(oid, 0) != stored.get(oid, 0):
            report.problems.append(f"object {oid.hex()}: reference count {stored.get(oid, 0)}, "
                                   f"but {expected.get(oid, 0)} references exist")
    live = seen | chunks
    for oid in objects.store.ids(txn):
        if oid not in live:
            report.problems.append(f"object {oid.hex()} is stored but nothing references it")
    sizes = [n for n in (objects.store.size(txn, c) for c in chunks) if n]
    meta = dbs["meta"]
    stated = (counter(txn, meta, b"chunk_count"), counter(txn, meta, b"chunk_bytes"))
    if stated != (len(sizes), sum(sizes)):
        report.problems.append(f"chunk counters say {stated[0]} chunks / {stated[1]} bytes, "
                               f"the store holds {len(sizes)} / {sum(sizes)}")
