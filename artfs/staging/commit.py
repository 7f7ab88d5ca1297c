"""Turning staging into the next version, and creating an empty artifact.

A commit is one write transaction: modified files are chunked and stored, unchanged files and
unchanged subtrees are reused by id (one more reference each, nothing re-read or re-hashed), trees
are rebuilt bottom-up only along the changed paths (and of a large, paged directory only the
pages holding a changed name), the version is recorded, and the staging index
is cleared. A crash at any instant leaves either the old staging or the new version with a clean
staging. The data files of the committed staging are deleted after the transaction; a crash in
between leaves stray data files that the next Staging open, commit or reset deletes.
"""

from __future__ import annotations

import os
from dataclasses import replace

from ..catalog.objects import DIR, FILE, Entry
from ..catalog.staging_index import ROOT, StagingIndex, staging_dir
from ..errors import Conflict, CorruptData, Exists
from ..repo.ingest import Ingest
from ..names import LATEST, check_alias, check_artifact, parse_duration
from ..catalog.versions import check_type
from ..repo.facade import Repo, check_metadata
from ..repo.lineage import producer as this_process
from .overlay import Staging
from .changes import changes
from .data import DataFiles, MissingDataFile


def commit(repo: Repo, name: str, *, aliases=(), message: str = "", metadata: dict | None = None,
           type: str | None = None, producer: dict | None = None, ttl=None, progress=None,
           force: bool = False, precommit=None):
    """Make staging of NAME its next version; returns (version, created).

    created=False means no changes: the content equals latest (staging had no changes, or its
    changes cancel out); then the aliases are set on latest, which is returned. An artifact without
    versions whose staging is empty has nothing to commit: (None, False), no empty v0 is made.
    Staging made on an older base while latest moved commits that base plus its changes (the
    last writer wins). Afterwards staging shows the new latest with nothing pending. PRODUCER is
    who asked (repo/lineage.py; default: this process), TTL when the version expires (gc). TYPE
    must be the artifact's, unless it never had a version (made by mkdir): then it takes TYPE.
    Files that were open for writing when their mount died (Staging.interrupted) may be short:
    the commit is refused (Conflict) naming them, unless FORCE. PRECOMMIT: the mount's files
    stored ahead (staging/precommit.py), whose chunk lists are taken instead of reading the files.

    Modified files are chunked and their chunks stored first, in bounded transactions held by an
    ingest session (memory stays bounded); then one transaction builds the trees, records the
    version and clears staging. A caller on an event loop should run this in a worker thread,
    with staging writes paused (a data file that changes in between makes the commit fail).
    """
    check_artifact(name)
    aliases = [check_alias(a) for a in aliases]
    metadata = check_metadata(metadata)
    ttl = parse_duration(ttl, "--ttl") if ttl is not None else None
    producer = producer if producer is not None else this_process()
    with repo.db.read() as txn:   # a wrong type fails before any staging file is read
        check_type(name, repo.catalog.require_artifact(txn, name), type)
    staging = Staging(repo, name)
    interrupted = [] if force else staging.interrupted()
    if interrupted:
        more = f" and {len(interrupted) - 1} more" if len(interrupted) > 1 else ""
        raise Conflict(f"cannot commit {name}: staging/{interrupted[0]}{more} was open for writing "
                       "when its mount died and may be incomplete (artfs status lists it); check "
                       "it, then commit --force, or reset")
    with Ingest(repo, progress=progress) as ingest:
        chunked, stored = _chunk_local_files(staging, ingest, precommit)

        def action(txn):
            if type and repo.catalog.artifact(txn, name) is not None:   # may take TYPE (see above)
                repo.catalog.ensure_artifact(txn, name, type)
            result = _commit(staging, txn, ingest, dict(chunked), aliases, message, metadata,
                             dict(producer=producer, ttl=ttl))
            ingest.finish(txn)
            if stored:
                precommit.hand_over(txn, stored.values())
            return result
        result = repo.db.write(action)
    if stored:
        precommit.used(name, stored)
    staging.clean_data()
    if ingest.adopted:   # the store's links are the only ones now: punch what they duplicate
        repo.objects.store.settle()
    return result


def _chunk_local_files(staging: Staging, ingest: Ingest, pre) -> tuple[dict[int, tuple], dict]:
    """Phase 1: chunk every staging data file; ino -> (chunk list, size, mtime_ns). A file that
    the mount stored ahead (PRE, staging/precommit.py) and that is unchanged since is not read:
    its chunk list is taken from its record (ino -> record, the second result, when its chunks
    were stored by copy). A big data file is not copied into the store: the store takes the
    file itself in (repo/ingest.py ``adopt_files``; the commit removes staging's name of it, and
    until then staging never writes it in place: staging/data.py ``unshare``)."""
    with staging.repo.db.read() as txn:
        inos = sorted(staging.index.local_inos(txn))
    chunked, stored = {}, {}
    for ino in inos:
        path = staging.files.path(ino)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise CorruptData(f"staging data file {path} is missing") from None
        try:
            st = os.fstat(fd)
            rec = pre.lookup(staging.name, ino, st) if pre is not None else None
            if rec is not None and rec.located is not None:   # read ahead, to adopt
                ingest.add_located(path, rec.located)
                chunks = rec.chunks
                ingest.progress(st.st_size)
            elif rec is not None:
                stored[ino] = rec
                chunks = rec.chunks   # read only from here on
                ingest.progress(st.st_size)
            else:
                chunks = ingest.add_file(fd, st.st_size, path, adopt=ingest.can_adopt(st.st_size))
            chunked[ino] = (chunks, st.st_size, st.st_mtime_ns)
        finally:
            os.close(fd)
    ingest.adopt_files()
    return chunked, stored


