"""The remote's pack index in memory, held compactly: the union of the pack indexes read.

Each pack's entries are kept as read (packs.py, 65 bytes an entry, checked once), and ids are found
through sorted tables of (the id's first 8 bytes as an integer, pack ordinal << 32 | entry number),
two ``array("Q")`` searched by bisection from a bucket of prefixes: about 17 bytes an entry on
top of the entry itself, where a dict of ``Location`` tuples took ~330 (docs/benchmarks.md, "stop
19"). A ``Location`` is built only when an id is looked up.

Among packs listing the same id the first read wins (a reader checks every object against its
index's SHA-256, so any pack holding it will do). Tables cover consecutive packs in the order they
were read, oldest first, and one table orders equal ids by pack ordinal, so the first match found
is the first read. Adding packs makes a new table and merges the newest ones while the older is
not bigger (a binary counter: O(log n) tables, each entry re-sorted O(log n) times); forgetting
packs rebuilds one table of what is left.

Readers do not lock: writers (under a lock) build new tables and swap the state in one assignment.
"""

from __future__ import annotations

import struct
import threading
from array import array
from bisect import bisect_left
from itertools import accumulate
from collections.abc import Iterator, Sequence

from .ids import ID_LEN
from .packs import ENTRY_SIZE, Location, entry_at

_PREFIX = struct.Struct(f">Q{ENTRY_SIZE - 8}x")   # an entry's id, its first 8 bytes
_LOW = (1 << 32) - 1
_KEY = 64                                         # (prefix << _KEY) | ref: one int to sort by


class _Table:
    """The entries of some packs, sorted by (id prefix, ref); ``starts``: where each bucket of
    prefixes (their top bits, about 4 entries a bucket) starts, so a bisection looks at a few."""

    __slots__ = ("prefixes", "refs", "shift", "starts")

    def __init__(self, keys: list[int]):
        keys.sort()
        self.prefixes = array("Q", (k >> _KEY for k in keys))
        self.refs = array("Q", (k & ((1 << _KEY) - 1) for k in keys))
        bits = max(len(keys).bit_length() - 2, 0)
        self.shift = 64 - bits
        counts = [0] * ((1 << bits) + 1)
        for p in self.prefixes:
            counts[(p >> self.shift) + 1] += 1
        self.starts = array("I", accumulate(counts))

    def __len__(self) -> int:
        return len(self.refs)

    def keys(self) -> list[int]:
        return [(p << _KEY) | r for p, r in zip(self.prefixes, self.refs)]


def _ids(entries: memoryview) -> list[bytes]:
    """The ids these entries list, in their order."""
    return [bytes(entries[at:at + ID_LEN]) for at in range(0, len(entries), ENTRY_SIZE)]


def _keys(packs: Sequence[tuple[int, memoryview]]) -> list[int]:
    """The sort keys of these (ordinal, entries) packs' entries."""
    out: list[int] = []
    for ordinal, entries in packs:
        base = ordinal << 32
        out += [(p << _KEY) | base | e for e, (p,) in enumerate(_PREFIX.iter_unpack(entries))]
    return out


class PackIndex:
    def __init__(self):
        self._lock = threading.Lock()
        self._next = 0
        # (ordinal -> (PACKID, entries), PACKID -> ordinal, tables oldest first): swapped whole
        self._state: tuple[dict[int, tuple[str, memoryview]], dict[str, int], tuple[_Table, ...]] = ({}, {}, ())

    # lookups -----------------------------------------------------------------------------------
    def _find(self, oid: bytes) -> tuple[str, memoryview, int] | None:
        """(PACKID, entries, entry number) of OID in the first pack read that lists it, or None."""
        packs, _, tables = self._state
        prefix = int.from_bytes(oid[:8], "big")
        for table in tables:
            prefixes, bucket = table.prefixes, prefix >> table.shift
            i, end = table.starts[bucket], table.starts[bucket + 1]
            i = bisect_left(prefixes, prefix, i, end)
            while i < end and prefixes[i] == prefix:
                ref = table.refs[i]
                pack_id, entries = packs[ref >> 32]
                at = (ref & _LOW) * ENTRY_SIZE
                if entries[at:at + ID_LEN] == oid:
                    return pack_id, entries, ref & _LOW
                i += 1
        return None

    def get(self, oid: bytes) -> Location | None:
        """Where the first pack read that lists OID holds it, or None."""
        found = self._find(oid)
        return entry_at(*found)[1] if found is not None else None

    def locate(self, ids: Sequence[bytes]) -> list[Location | None]:
        return [self.get(oid) for oid in ids]

    def __contains__(self, oid: bytes) -> bool:
        return self._find(oid) is not None

    def ids(self) -> Iterator[bytes]:
        """Every id listed, once."""
        seen: set[bytes] = set()
        for _, entries in self._state[0].values():
            seen.update(_ids(entries))
        return iter(seen)

    def pack_ids(self) -> list[str]:
        """The packs read, in the order they were."""
        return list(self._state[1])

    def object_ids(self, pack_id: str) -> list[bytes]:
        """The ids pack PACK_ID's index lists, in its order (KeyError when it was not read): no
        ``Location`` built, unlike ``entries``."""
        packs, ordinals, _ = self._state
        return _ids(packs[ordinals[pack_id]][1])

    def entries(self, pack_id: str) -> dict[bytes, Location]:
        """What pack PACK_ID's index lists (KeyError when it was not read)."""
        packs, ordinals, _ = self._state
        _, entries = packs[ordinals[pack_id]]
        return dict(entry_at(pack_id, entries, e) for e in range(len(entries) // ENTRY_SIZE))

    # changes -----------------------------------------------------------------------------------
    def add(self, read: Sequence[tuple[str, memoryview]]) -> None:
        """Add these (PACKID, checked entries) packs, in this order, after those read before (a pack
        read already is left as it was)."""
        with self._lock:
            packs, ordinals, tables = dict(self._state[0]), dict(self._state[1]), list(self._state[2])
            new = []
            for pack_id, entries in read:
                if pack_id not in ordinals:
                    ordinals[pack_id], packs[self._next] = self._next, (pack_id, entries)
                    new.append((self._next, entries))
                    self._next += 1
            if not new:
                return
            tables.append(_Table(_keys(new)))
            while len(tables) > 1 and len(tables[-2]) <= len(tables[-1]):
                keys = tables[-2].keys()
                keys += tables.pop().keys()
                tables[-1] = _Table(keys)         # two sorted runs: merged in one pass
            self._state = (packs, ordinals, tuple(tables))

    def forget(self, pack_ids) -> None:
        """Drop these packs (those not read are ignored): their ids fall back to the next pack read
        that lists them, if any."""
        with self._lock:
            packs, ordinals, _ = self._state
            gone = {ordinals[pid] for pid in pack_ids if pid in ordinals}
            if not gone:
                return
            packs = {o: p for o, p in packs.items() if o not in gone}
            ordinals = {pid: o for pid, o in ordinals.items() if o not in gone}
            self._state = (packs, ordinals, (_Table(_keys([(o, entries) for o, (_, entries) in packs.items()])),))
