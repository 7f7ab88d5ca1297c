"""The core store through the Python API: versions, aliases, reclaim, accounting, diff, export."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

import artfs
from artfs.errors import Conflict, CorruptData, Exists, InvalidInput, NotFound, StoreError
from artfs.repo.facade import Repo
from artfs.repo.verify import verify
from artfs.staging.commit import create_artifact
from artfs.staging.overlay import ROOT, Staging
from tests.helpers import DEEP, MiB, damage_blob, put_file, read, run_cli, seed_files, tree_snapshot, write

# Chunk-format overhead allowed in byte accounting: file chunk lists and trees are a few hundred
# bytes per version here; the chunks themselves are stored exactly.
SLACK = 64 * 1024


@pytest.fixture
def store(tmp_path):
    with artfs.Store(str(tmp_path / "store")) as s:
        yield s
    with Repo(str(tmp_path / "store")) as repo:
        report = verify(repo)
    assert report.ok, report.problems


def versions_du(store, name):
    return {v["version"]: v for v in store.du(name)["artifacts"][0]["versions"]}


def test_seed_scenario(store, tmp_path):
    d = tmp_path / "animals"
    seed_files(d)
    v0 = store.put("animals", str(d), type="dataset")
    assert (v0.name, v0.version, v0.aliases) == ("animals", "v0", ["latest"])
    write(d / "rat.png", os.urandom(3 * MiB))
    v1 = store.put("animals", str(d))
    assert v1.version == "v1" and store.get("animals:latest").version == "v1"
    assert (v1.file_count, v1.size) == (3, 6 * MiB)
    assert store.get("animals:v0").aliases == []
    assert sorted(store.get("animals:v0").files()) == ["cat.png", "dog.png"]
    assert store.get("animals").files() == ["cat.png", "dog.png", "rat.png"]

    du = store.du("animals")
    by = versions_du(store, "animals")
    assert by["v1"]["logical_bytes"] == 6 * MiB and by["v0"]["logical_bytes"] == 3 * MiB
    assert 6 * MiB <= du["store"]["stored_bytes"] <= 6 * MiB + SLACK   # not 9
    assert by["v0"]["unique_bytes"] <= SLACK
    assert 3 * MiB <= by["v1"]["unique_bytes"] <= 3 * MiB + SLACK

    again = store.put("animals", str(d))          # identical content: no new version
    assert again.version == "v1" and len(store.versions("animals")) == 2

    with store.get("animals:v1").open("rat.png") as f:
        assert f.read() == (d / "rat.png").read_bytes()


@pytest.fixture
def animals(store, tmp_path):
    """animals:v0 (cat, dog) and animals:v1 (+ rat) logged through the API."""
    d = tmp_path / "a"
    seed_files(d)
    store.put("animals", str(d))
    write(d / "rat.png", os.urandom(3 * MiB))
    store.put("animals", str(d))
    return store


def test_delete_newest_frees_its_unique_bytes(animals):
    store = animals
    before = store.du()["store"]["stored_bytes"]
    store.delete("animals:v1")
    after = store.du()["store"]["stored_bytes"]
    assert 3 * MiB <= before - after <= 3 * MiB + SLACK
    assert store.get("animals:latest").version == "v0"


def test_delete_oldest_moves_cost_to_the_survivor(animals):
    store = animals
    store.delete("animals:v0")
    by = versions_du(store, "animals")
    assert list(by) == ["v1"]
    assert 6 * MiB <= by["v1"]["unique_bytes"] <= 6 * MiB + SLACK
    with pytest.raises(NotFound):
        store.get("animals:v0")


def test_aliases_and_log(store, tmp_path):
    d = tmp_path / "m"
    write(d / "w.bin", b"weights-1")
    store.put("model", str(d), type="model", aliases=["best"])
    write(d / "w.bin", b"weights-2")
    store.put("model", str(d), aliases=["prod"])
    assert store.get("model:best").version == "v0"
    store.alias("model:v1", "best")
    assert store.get("model:best").version == "v1"
    with pytest.raises(Conflict):
        store.delete("model:v1")                       # aliases point at it
    store.unalias("model", "prod")
    with pytest.raises(NotFound):
        store.get("model:prod")
    store.delete("model:v1", force=True)
    assert store.get("model:latest").version == "v0"
    with pytest.raises(NotFound):
        store.get("model:best")
    actions = [(e["action"], e.get("alias"), e.get("version")) for e in store.log("model")]
    assert actions == [
        ("artifact.create", None, None), ("version.create", None, "v0"), ("alias.set", "best", "v0"),
        ("version.create", None, "v1"), ("alias.set", "prod", "v1"), ("alias.move", "best", "v1"),
        ("alias.remove", "prod", "v1"), ("version.delete", None, "v1"),
    ]
    ev = store.log("model")[0]
    assert ev["uid"] == os.getuid() and ev["user"] and ev["time"] > 0
    for bad in ("latest", "v3", "staging", "", "a/b", "..", "x" * 129, "tab\there"):
        with pytest.raises(InvalidInput):
            store.alias("model:v0", bad)


def test_version_numbers_are_never_reused(store, tmp_path):
    d = tmp_path / "x"
    for i in range(3):
        write(d / "f", b"%d" % i)
        store.put("x", str(d))
    store.delete("x:v2")
    write(d / "f", b"new")
    assert store.put("x", str(d)).version == "v3"


def test_delete_artifact_frees_everything(store, tmp_path):
    d = tmp_path / "x"
    seed_files(d)
    store.put("x", str(d), aliases=["best"])
    store.delete("x")
    assert store.artifacts() == []
    assert store.du()["store"]["stored_bytes"] == 0
    assert [e["action"] for e in store.log()][-1] == "artifact.delete"


def test_diff(store, tmp_path):
    d = tmp_path / "d"
    write(d / "keep.txt", b"same")
    write(d / "edit.txt", b"old")
    write(d / "gone.txt", b"bye")
    write(d / "sub" / "deep.txt", b"deep")
    store.put("d", str(d))
    write(d / "edit.txt", b"new")
    os.remove(d / "gone.txt")
    write(d / "sub" / "more.txt", b"more")
    os.utime(d / "keep.txt", ns=(1, 1))                 # mtime alone is not a change
    store.put("d", str(d))
    assert store.diff("d:v0", "d:v1") == {
        "added": ["sub/more.txt"], "removed": ["gone.txt"], "modified": ["edit.txt"]}


def test_mtime_only_change_makes_no_version(store, tmp_path):
    d = tmp_path / "d"
    write(d / "a", b"a")
    store.put("d", str(d))
    os.utime(d / "a", ns=(10**18, 10**18))
    assert store.put("d", str(d)).version == "v0"


def test_round_trip_keeps_everything(store, tmp_path):
    src = tmp_path / "src"
    write(src / "plain.txt", b"hello", mode=0o640, mtime_ns=1_600_000_000_123_456_789)
    write(src / "empty", b"", mode=0o600)
    write(src / "exec.sh", b"#!/bin/sh\n", mode=0o755)
    write(src / "big.bin", os.urandom(3 * MiB + 17))
    os.makedirs(src / "ro")
    write(src / "ro" / "inner", b"x")
    os.chmod(src / "ro", 0o555)
    os.symlink("plain.txt", src / "link")
    os.symlink("/etc/passwd", src / "abs-link")          # stored as given, never followed
    bad_name = os.fsdecode(b"caf\xe9-latin1.txt")        # not UTF-8
    write(os.path.join(src, bad_name), b"latin")
    deep = src
    for i in range(100):
        deep = deep / f"d{i}"
    write(deep / "leaf", b"leaf")
    v = store.put("rt", str(src))
    out = tmp_path / "out"
    v.download(str(out))
    assert tree_snapshot(out) == tree_snapshot(src)
    assert os.stat(out / "ro").st_mode & 0o777 == 0o555
    os.chmod(src / "ro", 0o755)
    os.chmod(out / "ro", 0o755)


def test_single_file_put(store, tmp_path):
    write(tmp_path / "model.pt", b"w" * 1000)
    v = store.put("m", str(tmp_path / "model.pt"))
    assert v.files() == ["model.pt"]


def test_bad_inputs_write_nothing(store, tmp_path):
    d = tmp_path / "d"
    write(d / "f", b"x")
    for name in ("", "a/b", "..", ".", "x" * 129, "bad\nname", "sp ace"):
        with pytest.raises(InvalidInput):
            store.put(name, str(d))
    with pytest.raises(InvalidInput):
        store.put("ok", str(tmp_path / "missing"))
    unreadable = d / "secret"
    write(unreadable, b"s")
    os.chmod(unreadable, 0)
    if os.geteuid() != 0:                                # root reads anything
        with pytest.raises(InvalidInput):
            store.put("ok", str(d))
    with pytest.raises(InvalidInput):
        store.put("ok", str(d), metadata=["not", "a", "dict"])
    with pytest.raises(NotFound):
        store.get("nothing")
    with pytest.raises(NotFound):
        store.get("ok:v0")
    store.put("typed", str(d), type="dataset")
    with pytest.raises(InvalidInput):
        store.put("typed", str(d), type="model")
    assert store.artifacts() == ["typed"]
    with pytest.raises(Exists):
        store.get("typed").download(str(d))             # not empty: refuse to overwrite


def test_not_a_store(tmp_path):
    d = tmp_path / "notastore"
    write(d / "something.txt", b"x")
    with pytest.raises(StoreError):
        artfs.Store(str(d))
    newer = tmp_path / "newer"
    artfs.Store(str(newer)).close()
    (newer / "ARTFS-STORE").write_text('{"format": 99}')
    with pytest.raises(StoreError, match="format 99"):
        artfs.Store(str(newer))


def test_store_files_are_private(tmp_path):
    old = os.umask(0o022)
    try:
        artfs.Store(str(tmp_path / "s")).close()
    finally:
        os.umask(old)
    files = []
    for top, dirs, names in os.walk(tmp_path / "s"):
        assert stat.S_IMODE(os.stat(top).st_mode) == 0o700, top
        files += [os.path.join(top, n) for n in names]
    assert {os.path.basename(f) for f in files} >= {"ARTFS-STORE", "store.lock", "data.mdb", "lock.mdb"}
    for f in files:
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600, f


def test_metadata_and_message(store, tmp_path):
    write(tmp_path / "d" / "f", b"x")
    v = store.put("d", str(tmp_path / "d"), message="first cut", metadata={"rows": 3})
    v = store.get("d:v0")
    assert (v.message, v.metadata, v.type) == ("first cut", {"rows": 3}, "dataset")
    assert len(v.digest) == 32


def test_edit_in_the_middle_stores_only_changed_chunks(store, tmp_path):
    d = tmp_path / "d"
    data = os.urandom(8 * MiB)
    write(d / "big", data)
    store.put("d", str(d))
    before = store.du()["store"]["stored_bytes"]
    write(d / "big", data[:4 * MiB] + b"inserted" + data[4 * MiB:])
    store.put("d", str(d))
    grew = store.du()["store"]["stored_bytes"] - before
    assert 0 < grew <= 3 * 256 * 1024                   # a few chunks, not the file


@pytest.mark.slow
def test_file_over_4gib(store, tmp_path):
    d = tmp_path / "d"
    os.makedirs(d)
    with open(d / "sparse", "wb") as f:
        f.truncate((4 << 30) + 4096)
        f.seek(4 << 30)
        f.write(b"tail-bytes")
    v = store.put("big", str(d))
    with v.open("sparse") as f:
        f.seek(4 << 30)
        assert f.read(10) == b"tail-bytes"
    assert store.du()["store"]["stored_bytes"] < 2 * MiB   # zeros dedup to one chunk


# staging: status, commit, reset (through the daemon when mounted) ------------------------------
NOTHING = {"added": [], "modified": [], "deleted": [], "interrupted": []}


def stage(path, name: str, change) -> None:
    """Change the staging of NAME without a mount: change(Staging) on a Repo opened for it."""
    with Repo(str(path)) as repo:
        change(Staging(repo, name))


def remove_a_add_new(s: Staging) -> None:
    s.unlink(ROOT, b"a")
    s.mkdir(ROOT, b"new", 0o755, os.getuid(), os.getgid())


def test_status_commit_reset_without_a_mount(tmp_path):
    path, d = tmp_path / "store", tmp_path / "d"
    write(d / "a", b"a")
    write(d / "keep", b"keep")
    with Repo(str(path)) as repo:
        create_artifact(repo, "empty")
    with artfs.Store(str(path)) as store:
        assert store.commit_ex("empty") == (None, False)      # no versions, empty staging
        assert store.versions("empty") == []
        store.put("ds", str(d))
        v, created = store.commit_ex("ds", aliases=["best"])  # nothing staged: latest, aliased
        assert (v.version, created, sorted(v.aliases)) == ("v0", False, ["best", "latest"])
        assert store.status("ds") == NOTHING
    stage(path, "ds", remove_a_add_new)
    with artfs.Store(str(path)) as store:
        assert store.status("ds") == {"added": ["new/"], "modified": [], "deleted": ["a"], "interrupted": []}
        store.reset("ds")
        assert store.status("ds") == NOTHING
        assert store.get("ds").files() == ["a", "keep"]
    stage(path, "ds", remove_a_add_new)
    with artfs.Store(str(path)) as store:
        v1 = store.commit("ds", message="no a")
        assert (v1.version, v1.message, v1.aliases, v1.files()) == ("v1", "no a", ["latest"], ["keep"])
        assert store.diff("ds:v0", "ds:v1") == {"added": ["new/"], "removed": ["a"], "modified": []}
        assert store.status("ds") == NOTHING
        for bad in ("a/b", "", ".."):
            for call in (store.status, store.commit, store.reset):
                with pytest.raises(InvalidInput):
                    call(bad)
        for call in (store.status, store.commit, store.reset):
            with pytest.raises(NotFound):
                call("missing")
    with Repo(str(path)) as repo:
        assert verify(repo).ok


@pytest.mark.fuse
def test_status_commit_reset_go_through_the_daemon(mounted):
    """With the store mounted the daemon runs them: the mount shows a commit when it returns, and
    a commit while a staging file is open for writing is refused with the daemon's Conflict."""
    m = mounted
    os.mkdir(m.path("ds"))
    with artfs.Store(m.store) as store:
        assert store.commit("ds") is None
        put_file(m.path("ds", "staging", "a"), b"first")
        assert store.status("ds") == {"added": ["a"], "modified": [], "deleted": [], "interrupted": []}
        v0, created = store.commit_ex("ds", aliases=["best"], message="m")
        assert (v0.version, created, v0.message, sorted(v0.aliases)) == ("v0", True, "m", ["best", "latest"])
        assert read(m.path("ds", "v0", "a")) == b"first" and os.readlink(m.path("ds", "best")) == "v0"
        put_file(m.path("ds", "staging", "b"), b"second")
        store.reset("ds")
        assert os.listdir(m.path("ds", "staging")) == ["a"] and store.status("ds") == NOTHING
        fd = os.open(m.path("ds", "staging", "a"), os.O_WRONLY)
        try:
            os.write(fd, b"F")
            with pytest.raises(Conflict):
                store.commit("ds")
        finally:
            os.close(fd)
        assert store.status("ds") == {"added": [], "modified": ["a"], "deleted": [], "interrupted": []}
        assert store.commit("ds").version == "v1"
        assert read(m.path("ds", "latest", "a")) == b"First"