def staged_bytes(repo: Repo, name: str) -> int:
    """Bytes a commit of NAME reads and chunks: the sizes of its staging data files. Read-only (it
    opens no Staging, which would clean data files), so safe while a daemon serves the store."""
    files = DataFiles(staging_dir(repo.path, check_artifact(name)))
    with repo.db.read() as txn:
        inos = StagingIndex(repo.db.dbs, name).local_inos(txn)
    total = 0
    for ino in inos:
        try:
            total += files.stat(ino).st_size
        except MissingDataFile:   # committed or reset meanwhile
            continue
    return total


def create_artifact(repo: Repo, name: str, type: str | None = None) -> None:
    """A new artifact without versions (``mkdir MOUNT/NAME``); Exists if NAME is taken."""
    check_artifact(name)

    def action(txn):
        if repo.catalog.artifact(txn, name) is not None:
            raise Exists(f"artifact {name!r} already exists")
        repo.catalog.ensure_artifact(txn, name, type)
    repo.db.write(action)


def _commit(staging: Staging, txn, ingest: Ingest, chunked: dict, aliases, message, metadata, record):
    repo, name = staging.repo, staging.name
    base = staging.base(txn)
    root = staging.resolve(txn, base, ROOT)
    tree = _Builder(staging, txn, base, ingest, chunked).root(root) if root.stored or base.root else None
    for chunks, _, _ in chunked.values():   # data files of nodes no longer in staging
        for cid, _ in chunks:
            repo.objects.decref_chunk(txn, cid)
    if tree is None:
        return None, False
    files, size = _totals(staging, txn, base)
    staging.index.clear(txn)
    if tree.size == 0 and LATEST not in repo.catalog.aliases(txn, name):
        repo.objects.decref_tree(txn, tree.ref)
        return None, False
    return repo.add_version(txn, name, tree.ref, files, size, aliases=aliases, message=message,
                            metadata=metadata, **record)


def _totals(staging: Staging, txn, base) -> tuple[int, int]:
    """Files and bytes of the new version: the base's, corrected by what changed."""
    files = size = 0
    if base.number is not None:
        v = staging.repo.catalog.version(txn, staging.name, base.number)
        files, size = v.files, v.bytes
    for _, old, new in changes(staging, txn, base):
        if old is not None and old.kind == FILE:
            files, size = files - 1, size - old.size
        if new is not None and new.kind == FILE:
            files, size = files + 1, size + staging.sentry(new).size
    return files, size


class _Builder:
    """Stores what staging changed, inside the commit transaction, and reuses the rest."""

    def __init__(self, staging: Staging, txn, base, ingest: Ingest, chunked: dict):
        self.staging, self.txn, self.base = staging, txn, base
        self.objects = staging.repo.objects
        self.ingest, self.chunked = ingest, chunked
        self.linked: dict[int, Entry] = {}   # ino -> entry of its first name (hard links)

    def root(self, root) -> Entry:
        """The root's entry, with one reference held. Recorded directories are rebuilt bottom-up
        with an explicit stack (any depth works) from their origin tree and the names their
        overlay lists (catalog/objects.py edit_tree: the rest of a large directory is reused
        by page); everything else is stored or reused as is."""
        if not root.stored:
            return self._leaf(root)
        stack = [self._frame(root)]
        while True:
            node, pending, changed = stack[-1]
            name, child = next(pending, (None, None))
            if name is None:
                stack.pop()
                tid, count, subdirs = self.objects.edit_tree(self.txn, node.ref or None, changed)
                done = Entry(node.name, DIR, node.mode, count, node.mtime_ns, tid, subdirs=subdirs)
                if not stack:
                    return done
                stack[-1][2][done.name] = done
            elif child is None:   # a whiteout: removed
                changed[name] = None
            elif child.kind == DIR and child.stored:
                stack.append(self._frame(child))
            else:
                changed[name] = self._leaf(child)

    def _frame(self, directory):
        """A directory to rebuild, its overlay's (name, node or None) to visit, and what they become."""
        names = [name for name, _ in self.staging.index.dirents(self.txn, directory.ino)]
        pending = ((n, self.staging.child(self.txn, self.base, directory, n)) for n in names)
        return directory, pending, {}

    def _leaf(self, node) -> Entry:
        if node.local:
            return self._local_file(node)
        e = Entry(node.name, node.kind, node.mode, node.size, node.mtime_ns, node.ref, node.group,
                  node.nlink)
        self.objects.hold_entry(self.txn, e)
        return e

    def _local_file(self, node) -> Entry:
        """A modified file from its phase-1 chunk list (consumed here, so leftovers are known);
        the other names of a hard-linked one reference the file object its first name made."""
        first = self.linked.get(node.ino)
        if first is not None:
            self.objects.incref(self.txn, first.ref)
            return replace(first, name=node.name)
        path = self.staging.files.path(node.ino)
        try:
            chunks, size, mtime_ns = self.chunked.pop(node.ino)
            st = os.stat(path)
        except (KeyError, FileNotFoundError):
            raise Conflict(f"staging file {path} appeared or vanished during the commit; retry") from None
        if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
            raise Conflict(f"staging file {path} changed during the commit; retry")
        fid = self.ingest.file_object(self.txn, chunks)
        e = self.linked[node.ino] = Entry(node.name, FILE, node.mode, size, mtime_ns, fid,
                                          node.group, node.nlink)
        return e
