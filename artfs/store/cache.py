"""The chunk cache of a lazily read remote: verified chunks kept on local disk, bounded by bytes.

``STORE/cache/`` holds

    objects/     an LMDB object store (store/local.py: id -> SHA-256 + bytes, re-hashed on read)
    index        every entry's id and size in recency order, oldest first, saved now and then
    clean        present while the index lists exactly what ``objects/`` holds
    shared       present once a process opened the cache while another had it open
    users.lock   flock-ed shared by each process that has the cache open; open.lock: one
                 process at a time opens or closes it
    config.json  {"limit": bytes}: set by ``artfs mount --cache-size``, kept for later processes

Only data chunks fetched from the remote come here, after they were checked against their id and
the SHA-256 the remote's pack index lists (store/lazy.py); trees and file objects go to the local
object store, and the chunks of local versions (pushed or not) are in the local store too, so
nothing here is the only copy of anything: any entry may be evicted or lost.

Eviction is least-recently-used by bytes: before chunks are stored, the oldest entries go until
the new ones fit under the limit, so the cache never holds more than its limit. Entries
``pinned()`` names (the chunks of files open in the mount) are never evicted; when they leave too
little room, only the newest of the new chunks that fit are stored (the others were served, just
not kept). A chunk is stored and deleted in LMDB transactions, so a process killed at any instant
leaves a cache whose every entry is whole and hashes right (an entry missing from the index only
makes it the oldest). The accounting (bytes, order) is this process's: with two processes filling one
cache (a mount and an ``artfs cat``), each evicts what it knows of.

Reads come straight from LMDB's map of ``objects/data.mdb``, and every page a read touched would
stay mapped, counted in the daemon's resident set: a 1 GiB file read from the cache would add
1 GiB to it. Lookups too: py-lmdb's ``get`` touches every page of the value it finds (so later
reads do not fault holding the GIL). So every ``RELEASE_EVERY`` bytes read or found, the map's
pages are dropped from this process (madvise MADV_DONTNEED on the file's mapping, holding a read
transaction so the map cannot move meanwhile): they stay in the kernel's page cache, as a
``pread`` would leave them, and a later read maps them again from there.

Opening: looking every entry's size up in LMDB reads the whole cache (py-lmdb touches each
value), minutes for a big cache on a cold disk. So a process that opens the cache alone and closes
it alone, no other having opened it meanwhile, knew every change: it writes the index (synced)
and then ``clean``; the next process to open it alone trusts that index and reads nothing else,
and removes ``clean`` first thing (a process killed later leaves none). Any other open (another
process has it open, or ``clean`` is missing: a crash, a concurrent user, a cache written before
the index existed, whose recency order is then lost once) lists LMDB's entries as before,
releasing the map every ``LOAD_STEP`` entries so it is never all mapped at once, and takes the
order from the index.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

from .backend import Obj
from .ids import ID_LEN
from .lmdb_env import fsync_path
from .local import LocalObjectStore

DEFAULT_FRACTION = 0.2      # of the free disk (plus what the cache holds) when no limit is set
MIN_LIMIT = 1 << 20
SAVE_EVERY = 4096           # stores between two saves of the recency order
RELEASE_EVERY = 16 << 20    # bytes read from the map between two releases of its pages
LOAD_STEP = 32             # entries looked up between two releases when the cache opens
ENTRY = struct.Struct(f"<{ID_LEN}sQ")   # an index record: id, size


def cache_dir(store: str) -> str:
    return os.path.join(store, "cache")


def parse_size(text: str) -> int:
    """Bytes of ``512M``, ``20G``, ``1.5T``, ``1048576`` (powers of 1024); ValueError if not one."""
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(text[-1:], 1)
    number = float(text[:-1] if scale > 1 else text)
    if number < 0:
        raise ValueError(text)
    return int(number * scale)


class ChunkCache:
    def __init__(self, store: str, limit: int | None = None, open_store=None):
        """OPEN_STORE(path): the object store at path (an encrypted store's seals: store/sealed.py)."""
        self.dir = cache_dir(store)
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.objects = (open_store or LocalObjectStore)(os.path.join(self.dir, "objects"))
        self.limit = self._limit(limit)
        self.pinned: Callable[[], set[bytes]] = set
        self._lock = threading.Lock()
        self._lru: OrderedDict[bytes, int] = OrderedDict()
        self.used = 0
        self._stores = 0
        self._served = 0          # bytes read from the map since its pages were last released
        self._last: bytes | None = None   # the chunk read last (counted in _served once)
        self._users = os.open(os.path.join(self.dir, "users.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        with self._turn():
            self._alone = _lock(self._users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            trusted = self._alone and os.path.exists(self._path("clean"))
            if self._alone:                        # from now on, nobody else knows all changes
                _unlink(self._path("shared"))
            else:
                open(self._path("shared"), "wb").close()
            if trusted:                            # a crash from now on leaves it untrusted
                os.unlink(self._path("clean"))
                fsync_path(self.dir)
            fcntl.flock(self._users, fcntl.LOCK_SH)
            self._load(trusted)

    # configuration -----------------------------------------------------------------------------
    def _path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def _config_path(self) -> str:
        return self._path("config.json")

    def _turn(self):
        """Held while this process opens or closes the cache: one at a time."""
        fd = os.open(self._path("open.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return os.fdopen(fd, "rb")              # closing it releases the lock

    def _limit(self, limit: int | None) -> int:
        if limit is not None:
            limit = max(limit, MIN_LIMIT)
            tmp = self._config_path() + f".{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump({"limit": limit}, f)
            os.replace(tmp, self._config_path())
            return limit
        try:
            with open(self._config_path()) as f:
                return int(json.load(f)["limit"])
        except (OSError, ValueError, KeyError, TypeError):
            st = os.statvfs(self.dir)
            return max(int(st.f_bavail * st.f_frsize * DEFAULT_FRACTION), MIN_LIMIT)

    # the recency order -------------------------------------------------------------------------
    def _load(self, trusted: bool) -> None:
        """Every stored chunk with its size, in the saved order: the index's when TRUSTED, else
        LMDB's entries (unknown ones oldest)."""
        try:
            with open(self._path("index"), "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raw = b""
        saved = list(ENTRY.iter_unpack(memoryview(raw)[:len(raw) - len(raw) % ENTRY.size]))
        if trusted:
            self._lru.update(saved)
            self.used = sum(self._lru.values())
            return
        sizes: dict[bytes, int] = {}
        env, batch = self.objects.env, []
        with env.read_batches(LOAD_STEP) as batches:   # each step maps a value: released per batch
            for oid, _ in batches.cursor_items(env.dbs["objects"], values=False):
                batch.append(oid)
                if len(batch) == LOAD_STEP:
                    self._sizes_into(sizes, batch)
                    batch = []
        self._sizes_into(sizes, batch)
        known = {oid for oid, _ in saved}
        for oid in [o for o in sizes if o not in known] + [o for o, _ in saved if o in sizes]:
            self._lru[oid] = sizes[oid]
        self.used = sum(self._lru.values())

    def _sizes_into(self, sizes: dict[bytes, int], ids: list[bytes]) -> None:
        sizes.update((oid, n) for oid, n in zip(ids, self.objects.sizes(ids)) if n is not None)
        self.release()              # py-lmdb's get touches every page of a value: all were mapped

    def save(self, sync: bool = False) -> None:
        """Write the index (with SYNC, on disk before this returns)."""
        with self._lock:
            raw = b"".join(ENTRY.pack(oid, size) for oid, size in self._lru.items())
        path = self._path("index")
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(raw)
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)

    def close(self) -> None:
        """Save the index; mark it complete when this process had the cache to itself all along."""
        with self._turn():
            alone = _lock(self._users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            complete = alone and self._alone and not os.path.exists(self._path("shared"))
            self.objects.close()
            self.save(sync=complete)
            if complete:
                open(self._path("clean"), "wb").close()
                fsync_path(self.dir)
            os.close(self._users)

    # reading -----------------------------------------------------------------------------------
    def present(self, ids: Sequence[bytes]) -> list[bool]:
        """Which ids are stored here (asks LMDB: another process may have added some)."""
        found = self.objects.has(ids)
        touched = 0                               # py-lmdb's get maps each value it finds
        with self._lock:
            for oid, here in zip(ids, found):
                if here and oid in self._lru:
                    self._lru.move_to_end(oid)
                    touched += self._lru[oid]
        self._read(touched)
        return found

    def get_many(self, ids: Sequence[bytes]) -> list[bytes]:
        data = self.objects.get_many(ids)
        self._read(sum(map(len, data)))
        return data

    def known(self, ids: Sequence[bytes]) -> list[bool]:
        """Which ids this process knows stored here (no lookup: another process may have added
        or evicted some since)."""
        with self._lock:
            return [oid in self._lru for oid in ids]

    def read_ranges(self, spans) -> bytes:
        """Like LocalObjectStore.read_ranges (CorruptData when one is absent or damaged)."""
        data = self.objects.read_ranges(spans)
        self._spans_read(spans)
        return data

    def read_ranges_resident(self, spans) -> bytes | None:
        """``read_ranges``, or None when a chunk is absent or its pages are not all in memory
        (LocalObjectStore.read_ranges_resident: for a caller on an event loop)."""
        nowait = getattr(self.objects, "read_ranges_resident", None)
        data = nowait(spans) if nowait is not None else None
        if data is not None:
            self._spans_read(spans)
        return data

    def _spans_read(self, spans) -> None:
        """The chunks of SPANS were just read: most recently used, their bytes mapped."""
        touched = 0                               # whole chunks: each is hashed as it is read
        with self._lock:
            for oid, start, end in spans:
                if oid in self._lru:
                    self._lru.move_to_end(oid)
                if oid != self._last:             # a sequential read's first chunk: mapped already
                    touched += self._lru.get(oid, end - start)
            self._last = spans[-1][0] if spans else None
        self._read(touched)

    def _read(self, n: int) -> None:
        """Count N bytes read from the map; past RELEASE_EVERY, release its pages."""
        with self._lock:
            self._served += n
            if self._served < RELEASE_EVERY:
                return
            self._served, self._last = 0, None
        self.release()

    def release(self) -> None:
        """Drop the pages of the cache's map from this process (not from the page cache)."""
        self.objects.env.release_map()

    def drop(self, ids: Sequence[bytes]) -> None:
        """Forget damaged entries."""
        with self._lock:
            self.used -= sum(self._lru.pop(oid, 0) for oid in ids)
        self.objects.delete(ids)

    # writing -----------------------------------------------------------------------------------
    def put_many(self, objs: Sequence[Obj]) -> None:
        """Store verified chunks, evicting the least recently used first to make room."""
        objs = [o for o in objs if o.id not in self._lru]
        need = sum(len(o.data) for o in objs)
        room = self._evict(need)
        while objs and need > room:            # more than fits (pinned chunks fill the rest):
            need -= len(objs.pop(0).data)      # keep the last ones, the others are not cached
        if not objs:
            return
        self.objects.put_many(objs)
        with self._lock:
            for o in objs:
                if o.id not in self._lru:
                    self._lru[o.id] = len(o.data)
                    self.used += len(o.data)
            self._stores += 1
            save = self._stores % SAVE_EVERY == 0
        if save:
            self.save()

    def _evict(self, need: int) -> int:
        """Evict unpinned entries, oldest first, until NEED bytes fit; returns the room made."""
        if self.used + need <= self.limit:
            return self.limit - self.used
        pinned = self.pinned()                 # outside the lock: it may read file objects
        with self._lock:
            victims, freed, skipped = [], 0, []
            while self._lru and self.used - freed + need > self.limit:
                oid, size = self._lru.popitem(last=False)
                if oid in pinned:
                    skipped.append((oid, size))
                    continue
                victims.append(oid)
                freed += size
            for oid, size in reversed(skipped):       # pinned ones keep their place
                self._lru[oid] = size
                self._lru.move_to_end(oid, last=False)
            self.used -= freed
        if victims:
            self.objects.delete(victims)
        return self.limit - self.used

    def clear(self) -> int:
        """Drop every unpinned chunk; returns the bytes freed."""
        pinned = self.pinned()
        with self._lock:
            victims = [oid for oid in self._lru if oid not in pinned]
            freed = sum(self._lru.pop(oid) for oid in victims)
            self.used -= freed
        for i in range(0, len(victims), 10_000):
            self.objects.delete(victims[i:i + 10_000])
        self.save()
        return freed

    def stats(self) -> dict:
        with self._lock:
            return {"chunks": len(self._lru), "bytes": self.used, "limit": self.limit,
                    "file_bytes": self.objects.env.file_bytes()}

    def ids(self) -> list[bytes]:
        with self._lock:
            return list(self._lru)


def _lock(fd: int, how: int) -> bool:
    try:
        fcntl.flock(fd, how)
        return True
    except BlockingIOError:
        return False


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