# trees 2000 directories deep, at the interpreter's default recursion limit --------------------
def test_import_and_main_leave_the_recursion_limit_alone(tmp_path):
    """Importing artfs (or its CLI) must not change the host program's recursion limit, and
    artfs.cli.main() puts back whatever it raised for itself."""
    code = ("import sys; before = sys.getrecursionlimit(); import artfs, artfs.cli; "
            "imported = sys.getrecursionlimit(); artfs.cli.main(['--store', sys.argv[1], 'ls']); "
            "print(before, imported, sys.getrecursionlimit())")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s")], capture_output=True,
                          text=True, check=True)
    before, imported, after = proc.stdout.split()
    assert before == imported == after


@pytest.fixture
def default_recursion_limit():
    """The interpreter's default limit (1000) during the test, whatever ran before in this process."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    yield
    sys.setrecursionlimit(before)


@pytest.fixture
def deep_store(tmp_path, deep):
    """deep:v0 (.../f) and deep:v1 (.../f, .../g), put by the CLI; verified by the CLI at the end
    (the CLI process raises its own limit for the walks the lead has still to convert)."""
    store = tmp_path / "deep-store"
    run_cli(store, "put", "deep", deep.src, check=True)
    write(os.path.join(deep.leaf(), "g"), b"second")
    run_cli(store, "put", "deep", deep.src, check=True)
    yield str(store)
    proc = run_cli(store, "verify")
    assert proc.returncode == 0, proc.stdout + proc.stderr


DEEP_PATH = "/".join(["d"] * DEEP)


def test_api_reads_a_tree_2000_directories_deep(deep_store, deep, default_recursion_limit):
    with artfs.Store(deep_store) as store:
        v1 = store.get("deep:v1")
        assert v1.files() == [f"{DEEP_PATH}/f", f"{DEEP_PATH}/g"]
        assert store.diff("deep:v0", "deep:v1") == {"added": [f"{DEEP_PATH}/g"], "removed": [], "modified": []}
        assert store.diff("deep:v1", "deep:v0")["removed"] == [f"{DEEP_PATH}/g"]
        with v1.open(f"{DEEP_PATH}/g") as f:
            assert f.read() == b"second"
        out = v1.download(deep.out("out"))
        assert read(os.path.join(deep.leaf(out), "f")) == b"bottom"
        assert read(os.path.join(deep.leaf(out), "g")) == b"second"


def deep_leaf(s: Staging) -> int:
    ino = ROOT
    for _ in range(DEEP):
        ino = s.lookup(ino, b"d").ino
    return ino


def test_api_commits_a_staging_2000_directories_deep(deep_store, default_recursion_limit):
    """Status walks the staging's changes; commit compares the new tree with latest all the way
    down (trees_equal) before making the version."""
    stage(deep_store, "deep", lambda s: s.unlink(deep_leaf(s), b"g"))
    with artfs.Store(deep_store) as store:
        assert store.status("deep") == {"added": [], "modified": [], "deleted": [f"{DEEP_PATH}/g"], "interrupted": []}
        assert store.commit("deep").version == "v2"
        assert store.diff("deep:v0", "deep:v2") == {"added": [], "removed": [], "modified": []}
        assert store.status("deep") == NOTHING


def test_a_failed_download_of_a_deep_tree_leaves_nothing(tmp_path, deep, default_recursion_limit):
    """The half-written copy is removed without recursion and the real error is raised."""
    store = tmp_path / "deep-store"
    run_cli(store, "put", "deep", deep.src, check=True)
    with Repo(str(store)) as repo:
        tid = repo.resolve("deep").root
        for _ in range(DEEP):
            tid = repo.tree(tid).lookup(b"d").ref
        cid = repo.file(repo.tree(tid).lookup(b"f").ref).chunks[0]
    damage_blob(store, cid, "corrupt")
    with artfs.Store(str(store)) as s:
        with pytest.raises(CorruptData):
            s.get("deep").download(deep.out("out"))
    assert sorted(os.listdir(tmp_path)) == ["deep", "deep-store"]


def test_api_puts_a_tree_2000_directories_deep(tmp_path, deep, default_recursion_limit):
    with artfs.Store(str(tmp_path / "s")) as store:
        assert store.put("deep", deep.src).files() == [f"{DEEP_PATH}/f"]


def test_api_verifies_a_tree_2000_directories_deep(deep_store, default_recursion_limit):
    with artfs.Store(deep_store) as store:
        assert store.verify("deep").ok


def test_api_commit_equal_to_latest_2000_directories_deep(deep_store, default_recursion_limit):
    """Only an mtime changed deep inside: no version, and the new equal tree is released."""
    stage(deep_store, "deep", lambda s: s.setattr(s.lookup(deep_leaf(s), b"f").ino, mtime_ns=1))
    with artfs.Store(deep_store) as store:
        assert store.status("deep") == NOTHING
        v, created = store.commit_ex("deep")
        assert (v.version, created) == ("v1", False)


def test_api_deletes_a_tree_2000_directories_deep(deep_store, default_recursion_limit):
    with artfs.Store(deep_store) as store:
        store.delete("deep:v0")
        assert [v.version for v in store.versions("deep")] == ["v1"]
