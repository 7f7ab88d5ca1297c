"""``verify``: re-hash every object a version uses and check every reference.

Reference files (repo/references.py) are read again at their source: bytes that no longer match
the checksum recorded at put (or, without one, what the source reported then), or a source that is
gone, is a problem (exit 7), naming the path and the URL. A reference put with ``cache`` is read
from its chunks, so those are checked, not its source.

Every object is checked by its id (xxh3-128) and its SHA-256 digest (store/ids.py). For the whole
store it also recomputes every reference count from the version roots, the parked zombies and the
ingest sessions and compares it with the stored counts, finds objects nothing references, checks
the chunk byte counters, and checks that aliases point at versions and ``latest`` at the newest.

All walks use explicit stacks (any depth) and run outside catalog transactions: a verify of a huge
store never holds one snapshot while it walks, so writers keep reusing freed pages meanwhile. The
reference check copies what it compares from one catalog transaction (the counts against the roots,
zombies and held chunks of the same moment); a walk that then finds an object gone (a version
another process deleted since) is done again from a newer snapshot, at most ``ATTEMPTS`` times.
A version whose objects are gone because it was deleted during the verify is not a problem.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..catalog.db import counter
from ..catalog.objects import DIR, FILE
from ..errors import ArtfsError, CorruptData
from ..names import LATEST
from .diff import join_path

BATCH = 256   # objects checked per object-store call
ATTEMPTS = 5  # reference checks from a newer snapshot when objects went away under the walk


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
    def __init__(self, repo, report: Report, progress):
        self.repo, self.report, self.progress = repo, report, progress
        self.objects = repo.objects
        self.status: dict[bytes, str | None] = {}    # object id -> None (ok) or the problem
        self.tree_ok: dict[bytes, bool] = {}
        self.drift: dict[bytes, str | None] = {}     # reference id -> what changed at its source

    def check(self, ids) -> None:
        """Deep-check the ids not checked yet, BATCH at a time."""
        todo = list(dict.fromkeys(i for i in ids if i not in self.status))
        store = self.objects.store
        for i in range(0, len(todo), BATCH):
            batch = todo[i:i + BATCH]
            for oid, problem, size in zip(batch, store.check(batch), store.sizes(batch)):
                problem = problem or (size is None and "missing")   # deleted between the two calls
                self.status[oid] = problem
                self.report.objects += 1
                if problem is None:
                    self.report.bytes += size
                    self.progress(size)

    def file_ok(self, fid: bytes) -> bool:
        self.check([fid])
        if self.status[fid]:
            return False
        fobj = self.objects.file(fid)
        self.check(fobj.chunks)
        if fobj.at_source and fid not in self.drift:   # its source, read again
            self.drift[fid] = self.repo.references.check(fobj)
        return all(self.status[c] is None for c in fobj.chunks) and not self.drift.get(fid)

    def tree(self, root: bytes) -> bool:
        """Whether a tree and everything under it is intact (post-order, explicit stack)."""
        stack, refs = [root], {}   # refs: what a tree object references (a paged one: pages)
        while stack:
            tid = stack[-1]
            if tid in self.tree_ok:
                stack.pop()
                continue
            if tid not in refs:
                self.check([tid])
                if self.status[tid]:
                    self.tree_ok[tid] = False
                    continue
                refs[tid] = self.objects.tree(tid).refs()
                stack.extend(ref for kind, ref in refs[tid] if kind == DIR and ref not in self.tree_ok)
                continue
            stack.pop()
            own = refs.pop(tid)
            self.check([ref for kind, ref in own if kind == FILE])
            ok = True
            for kind, ref in own:
                ok &= self.tree_ok[ref] if kind == DIR else self.file_ok(ref)
            self.tree_ok[tid] = ok
        return self.tree_ok[root]

    def version(self, v) -> None:
        """Check V; a version deleted while it was checked (its objects go) is no problem."""
        try:
            if self.tree(v.root):
                return
            bad = sorted(self.bad_paths(v.root))
        except CorruptData:      # an object gone after its check: only a version deleted meanwhile
            if self._still_there(v):
                raise
            return
        if self._still_there(v):
            self.report.problems += [f"{v.name}:{v.label} {path}: {problem}" for path, problem in bad]

    def _still_there(self, v) -> bool:
        """Whether V is still a version with that root (not deleted while it was checked)."""
        try:
            return self.repo.resolve(v.name, v.label).root == v.root
        except ArtfsError:
            return False

    def bad_paths(self, root: bytes):
        """(path, problem) for every damaged object under a damaged tree."""
        stack = [(root, "")]
        while stack:
            tid, prefix = stack.pop()
            if self.status.get(tid):
                yield (prefix or "/"), f"tree {tid.hex()} is {self.status[tid]}"
                continue
            tree = self.objects.tree(tid)
            for p in tree.pages:
                if self.status.get(p.tid):
                    yield (prefix or "/"), f"tree page {p.tid.hex()} (from {p.first!r}) is {self.status[p.tid]}"
            entries = tree.entries if not tree.pages else [
                e for p in tree.pages if not self.status.get(p.tid) for e in tree.page(p).entries]
            for e in entries:
                path = join_path(prefix, e.name)
                if e.kind == DIR and not self.tree_ok.get(e.ref, True):
                    stack.append((e.ref, path))
                elif e.kind == FILE:
                    if self.status.get(e.ref):
                        yield path, f"file object {e.ref.hex()} is {self.status[e.ref]}"
                        continue
                    if self.drift.get(e.ref):
                        yield path, f"reference {self.drift[e.ref]}"
                    for cid in self.objects.file(e.ref).chunks:
                        if self.status.get(cid):
                            yield path, f"chunk {cid.hex()} is {self.status[cid]}"


def verify(repo, name: str | None = None, ref: str | None = None, progress=None) -> Report:
    report = Report()
    progress = progress or (lambda n: None)
    checker = _Checker(repo, report, progress)
    if name is not None and ref is not None:
        versions = [repo.resolve(name, ref)]
    elif name is not None:
        versions = repo.versions(name)
    else:
        versions = [v for n in repo.artifacts() for v in repo.versions(n)]
    for v in versions:
        checker.version(v)
    if name is None:
        with repo.db.read() as txn:
            for token in repo.sessions.abandoned(txn):
                report.notes.append(f"an interrupted ingest (session {token.hex()[:12]}) holds chunks "
                                    "that the next write frees")
            _check_catalog(repo, txn, report)
        _check_references(repo, report)
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


def _catalog_snapshot(repo):
    """What the reference check compares, read in one catalog transaction: the roots of every
    version, the zombies, the chunks ingest sessions hold, the stored counts, the trash and the
    chunk counters. (Read in several, a daemon writing meanwhile - storing a closed staging file,
    giving its chunks back - shows as counts that do not match.)"""
    objects = repo.objects
    with repo.db.read() as txn:
        roots = [v.root for n in repo.catalog.artifact_names(txn) for v in repo.catalog.versions(txn, n)]
        zombies = objects.zombies(txn)
        held = [cid for _token, cid in repo.sessions.held(txn)]
        with txn.cursor(db=repo.db.dbs["refs"]) as cur:
            stored = {bytes(k): objects.decode_ref(v) for k, v in cur}
        with txn.cursor(db=repo.db.dbs["trash"]) as cur:
            trash = {bytes(k) for k in cur.iternext(keys=True, values=False)}
        meta = repo.db.dbs["meta"]
        stated = (counter(txn, meta, b"chunk_count"), counter(txn, meta, b"chunk_bytes"))
    return roots, zombies, held, stored, trash, stated


def _check_references(repo, report: Report) -> None:
    for _ in range(ATTEMPTS):
        problems, notes, raced = _reference_problems(repo)
        if not raced:
            break
    report.problems += problems
    report.notes += notes


def _reference_problems(repo) -> tuple[list[str], list[str], bool]:
    """(problems, notes, whether an object of the snapshot was gone when the walk read it)."""
    objects = repo.objects
    problems, notes, gone = [], [], []
    roots, zombies, held, stored, trash, stated = _catalog_snapshot(repo)
    expected: Counter = Counter(roots)
    seen: set[bytes] = set()
    chunks: set[bytes] = set()
    stack = [(DIR, root) for root in roots] + [(FILE, z) for z in zombies]
    while stack:
        kind, oid = stack.pop()
        if oid in seen:
            continue
        seen.add(oid)
        try:
            if kind == DIR:
                for ref in objects.tree(oid).refs():
                    expected[ref[1]] += 1
                    stack.append(ref)
            else:
                for cid in objects.file(oid).chunks:
                    expected[cid] += 1
                    chunks.add(cid)
        except ArtfsError:    # damaged (the version walk reports it), or deleted since the snapshot
            gone.append(oid)
            continue
    for cid in held:                  # an ingest in progress, or abandoned
        expected[cid] += 1
        chunks.add(cid)
    for oid in expected.keys() | stored.keys():
        if expected.get(oid, 0) != stored.get(oid, (0, 0))[0]:
            problems.append(f"object {oid.hex()}: reference count {stored.get(oid, (0, 0))[0]}, "
                            f"but {expected.get(oid, 0)} references exist")
    for oid in trash & stored.keys():
        problems.append(f"object {oid.hex()} is referenced but waits in the trash")
    live = seen | chunks
    orphans = [oid for oid in objects.store.ids() if oid not in live and oid not in trash]
    if orphans:
        notes.append(f"{len(orphans)} objects are stored but unreferenced (left by an interrupted "
                     "write); artfs compact removes them")
    sizes = [stored[c][1] for c in chunks if c in stored]
    if stated != (len(sizes), sum(sizes)):
        problems.append(f"chunk counters say {stated[0]} chunks / {stated[1]} bytes, "
                        f"the references hold {len(sizes)} / {sum(sizes)}")
    with repo.db.read() as txn:       # deleted since the snapshot: no longer referenced now
        raced = any(objects.refcount(txn, oid) == 0 for oid in gone)
    return problems, notes, raced
