"""The remote's pack index in memory (store/pack_index.py, docs/REMOTE.md "Objects in packs"): which
pack an id is read from when several list it, ids of forgotten and repacked packs, many packs
added one by one, reads at locations looked up before (``get_located``); on Ceph RGW and moto,
and the index alone over packs built by packs.py (ids sharing their first bytes, the compact
index's own edge cases: bucket edges, merged tables, packs forgotten and read again)."""

from __future__ import annotations

import os

import pytest

from artfs.store.backend import Obj, plain_chunk as chunk
from artfs.store.ids import CHUNK, strong_digest
from artfs.store.pack_index import PackIndex
from artfs.store.packs import build, parse_index
from tests.test_remote import url

pytest.importorskip("obstore", reason="needs obstore: scripts/setup-s3.sh installs it")


def host(s3, bucket, tmp_path, name: str, pack_size: int = 64 << 20):
    """A RemoteObjectStore of its own (its own index cache) over the bucket's remote."""
    from artfs.store.remote import RemoteObjectStore
    from artfs.store.s3 import S3Store
    creds = s3.users["full"]
    client = S3Store(url(bucket), endpoint=s3.endpoint, allow_http=True,
                     credentials=(creds.access_key, creds.secret_key))
    return RemoteObjectStore(client, str(tmp_path / name), pack_size)


def test_an_id_in_two_packs_is_read_from_the_first_read_until_it_goes(s3, s3_bucket, tmp_path):
    shared, only_a, only_b = chunk(os.urandom(3000)), chunk(os.urandom(2000)), chunk(os.urandom(1000))
    a, b = host(s3, s3_bucket, tmp_path, "a"), host(s3, s3_bucket, tmp_path, "b")
    a.put_many([shared, only_a])
    b.put_many([shared, only_b], refresh=False)     # as a push that read the index before a's
    pack_a, pack_b = a.index.get(shared.id).pack, b.index.get(only_b.id).pack
    assert pack_a != pack_b and b.index.get(shared.id).pack == pack_b

    c = host(s3, s3_bucket, tmp_path, "c")
    assert c.has([shared.id, only_a.id, only_b.id]) == [True, True, True]
    first, second = sorted([pack_a, pack_b])        # a refresh reads new indexes in PACKID order
    assert c.index.get(shared.id).pack == first
    assert c.sizes([shared.id, only_a.id, only_b.id]) == [3000, 2000, 1000]
    assert c.kinds([shared.id]) == [CHUNK]
    assert sorted(c.ids()) == sorted([shared.id, only_a.id, only_b.id])

    gone = first
    c.drop_packs([gone])                            # as the garbage collector does
    kept_only, lost = (only_b, only_a) if gone == pack_a else (only_a, only_b)
    assert c.index.get(shared.id).pack == second    # now from the pack left
    assert c.get_many([shared.id, kept_only.id]) == [shared.data, kept_only.data]
    assert c.index.get(lost.id) is None and c.has([lost.id]) == [False]
    assert sorted(c.ids()) == sorted([shared.id, kept_only.id])

    a.refresh()                                     # another host forgets the pack whose index went
    assert a.index.get(lost.id) is None
    assert a.get_many([shared.id]) == [shared.data] and a.index.get(shared.id).pack == second


def test_many_packs_put_one_by_one_are_all_found(s3, s3_bucket, tmp_path):
    objs = [chunk(os.urandom(100 + i)) for i in range(40)]
    a = host(s3, s3_bucket, tmp_path, "a", pack_size=250)       # two or three objects a pack
    for i in range(0, len(objs), 5):
        a.put_many(objs[i:i + 5])
    packs = {a.index.get(o.id).pack for o in objs}
    assert len(packs) >= 14
    assert a.get_many([o.id for o in objs]) == [o.data for o in objs]
    b = host(s3, s3_bucket, tmp_path, "b")
    assert b.sizes([o.id for o in objs]) == [len(o.data) for o in objs]
    assert [b.index.get(o.id) for o in objs] == [a.index.get(o.id) for o in objs]


def test_ids_sharing_their_first_bytes_are_told_apart():
    """The index finds an id by its first 8 bytes, then checks the whole id: ids that share those
    bytes, in one pack and across packs, each find their own entry; a look-alike finds nothing."""
    head = os.urandom(8)
    datas = [os.urandom(50 + i) for i in range(6)]
    objs = [Obj(head + os.urandom(8), strong_digest(d), d) for d in datas]
    index = PackIndex()
    packs = [build(objs[:4], [CHUNK] * 4), build(objs[3:], [CHUNK] * 3)]   # objs[3] in both
    for pack_id, _, idx in packs:
        index.add([(pack_id, parse_index(pack_id, idx))])
    assert index.object_ids(packs[1][0]) == [o.id for o in objs[3:]]
    for i, o in enumerate(objs):
        loc = index.get(o.id)
        assert (loc.pack, loc.length, loc.digest) == (packs[0 if i < 4 else 1][0], len(o.data), o.digest)
    assert index.get(head + os.urandom(8)) is None and head + bytes(8) not in index
    index.forget([packs[0][0]])
    assert [index.get(o.id) is not None for o in objs] == [False, False, False, True, True, True]
    assert index.get(objs[3].id).pack == packs[1][0]
    assert index.pack_ids() == [packs[1][0]] and set(index.ids()) == {o.id for o in objs[3:]}


