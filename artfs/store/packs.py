"""Packs: objects uploaded back to back in one bucket object, with an index beside it.

``packs/HH/PACKID`` holds the objects' bytes back to back; PACKID is the SHA-256 (hex) of those
bytes and HH its first two digits (S3's request limits are per prefix). ``packs/HH/PACKID.idx``
is its index, written after the pack, so an index always names a complete pack:

    header  b"ARTFSIX1", pack SHA-256 (32), pack length (u64), entry count (u32)
    entry   id (16), kind (u8: ids.CHUNK / FILE / TREE), offset (u64), length (u64), SHA-256 (32)

All integers big-endian. A reader checks every object it fetches against its id and SHA-256.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import NamedTuple

from ..errors import CorruptData
from .backend import Obj
from .ids import CHUNK, FILE, ID_LEN, KIND_OF_PREFIX, TREE, object_id

MAGIC = b"ARTFSIX1"
_HEAD = struct.Struct(">8s32sQI")
_ENTRY = struct.Struct(f">{ID_LEN}sBQQ32s")
ENTRY_SIZE = _ENTRY.size
PREFIX = "packs/"
INDEX_SUFFIX = ".idx"


class Location(NamedTuple):
    pack: str        # PACKID
    offset: int
    length: int
    digest: bytes    # SHA-256 of the object's bytes
    kind: int


def pack_key(pack_id: str) -> str:
    return f"{PREFIX}{pack_id[:2]}/{pack_id}"


def index_key(pack_id: str) -> str:
    return pack_key(pack_id) + INDEX_SUFFIX


def pack_id_of_index(key: str) -> str | None:
    """PACKID when ``key`` names an index (``packs/HH/PACKID.idx``), else None."""
    if not (key.startswith(PREFIX) and key.endswith(INDEX_SUFFIX)):
        return None
    return key.rsplit("/", 1)[1][:-len(INDEX_SUFFIX)]


def kind_of(obj: Obj, hasher=object_id) -> int:
    """Which kind's id ``obj.id`` is (a data chunk, else what its first byte says); HASHER: the
    store's ids (an encrypted store's are keyed, store/sealed.py)."""
    if hasher(obj.data) == obj.id:
        return CHUNK
    return KIND_OF_PREFIX.get(bytes(obj.data[:1]), CHUNK)


def build(objs: Sequence[Obj], kinds: Sequence[int]) -> tuple[str, bytes, bytes]:
    """(PACKID, pack bytes, index bytes) of these objects of these KINDS, in this order."""
    entries, pos = [], 0
    for obj, kind in zip(objs, kinds):
        entries.append(_ENTRY.pack(obj.id, kind, pos, len(obj.data), obj.digest))
        pos += len(obj.data)
    pack = b"".join(bytes(o.data) for o in objs)
    digest = hashlib.sha256(pack).digest()
    index = _HEAD.pack(MAGIC, digest, len(pack), len(objs)) + b"".join(entries)
    return digest.hex(), pack, index


def parse_index(pack_id: str, data: bytes) -> memoryview:
    """The entries of the index of pack PACKID (a view of DATA after its header, ENTRY_SIZE bytes
    an entry: entry_at reads one), checked; CorruptData when it is malformed or names another pack."""
    try:
        magic, digest, length, count = _HEAD.unpack_from(data, 0)
        if magic != MAGIC or digest.hex() != pack_id or len(data) != _HEAD.size + count * _ENTRY.size:
            raise ValueError
        entries = memoryview(data)[_HEAD.size:].toreadonly()
        for _, kind, offset, size, _ in _ENTRY.iter_unpack(entries):
            if offset + size > length or kind not in (CHUNK, FILE, TREE):
                raise ValueError
        return entries
    except (ValueError, struct.error):
        raise CorruptData(f"remote pack index {index_key(pack_id)} is malformed") from None


def entry_at(pack_id: str, entries, number: int) -> tuple[bytes, Location]:
    """(id, Location) of entry NUMBER of pack PACKID's ENTRIES (as parse_index returns them)."""
    oid, kind, offset, size, digest = _ENTRY.unpack_from(entries, number * ENTRY_SIZE)
    return oid, Location(pack_id, offset, size, digest, kind)
