"""Segment files of the local store (store/segments.py): where objects go, appends across
segments, a writer killed between its append and its commit, deletes that punch blocks out, and
compaction that keeps the segments without copying a byte. Real stores, real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import lmdb
import pytest

from artfs.errors import CorruptData
from artfs.repo.facade import Repo
from artfs.repo.verify import verify
from artfs.store import segments
from artfs.store.backend import Obj
from artfs.store.ids import strong_digest
from artfs.store.local import LocalObjectStore
from tests.helpers import MiB, SMALL, objects_env, run_cli, segment_bytes, tree_snapshot, write

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def records(store) -> tuple[int, int, tuple[int, int]]:
    """(LMDB records, segment locations, committed tail) of the store's object environment."""
    env = lmdb.open(objects_env(store), max_dbs=16, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            counts = [txn.stat(env.open_db(n, txn=txn, create=False))["entries"]
                      for n in (b"objects", b"located")]
            tail = segments.Segments.tail(txn.get(segments.TAIL, db=env.open_db(b"meta", txn=txn, create=False)))
    finally:
        env.close()
    return counts[0], counts[1], tail


def got(store, ref: str, src, tmp_path) -> None:
    out = tmp_path / f"got-{ref.replace(':', '-')}"
    assert run_cli(store, "get", ref, out).returncode == 0
    assert tree_snapshot(out) == tree_snapshot(src)


def test_big_objects_go_to_segments_across_segment_ends(tmp_path, monkeypatch):
    """Chunks of 4 KiB or more are appended to segments, smaller objects stay LMDB records; a put
    whose batch runs past a segment's end goes on in the next one (each segment synced before the
    batch commits), and everything reads back exact in a fresh process and verifies."""
    monkeypatch.setattr(segments, "SEGMENT_BYTES", 1 * MiB)
    src = tmp_path / "src"
    write(src / "big", os.urandom(5 * MiB))
    write(src / "small", os.urandom(SMALL))
    store = tmp_path / "s"
    with Repo(str(store)) as repo:
        repo.put("ds", str(src))
        assert verify(repo).ok
    inline, located, (segment, end) = records(store)
    assert located >= 5 * MiB // (256 << 10) and inline >= 3     # chunks; small file, file objects, tree
    names = sorted(os.listdir(os.path.join(objects_env(store), segments.DIR)))
    assert len(names) >= 5 and names[-1] == segments.segment_name(segment) and end % segments.ALIGN == 0
    assert all(os.path.getsize(os.path.join(objects_env(store), segments.DIR, n)) <= MiB for n in names)
    got(store, "ds:v0", src, tmp_path)


_KILLED_AFTER_APPEND = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from artfs.repo.facade import Repo
real = os.fdatasync
def die(fd):   # the bytes are written: killed before the transaction records them
    real(fd)
    os.kill(os.getpid(), signal.SIGKILL)
os.fdatasync = die
with Repo(sys.argv[2]) as repo:
    repo.put("ds", sys.argv[3])
"""


def test_a_writer_killed_between_append_and_commit(tmp_path):
    """A put killed after its bytes reached the segment but before its transaction committed
    leaves bytes past the committed end and no location naming them; the next put writes over
    them, and every version reads back exact."""
    store, first, lost, second = tmp_path / "s", tmp_path / "first", tmp_path / "lost", tmp_path / "second"
    write(first / "f", os.urandom(1 * MiB))
    write(lost / "f", os.urandom(3 * MiB))
    write(second / "f", os.urandom(2 * MiB))
    assert run_cli(store, "put", "ds", first).returncode == 0
    _, located, tail = records(store)
    proc = subprocess.run([sys.executable, "-c", _KILLED_AFTER_APPEND, HERE, str(store), str(lost)])
    assert proc.returncode == -9
    segment_file = os.path.join(objects_env(store), segments.DIR, segments.segment_name(tail[0]))
    assert os.path.getsize(segment_file) >= tail[1] + 3 * MiB      # the lost put's bytes are there
    assert records(store)[1:] == (located, tail)                   # and nothing names them
    assert run_cli(store, "put", "ds", second).returncode == 0
    assert records(store)[2][1] < tail[1] + 3 * MiB                # written over them
    with Repo(str(store)) as repo:
        assert [v.label for v in repo.versions("ds")] == ["v0", "v1"]
        assert verify(repo).ok
    got(store, "ds:v0", first, tmp_path)
    got(store, "ds:v1", second, tmp_path)


def test_a_delete_punches_exactly_the_objects_blocks(tmp_path):
    """Removing a version gives its unique chunks' blocks back at once (no compaction): the
    segments shrink on disk by the removed file's size rounded up per chunk to whole blocks (less
    a block or two the filesystem may take for the holes' extent records), and the chunks around
    them keep their bytes."""
    store = tmp_path / "s"
    srcs = [tmp_path / f"src{i}" for i in range(3)]
    for s in srcs:
        write(s / "f", os.urandom(4 * MiB + 12345))
    for s in srcs:
        assert run_cli(store, "put", "ds", s).returncode == 0
    with Repo(str(store)) as repo:
        fobj = repo.file(repo.tree(repo.resolve("ds", "v1").root).entries[0].ref)
        blocks = sum(-(-n // segments.ALIGN) * segments.ALIGN for n in fobj.lengths)
    before = segment_bytes(store)
    assert run_cli(store, "rm", "ds:v1").returncode == 0
    assert blocks - 2 * segments.ALIGN <= before - segment_bytes(store) <= blocks
    got(store, "ds:v0", srcs[0], tmp_path)
    got(store, "ds:v2", srcs[2], tmp_path)
    with Repo(str(store)) as repo:
        assert verify(repo).ok


def test_compaction_links_the_segments_instead_of_copying(tmp_path):
    """``artfs compact`` moves the store to a new data directory whose segments are the same files
    (hard links: no byte copied), and the store reads back exact and verifies afterwards."""
    store, src = tmp_path / "s", tmp_path / "src"
    write(src / "f", os.urandom(6 * MiB))
    assert run_cli(store, "put", "ds", src).returncode == 0
    seg_dir = os.path.join(objects_env(store), segments.DIR)
    inodes = {n: os.stat(os.path.join(seg_dir, n)).st_ino for n in os.listdir(seg_dir)}
    assert run_cli(store, "compact").returncode == 0
    seg_dir = os.path.join(objects_env(store), segments.DIR)
    assert "data.1" in seg_dir
    assert {n: os.stat(os.path.join(seg_dir, n)).st_ino for n in os.listdir(seg_dir)} == inodes
    got(store, "ds:v0", src, tmp_path)
    with Repo(str(store)) as repo:
        assert verify(repo).ok


def test_a_nowait_read_returns_bytes_only_when_they_are_in_the_page_cache(tmp_path):
    """A segment object read with ``nowait`` (the mount's event loop) comes back only when its
    pages are in memory: after its pages are dropped it is None, after a normal read the exact
    bytes. ``cached`` (the check used where the filesystem lacks RWF_NOWAIT, as FUSE does) agrees."""
    src = tmp_path / "src"
    data = os.urandom(2 * MiB)
    write(src / "big", data)
    store = tmp_path / "s"
    with Repo(str(store)) as repo:
        v = repo.put("ds", str(src))[0]
        lengths = repo.file(repo.tree(v.root).entries[0].ref).lengths
    local = LocalObjectStore(objects_env(store), segments=True)
    try:
        with local.env.read() as txn:
            locs = [bytes(v) for _, v in txn.cursor(db=local.env.dbs["located"])]
        assert locs
        for name in os.listdir(local.segments.path):
            fd = os.open(os.path.join(local.segments.path, name), os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
        seg, off, length, _ = segments.LOCATION.unpack(locs[0])
        fd = os.open(os.path.join(local.segments.path, segments.segment_name(seg)), os.O_RDONLY)
        try:
            assert not segments.cached(fd, off, length)
            assert local.segments.read(locs[0], nowait=True) is None
            digest, first = local.segments.read(locs[0])
            assert segments.cached(fd, off, length)
            assert local.segments.read(locs[0], nowait=True) == (digest, first)
        finally:
            os.close(fd)
        in_segments = sum(n for n in lengths if n >= segments.MIN_BYTES)   # a last chunk under
        assert sum(len(local.segments.read(loc)[1]) for loc in locs) == in_segments   # 4 KiB: LMDB
    finally:
        local.close()


def test_will_need_reads_the_objects_into_the_page_cache_without_a_read(tmp_path):
    """``will_need`` (the mount's read-ahead of the next files of a directory) starts the disk
    reads of segment objects before anything reads them: after the segments' pages are dropped,
    every page of the objects asked for comes back into the page cache with no read of them;
    ids the store does not hold, and objects kept in LMDB, are passed over."""
    src = tmp_path / "src"
    for i in range(6):
        write(src / f"f{i}", os.urandom(48 * 1024 + i))   # one chunk each, in segments
    write(src / "tiny", b"x" * 100)                        # an LMDB value
    store = tmp_path / "s"
    with Repo(str(store)) as repo:
        v = repo.put("ds", str(src))[0]
        tiny = repo.file(repo.tree(v.root).lookup(b"tiny").ref).chunks
    local = LocalObjectStore(objects_env(store), segments=True)
    try:
        with local.env.read() as txn:
            located = [(bytes(k), segments.LOCATION.unpack(bytes(v)))
                       for k, v in txn.cursor(db=local.env.dbs["located"])]
        fds = {}
        for _, (seg, _, _, _) in located:
            if seg not in fds:
                fds[seg] = os.open(os.path.join(local.segments.path, segments.segment_name(seg)), os.O_RDONLY)
        try:
            for fd in fds.values():
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            assert not any(segments.cached(fds[seg], off, n) for _, (seg, off, n, _) in located)
            local.will_need([oid for oid, _ in located] + tiny + [b"\0" * len(tiny[0])])
            deadline = time.monotonic() + 10
            while not all(segments.cached(fds[seg], off, n) for _, (seg, off, n, _) in located):
                assert time.monotonic() < deadline, "will_need read nothing into the page cache"
                time.sleep(0.01)
        finally:
            for fd in fds.values():
                os.close(fd)
    finally:
        local.close()


def test_a_read_returns_only_checked_bytes_and_reads_each_chunk_once(tmp_path):
    """A read of segment objects (store/local.py ``_ranges``): a chunk the request takes whole is
    read straight into its place in the reply and checked there; one taken in part is read whole
    into a buffer of its own, checked and kept, and the next request takes the rest from those
    checked bytes (no second read). Damaged bytes on disk are CorruptData whether read whole or
    in part, never a reply; a kept chunk serves only the bytes that were checked."""
    local = LocalObjectStore(str(tmp_path / "objects"), segments=True)
    try:
        pieces = [os.urandom(n) for n in (70_000, 50_000, 90_000, 60_000)]
        ids = [local.object_id(p) for p in pieces]
        local.put_many([Obj(oid, strong_digest(p), p) for oid, p in zip(ids, pieces)])
        copied = []
        real = local.segments.read
        local.segments.read = lambda record, nowait=False: copied.append(record) or real(record, nowait)
        spans = [(ids[0], 1000, 70_000), (ids[1], 0, 50_000), (ids[2], 0, 40_000)]
        assert local.read_ranges(spans) == pieces[0][1000:] + pieces[1] + pieces[2][:40_000]
        assert len(copied) == 2                                       # the two taken in part
        with local.env.read() as txn:
            where = {oid: segments.LOCATION.unpack(txn.get(oid, db=local.env.dbs["located"]))
                     for oid in ids}

        def damage(oid):
            seg, off, length, _ = where[oid]
            fd = os.open(os.path.join(local.segments.path, segments.segment_name(seg)), os.O_WRONLY)
            try:
                os.pwrite(fd, b"\xff" * 100, off + length // 2)
            finally:
                os.close(fd)
        damage(ids[2])
        assert local.read_ranges([(ids[2], 40_000, 90_000)]) == pieces[2][40_000:]   # kept, checked
        assert len(copied) == 2
        for oid in (ids[1], ids[3]):
            damage(oid)
        for bad in ([(ids[1], 0, 50_000)], [(ids[3], 0, 60_000)], [(ids[3], 10, 20)],
                    [(ids[0], 0, 70_000), (ids[3], 0, 60_000)]):
            for read in (local.read_ranges, local.read_ranges_resident):
                with pytest.raises(CorruptData):
                    read(bad)
    finally:
        local.close()
