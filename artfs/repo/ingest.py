"""Turning local files into stored objects: the core of ``put`` and of ``commit``.

An ingest has two phases, so memory stays bounded whatever the input size:

1. ``scan`` / ``add_file`` read and chunk the input; every BATCH_BYTES, one catalog transaction
   references the batch's chunks for the ingest session (catalog/sessions.py), and then the object
   store gets the bytes it lacks (reference before bytes: catalog/objects.py). The result is a
   ``Pending`` tree in memory (names, modes and chunk lists only).
2. ``build`` runs inside the caller's final transaction: it creates the file and tree objects,
   which take over the session's references, and ``finish`` drops the session (failing if another
   process released it: then nothing is recorded).

If the ingest fails, leaving the ``with`` block releases the session's references at once; if
the process dies, the kernel drops its session lock and the next writer releases them.

The walk uses directory file descriptors and O_NOFOLLOW throughout, so deep trees are not limited
by PATH_MAX and symlinks inside PATH are stored as symlinks, never followed. FIFOs, sockets and
device nodes are stored as entries (kind, mode, device number), never opened. Names of one inode
(hard links) are read once and stored as a link group (as tar does: the group has the names found
under PATH; links to files outside PATH do not count). ``put`` does not open a file that its files
cache (repo/files_cache.py) knows unchanged: it reuses its file object, read from the cache (no
store read), its chunks held with the batch's (one transaction for all of them) and the object
itself referenced again by ``build`` (nothing encoded or hashed) while it is still referenced.
"""

from __future__ import annotations

import os
import stat
import time
from contextlib import nullcontext
from collections.abc import Callable
from dataclasses import dataclass, field

from ..catalog.objects import DIR, FILE, KIND_OF, LINK, Entry, link_group, rdev_ref
from ..catalog.sessions import Session
from ..errors import Conflict, InvalidInput, StoreError
from ..store.backend import Obj, chunk_maker
from ..store.ids import id_matches
from ..store.segments import Syncing
from ..store.chunker import hashed_chunks
from .files_cache import FilesCache

Warn = Callable[[str], None]
Progress = Callable[[int], None]
BATCH_BYTES = 32 << 20
ADOPT_MIN = 4 << 20   # smaller files are stored by copy (a segment file each would cost more)


@dataclass
class LinkGroup:
    """The names of one inode found by a walk (hard links): the first one's chunks serve all."""

    group: bytes
    names: int = 1


@dataclass
class Pending:
    """A file, directory, symlink or special file read but not yet recorded as an object."""

    name: bytes
    kind: str
    mode: int
    size: int
    mtime_ns: int
    chunks: list[list] = field(default_factory=list)       # FILE: [chunk id, length] each
    children: list["Pending"] = field(default_factory=list)  # DIR
    target: bytes = b""                                       # LINK; SPECIAL: rdev_ref
    link: LinkGroup | None = None                             # FILE with other names
    reference: object = None   # FILE whose bytes stay at their source (repo/references.py)


class Reused(list):
    """The chunk list of a file whose file object was taken from the files cache: ``fid``, or
    None once that object was found deleted and the file read again."""

    fid: bytes | None = None


