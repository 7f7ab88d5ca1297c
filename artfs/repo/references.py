"""Reference files: versions whose files stay where they are (``put --reference URL``).

A reference is a file entry whose object is a ``Reference`` (catalog/objects.py) instead of a
chunk list: the file's URL and how to reach it (store/sources.py: ``file://``, ``s3://``,
``https://``), its size, what the source reported at put (ETag, version id, mtime) and, unless put
ran with ``checksum=False``, the SHA-256 of the whole file and of each block (1 MiB, doubled for
files over 16 GiB so a reference holds at most 16,384 block hashes). No bytes are stored (with
``cache=True`` put also keeps them, as ordinary chunks of the reference, and reads use those).
References are content-addressed and refcounted like file objects, so versions, aliases, diff, the
"no changes" rule, push and pull treat them as files.

Reading (the mount, ``get``, ``cat``, staging's copy-up: all through ``Repo.read``) fetches the
aligned blocks a read covers with one ranged request, checks each against its SHA-256 and keeps the
last 64 MiB of checked blocks in memory (by their hash). Without a checksum a read asks the source
for exactly the content put saw (S3: the version id, else If-Match on the ETag; HTTP: If-Match and
the reported size, ETag and Last-Modified; a file: its size and mtime before and after). A source
that changed or vanished is CorruptData naming the URL (EIO in the mount, exit 7): never other
bytes. ``check`` is what ``verify`` asks: the whole file re-hashed (or, without a checksum, the
source's report compared).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import quote, urlparse

from ..catalog.objects import DIR, FILE, Reference
from ..errors import CorruptData, InvalidInput, NotFound
from ..store.sources import Changed, Found, Location, expected, source
from .ingest import Pending

BLOCK = 1 << 20
MAX_BLOCKS = 16384
CACHE_BYTES = 64 << 20


@dataclass(frozen=True)
class Options:
    """How ``put --reference`` reaches the source and what it records."""

    location: Location
    checksum: bool = True
    cache: bool = False


def options(url: str, *, checksum: bool = True, cache: bool = False, endpoint: str | None = None,
            region: str | None = None, ca_bundle: str | None = None, allow_http: bool = False) -> Options:
    ca_bundle = os.path.abspath(ca_bundle) if ca_bundle else None   # read later, from anywhere
    return Options(Location(urlparse(url).scheme, endpoint, region, ca_bundle, allow_http), checksum, cache)


def as_url(path_or_url: str) -> str:
    """A URL; a plain path is a ``file://`` URL of its absolute path."""
    if "://" in path_or_url:
        return path_or_url
    return "file://" + quote(os.path.abspath(path_or_url))


def block_size(size: int) -> int:
    block = BLOCK
    while size > block * MAX_BLOCKS:
        block *= 2
    return block


# put ---------------------------------------------------------------------------------------------
def scan(ingest, url: str, options: Options, prior: dict[str, Reference]) -> Pending:
    """The pending root of URL's objects (one file, or every file under a directory or prefix),
    each a reference; PRIOR: the latest version's references by URL, reused when the bytes (the
    checksum) are the same, so a re-put of unchanged files makes no version."""
    reader = source(options.location)
    try:
        found = reader.list(url)
    except NotFound as e:
        raise InvalidInput(f"cannot reference {url}: {e}") from None
    root = Pending(b"", DIR, 0o755, 0, 0)
    dirs = {(): root}
    for f in found:
        name = f.name or os.path.basename(f.url.rstrip("/").split("://", 1)[1]) or "index"
        parent = _directory(dirs, name.split("/")[:-1])
        p = Pending(os.fsencode(name.split("/")[-1]), FILE, f.mode, f.size, f.mtime_ns or 0)
        p.reference = _reference(ingest, reader, f, options)
        old = prior.get(f.url)
        if old is not None and _same(old, p.reference):
            p.reference = old
        parent.children.append(p)
    _sizes(root)
    ingest.flush()   # the chunks kept with cache: referenced for the session, then stored
    return root


