"""The lazy object store: local objects first, then the chunk cache, then the remote.

Every store is opened through this wrapper (repo/facade.py); while no remote is bound it is the
local store plus one failed lookup on a miss. With a remote bound (``STORE/remotes.json``: the one
named ``origin``, else the first), a version can be recorded whose chunks are not here: its trees
and file objects are kept in the local store (pulled in bulk, docs/REMOTE.md "Lazy mount"), its
chunks are fetched on first read.

Reads (``read_file``, ``read_ranges``, ``get_many``): objects in the local store are served from
it (a local store pays nothing more); chunks in the cache (store/cache.py) from there, in place (a
read whose first chunk this process knows cached looks there first: a warm read costs one
lookup per chunk, as a local one, opens no remote, and ``read_ranges_resident`` serves it on the
mount's event loop when its pages are in memory);
the rest are fetched with ranged GETs (store/remote.py ``RemoteObjectStore.get_located``: every
object checked against its id and the SHA-256 the pack index lists) in batches of neighbours of about ``BATCH`` bytes (one coalesced
GET each), ``FETCHERS`` batches at once: a full read-ahead window keeps them all busy. A chunk being
fetched is fetched once: other readers wait for the same fetch. Readers get the bytes as soon as
they are verified; one keeper thread then stores them (chunks into the cache, trees and file
objects into the local store: listings never fetch twice), many fetches per transaction. A reader
waits at most ``ARTFS_LAZY_TIMEOUT`` seconds (default 30) for its chunks, then gets RemoteError
(EIO in the mount) and the daemon's log one line naming the remote and why; the fetch itself ends
within the client's own bounded timeouts and retries (store/s3.py).

Read-ahead, per file object (``read_file``): a read that starts within ``SEQUENTIAL_SLACK`` of
the end of the previous ones (the kernel sends several reads at once, out of order) doubles the
window fetched ahead, from ``READ_AHEAD_MIN`` up to ``READ_AHEAD_MAX``, scheduled after the
chunks the read waits for and extended by whole batches; any other read resets it.

``read_here(fn, *args)`` runs a read only as far as local, cached and fetched (verified, not yet
stored) data go: where it would wait for the remote it gives up (None; the read-ahead it planned
is scheduled all the same, else the window it moved past would be lost), and the mount runs it again
in threads of its own (mount/model.py), so reads of local or cached data never queue behind reads
stalled on the remote, and a read of what read-ahead fetched takes no second thread.

Memory: read-ahead is planned only while less than ``AHEAD_BYTES`` are being fetched or held
(fetched, verified, not yet kept); a window planned just below that adds at most
``READ_AHEAD_MAX``, and reads add what they wait for themselves. The keeper's queue and the
batch it stores are among those bytes (at most ``KEEP_BYTES``); beyond them LMDB copies the batch
it stores once (its dirty pages) and each of the ``FETCHERS`` fetches holds its response (about
``BATCH``) while copying it out. So fetched data stays under AHEAD_BYTES + READ_AHEAD_MAX +
KEEP_BYTES + FETCHERS x BATCH (160 MiB) plus the reads in progress (docs/RELIABILITY.md).

``has`` answers what a read will find: stored here, or a data chunk the remote lists. Trees and
file objects count only when local (a pull fetches them in bulk when ``has`` says they are absent).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from ..errors import ArtfsError, CorruptData, RemoteError
from .backend import Obj
from .cache import ChunkCache, cache_dir
from .ids import CHUNK
from .local import LocalObjectStore

log = logging.getLogger("artfs.lazy")
log.addHandler(logging.NullHandler())   # the CLI says it in its one error line; a daemon logs it

BATCH = 4 << 20              # bytes per ranged fetch (one or a few coalesced GETs)
FETCHERS = 8                 # batches fetched at once
READ_AHEAD_MIN = 1 << 20
READ_AHEAD_MAX = 32 << 20
SEQUENTIAL_SLACK = 4 << 20   # how far from the previous end a read still counts as sequential
AHEAD_BYTES = 64 << 20      # no read-ahead planned while this many bytes are fetched or being fetched, not kept
KEEP_BYTES = 32 << 20       # fetched bytes waiting to be stored, at most
PREFETCH_IDS = 1024         # chunks (about 64 MiB) a prefetch waits for at once
STREAMS = 256                # files whose sequential state is remembered
REMOTE_CONFIG = "artfs-remote.json"   # remote/catalog.py CONFIG


class _WouldFetch(Exception):
    """A read within ``read_here`` needs objects from the remote."""


_here_only = threading.local()      # .on: this thread's read is within read_here


def timeout() -> float:
    return float(os.environ.get("ARTFS_LAZY_TIMEOUT", 30))


def binding(store: str) -> dict | None:
    """The remote a lazy store reads from: ``origin``, else the first bound, else None."""
    try:
        with open(os.path.join(store, "remotes.json")) as f:
            remotes = json.load(f)
    except (OSError, ValueError):
        return None
    if not remotes:
        return None
    return remotes.get("origin") or remotes[sorted(remotes)[0]]


class _Stream:
    __slots__ = ("next", "window", "ahead")

    def __init__(self):
        self.next, self.window, self.ahead = 0, 0, 0


class LazyObjectStore:
    lazy = True

    def __init__(self, store: str, local: LocalObjectStore):
        self.store, self.local = store, local
        self.object_id = local.object_id
        self.seal_chunk = getattr(local, "seal_chunk", None)   # an ingest seals in its chunking threads
        self._remote = None
        self._cache: ChunkCache | None = None
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)   # fetches stored or failed
        self._inflight: dict[bytes, Future] = {}
        self._sizes: dict[bytes, int] = {}       # of the dispatched ones among them
        self._pending = 0                        # their sum: bytes being fetched or held until kept
        self._pool: _Fetchers | None = None
        self._keep: _Keeper | None = None
        self._streams: OrderedDict[int, _Stream] = OrderedDict()
        self.cache_limit: int | None = None        # artfs mount --cache-size
        self.fetched_bytes = 0
        self._failing = False      # the last fetch failed: later failures are not logged again
        self._closed = False

    @property
    def env(self):
        return self.local.env      # compaction and migration work on the local store's files

    def close(self) -> None:
        """No fetch starts after this; every object fetched and verified by now (served, or
        waiting for the keeper: fetchers wait while it holds KEEP_BYTES) is stored before the
        cache and the local store close, within the read timeout, so the next process finds it
        cached. A fetch still running (stalled on the remote, or abandoned) ends in its daemon
        thread, its bytes dropped: neither LMDB environment is touched by a thread of this
        store once they close."""
        with self._lock:
            self._closed = True
            pool, keep = self._pool, self._keep
        if pool is not None:
            pool.shutdown()
        with self._lock:
            self._settled.wait_for(lambda: not any(f.done() and f.exception() is None
                                                   for f in self._inflight.values()), timeout())
        if keep is not None:
            keep.close()
        if self._cache is not None:
            self._cache.close()
        self.local.close()

    def abandon(self) -> None:
        """Fail every read waiting for the remote now (RemoteError) and start no fetch after
        this: a daemon whose FUSE loop has ended calls it, so that no worker thread stalled on
        the remote (a read, the mount's read-ahead) holds its exit for up to ARTFS_LAZY_TIMEOUT.
        Fetches under way end in their daemon threads and their bytes are dropped; local and
        cached data stay readable until ``close``."""
        error = RemoteError("the store is closing: nothing more is fetched")
        with self._lock:
            self._closed = True
            pool = self._pool
            for future in self._inflight.values():
                if not future.done():
                    future.set_exception(error)
        if pool is not None:
            pool.shutdown()                      # fetches still queued are dropped

    # the remote and the cache, opened on first need ------------------------------------------------
    def remote(self):
        """The RemoteObjectStore of the bound remote, or None when none is bound."""
        with self._lock:
            if self._remote is None:
                bound = binding(self.store)
                if bound is None:
                    return None
                from .remote import PACK_SIZE, RemoteObjectStore
                from .s3 import S3Store
                s3 = S3Store.of(bound)
                make = getattr(self.local, "remote_store", RemoteObjectStore)   # sealed: store/sealed.py
                self._remote = make(s3, self._index_dir(s3), PACK_SIZE)
            return self._remote

    def _index_dir(self, s3) -> str:
        """Where the remote's pack indexes are cached: the remote's directory (remote/sync.py)."""
        top = os.path.join(self.store, "remotes")
        known = os.listdir(top) if os.path.isdir(top) else []
        rid = known[0] if len(known) == 1 else json.loads(s3.get(REMOTE_CONFIG))["id"]
        return os.path.join(top, rid, "idx")

    def cache(self, create: bool = True) -> ChunkCache | None:
        with self._lock:
            if self._cache is None and self._closed:
                raise ArtfsError("the store is closed")
            if self._cache is None and (create or os.path.isdir(cache_dir(self.store))):
                self._cache = ChunkCache(self.store, self.cache_limit, getattr(self.local, "store_at", None))
            return self._cache

    def set_pinned(self, pinned) -> None:
        """``pinned()`` -> chunk ids the cache must not evict (the mount's open files)."""
        self.cache().pinned = pinned

    def read_here(self, fn, *args):
        """``fn(*args)``, a read, if it needs no object from the remote (local and cached data),
        else None without waiting for the remote: what it reads is not fetched for it, but the
        read-ahead it planned (a ``read_file`` advances the file's sequential state) is scheduled."""
        _here_only.on = True
        try:
            return fn(*args)
        except _WouldFetch:
            return None
        finally:
            _here_only.on = False

    # ObjectStore -------------------------------------------------------------------------------
    def get_many(self, ids: Sequence[bytes]) -> list[bytes]:
        try:
            return self.local.get_many(ids)
        except CorruptData:
            here = self.local.has(ids)
            if all(here) or self.remote() is None and self.cache(create=False) is None:
                raise
        out: list[bytes | None] = [None] * len(ids)
        local = [i for i, h in enumerate(here) if h]
        for i, data in zip(local, self.local.get_many([ids[i] for i in local])):
            out[i] = data
        missing = [ids[i] for i, h in enumerate(here) if not h]
        got = self._obtain(missing)
        for i, h in enumerate(here):
            if not h:
                out[i] = got[ids[i]]
        return out

    def read_ranges(self, spans: Sequence[tuple[bytes, int, int]]) -> bytes:
        try:
            return self.local.read_ranges(spans)     # local data: no other cost
        except CorruptData as e:
            return self._fallback(spans, list, e)

    def read_file(self, fobj, offset: int, size: int, spans: list | None = None) -> bytes:
        """Bytes [offset, offset+size) of a file object, with read-ahead on sequential reads
        (SPANS: ``list(fobj.span(offset, size))``, when the caller has them)."""
        spans = list(fobj.span(offset, size)) if spans is None else spans
        data = self.read_fetched(fobj, offset, size, spans)
        if data is not None:
            return data
        futures = self._flying([oid for oid, _, _ in spans]) if self._inflight else None
        if futures is not None:                  # read-ahead is fetching them: no store lookups
            self._ahead(self._read_ahead(fobj, offset, size))
            if getattr(_here_only, "on", False):
                raise _WouldFetch()
            got = self._wait(self.remote(), futures)
            return b"".join(memoryview(got[oid])[s:e] for oid, s, e in spans)
        ahead = lambda: self._read_ahead(fobj, offset, size)     # noqa: E731
        cache = self._cache
        warm = bool(spans) and cache is not None and cache.known([spans[0][0]])[0]   # cached, not local
        if warm:
            data = self._cached_ranges(cache, spans, ahead)
            if data is not None:
                return data
        try:
            return self.local.read_ranges(spans)
        except CorruptData as e:
            if warm:                             # the cache does not hold them all: not asked again
                return self._partly_here(spans, ahead, e, cache)
            return self._fallback(spans, ahead, e)

    def read_fetched(self, fobj, offset: int, size: int, spans: list | None = None) -> bytes | None:
        """``read_file`` when every chunk it needs is fetched and verified, not yet kept (what
        read-ahead brought), else None: in memory, no store lookup, never waits (an event loop
        may call it); the read-ahead it plans is looked up and scheduled by a fetcher thread."""
        if not self._inflight:
            return None
        spans = list(fobj.span(offset, size)) if spans is None else spans
        got = self._ready([oid for oid, _, _ in spans])
        if got is None:
            return None
        ahead = self._read_ahead(fobj, offset, size)
        if ahead:
            self._pool.submit(self._ahead, ahead)
        return b"".join(memoryview(d)[s:e] for d, (_, s, e) in zip(got, spans))

    def _fallback(self, spans, ahead, error: CorruptData) -> bytes:
        """The spans' bytes when some are not local: from the cache when it holds them all (also
        a copy of a damaged local chunk: it was verified), else ``_partly_here``."""
        cache = self.cache(create=False)
        data = self._cached_ranges(cache, spans, ahead) if cache is not None else None
        return data if data is not None else self._partly_here(spans, ahead, error, cache)

    def _partly_here(self, spans, ahead, error: CorruptData, cache: ChunkCache | None) -> bytes:
        """The spans' bytes when some are not local and CACHE (if any) does not hold them all:
        the local ones from here, the others from the cache, else fetched; ``ahead()`` names
        chunks to fetch too, scheduled after the ones this read waits for. ERROR (what the local
        store said) when they are all local (damaged) or no remote is bound."""
        ids = list(dict.fromkeys(oid for oid, _, _ in spans))
        here = self.local.has(ids)
        if all(here) or cache is None and self.remote() is None:
            raise error
        got = self._obtain([oid for oid, h in zip(ids, here) if not h], ahead())
        local = {}
        return b"".join(memoryview(got[oid] if oid in got else self._local_bytes(local, oid))[s:e]
                        for oid, s, e in spans)

    def _cached_ranges(self, cache: ChunkCache, spans, ahead) -> bytes | None:
        """The spans' bytes if the cache holds every chunk (then ``ahead()`` is scheduled), else
        None: no other lookup, the remote not opened."""
        try:
            data = cache.read_ranges(spans)
        except CorruptData:
            return None
        self._ahead(ahead())
        return data

    def _local_bytes(self, memo: dict, oid: bytes) -> bytes:
        if oid not in memo:
            memo[oid] = self.local.get_many([oid])[0]
        return memo[oid]

    def _read_ahead(self, fobj, offset: int, size: int) -> list[bytes]:
        """The chunks to fetch ahead of this read of ``fobj``: a read near the end of the previous
        ones (the kernel sends several at once, so they arrive out of order) doubles the window;
        any other read resets it."""
        end = min(offset + size, fobj.size)
        with self._lock:
            key = id(fobj)
            stream = self._streams.pop(key, None) or _Stream()
            self._streams[key] = stream
            if len(self._streams) > STREAMS:
                self._streams.popitem(last=False)
            if abs(offset - stream.next) <= SEQUENTIAL_SLACK:
                stream.window = min(max(2 * stream.window, READ_AHEAD_MIN), READ_AHEAD_MAX)
            else:
                stream.window, stream.ahead = 0, 0
            stream.next = max(stream.next, end)
            start, stop = max(stream.ahead, end), min(end + stream.window, fobj.size)
            if start >= stop or start > end and stop - start < BATCH and stop < fobj.size:
                return []                     # enough in flight: extend by whole batches
            if self._pending >= AHEAD_BYTES:
                return []                     # the memory bound: a later read plans it again
            stream.ahead = stop
        return [oid for oid, _, _ in fobj.span(start, stop - start)]

    def read_ranges_resident(self, spans: Sequence[tuple[bytes, int, int]]) -> bytes | None:
        """The local store's, else the cache's (None where neither holds them all in memory: the
        caller reads in a thread)."""
        nowait = getattr(self.local, "read_ranges_resident", None)
        data = nowait(spans) if nowait is not None else None
        cache = self.cache(create=False) if data is None else None
        return cache.read_ranges_resident(spans) if cache is not None else data

    def put_many(self, objs: Sequence[Obj]) -> int:
        return self.local.put_many(objs)

    @property
    def adopts(self) -> bool:
        """Whether ``adopt`` takes files in (a plain local store: store/local.py)."""
        return getattr(self.local, "adopts", False)

    def adopt(self, path: str, chunks) -> bool:
        return self.adopts and self.local.adopt(path, chunks)

    def will_need(self, ids: Sequence[bytes]) -> None:
        """Start reading the local objects among IDS from disk, without waiting."""
        if self.adopts:   # (a store with segments)
            self.local.will_need(ids)

    def settle(self) -> None:
        if self.adopts:
            self.local.settle()

    def sweep(self) -> None:
        if self.adopts:
            self.local.sweep()

    def has(self, ids: Sequence[bytes]) -> list[bool]:
        here = self.local.has(ids)
        if all(here):
            return here
        remote = self.remote()
        if remote is None:
            return here
        rest = [oid for oid, h in zip(ids, here) if not h]
        kinds = dict(zip(rest, remote.kinds(rest)))
        return [h or kinds[oid] == CHUNK for oid, h in zip(ids, here)]

    def delete(self, ids: Sequence[bytes]) -> None:
        self.local.delete(ids)      # the cache only ever holds copies: it evicts by itself

    def sizes(self, ids: Sequence[bytes]) -> list[int | None]:
        sizes = self.local.sizes(ids)
        if all(s is not None for s in sizes) or self.remote() is None:
            return sizes
        rest = [oid for oid, s in zip(ids, sizes) if s is None]
        remote = dict(zip(rest, self._remote.sizes(rest)))
        return [s if s is not None else remote[oid] for oid, s in zip(ids, sizes)]

    def check(self, ids: Sequence[bytes]) -> list[str | None]:
        """Local objects deep-checked; a chunk held only as a copy in the cache is checked there;
        one only on the remote must be listed by its index (``verify --remote`` fetches it)."""
        out = self.local.check(ids)
        missing = [i for i, p in enumerate(out) if p == "missing"]
        if not missing or self.remote() is None:
            return out
        rest = [ids[i] for i in missing]
        cache = self.cache(create=False)
        cached = cache.present(rest) if cache is not None else [False] * len(rest)
        cache_check = dict(zip([o for o, c in zip(rest, cached) if c],
                               cache.objects.check([o for o, c in zip(rest, cached) if c]) if any(cached) else []))
        kinds = self._remote.kinds(rest)
        for i, oid, kind in zip(missing, rest, kinds):
            if oid in cache_check:
                out[i] = cache_check[oid] and f"{cache_check[oid]} in the chunk cache"
            elif kind == CHUNK:
                out[i] = None
            elif kind is not None:
                out[i] = "missing (a tree or file object only the remote holds)"
        return out

    def ids(self) -> Iterator[bytes]:
        return self.local.ids()

    # fetching ----------------------------------------------------------------------------------
    def prefetch(self, ids: Sequence[bytes]) -> int:
        """Fetch the chunks among ``ids`` that are neither local nor cached into the cache;
        returns the bytes fetched."""
        ids = list(dict.fromkeys(ids))
        absent = [oid for oid, h in zip(ids, self.local.has(ids)) if not h]
        before = self.fetched_bytes
        for i in range(0, len(absent), PREFETCH_IDS):   # each batch within the read timeout
            self._obtain(absent[i:i + PREFETCH_IDS])
            self._wait_kept(absent[i:i + PREFETCH_IDS])
        return self.fetched_bytes - before

    def fetch_soon(self, ids: Sequence[bytes]) -> bool:
        """Start fetching the chunks among ``ids`` that are neither local, cached nor in flight,
        without waiting (read-ahead of the files a walk opens next: neighbours are fetched
        together, as for any read, and a read of them waits for the same fetch). Nothing is
        started while AHEAD_BYTES are being fetched or held (the read-ahead's memory bound): True
        when all of them are here, cached or in flight, so that a read of them fetches nothing
        more; False when some were left (or no remote is bound)."""
        if not ids or self.remote() is None:
            return False
        rest = self._absent(ids)
        if rest and self._pending < AHEAD_BYTES:
            self._schedule(rest)
        with self._lock:                  # a fetch kept meanwhile is cached: a read finds it
            return all(oid in self._inflight for oid in rest)

    def _obtain(self, ids: Sequence[bytes], ahead: Sequence[bytes] = ()) -> dict[bytes, bytes]:
        """The bytes of objects not in the local store: from the cache, else fetched (then the
        chunks AHEAD are scheduled too, without waiting for them)."""
        if not ids:
            return {}
        remote = self.remote()
        cache = self.cache(create=remote is not None)
        out = self._cached(cache, ids) if cache is not None else {}
        rest = [oid for oid in dict.fromkeys(ids) if oid not in out]
        if not rest:
            self._ahead(ahead)
            return out
        if remote is None:
            raise CorruptData(f"missing object {rest[0].hex()}")
        if getattr(_here_only, "on", False):   # only what is in memory already: fetched, not yet kept
            fetched = self._ready(rest)
            self._ahead(ahead)   # planned by this read: never lost
            if fetched is None:
                raise _WouldFetch()
            out.update(zip(rest, fetched))
            return out
        futures = self._schedule(rest)
        self._ahead(ahead)
        out.update(self._wait(remote, futures))
        return out

    def _wait(self, remote, futures: dict[bytes, Future]) -> dict[bytes, bytes]:
        """The results of these fetches, within the read timeout (else RemoteError, logged)."""
        deadline = time.monotonic() + timeout()
        out = {}
        for oid, future in futures.items():
            try:
                out[oid] = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                msg = (f"remote {remote.s3.url} did not answer within {timeout():.0f} s "
                       f"(ARTFS_LAZY_TIMEOUT) for object {oid.hex()}")
                log.warning("%s", msg)
                raise RemoteError(msg) from None
        return out

    def _flying(self, ids: Sequence[bytes]) -> dict[bytes, Future] | None:
        """The fetches of IDS if every one is in flight (being fetched, or held until kept)."""
        with self._lock:
            futures = {oid: self._inflight.get(oid) for oid in ids}
        return None if None in futures.values() else futures

    def _ready(self, ids: Sequence[bytes]) -> list[bytes] | None:
        """The bytes of IDS if every one is fetched and verified (held until kept), else None."""
        futures = self._flying(ids)
        if futures is None or not all(f.done() and f.exception() is None for f in futures.values()):
            return None
        return [futures[oid].result() for oid in ids]

    def _cached(self, cache: ChunkCache, ids: Sequence[bytes]) -> dict[bytes, bytes]:
        """The cached ones among IDS; a damaged entry is dropped (and fetched again)."""
        found = [oid for oid, h in zip(ids, cache.present(ids)) if h]
        try:
            return dict(zip(found, cache.get_many(found)))
        except CorruptData:
            bad = [oid for oid, problem in zip(found, cache.objects.check(found)) if problem]
            log.warning("dropping %d damaged chunks from the cache %s", len(bad), cache.dir)
            cache.drop(bad)
            return self._cached(cache, ids)

    def _schedule(self, ids: Sequence[bytes]) -> dict[bytes, Future]:
        """A future per id: the fetch in flight, or a new one (batched by pack and position)."""
        remote = self.remote() if ids else None
        if remote is None:
            return {}
        futures, new = {}, []
        with self._lock:
            for oid in ids:
                fut = self._inflight.get(oid)
                if fut is None:
                    fut = self._inflight[oid] = Future()
                    new.append(oid)
                futures[oid] = fut
            if new and self._closed:
                raise ArtfsError("the store is closed")
            if new and self._pool is None:
                self._pool = _Fetchers(FETCHERS)
        if new:
            self._pool.submit(self._dispatch, remote, new)
        return futures

    def _ahead(self, ids: Sequence[bytes]) -> None:
        """Fetch the read-ahead ``_read_ahead`` planned (within the memory bound when planned:
        dropped now, its window would never be fetched ahead)."""
        if ids:
            self._schedule(self._absent(ids))

    def _absent(self, ids: Sequence[bytes]) -> list[bytes]:
        """The ids neither in the local store nor in the cache. Those this process knows cached
        are not looked up (a warm read plans its read-ahead like any read: one dict lookup per
        chunk instead of two LMDB lookups that map its pages); one another process evicted
        meanwhile is then not fetched ahead, and the read that needs it fetches it."""
        cache = self.cache()
        ids = [oid for oid, known in zip(ids, cache.known(ids)) if not known]
        if not ids:
            return []
        here = [a or b for a, b in zip(self.local.has(ids), cache.present(ids))]
        return [oid for oid, h in zip(ids, here) if not h]

    def _dispatch(self, remote, ids: list[bytes]) -> None:   # fetcher thread
        """Split ids into batches of neighbours (by pack and offset) and fetch them in parallel."""
        try:
            locs = dict(zip(ids, remote.locate(ids)))   # reads the pack indexes not read yet
        except Exception as e:
            self._failed(remote, ids, e)
            return
        with self._lock:
            for oid, loc in locs.items():
                self._sizes[oid] = loc.length if loc is not None else 0
                self._pending += self._sizes[oid]
        order = sorted(ids, key=lambda oid: (locs[oid].pack, locs[oid].offset) if locs[oid] else ("", 0))
        batch, size = [], 0
        for oid in order:
            batch.append(oid)
            size += locs[oid].length if locs[oid] is not None else 0
            if size >= BATCH:
                self._pool.submit(self._fetch, remote, batch, [locs[oid] for oid in batch])
                batch, size = [], 0
        if batch:
            self._fetch(remote, batch, [locs[oid] for oid in batch])

    def _fetch(self, remote, ids: list[bytes], locs: list) -> None:   # fetcher thread
        """Fetch IDS (at LOCS in the remote's index, as _dispatch found them) and hand them on."""
        try:                                  # verified: id and SHA-256 from the pack index
            data = remote.get_located(ids, locs)
        except Exception as e:
            self._failed(remote, ids, e)
            return
        with self._lock:                      # readers go on while the bytes are stored
            healed, self._failing = self._failing, False
            self.fetched_bytes += sum(map(len, data))
            for oid, d in zip(ids, data):
                if not self._inflight[oid].done():        # else abandoned
                    self._inflight[oid].set_result(d)
        if healed:
            log.warning("fetching from %s works again", remote.s3.url)
        if None in locs:                      # listed only since _dispatch (get_located refreshed)
            locs = remote.index.locate(ids)
        objs = [Obj(oid, loc.digest, d) for oid, loc, d in zip(ids, locs, data)]
        keeper = self._keeper()
        if keeper is None:                    # closed while fetching: served, not kept
            self.kept(objs)
            return
        keeper.put([o for o, loc in zip(objs, locs) if loc.kind == CHUNK],
                   [o for o, loc in zip(objs, locs) if loc.kind != CHUNK])

    def _keeper(self) -> "_Keeper | None":
        """The keeper thread (started on first need); None once the store is closed."""
        with self._lock:
            if self._keep is None and not self._closed:
                self._keep = _Keeper(self)
            return self._keep

    def kept(self, objs: list[Obj]) -> None:
        """The fetches of OBJS are over (stored or not): later reads look in the cache."""
        with self._lock:
            for o in objs:
                self._inflight.pop(o.id, None)
                self._pending -= self._sizes.pop(o.id, 0)
            self._settled.notify_all()

    def _wait_kept(self, ids: Sequence[bytes]) -> None:
        """Until the fetches of IDS are stored (or failed): a prefetch has filled the cache."""
        with self._lock:
            self._settled.wait_for(lambda: not any(oid in self._inflight for oid in ids), timeout())

    def _failed(self, remote, ids: list[bytes], error: Exception) -> None:
        """The error for every reader waiting on these ids, and one log line saying why - once
        until a fetch works again (the kernel retries a failed read: one failure, one line)."""
        with self._lock:
            first, self._failing = not self._failing, True
        if first and isinstance(error, ArtfsError):
            log.warning("fetching %d objects from %s failed: %s", len(ids), remote.s3.url, error)
        elif first:
            log.error("fetching %d objects from %s failed: %r", len(ids), remote.s3.url, error)
        with self._lock:
            for oid in ids:
                future = self._inflight.pop(oid)
                if not future.done():                     # else abandoned
                    future.set_exception(error)
                self._pending -= self._sizes.pop(oid, 0)
            self._settled.notify_all()


class _Fetchers:
    """N daemon threads running fetches. Not an executor: its threads are joined at exit, so a
    command that has its bytes (``cat``) would wait for a read-ahead stalled on the remote, up to
    the client's retries (minutes). A fetch still queued at ``shutdown`` is dropped."""

    def __init__(self, n: int):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed, self._n = False, n
        for i in range(n):
            threading.Thread(target=self._run, name=f"artfs-fetch-{i}", daemon=True).start()

    def submit(self, fn, *args) -> None:
        self._queue.put((fn, args))

    def shutdown(self) -> None:
        self._closed = True
        for _ in range(self._n):
            self._queue.put((None, ()))

    def _run(self) -> None:
        while True:
            fn, args = self._queue.get()
            if fn is None:
                return
            if self._closed:
                continue
            try:
                fn(*args)
            except Exception:   # fetches report their own errors; this is a bug
                log.exception("fetch failed")


class _Keeper:
    """One thread storing fetched objects (chunks into the cache, trees and file objects into the
    local store), many fetches per transaction: LMDB commits are synchronous, and a fetcher never
    waits for one. At most KEEP_BYTES wait (fetchers block beyond: memory stays bounded)."""

    def __init__(self, lazy: LazyObjectStore):
        self.lazy = lazy
        self.queue: list[tuple[list[Obj], list[Obj]]] = []
        self.queued = 0
        self.cond = threading.Condition()
        self.closing = False
        self.thread = threading.Thread(target=self._run, name="artfs-keep", daemon=True)
        self.thread.start()

    def put(self, chunks: list[Obj], meta: list[Obj]) -> None:   # fetcher thread
        size = sum(len(o.data) for o in chunks + meta)
        with self.cond:
            while self.queued and self.queued + size > KEEP_BYTES and not self.closing:
                self.cond.wait()
            refused = self.closing              # the store is closing: served, not kept
            if not refused:
                self.queue.append((chunks, meta))
                self.queued += size
                self.cond.notify_all()
        if refused:
            self.lazy.kept(chunks + meta)

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.queue and not self.closing:
                    self.cond.wait()
                if not self.queue:
                    return
                work, self.queue = self.queue, []
            chunks = [o for c, _ in work for o in c]
            meta = [o for _, m in work for o in m]
            try:
                if chunks:
                    self.lazy.cache().put_many(chunks)
                if meta:
                    self.lazy.local.put_many(meta)
            except Exception as e:            # served, not kept: a later read fetches again
                log.warning("keeping %d fetched objects failed: %s", len(chunks) + len(meta), e)
            finally:
                self.lazy.kept(chunks + meta)
                with self.cond:
                    self.queued -= sum(len(o.data) for o in chunks + meta)
                    self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        self.thread.join()


def attach(store: str, objects) -> LazyObjectStore:
    """The lazy store over a store's local object store (once per open store)."""
    return objects if isinstance(objects, LazyObjectStore) else LazyObjectStore(store, objects)
