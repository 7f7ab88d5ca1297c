"""Chunk store and verify: forced hash collisions, corrupted and missing objects."""

from __future__ import annotations

import os

import pytest

from artfs.catalog.objects import FileObj
from artfs.errors import CorruptData
from artfs.repo.facade import Repo
from artfs.store.ids import object_id
from artfs.store.chunker import AVG_SIZE, MAX_SIZE, chunk_fd
from artfs.repo.verify import verify
from tests.helpers import MiB, damage_blob, write


def _chunks(path, data: bytes) -> list[bytes]:
    write(path, data)
    fd = os.open(path, os.O_RDONLY)
    try:
        return [bytes(c) for c in chunk_fd(fd)]
    finally:
        os.close(fd)


def test_chunker_is_content_defined(tmp_path):
    data = os.urandom(4 * MiB)
    a = _chunks(tmp_path / "a", data)
    b = _chunks(tmp_path / "b", data[:2 * MiB] + b"x" + data[2 * MiB:])
    assert b"".join(a) == data
    assert all(len(c) <= MAX_SIZE for c in a)
    assert AVG_SIZE / 2 < len(data) / len(a) < AVG_SIZE * 3
    assert len(set(a) - set(b)) <= 2                    # one insert disturbs one or two chunks


def test_forced_collision_is_refused_not_aliased(tmp_path):
    """With a hash that maps everything to one value, a put whose bytes collide with stored ones
    fails with a clear error and records nothing; the stored bytes stay intact."""
    def colliding(data, kind=0) -> bytes:
        return b"\x00" * 16 if bytes(data) in (b"alpha" * 10, b"bravo" * 10) else object_id(data, kind)

    with Repo(str(tmp_path / "s"), hasher=colliding) as repo:
        d = tmp_path / "d"
        write(d / "a", b"alpha" * 10)
        v = repo.put("c", str(d), warn=print)[0]
        write(d / "b", b"bravo" * 10)
        with pytest.raises(CorruptData, match="collision"):
            repo.put("c", str(d), warn=print)
        assert [x.label for x in repo.versions("c")] == ["v0"]
        tree = repo.tree(v.root)
        assert repo.read(repo.file(tree.entries[0].ref), 0, 100) == b"alpha" * 10
        assert verify(repo).ok


def _first_data_chunk(repo, version) -> bytes:
    e = next(e for e in repo.tree(version.root).entries if e.kind == "f")
    return repo.file(e.ref).chunks[0]


@pytest.mark.parametrize("how", ["corrupt", "missing"])
def test_verify_names_damage_and_affected_paths(tmp_path, how):
    store = str(tmp_path / "s")
    d = tmp_path / "d"
    write(d / "victim.bin", os.urandom(300_000))
    write(d / "other.bin", os.urandom(300_000))
    with Repo(store) as repo:
        v0 = repo.put("x", str(d))[0]
        write(d / "new.bin", b"n")
        repo.put("x", str(d))
        victim = next(e for e in repo.tree(v0.root).entries if e.name == b"victim.bin")
        cid = repo.file(victim.ref).chunks[0]
    damage_blob(store, cid, how)
    with Repo(store) as repo:
        report = verify(repo)
        assert not report.ok
        text = "\n".join(report.problems)
        assert f"chunk {cid.hex()} is {how}" in text
        assert "x:v0 victim.bin" in text and "x:v1 victim.bin" in text
        assert "other.bin" not in text
        assert not verify(repo, "x", "v0").ok
        fobj = repo.file(victim.ref)
        with pytest.raises(CorruptData):
            repo.read(fobj, 0, 10)                        # never wrong bytes
        other = next(e for e in repo.tree(v0.root).entries if e.name == b"other.bin")
        assert repo.read(repo.file(other.ref), 0, 10) == (d / "other.bin").read_bytes()[:10]


def test_file_object_spans():
    f = FileObj([(b"a" * 16, 10), (b"b" * 16, 5), (b"c" * 16, 7)])
    assert f.size == 22
    assert list(f.span(8, 5)) == [(b"a" * 16, 8, 10), (b"b" * 16, 0, 3)]
    assert list(f.span(15, 100)) == [(b"c" * 16, 0, 7)]
    assert list(f.span(22, 10)) == []
    assert FileObj.decode(f.encode()).chunks == f.chunks


def test_a_chunk_never_shares_an_id_with_a_file_object_or_tree(tmp_path):
    """Found by the staging state machine: the empty file object encodes as b"F", so a 1-byte
    file holding "F" had the same id, and the two shared one reference count (chunk counters went
    wrong; with children, references could be lost). Ids are seeded by kind now."""
    d = tmp_path / "d"
    write(d / "empty", b"")
    write(d / "F", b"F")
    write(d / "T", b"T\0\0\0\0")             # the bytes of an empty tree
    (d / "emptydir").mkdir()
    with Repo(str(tmp_path / "s")) as repo:
        v0 = repo.put("k", str(d))[0]
        entries = {e.name: e for e in repo.tree(v0.root).entries}
        chunk_f = repo.file(entries[b"F"].ref).chunks[0]
        assert len({entries[b"empty"].ref, chunk_f, entries[b"emptydir"].ref,
                    repo.file(entries[b"T"].ref).chunks[0]}) == 4
        assert repo.stats()["stored_bytes"] == 6 and verify(repo).ok
        (d / "F").unlink()
        repo.put("k", str(d))
        repo.delete_version("k", "v0")
        assert repo.stats()["stored_bytes"] == 5 and verify(repo).ok
        assert repo.read(repo.file(entries[b"T"].ref), 0, 10) == b"T\0\0\0\0"