def _directory(dirs: dict[tuple, Pending], parts: list[str]) -> Pending:
    """The pending directory at path PARTS, made with its missing ancestors; DIRS holds those
    made so far by path (from the root, ``()``), so each file finds its own in one look-up."""
    node = dirs.get(tuple(parts))
    if node is not None:
        return node
    node = dirs[()]
    for i, part in enumerate(parts):
        child = dirs.get(tuple(parts[:i + 1]))
        if child is None:
            child = dirs[tuple(parts[:i + 1])] = Pending(os.fsencode(part), DIR, 0o755, 0, 0)
            node.children.append(child)
        node = child
    return node


def _sizes(node: Pending) -> None:
    stack = [node]
    while stack:
        n = stack.pop()
        n.children.sort(key=lambda c: c.name)
        if n is not node:
            n.size = len(n.children)
        stack.extend(c for c in n.children if c.kind == DIR)


def _reference(ingest, reader, f: Found, options: Options) -> Reference:
    record = {"url": f.url, "size": f.size, "validators": f.validators(), **options.location.record()}
    if not (options.checksum or options.cache):
        ingest.files += 1
        ingest.bytes += f.size
        return Reference(record)
    bsize = block_size(f.size)
    blocks, whole, pending, total, chunks = [], hashlib.sha256(), bytearray(), 0, []
    spool = tempfile.TemporaryFile(dir=ingest.repo.path) if options.cache else None
    try:
        try:
            for piece in reader.stream(f.url, f):
                total += len(piece)
                if spool is not None:
                    spool.write(piece)
                if options.checksum:
                    whole.update(piece)
                    pending += piece
                    while len(pending) >= bsize:
                        blocks.append(hashlib.sha256(pending[:bsize]).digest())
                        del pending[:bsize]
        except (Changed, NotFound):
            raise InvalidInput(f"{f.url} changed while being read") from None
        if total != f.size:
            raise InvalidInput(f"{f.url} changed while being read ({f.size} -> {total} bytes)")
        if pending:
            blocks.append(hashlib.sha256(pending).digest())
        if spool is not None:
            spool.flush()
            chunks = [(c, n) for c, n in ingest.add_file(spool.fileno(), f.size, f.url)]
        else:
            ingest.files += 1
            ingest.bytes += f.size
            ingest.progress(f.size)
    finally:
        if spool is not None:
            spool.close()
    if options.checksum:
        record["sha256"] = whole.hexdigest()
        return Reference(record, bsize, blocks, chunks)
    return Reference(record, chunks=chunks)


def _same(old: Reference, new: Reference) -> bool:
    """Whether NEW is OLD seen again: the same bytes (checksums), source and caching."""
    if not (checksummed(old) and checksummed(new)):
        return False
    strip = lambda r: {k: v for k, v in r.record.items() if k != "validators"}   # noqa: E731
    return (strip(old), old.block_size, old.blocks, bool(old.chunks)) == \
        (strip(new), new.block_size, new.blocks, bool(new.chunks))


def prior_references(repo, root: bytes | None) -> dict[str, Reference]:
    """The references of the version with root ROOT (None: none), by URL; only a put with a
    checksum reuses one (``_same``), so only it asks."""
    out, stack = {}, [root] if root else []
    while stack:
        for e in repo.tree(stack.pop()).entries:
            if e.kind == DIR:
                stack.append(e.ref)
            elif e.kind == FILE:
                fobj = repo.file(e.ref)
                if isinstance(fobj, Reference):
                    out[fobj.record["url"]] = fobj
    return out


# reading -----------------------------------------------------------------------------------------
def checksummed(ref: Reference) -> bool:
    """Whether put recorded the SHA-256 (and block hashes: none for an empty file)."""
    return "sha256" in ref.record


def _location(ref: Reference) -> Location:
    return Location.of(ref.record["url"], ref.record)


def _expect(ref: Reference) -> Found:
    """What a read asks the source for: with a checksum only the size and a pinned S3 version
    (the blocks' hashes decide the rest), else everything put saw."""
    validators = ref.record.get("validators", {})
    if checksummed(ref):
        validators = {k: v for k, v in validators.items() if k == "version"}
    return expected(ref.record["url"], ref.size, validators)


def changed(url: str) -> CorruptData:
    return CorruptData(f"reference source changed since put: {url} (not the bytes put recorded; "
                       "artfs verify lists every such file)")


