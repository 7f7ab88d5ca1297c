"""A commit takes big staging data files into the store as segments of their own (store/segments.py
"Adopted segments"): no byte copied, the duplicated bytes punched out, the space back when the
chunks go, and staging never writing bytes the store holds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from artfs.errors import ArtfsError, CorruptData
from artfs.repo.facade import Repo
from artfs.repo.ingest import ADOPT_MIN
from artfs.staging.commit import commit, create_artifact
from artfs.staging.overlay import ROOT, Staging
from artfs.store.segments import ADOPTED, DIR as SEGMENTS, live_key, segment_name
from tests.test_crypto import PASS, cli, store_files
from tests.test_staging import add_file, assert_verified, version, write

MiB = 1 << 20
ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the artfs under test


@pytest.fixture
def repo(tmp_path):
    with Repo(str(tmp_path / "store")) as r:
        yield r


def adopted(repo: Repo) -> dict[int, os.stat_result]:
    """The adopted segment files on disk: number -> stat."""
    path = os.path.join(repo.objects.store.env.path, SEGMENTS)
    out = {}
    for name in os.listdir(path) if os.path.isdir(path) else ():
        number = int(name, 16)
        if number >= ADOPTED:
            out[number] = os.stat(os.path.join(path, name))
    return out


def disk_bytes(st: os.stat_result) -> int:
    return st.st_blocks * 512


def commit_file(repo: Repo, name: bytes, data: bytes) -> None:
    """A file NAME with DATA added to artifact a's staging (made if need be) and committed."""
    if "a" not in repo.artifacts():
        create_artifact(repo, "a")
    add_file(Staging(repo, "a"), ROOT, name, data)
    commit(repo, "a")


def test_a_commit_takes_a_big_staging_file_in_without_copying_it(repo):
    create_artifact(repo, "a")
    s = Staging(repo, "a")
    data = os.urandom(8 * MiB)
    ino = add_file(s, ROOT, b"big", data)
    inode = os.stat(s.files.path(ino)).st_ino
    assert commit(repo, "a")[0].number == 0
    segs = adopted(repo)
    assert len(segs) == 1
    (st,) = segs.values()
    assert st.st_ino == inode and st.st_nlink == 1    # the staging file itself, its name gone
    assert version(repo, "a") == {b"big": data}
    assert_verified(repo)


def test_small_files_are_stored_by_copy(repo):
    create_artifact(repo, "a")
    add_file(Staging(repo, "a"), ROOT, b"small", os.urandom(ADOPT_MIN - 1))
    commit(repo, "a")
    assert adopted(repo) == {}


def test_an_encrypted_store_seals_big_files_instead_of_taking_them_in(tmp_path, monkeypatch):
    """Chunks are sealed in an encrypted store: its files never hold a staging file's bytes."""
    store = tmp_path / "enc"
    assert cli(store, "init", "--encrypt", check=True).returncode == 0
    monkeypatch.setenv("ARTFS_PASSPHRASE", PASS)
    data = os.urandom(8 * MiB)
    with Repo(str(store)) as repo:
        create_artifact(repo, "a")
        add_file(Staging(repo, "a"), ROOT, b"big", data)
        commit(repo, "a")
        assert adopted(repo) == {}
        assert version(repo, "a") == {b"big": data}
        assert_verified(repo)
    needle = data[MiB:MiB + 64]
    assert not any(needle in content for content in store_files(store).values())


def test_bytes_already_stored_are_punched_out_of_the_adopted_file(repo):
    first = os.urandom(16 * MiB)
    commit_file(repo, b"one", first)
    second = first + os.urandom(2 * MiB)   # 16 MiB already stored, 2 MiB new
    commit_file(repo, b"two", second)
    segs = adopted(repo)
    assert len(segs) == 2
    newer = max(segs.values(), key=lambda st: st.st_mtime_ns)
    assert newer.st_size == 18 * MiB
    assert disk_bytes(newer) < 3 * MiB   # the first 16 MiB punched (but a block at each edge)
    assert version(repo, "a") == {b"one": first, b"two": second}
    assert_verified(repo)


def test_deleting_the_version_removes_its_adopted_files(repo):
    keep = os.urandom(8 * MiB)
    commit_file(repo, b"keep", keep)
    commit_file(repo, b"gone", os.urandom(8 * MiB))
    assert len(adopted(repo)) == 2
    s = Staging(repo, "a")
    s.unlink(ROOT, b"gone")
    commit(repo, "a")
    repo.delete_version("a", "v1")
    repo.delete_version("a", "v0")
    assert len(adopted(repo)) == 1
    assert version(repo, "a") == {b"keep": keep}
    assert_verified(repo)