def test_get_located_reads_at_the_locations_given_checked_and_follows_a_repack(s3, s3_bucket, tmp_path):
    """``get_located`` (the lazy store's fetch) reads where the caller's lookup said, no lookup of
    its own: a location of another object is CorruptData (its bytes are checked), never other
    bytes; one found nowhere then is looked up again (listed since); one whose pack a gc repacked
    meanwhile is read from the new pack."""
    from artfs.errors import CorruptData
    x, y, z = chunk(os.urandom(1500)), chunk(os.urandom(1600)), chunk(os.urandom(1700))
    a, b = host(s3, s3_bucket, tmp_path, "a"), host(s3, s3_bucket, tmp_path, "b")
    a.put_many([x, y])
    locs = b.locate([x.id, y.id, z.id])
    assert locs[2] is None
    assert b.get_located([x.id, y.id], locs[:2]) == [x.data, y.data]
    with pytest.raises(CorruptData, match=f"remote object {x.id.hex()} .*fails its hash check"):
        b.get_located([x.id], [locs[1]])
    a.put_many([z])
    assert b.get_located([z.id], [None]) == [z.data]
    old = locs[0].pack
    a.upload([y, x])                                # a repack (another pack: other order), as gc does
    a.drop_packs([old])
    assert b.get_located([x.id, y.id], locs[:2]) == [x.data, y.data]
    assert b.index.get(x.id).pack not in (old, None)


def test_the_compact_index_across_bucket_edges_many_tables_forgets_and_rereads():
    """The index's own edge cases, over 40 packs built by packs.py: ids whose first 8 bytes sit
    on either side of a bucket edge (for every table size here), or are the smallest and largest
    there are, and ids sharing 8 and 15 bytes, each found in the first pack read that lists it
    (every id is in two packs) through the tables that adding packs one by one and then many at
    once merges; look-alikes are not found. Forgetting packs leaves their ids found only in the
    other pack listing them, if any; a forgotten pack read again counts as read last."""
    import random
    rng = random.Random(20)
    heads = sorted({h for s in range(50, 63) for b in (1, 2, 3, 5) for d in (-1, 0, 1)
                    if 0 <= (h := (b << s) + d) < 1 << 64} | {0, (1 << 64) - 1})
    ids = []
    for h in heads:
        head, rest = h.to_bytes(8, "big"), rng.randbytes(7)
        ids += [head + rest + b"\x00", head + rest + b"\x01", head + rng.randbytes(8)]
    n = 40
    objs = [Obj(oid, strong_digest(d), d) for oid in ids for d in [rng.randbytes(10 + len(oid) % 7)]]
    lists = [[i for i in range(len(ids)) if i % n == k or i % n == (k - 3) % n] for k in range(n)]
    packs = []
    for listed in lists:
        pack_id, _, idx = build([objs[i] for i in listed], [CHUNK] * len(listed))
        packs.append((pack_id, parse_index(pack_id, idx)))
    index = PackIndex()
    for p in packs[:25]:
        index.add([p])
    index.add(packs[25:])
    order = [pid for pid, _ in packs]
    assert index.pack_ids() == order

    def expect(read: list[str]) -> None:
        """Each id found in the first of READ (the packs read, in order) that lists it, or not."""
        where = {}
        for pid in read:
            for i in lists[order.index(pid)]:
                where.setdefault(i, pid)
        for i, o in enumerate(objs):
            loc = index.get(o.id)
            if i in where:
                assert loc is not None and (loc.pack, loc.length, loc.digest) == (where[i], len(o.data), o.digest), i
            else:
                assert loc is None and o.id not in index, i
        assert set(index.ids()) == {ids[i] for i in where}

    expect(order)
    for oid in ids[::3]:                            # the same 8 bytes, the same 15 bytes
        assert index.get(oid[:8] + bytes(8)) is None and index.get(oid[:15] + b"\x02") is None
    gone = order[::3]
    index.forget(gone)
    left = [pid for pid in order if pid not in gone]
    assert index.pack_ids() == left
    expect(left)
    index.add([packs[0]])                           # read again: after every other pack now
    expect(left + [order[0]])