def gone(url: str) -> CorruptData:
    return CorruptData(f"reference source is gone: {url}")


class Reader:
    """Reads of reference files for one Repo: the sources' clients and the checked blocks."""

    def __init__(self, cache_bytes: int = CACHE_BYTES):
        self._sources: dict[Location, object] = {}
        self._blocks: OrderedDict[bytes, bytes] = OrderedDict()
        self._used, self._limit = 0, cache_bytes
        self._lock = threading.Lock()

    def source(self, ref: Reference):
        location = _location(ref)
        with self._lock:
            reader = self._sources.get(location)
            if reader is None:
                reader = self._sources[location] = source(location)
            return reader

    def _fetch(self, ref: Reference, start: int, end: int) -> bytes:
        url = ref.record["url"]
        try:
            data = self.source(ref).read(url, start, end, _expect(ref))
        except Changed:
            raise changed(url) from None
        except NotFound:
            raise gone(url) from None
        if len(data) != end - start:
            raise changed(url)
        return data

    def _cached(self, digest: bytes) -> bytes | None:
        with self._lock:
            data = self._blocks.get(digest)
            if data is not None:
                self._blocks.move_to_end(digest)
            return data

    def _keep(self, digest: bytes, data: bytes) -> None:
        with self._lock:
            if digest in self._blocks:
                return
            self._blocks[digest] = data
            self._used += len(data)
            while self._used > self._limit and len(self._blocks) > 1:
                self._used -= len(self._blocks.popitem(last=False)[1])

    def read(self, ref: Reference, offset: int, size: int) -> bytes:
        """Bytes [offset, offset+size) of a reference, checked (CorruptData naming the URL if not)."""
        end = min(offset + size, ref.size)
        if offset >= end:
            return b""
        if not checksummed(ref):
            return self._fetch(ref, offset, end)
        bsize = ref.block_size
        first, last = offset // bsize, (end - 1) // bsize
        blocks = {i: self._cached(ref.blocks[i]) for i in range(first, last + 1)}
        missing = [i for i, data in blocks.items() if data is None]
        if missing:
            start, stop = missing[0] * bsize, min((missing[-1] + 1) * bsize, ref.size)
            data = self._fetch(ref, start, stop)
            for i in range(missing[0], missing[-1] + 1):
                block = data[(i - missing[0]) * bsize:(i - missing[0] + 1) * bsize]
                if hashlib.sha256(block).digest() != ref.blocks[i]:
                    raise changed(ref.record["url"])
                self._keep(ref.blocks[i], block)
                blocks[i] = block
        joined = b"".join(blocks[i] for i in range(first, last + 1))
        return joined[offset - first * bsize:end - first * bsize]

    def read_nowait(self, ref: Reference, offset: int, size: int) -> bytes | None:
        """``read`` when every block it needs is in memory, else None."""
        end = min(offset + size, ref.size)
        if offset >= end:
            return b""
        if not checksummed(ref):
            return None
        bsize = ref.block_size
        first, last = offset // bsize, (end - 1) // bsize
        blocks = [self._cached(ref.blocks[i]) for i in range(first, last + 1)]
        if any(b is None for b in blocks):
            return None
        return b"".join(blocks)[offset - first * bsize:end - first * bsize]

    def check(self, ref: Reference) -> str | None:
        """What is wrong with a reference's source now (verify), or None: with a checksum the
        whole file is read and re-hashed, without one the source's report is compared."""
        url, reader = ref.record["url"], self.source(ref)
        try:
            if not checksummed(ref):
                now = reader.list(url)
                if len(now) != 1 or now[0].differs(_expect(ref)):
                    return f"source changed since put: {url}"
                return None
            whole, total = hashlib.sha256(), 0
            for piece in reader.stream(url, _expect(ref)):
                whole.update(piece)
                total += len(piece)
        except Changed:
            return f"source changed since put: {url}"
        except NotFound:
            return f"source is gone: {url}"
        if total != ref.size or whole.hexdigest() != ref.record["sha256"]:
            return f"source changed since put: {url} (its SHA-256 differs from the one recorded)"
        return None