class Ingest:
    def __init__(self, repo, warn: Warn | None = None, progress: Progress | None = None,
                 session: Session | None = None):
        """SESSION: a session of the caller's to hold the chunks in (a mount's, shared by its
        ingests ahead of commit: staging/precommit.py); by default the ingest makes its own."""
        self.repo, self.warn = repo, warn or (lambda msg: None)
        self.progress = progress or (lambda n: None)
        self.files = 0
        self.bytes = 0
        self._session: Session | None = session
        self._own = session is None
        self.batches: list[int] = []   # the session's batches this ingest recorded
        self._queue: list[tuple[Obj, list]] = []   # (chunk's object, its [id, length] slot)
        self._queued = 0
        self.files_cache: FilesCache | None = None   # put only (scan)
        self._root = ""                              # the path being scanned
        self._reused: list[tuple] = []   # (chunk list, path, rel, stat) taken from the cache, to hold
        self._inodes: dict[tuple[int, int], tuple[Pending, bytes]] = {}   # (dev, ino) -> first name
        self._adopting: list[tuple[str, list]] = []   # (path, [(id, offset, length, SHA-256)])
        self.adopted: list[str] = []   # paths of files the store took in (adopt_files)

    def __enter__(self):
        self.repo.collect_abandoned()
        if self._own:
            self._session = Session(self.repo.path)
        return self

    def __exit__(self, exc_type, exc, tb):
        """On failure give the session's references back now (else the next writer will)."""
        try:
            if exc_type is not None and self.batches:
                token, batches = self._session.token, None if self._own else self.batches
                self.repo.db.write(lambda txn: self.repo.sessions.release(txn, token, batches))
        except Exception:  # noqa: BLE001 - the original error matters more; the next writer retries
            return
        if self._own:
            self._session.end()
        if exc_type is None and self.files_cache is not None:
            try:
                self.files_cache.save()
            except OSError as e:
                self.warn(f"files cache not saved ({e.strerror}): the next put reads every file")

    # phase 1: reading and storing chunks --------------------------------------------------------
    def can_adopt(self, size: int) -> bool:
        """Whether a file of SIZE bytes that the store may own once recorded (a staging data
        file) is taken in whole rather than copied (``add_file`` with ``adopt``)."""
        return size >= ADOPT_MIN and getattr(self.repo.objects.store, "adopts", False)

    def add_file(self, fd: int, size: int, display: str, adopt: bool = False) -> list[list]:
        """Chunk an open file from its start; returns its chunk list (ids filled by flushes).
        ADOPT (``can_adopt``; DISPLAY is then the file's path): its bytes are not queued; its
        chunks are only referenced by the next flush and the file itself is given to the store
        by ``adopt_files``."""
        chunks, located = [], []
        os.lseek(fd, 0, os.SEEK_SET)
        with Syncing(fd) if adopt else nullcontext():   # to disk while it is hashed
            total = self._chunk(fd, size, adopt, chunks, located)
        if total != size:
            raise InvalidInput(f"{display} changed size while being read ({size} -> {total} bytes)")
        if adopt:
            self._adopting.append((display, located))
        self.files += 1
        self.bytes += total
        return chunks

    def _chunk(self, fd: int, size: int, adopt: bool, chunks: list, located: list) -> int:
        """``add_file``'s reading: each chunk's slot into CHUNKS, and queued (with ADOPT, its
        bytes not: its place in the file into LOCATED); returns the bytes read."""
        offset = 0
        for obj, n in hashed_chunks(fd, size, chunk_maker(self.repo.objects.store)):
            slot = [obj.id, n]
            chunks.append(slot)
            if adopt:
                self._queue.append((None, slot))
                located.append((obj.id, offset, n, obj.digest))
            else:
                self._queue.append((obj, slot))
                self._queued += n
            offset += n
            if self._queued >= BATCH_BYTES:
                self.flush()
            self.progress(n)
        return offset

    def take_adopting(self) -> list[tuple[str, list]]:
        """The files ``add_file`` read to adopt and not yet handed over: (path, each chunk's
        (id, offset, length, SHA-256)); this ingest forgets them."""
        adopting, self._adopting = self._adopting, []
        return adopting

    def add_located(self, path: str, located: list) -> None:
        """A file to adopt read ahead by another ingest (``take_adopting``, staging/precommit.py):
        its chunks referenced by the next flush, the file adopted by ``adopt_files``."""
        for cid, _, n, _ in located:
            self._queue.append((None, [cid, n]))
        self._adopting.append((path, located))
        self.files += 1
        self.bytes += sum(n for _, _, n, _ in located)

    def adopt_files(self) -> None:
        """After the last flush (their chunks referenced): each file to adopt is made durable
        and taken in by the store (store/local.py ``adopt``); one the store cannot take (another
        filesystem) has its chunks read again and stored by copy. ``adopted`` lists those taken
        in: the caller must never write them in place again (staging copies such a file first:
        staging/data.py ``unshare``)."""
        self.flush()
        store = self.repo.objects.store
        for path, located in self.take_adopting():
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.fdatasync(fd)
                if store.adopt(path, located):
                    self.adopted.append(path)
                else:
                    self._copy_located(path, fd, located)
            finally:
                os.close(fd)

    def _copy_located(self, path: str, fd: int, located: list) -> None:
        """Store the chunks (id, offset, length, SHA-256) of file PATH, open at FD, by copy, in
        batches (each chunk checked against its id: the file may have changed since)."""
        store, batch, size = self.repo.objects.store, [], 0
        for oid, offset, length, digest in located:
            data = os.pread(fd, length, offset)
            if not id_matches(store.object_id, data, oid):
                raise Conflict(f"{os.fsdecode(path)} changed while being stored; retry")
            batch.append(Obj(oid, digest, data))
            size += length
            if size >= BATCH_BYTES:
                store.put_many(batch)
                batch, size = [], 0
        store.put_many(batch)

    def flush(self) -> None:
        """Reference the queued chunks, and those of the file objects reused from the files cache
        that are still referenced, for the session (one transaction); then store the queued bytes
        and read the reused files whose file object was deleted meanwhile."""
        if not self._queue and not self._reused:
            return
        queue, self._queue, self._queued = self._queue, [], 0
        reused, self._reused = self._reused, []
        batch = self._session.next_batch()
        self.batches.append(batch)
        objects, sessions, token = self.repo.objects, self.repo.sessions, self._session.token
        chunks = [obj for obj, _ in queue if obj is not None]   # (None: a chunk of a file to adopt)
        gone = []

        def action(txn):
            gone.clear()
            held = [(cid, n) for _, (cid, n) in queue]
            for item in reused:
                if objects.refcount(txn, item[0].fid):
                    held.extend((cid, n) for cid, n in item[0])
                else:
                    gone.append(item)
            objects.hold_chunks(txn, held)
            sessions.hold(txn, token, batch, [cid for cid, _ in held])
        self.repo.db.write(action)
        objects.store.put_many(chunks)
        for slots, display, rel, st in gone:
            self.files -= 1
            self.bytes -= st.st_size
            self.files_cache.seen.pop(rel, None)
            slots.fid = None
            slots[:] = self._read(None, os.fsencode(display), display, rel, follow=display == self._root)
        if gone:
            self.flush()

    def scan(self, path: str) -> Pending:
        """Read PATH (a directory, or one file) into a pending root directory."""
        try:
            st = os.stat(path)  # PATH itself may be a symlink the user named on purpose
        except OSError as e:
            raise InvalidInput(f"cannot read {path}: {e.strerror}") from None
        root = Pending(b"", DIR, 0o755, 0, st.st_mtime_ns)
        self.files_cache = FilesCache(self.repo.path, path, self.repo.objects.store.object_id)
        self._root = path
        if stat.S_ISDIR(st.st_mode):
            self._walk(_open(None, os.fsencode(path), path, os.O_DIRECTORY, follow=True), path, root)
        elif stat.S_ISREG(st.st_mode):
            name = os.fsencode(os.path.basename(os.path.normpath(path)))
            chunks = self._regular(None, os.fsencode(path), path, name, st, follow=True)
            root.children = [Pending(name, FILE, stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime_ns,
                                     chunks=chunks)]
        else:
            raise InvalidInput(f"{path} is not a regular file or directory")
        self.flush()
        return root

    def _walk(self, top: int, display: str, root: Pending) -> None:
        """Read the directory open at ``top`` into ``root.children``, depth first with an explicit
        stack (any depth), holding one directory descriptor at a time: a child is opened from its
        parent, and the parent reopened through ``..`` (checked to be the same directory) when
        the child is done. Closes ``top``."""
        fd = top
        try:
            stack = [(display, root, _names(top, display), _ident(top), b"")]
            while True:
                where, node, names, _, rel = stack[-1]
                name = next(names, None)
                if name is None:
                    stack.pop()
                    node.size = len(node.children) if node is not root else 0
                    if not stack:
                        return
                    done, fd = fd, -1
                    fd = _parent(done, stack[-1])
                    continue
                child_display = os.path.join(where, os.fsdecode(name))
                child_rel = rel + b"/" + name if rel else name   # relative to the root
                p, child_fd = self._entry(fd, name, child_display, child_rel)
                if p is not None:
                    node.children.append(p)
                if child_fd is not None:
                    os.close(fd)
                    fd = child_fd
                    stack.append((child_display, p, _names(fd, child_display), _ident(fd), child_rel))
        finally:
            if fd >= 0:
                os.close(fd)

    def _entry(self, dir_fd: int, name: bytes, display: str, rel: bytes) -> tuple[Pending | None, int | None]:
        """The pending node of one directory entry, and an open descriptor when it is a directory."""
        try:
            st = os.lstat(name, dir_fd=dir_fd)
        except OSError as e:
            raise InvalidInput(f"cannot read {display}: {e.strerror}") from None
        p = Pending(name, "", stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime_ns)
        if stat.S_ISLNK(st.st_mode):
            p.kind, p.target = LINK, os.readlink(name, dir_fd=dir_fd)
            p.size = len(p.target)
        elif stat.S_ISREG(st.st_mode) and self._linked(p, st, rel):
            pass
        elif stat.S_ISREG(st.st_mode):
            p.kind, p.chunks = FILE, self._regular(dir_fd, name, display, rel, st)
        elif stat.S_ISDIR(st.st_mode):
            p.kind = DIR
            return p, _open(dir_fd, name, display, os.O_DIRECTORY)
        else:
            p.kind, p.size = KIND_OF[stat.S_IFMT(st.st_mode)], 0
            p.target = rdev_ref(p.kind, st.st_rdev)
        return p, None

    def _regular(self, dir_fd, name: bytes, display: str, rel: bytes, st,
                 follow: bool = False) -> list[list]:
        """The chunk list of a regular file (ST: its lstat; REL: its path in the root): the
        file object's recorded in the files cache when the file is unchanged since (not opened
        then; whether the object is still referenced is checked when its chunks are: flush),
        else read."""
        hit = self.files_cache.lookup(rel, st)
        fid, fobj = hit if hit is not None else (None, None)
        if fid is not None and fobj is None:   # a big file: its object is not in the cache
            with self.repo.db.read() as txn:
                live = self.repo.objects.refcount(txn, fid) > 0
            fobj = self.repo.file(fid) if live else None
        if fobj is None:
            return self._read(dir_fd, name, display, rel, follow)
        slots = Reused([cid, n] for cid, n in zip(fobj.chunks, fobj.lengths))
        slots.fid = fid
        self._reused.append((slots, display, rel, st))
        self.files_cache.keep(rel)
        self.files += 1
        self.bytes += st.st_size
        self.progress(st.st_size)
        return slots

    def _read(self, dir_fd, name: bytes, display: str, rel: bytes, follow: bool = False) -> list[list]:
        opened = time.time_ns()
        fd = _open(dir_fd, name, display, 0, follow)
        try:
            st = os.fstat(fd)
            chunks = self.add_file(fd, st.st_size, display)
        finally:
            os.close(fd)
        self.files_cache.record(rel, st, opened, chunks)
        return chunks

    def _linked(self, p: Pending, st: os.stat_result, rel: bytes) -> bool:
        """Whether ``p`` is another name of a file read already: then it shares its chunks and
        link group. Else a file with more names is remembered as the first of its inode."""
        if st.st_nlink < 2:
            return False
        first, where = self._inodes.setdefault((st.st_dev, st.st_ino), (p, rel))
        if first is p:
            return False
        if first.link is None:
            first.link = LinkGroup(link_group(where))
        first.link.names += 1
        p.kind, p.chunks, p.size, p.link = FILE, first.chunks, first.size, first.link
        self.files += 1
        self.bytes += p.size
        return True

    # phase 2: inside the final transaction ------------------------------------------------------
    def file_object(self, txn, chunks: list[list]) -> bytes:
        """The file object of a chunk list from phase 1 (taking over the session's references).
        One taken from the files cache and still referenced is referenced once more as it is
        (the session's references to its chunks given back): what put_file would do, without
        encoding and hashing it again."""
        objects, fid = self.repo.objects, getattr(chunks, "fid", None)
        if fid is None or not objects.refcount(txn, fid):
            return objects.put_file(txn, [(cid, n) for cid, n in chunks])
        objects.incref(txn, fid)
        for cid, _ in chunks:
            objects.decref_chunk(txn, cid)
        return fid

    def build(self, txn, root: Pending) -> Entry:
        """The entry of a pending directory, its objects created bottom-up (any depth), with one
        reference held."""
        objects = self.repo.objects
        fids: dict[int, bytes] = {}   # id(link group) -> its file object, referenced once per name
        stack = [(root, iter(root.children), [])]
        while True:
            node, children, built = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                done = Entry(node.name, DIR, node.mode, node.size, node.mtime_ns, objects.put_tree(txn, built))
                if not stack:
                    return done
                stack[-1][2].append(done)
            elif child.kind == DIR:
                stack.append((child, iter(child.children), []))
            elif child.reference is not None:
                ref = objects.put_file_object(txn, child.reference)
                built.append(Entry(child.name, FILE, child.mode, child.size, child.mtime_ns, ref))
            elif child.link is None:
                ref = self.file_object(txn, child.chunks) if child.kind == FILE else child.target
                built.append(Entry(child.name, child.kind, child.mode, child.size, child.mtime_ns, ref))
            else:
                fid = fids.get(id(child.link))
                if fid is None:
                    fid = fids[id(child.link)] = self.file_object(txn, child.chunks)
                else:
                    objects.incref(txn, fid)
                built.append(Entry(child.name, FILE, child.mode, child.size, child.mtime_ns, fid,
                                   child.link.group, child.link.names))

    def finish(self, txn) -> None:
        """Drop the session in the final transaction: its references now belong to the objects.
        If the session lost records (released by another process), nothing may be recorded."""
        if self.repo.sessions.close(txn, self._session.token) != len(self.batches):
            raise StoreError("this ingest's chunk references were released by another process while "
                             "it ran; nothing was recorded: run the command again")


def _names(fd: int, display: str):
    try:
        return iter(sorted(os.fsencode(n) for n in os.listdir(fd)))
    except OSError as e:
        raise InvalidInput(f"cannot list {display}: {e.strerror}") from None


def _ident(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _parent(fd: int, frame) -> int:
    """Close the finished directory ``fd`` and reopen its parent (the frame now on top)."""
    try:
        parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)
    if _ident(parent) != frame[3]:
        os.close(parent)
        raise InvalidInput(f"{frame[0]} was moved while being read")
    return parent


def _open(dir_fd, name, display: str, flags: int, follow: bool = False) -> int:
    flags |= os.O_RDONLY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as e:
        raise InvalidInput(f"cannot read {display}: {e.strerror}") from None