def test_a_delete_in_a_segment_without_its_count_is_refused_whole(repo):
    """A store that lost an adopted segment's count of live objects (a damaged meta database)
    cannot tell when the file may go: freeing its objects says so and frees none of them (the
    version itself is gone: the catalog deletes it first, then frees what nothing references)."""
    data = os.urandom(8 * MiB)
    commit_file(repo, b"big", data)
    commit_file(repo, b"other", os.urandom(ADOPT_MIN - 1))   # v1 keeps big: v0 frees nothing
    (number,) = adopted(repo)
    store = repo.objects.store.local
    store._write(lambda txn: txn.delete(live_key(number), db=store.env.dbs["meta"]))
    s = Staging(repo, "a")
    s.unlink(ROOT, b"big")
    commit(repo, "a")
    repo.delete_version("a", "v0")   # v1 still holds big
    before = adopted(repo)[number]
    with pytest.raises(CorruptData, match="no count"):
        repo.delete_version("a", "v1")
    after = adopted(repo)[number]
    assert disk_bytes(after) == disk_bytes(before) >= len(data)
    with open(os.path.join(store.env.path, SEGMENTS, segment_name(number)), "rb") as f:
        assert f.read() == data


def test_a_commit_that_fails_after_taking_files_in_leaves_staging_whole(repo, monkeypatch):
    """The commit's transaction fails after the store linked the data file in: staging keeps its
    file, the store's name goes with the chunks' references, and a later write through staging
    never changes bytes the store holds (it gets a copy first)."""
    create_artifact(repo, "a")
    s = Staging(repo, "a")
    data = os.urandom(8 * MiB)
    ino = add_file(s, ROOT, b"big", data)

    def fail(*args, **kwargs):
        raise ArtfsError("injected: the version transaction fails")
    monkeypatch.setattr("artfs.staging.commit._commit", fail)
    with pytest.raises(ArtfsError, match="injected"):
        commit(repo, "a")
    monkeypatch.undo()
    assert adopted(repo) == {}   # released: the store's link removed, staging's kept
    with open(s.files.path(ino), "rb") as f:
        assert f.read() == data
    assert os.stat(s.files.path(ino)).st_nlink == 1
    assert commit(repo, "a")[0].number == 0
    assert version(repo, "a") == {b"big": data}
    assert_verified(repo)


def test_staging_copies_a_data_file_the_store_also_holds_before_writing_it(repo, tmp_path):
    """A killed commit can leave a data file linked into the store (its chunks maybe used by
    another version meanwhile): staging's next write goes to a copy, the store's bytes stay."""
    create_artifact(repo, "a")
    s = Staging(repo, "a")
    data = os.urandom(8 * MiB)
    ino = add_file(s, ROOT, b"big", data)
    other = str(tmp_path / "store-link")
    os.link(s.files.path(ino), other)   # the store's name, as a killed commit leaves it
    write(s, ino, b"new bytes", truncate=False)
    with open(other, "rb") as f:
        assert f.read() == data
    with open(s.files.path(ino), "rb") as f:
        assert f.read() == b"new bytes" + data[9:]
    assert os.stat(s.files.path(ino)).st_nlink == 1


def test_a_killed_adoption_leaves_a_file_that_recovery_removes(repo):
    """A segment file without located chunks (the process died between the link and its
    transaction's commit) is removed by the next recovery; adopted files in use are not."""
    commit_file(repo, b"big", os.urandom(8 * MiB))
    (live,) = adopted(repo)
    seg_dir = os.path.join(repo.objects.store.env.path, SEGMENTS)
    stray = os.path.join(seg_dir, segment_name(ADOPTED + 12345))
    with open(stray, "wb") as f:
        f.write(b"x" * 4096)
    repo.recover()
    assert list(adopted(repo)) == [live]
    assert_verified(repo)


KILLED_AFTER_ADOPTION = """
import os, signal, sys
import artfs.staging.commit as c
from artfs.repo.facade import Repo
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
c._commit = die   # the version's transaction never runs: killed right after the store took the file in
with Repo(sys.argv[1]) as repo:
    c.commit(repo, "a")
"""


def test_a_commit_killed_after_taking_files_in_loses_nothing(tmp_path):
    """A committing process SIGKILLed between the store's adoption (the data file linked in, its
    chunks located) and the version's transaction: staging still has the file (shared with the
    store until recovery); the next writer releases the dead session, which removes the store's
    link; committing again records the exact bytes; verify is clean."""
    store = str(tmp_path / "store")
    data = os.urandom(8 * MiB)
    with Repo(store) as repo:
        create_artifact(repo, "a")
        ino = add_file(Staging(repo, "a"), ROOT, b"big", data)
    proc = subprocess.run([sys.executable, "-c", KILLED_AFTER_ADOPTION, store],
                          capture_output=True, env={**os.environ, "PYTHONPATH": ROOT_DIR})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with Repo(store) as repo:
        s = Staging(repo, "a")
        assert os.stat(s.files.path(ino)).st_nlink == 2          # staging's and the store's
        assert len(adopted(repo)) == 1
        repo.recover()
        assert adopted(repo) == {}
        assert os.stat(s.files.path(ino)).st_nlink == 1
        with open(s.files.path(ino), "rb") as f:
            assert f.read() == data
        assert commit(repo, "a")[0].number == 0
        assert version(repo, "a") == {b"big": data}
        assert_verified(repo)
