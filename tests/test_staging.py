"""Staging and commit against real stores in tmp_path (tier 2: no FUSE, no mocks)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from artfs.repo.accounting import du
from artfs.catalog.objects import DIR, FILE, LINK, Entry
from artfs.staging.commit import commit, create_artifact
from artfs.errors import (Conflict, Exists, InvalidInput, IsADirectory, NameTooLong, NotADirectory,
                          NotEmpty, NotFound)
from artfs.repo.facade import Repo
from artfs.staging.overlay import RENAME_EXCHANGE, RENAME_NOREPLACE, ROOT, Staging
from artfs.store.backend import Obj
from artfs.store.ids import object_id, strong_digest
from artfs.repo.verify import verify

MiB = 1 << 20
UID, GID = os.getuid(), os.getgid()


@pytest.fixture
def repo(tmp_path):
    with Repo(str(tmp_path / "store")) as r:
        yield r


# helpers ---------------------------------------------------------------------------------------
def assert_verified(repo: Repo) -> None:
    report = verify(repo)
    assert report.ok, report.problems


def write(s: Staging, ino: int, data: bytes, truncate: bool = True) -> None:
    with open(s.open_data(ino, truncate=truncate), "r+b") as f:
        f.write(data)


def add_file(s: Staging, parent: int, name: bytes, data: bytes) -> int:
    ino = s.create(parent, name, 0o644, UID, GID).ino
    write(s, ino, data)
    return ino


def ino_of(s: Staging, path: bytes) -> int:
    ino = ROOT
    for part in filter(None, path.split(b"/")):
        ino = s.lookup(ino, part).ino
    return ino


def staged(s: Staging, ino: int = ROOT, prefix: bytes = b"") -> dict:
    """Everything staging shows: path -> bytes (file), ('l', target) or 'd'."""
    out = {}
    for e in s.readdir(ino):
        path = prefix + e.name
        if e.kind == DIR:
            out[path] = "d"
            out.update(staged(s, e.ino, path + b"/"))
        elif e.kind == LINK:
            out[path] = ("l", s.readlink(e.ino))
        elif e.data is not None:
            with open(e.data, "rb") as f:
                out[path] = f.read()
        else:
            out[path] = s.repo.read(s.repo.file(e.base), 0, e.size)
    return out


def stored(repo: Repo, tid: bytes, prefix: bytes = b"") -> dict:
    """The same view of a stored tree."""
    out = {}
    for e in repo.tree(tid).entries:
        path = prefix + e.name
        if e.kind == DIR:
            out[path] = "d"
            out.update(stored(repo, e.ref, path + b"/"))
        elif e.kind == LINK:
            out[path] = ("l", e.ref)
        else:
            out[path] = repo.read(repo.file(e.ref), 0, e.size)
    return out


def version(repo: Repo, name: str, ref: str = "latest") -> dict:
    return stored(repo, repo.resolve(name, ref).root)


def version_file(repo: Repo, root: bytes, path: bytes) -> bytes:
    """One file of a stored tree, without reading the rest."""
    *dirs, name = path.split(b"/")
    tid = root
    for d in dirs:
        tid = repo.tree(tid).lookup(d).ref
    e = repo.tree(tid).lookup(name)
    return repo.read(repo.file(e.ref), 0, e.size)


def make_dir(root, files: dict[str, bytes]) -> str:
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    return str(root)


@pytest.fixture
def based(repo, tmp_path):
    """Artifact 'ds' with v0 = a.txt, b.txt, sub/c.txt, sub/deep/d.txt."""
    src = make_dir(tmp_path / "src", {"a.txt": b"alpha", "b.txt": b"bravo", "sub/c.txt": b"charlie",
                                      "sub/deep/d.txt": b"delta"})
    repo.put("ds", src, warn=lambda m: None)
    return Staging(repo, "ds")


# the seed scenario -----------------------------------------------------------------------------
def test_seed_scenario_through_staging(repo):
    create_artifact(repo, "animals", "dataset")
    with pytest.raises(Exists):
        create_artifact(repo, "animals")
    s = Staging(repo, "animals")
    cat, dog, rat = os.urandom(2 * MiB), os.urandom(MiB), os.urandom(3 * MiB)
    add_file(s, ROOT, b"cat.png", cat)
    add_file(s, ROOT, b"dog.png", dog)
    v0, created = commit(repo, "animals", message="first")
    assert (v0.label, created, v0.files, v0.bytes) == ("v0", True, 2, 3 * MiB)
    add_file(s, ROOT, b"rat.png", rat)
    v1, created = commit(repo, "animals")
    assert (v1.label, created, v1.files, v1.bytes) == ("v1", True, 3, 6 * MiB)
    assert version(repo, "animals", "v0") == {b"cat.png": cat, b"dog.png": dog}
    assert version(repo, "animals", "v1") == {b"cat.png": cat, b"dog.png": dog, b"rat.png": rat}
    assert staged(s) == version(repo, "animals")
    unique = {v["version"]: v["unique_bytes"] for v in du(repo, "animals")["artifacts"][0]["versions"]}
    assert unique == {"v0": 0, "v1": 3 * MiB}
    assert os.listdir(s.files.dir) == []  # committed data files are gone
    assert_verified(repo)


def test_unchanged_staging_commits_nothing(repo, based):
    v0 = repo.resolve("ds")
    assert commit(repo, "ds", aliases=["best"]) == (repo.resolve("ds"), False)
    assert repo.aliases("ds")["best"] == v0.number
    write(based, ino_of(based, b"a.txt"), b"alpha", truncate=False)  # copied up, same bytes
    assert based.status()["modified"] == ["a.txt"]
    info, created = commit(repo, "ds")
    assert (info.number, created) == (v0.number, False)
    assert based.status() == {"added": [], "modified": [], "deleted": [], "interrupted": []}
    assert_verified(repo)


def test_empty_artifact_commits_nothing(repo):
    create_artifact(repo, "empty")
    assert commit(repo, "empty") == (None, False)
    s = Staging(repo, "empty")
    s.create(ROOT, b"x", 0o644, UID, GID)
    s.unlink(ROOT, b"x")
    assert commit(repo, "empty") == (None, False)
    assert repo.versions("empty") == [] and s.base_version() is None
    assert_verified(repo)


# persistence -----------------------------------------------------------------------------------
def test_staging_survives_reopening_the_store(tmp_path):
    path = str(tmp_path / "store")
    with Repo(path) as repo:
        create_artifact(repo, "ds")
        s = Staging(repo, "ds")
        d = s.mkdir(ROOT, b"dir", 0o750, UID, GID)
        add_file(s, d.ino, b"f", b"written and closed")
        before = (staged(s), s.status(), ino_of(s, b"dir/f"))
    with Repo(path) as repo:  # a fresh process: the CLI without a daemon
        s = Staging(repo, "ds")
        assert (staged(s), s.status(), ino_of(s, b"dir/f")) == before
        assert s.getattr(ino_of(s, b"dir")).mode == 0o750
        commit(repo, "ds")
        assert version(repo, "ds") == {b"dir": "d", b"dir/f": b"written and closed"}
        assert_verified(repo)


def test_status_lists_added_modified_deleted(repo, based):
    s = based
    write(s, ino_of(s, b"a.txt"), b"ALPHA!", truncate=True)
    s.unlink(ROOT, b"b.txt")
    s.setattr(ino_of(s, b"sub/c.txt"), mode=0o600)
    s.rename(ino_of(s, b"sub"), b"deep", ROOT, b"moved")
    n = s.mkdir(ROOT, b"new", 0o755, UID, GID)
    add_file(s, n.ino, b"e.txt", b"echo")
    s.symlink(ROOT, b"link", b"a.txt", UID, GID)
    assert s.status() == {
        "added": ["link", "moved/", "moved/d.txt", "new/", "new/e.txt"],
        "modified": ["a.txt", "sub/c.txt"],
        "deleted": ["b.txt", "sub/deep/", "sub/deep/d.txt"],
        "interrupted": [],
    }
    v, created = commit(repo, "ds")
    assert created and (v.files, v.bytes) == (4, len(b"ALPHA!charliedeltaecho"))  # links are not files
    assert version(repo, "ds") == {b"a.txt": b"ALPHA!", b"sub": "d", b"sub/c.txt": b"charlie",
                                   b"moved": "d", b"moved/d.txt": b"delta", b"new": "d",
                                   b"new/e.txt": b"echo", b"link": ("l", b"a.txt")}
    assert repo.tree(repo.tree(v.root).lookup(b"sub").ref).lookup(b"c.txt").mode == 0o600
    assert_verified(repo)


def test_reset_discards_everything(repo, based):
    s = based
    base = staged(s)
    write(s, ino_of(s, b"sub/c.txt"), b"changed")
    s.mkdir(ROOT, b"n", 0o755, UID, GID)
    s.unlink(ROOT, b"a.txt")
    assert os.listdir(s.files.dir)
    s.reset()
    assert staged(s) == base and os.listdir(s.files.dir) == []
    assert s.status() == {"added": [], "modified": [], "deleted": [], "interrupted": []}
    assert_verified(repo)


# the base --------------------------------------------------------------------------------------
def test_clean_staging_follows_latest_and_dirty_keeps_its_base(repo, based, tmp_path):
    s = based
    repo.put("ds", make_dir(tmp_path / "v1", {"only.txt": b"v1"}), warn=lambda m: None)
    assert s.base_version() == 1 and staged(s) == {b"only.txt": b"v1"}
    add_file(s, ROOT, b"mine.txt", b"mine")
    repo.put("ds", make_dir(tmp_path / "v2", {"other.txt": b"v2"}), warn=lambda m: None)
    assert s.base_version() == 1 and set(staged(s)) == {b"only.txt", b"mine.txt"}
    with pytest.raises(Conflict):
        repo.delete_version("ds", "v1")  # staging's base stays while it has changes
    v, created = commit(repo, "ds")  # the last writer wins
    assert created and v.number == 3 and version(repo, "ds") == {b"only.txt": b"v1", b"mine.txt": b"mine"}
    repo.delete_version("ds", "v1")
    assert_verified(repo)


def test_unmodified_lookups_write_nothing_and_inodes_are_stable(repo, based):
    s = based
    generation = repo.db.generation()
    c = s.lookup(s.lookup(ROOT, b"sub").ino, b"c.txt")
    assert s.getattr(c.ino) == c and c.base is not None and c.data is None and c.uid == UID
    names = [e.name for e in s.readdir(ROOT)]
    assert names == [b"a.txt", b"b.txt", b"sub"]
    assert repo.db.generation() == generation and s.status()["added"] == []
    inos = {p: ino_of(s, p) for p in (b"a.txt", b"b.txt", b"sub", b"sub/c.txt", b"sub/deep",
                                      b"sub/deep/d.txt")}
    assert len(set(inos.values()) | {ROOT}) == 7
    assert {p: ino_of(Staging(repo, "ds"), p) for p in inos} == inos  # same in another process
    s.create(ROOT, b"aa", 0o644, UID, GID)
    s.setattr(inos[b"sub/c.txt"], mode=0o600)
    s.rename(inos[b"sub"], b"deep", ROOT, b"deep2")
    assert ino_of(s, b"deep2/d.txt") == inos[b"sub/deep/d.txt"]
    assert ino_of(s, b"deep2") == inos[b"sub/deep"]
    assert {p: ino_of(s, p) for p in (b"a.txt", b"b.txt", b"sub", b"sub/c.txt")} == \
        {p: inos[p] for p in (b"a.txt", b"b.txt", b"sub", b"sub/c.txt")}
    with pytest.raises(NotFound):
        s.lookup(inos[b"sub"], b"deep")


def test_paths_and_entries_follow_renames_and_removals(repo, based):
    """Staging.paths (inode -> path now), Staging.entries (path -> entry now) and base_paths (where
    a staging without changes on a version had its inodes): what the mount uses to keep inode
    numbers across a commit, a reset or a moved latest."""
    s = based
    every = [b"", b"a.txt", b"b.txt", b"sub", b"sub/c.txt", b"sub/deep", b"sub/deep/d.txt"]
    inos = {p: ino_of(s, p) for p in every}
    assert s.paths(inos.values()) == {i: p for p, i in inos.items()}          # clean staging
    assert s.base_paths(inos.values(), 0) == {i: p for p, i in inos.items()}
    assert {p: e.ino for p, e in s.entries(every + [b"nope", b"a.txt/x"]).items()} == inos
    new = s.mkdir(inos[b"sub/deep"], b"new", 0o755, UID, GID).ino
    s.rename(inos[b"sub"], b"deep", ROOT, b"moved")          # a recorded directory moves ...
    s.unlink(ROOT, b"b.txt")
    s.rename(ROOT, b"a.txt", inos[b"sub"], b"a2")
    got = s.paths(list(inos.values()) + [new, 999])
    assert got == {ROOT: b"", inos[b"a.txt"]: b"sub/a2", inos[b"sub"]: b"sub",
                   inos[b"sub/c.txt"]: b"sub/c.txt", inos[b"sub/deep"]: b"moved",
                   inos[b"sub/deep/d.txt"]: b"moved/d.txt", new: b"moved/new"}  # ... with children
    assert {p: e.ino for p, e in s.entries(got.values()).items()} == {p: i for i, p in got.items()}
    assert s.entries([b"b.txt", b"a.txt", b"sub/deep", b"moved/d.txt/x"]) == {}
    assert s.base_paths(inos.values(), 0) == {i: p for p, i in inos.items()}  # by the tree alone
    assert s.base_paths(inos.values(), 7) == s.base_paths(inos.values(), None) == {ROOT: b""}
    commit(repo, "ds")                                       # renumbered; the paths stay
    assert {p: e.kind for p, e in s.entries(got.values()).items()} == \
        {b"": DIR, b"sub/a2": FILE, b"sub": DIR, b"sub/c.txt": FILE, b"moved": DIR,
         b"moved/d.txt": FILE, b"moved/new": DIR}
    assert s.paths(inos.values()) == {ROOT: b""}
    assert [e.name for e in s.readdir_at(b"moved")] == [b"d.txt", b"new"]
    with pytest.raises(NotFound):
        s.readdir_at(b"nope")
    with pytest.raises(NotADirectory):
        s.readdir_at(b"moved/d.txt")


def test_a_read_that_began_before_a_commit_landed_reads_again(repo, based, monkeypatch):
    """A read transaction may still show a modified file whose data file a commit (or reset)
    has just deleted: the read is done again instead of reporting corruption."""
    s = based
    write(s, ino_of(s, b"a.txt"), b"changed")
    old = repo.db.catalog_env.env.begin(buffers=True)             # the state before the commit
    commit(repo, "ds")
    real, reads = repo.db.read, []

    def stale_first():
        reads.append(1)
        if len(reads) == 1:
            return contextlib.nullcontext(old)
        return real()
    monkeypatch.setattr(repo.db, "read", stale_first)
    assert {e.name: e.size for e in s.readdir(ROOT)}[b"a.txt"] == 7 and len(reads) >= 2
    old.abort()


# operations ------------------------------------------------------------------------------------
def test_rename_rules(repo, based):
    s = based
    sub = ino_of(s, b"sub")
    a = s.lookup(ROOT, b"a.txt")
    replaced = s.rename(ROOT, b"a.txt", ROOT, b"b.txt")  # atomic replace of a file
    assert replaced.name == b"b.txt" and staged(s)[b"b.txt"] == b"alpha" and b"a.txt" not in staged(s)
    assert s.lookup(ROOT, b"b.txt").ino == a.ino
    e1, e2 = s.mkdir(ROOT, b"e1", 0o755, UID, GID), s.mkdir(ROOT, b"e2", 0o755, UID, GID)
    add_file(s, e1.ino, b"x", b"x")
    assert s.rename(ROOT, b"e1", ROOT, b"e2").ino == e2.ino  # a directory over an empty one
    with pytest.raises(NotEmpty):
        s.rename(ROOT, b"e2", ROOT, b"sub")
    with pytest.raises(IsADirectory):
        s.rename(ROOT, b"b.txt", ROOT, b"sub")
    with pytest.raises(NotADirectory):
        s.rename(ROOT, b"sub", ROOT, b"b.txt")
    with pytest.raises(InvalidInput):
        s.rename(ROOT, b"sub", ino_of(s, b"sub/deep"), b"loop")
    with pytest.raises(InvalidInput):
        s.rename(ROOT, b"sub", sub, b"self")
    with pytest.raises(Exists):
        s.rename(ROOT, b"b.txt", sub, b"c.txt", RENAME_NOREPLACE)
    with pytest.raises(InvalidInput):
        s.rename(ROOT, b"b.txt", sub, b"c.txt", RENAME_EXCHANGE)
    with pytest.raises(NotFound):
        s.rename(ROOT, b"missing", ROOT, b"x")
    assert s.rename(ROOT, b"b.txt", ROOT, b"b.txt") is None
    s.rename(sub, b"deep", ino_of(s, b"e2"), b"deep")  # a base subtree moves whole
    commit(repo, "ds")
    assert version(repo, "ds") == {b"b.txt": b"alpha", b"sub": "d", b"sub/c.txt": b"charlie",
                                   b"e2": "d", b"e2/x": b"x", b"e2/deep": "d",
                                   b"e2/deep/d.txt": b"delta"}
    assert_verified(repo)


def test_unlink_and_rmdir(repo, based):
    s = based
    removed = s.unlink(ROOT, b"a.txt")
    assert removed.name == b"a.txt" and removed.base is not None
    with pytest.raises(NotFound):
        s.getattr(removed.ino)
    with pytest.raises(IsADirectory):
        s.unlink(ROOT, b"sub")
    with pytest.raises(NotADirectory):
        s.rmdir(ROOT, b"b.txt")
    with pytest.raises(NotEmpty):
        s.rmdir(ROOT, b"sub")
    deep = ino_of(s, b"sub/deep")
    s.unlink(deep, b"d.txt")
    assert s.getattr(deep).size == 0
    s.rmdir(ino_of(s, b"sub"), b"deep")
    local = add_file(s, ROOT, b"tmp", b"data")
    path = s.getattr(local).data
    s.unlink(ROOT, b"tmp")
    assert not os.path.exists(path)
    commit(repo, "ds")
    assert version(repo, "ds") == {b"b.txt": b"bravo", b"sub": "d", b"sub/c.txt": b"charlie"}
    assert_verified(repo)


def test_mkdir_symlink_and_non_utf8_names(repo):
    create_artifact(repo, "ds")
    s = Staging(repo, "ds")
    d = s.mkdir(ROOT, b"caf\xe9", 0o700, UID, GID)
    add_file(s, d.ino, b"\xff\xfe", b"bytes")
    link = s.symlink(d.ino, b"ln", b"../does/not/exist\xff", UID, GID)
    assert (link.kind, link.size, link.target) == (LINK, 18, b"../does/not/exist\xff")
    assert s.readlink(link.ino) == b"../does/not/exist\xff"
    with pytest.raises(InvalidInput):
        s.readlink(d.ino)
    with pytest.raises(Exists):
        s.mkdir(ROOT, b"caf\xe9", 0o700, UID, GID)
    with pytest.raises(NotADirectory):
        s.create(ino_of(s, b"caf\xe9/\xff\xfe"), b"x", 0o644, UID, GID)
    assert s.status()["added"] == sorted([os.fsdecode(b"caf\xe9/"), os.fsdecode(b"caf\xe9/\xff\xfe"),
                                          os.fsdecode(b"caf\xe9/ln")])
    commit(repo, "ds")
    assert version(repo, "ds") == {b"caf\xe9": "d", b"caf\xe9/\xff\xfe": b"bytes",
                                   b"caf\xe9/ln": ("l", b"../does/not/exist\xff")}
    assert repo.tree(repo.resolve("ds").root).entries[0].mode == 0o700
    assert_verified(repo)


def test_name_limits(repo):
    create_artifact(repo, "ds")
    s = Staging(repo, "ds")
    s.create(ROOT, b"n" * 255, 0o644, UID, GID)
    with pytest.raises(NameTooLong):
        s.create(ROOT, b"n" * 256, 0o644, UID, GID)
    for bad in (b"", b".", b"..", b"a/b", b"a\0b"):
        with pytest.raises(InvalidInput):
            s.mkdir(ROOT, bad, 0o755, UID, GID)
    with pytest.raises(NameTooLong):
        s.symlink(ROOT, b"l", b"t" * 4096, UID, GID)
    commit(repo, "ds")
    assert list(version(repo, "ds")) == [b"n" * 255]
    assert_verified(repo)


def test_deep_path_of_4000_bytes(repo):
    create_artifact(repo, "ds")
    s = Staging(repo, "ds")
    ino, names = ROOT, [b"%03d" % i + b"d" * 36 for i in range(100)]  # 100 * 40 bytes with slashes
    for name in names:
        ino = s.mkdir(ino, name, 0o755, UID, GID).ino
    add_file(s, ino, b"leaf", b"deep")
    path = b"/".join(names) + b"/leaf"
    assert len(path) > 4000
    commit(repo, "ds")
    assert version(repo, "ds")[path] == b"deep"
    write(s, ino_of(s, path), b"deeper")
    assert s.status()["modified"] == [os.fsdecode(path)]
    commit(repo, "ds")
    assert version(repo, "ds")[path] == b"deeper"
    assert_verified(repo)


def test_truncate_extend_and_attributes(repo, based):
    s = based
    a, b, c = ino_of(s, b"a.txt"), ino_of(s, b"b.txt"), ino_of(s, b"sub/c.txt")
    s.setattr(a, size=3)
    assert s.getattr(a).size == 3 and s.getattr(a).data is not None
    s.setattr(a, size=6)
    s.setattr(b, size=0)
    assert os.path.getsize(s.getattr(b).data) == 0
    mtime = 1_000_000_000 * 10**9
    e = s.setattr(c, mode=0o640, uid=1234, gid=4321, mtime_ns=mtime)
    assert (e.mode, e.uid, e.gid, e.mtime_ns, e.data) == (0o640, 1234, 4321, mtime, None)
    write(s, c, b"C", truncate=False)  # copy-up keeps the bytes after the write
    assert staged(s)[b"sub/c.txt"] == b"Charlie"
    s.setattr(c, mtime_ns=mtime)
    assert s.getattr(c).mtime_ns == mtime
    with pytest.raises(IsADirectory):
        s.open_data(ino_of(s, b"sub"))
    with pytest.raises(InvalidInput):
        s.setattr(a, size=-1)
    with pytest.raises(InvalidInput):
        s.setattr(a, uid=-1)
    commit(repo, "ds")
    assert version(repo, "ds")[b"a.txt"] == b"alp\0\0\0" and version(repo, "ds")[b"b.txt"] == b""
    entry = repo.tree(repo.tree(repo.resolve("ds").root).lookup(b"sub").ref).lookup(b"c.txt")
    assert (entry.mode, entry.mtime_ns) == (0o640, mtime)
    assert_verified(repo)


def test_delete_artifact_removes_its_staging(repo, based):
    add_file(based, ROOT, b"x", b"x")
    assert os.listdir(based.files.dir)
    repo.delete_artifact("ds")
    assert not os.path.exists(based.files.dir)
    with pytest.raises(NotFound):
        Staging(repo, "ds")
    create_artifact(repo, "ds")
    assert staged(Staging(repo, "ds")) == {}
    with repo.db.read() as txn, txn.cursor(db=repo.db.dbs["staging"]) as cur:
        assert [bytes(k) for k in cur.iternext(values=False)] == []
    assert_verified(repo)


# cost and crashes ------------------------------------------------------------------------------
def _big_artifact(repo: Repo, name: str, dirs: int, per_dir: int, flat: int) -> None:
    """A version with dirs x per_dir files under tree/ plus one directory of ``flat`` entries,
    written through the object API (all files share a few file objects, so it is quick)."""
    def action(txn):
        objects = repo.objects
        repo.catalog.ensure_artifact(txn, name, None)
        fids = []
        for k in range(4):
            data = b"content %d" % k
            cid = repo.objects.store.object_id(data)
            objects.hold_chunks(txn, [(cid, len(data))])
            objects.store.put_many([Obj(cid, strong_digest(data), data)])
            fids.append(objects.put_file(txn, [(cid, len(data))]))

        def tree(n: int) -> Entry:
            entries = [Entry(b"f%06d" % i, FILE, 0o644, 9, 0, fids[i % 4]) for i in range(n)]
            for e in entries:
                objects.hold_entry(txn, e)
            return entries
        subdirs = [Entry(b"d%03d" % d, DIR, 0o755, per_dir, 0, objects.put_tree(txn, tree(per_dir)))
                   for d in range(dirs)]
        root = [Entry(b"tree", DIR, 0o755, dirs, 0, objects.put_tree(txn, subdirs)),
                Entry(b"flat", DIR, 0o755, flat, 0, objects.put_tree(txn, tree(flat)))]
        for fid in fids:
            objects.decref_file(txn, fid)
        repo.add_version(txn, name, objects.put_tree(txn, root), dirs * per_dir + flat, 0)
    repo.db.write(action)


def test_commit_cost_is_proportional_to_the_change(tmp_path):
    hashed = []

    def counting_hash(data, kind=0):
        hashed.append(len(data))
        return object_id(data, kind)

    with Repo(str(tmp_path / "store"), hasher=counting_hash) as repo:
        _big_artifact(repo, "big", dirs=100, per_dir=1000, flat=100_000)
        s = Staging(repo, "big")
        generation = repo.db.generation()
        listing = s.readdir(ino_of(s, b"flat"))  # 100,000 entries, nothing written
        assert len(listing) == 100_000 and len({e.ino for e in listing}) == 100_000
        assert s.lookup(ino_of(s, b"flat"), b"f099999").ino == listing[-1].ino
        assert repo.db.generation() == generation
        write(s, ino_of(s, b"tree/d057/f000123"), b"changed bytes", truncate=True)
        before = set(repo.objects.store.ids())
        hashed.clear()
        v, created = commit(repo, "big")
        written = set(repo.objects.store.ids()) - before
        # one chunk, one file object, three trees (d057, tree, root); nothing else hashed
        assert created and len(written) == 5 and len(hashed) < 30
        assert (v.files, v.bytes) == (200_000, 13 - 9)
        assert version_file(repo, v.root, b"tree/d057/f000123") == b"changed bytes"
        assert_verified(repo)


def test_crash_between_commit_and_data_cleanup(repo, based, monkeypatch):
    write(based, ino_of(based, b"a.txt"), b"new alpha")
    add_file(based, ROOT, b"z", b"zulu")
    copying = os.path.join(based.files.dir, f"8.{os.getpid()}.abc.tmp")  # a live copy-up
    for tmp in (copying, os.path.join(based.files.dir, f"7.{_dead_pid()}.abc.tmp")):
        open(tmp, "wb").close()
    monkeypatch.setattr(Staging, "clean_data", lambda self: None)  # the crash: no cleanup runs
    v, created = commit(repo, "ds")
    monkeypatch.undo()
    assert created and len(os.listdir(based.files.dir)) == 4
    assert_verified(repo)
    s = Staging(repo, "ds")  # the next open deletes what no index entry references
    assert os.listdir(s.files.dir) == [os.path.basename(copying)] and s.status()["added"] == []
    assert staged(s) == version(repo, "ds") and version(repo, "ds")[b"z"] == b"zulu"


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


_CHILD = """
import sys
from artfs.repo.facade import Repo
from artfs.staging.commit import commit
with Repo(sys.argv[1]) as repo:
    print("go", flush=True)
    commit(repo, "ds")
"""


@pytest.mark.slow
def test_commit_killed_at_random_points(tmp_path):
    path, rng = str(tmp_path / "store"), random.Random(1)
    with Repo(path) as repo:
        create_artifact(repo, "ds")
    for round_ in range(20):
        with Repo(path) as repo:
            s = Staging(repo, "ds")
            if not s.status()["added"]:
                add_file(s, ROOT, b"f%02d" % round_, os.urandom(rng.randrange(4 * MiB, 12 * MiB)))
            expected, versions = staged(s), len(repo.versions("ds"))
        child = subprocess.Popen([sys.executable, "-c", _CHILD, path], stdout=subprocess.PIPE)
        child.stdout.readline()
        time.sleep(rng.uniform(0, 0.04))  # a commit of this size takes ~20-40 ms
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        with Repo(path) as repo:
            s = Staging(repo, "ds")
            assert staged(s) == expected
            if len(repo.versions("ds")) > versions:
                assert version(repo, "ds") == expected and s.status()["added"] == []
                assert os.listdir(s.files.dir) == []
            else:
                assert s.status()["added"]
            assert_verified(repo)


# model-based -----------------------------------------------------------------------------------
NAMES = st.sampled_from([b"a", b"b", b"c\xff"])
DATA = st.binary(max_size=300)


class StagingMachine(RuleBasedStateMachine):
    """Staging operations, commits and resets against a dict model: path -> bytes or 'd'."""

    def __init__(self):
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.tmp.name, "store")
        self.repo = Repo(self.path)
        create_artifact(self.repo, "m")
        self.s = Staging(self.repo, "m")
        self.model: dict[bytes, object] = {}
        self.committed: dict[bytes, object] = {}

    def teardown(self):
        assert_verified(self.repo)
        self.repo.close()
        self.tmp.cleanup()

    def dirs(self):
        return [b""] + sorted(p for p, v in self.model.items() if v == "d")

    def files(self):
        return sorted(p for p, v in self.model.items() if v != "d")

    @staticmethod
    def join(parent: bytes, name: bytes) -> bytes:
        return parent + b"/" + name if parent else name

    def parent_ino(self, path: bytes) -> tuple[int, bytes]:
        parent, _, name = path.rpartition(b"/")
        return ino_of(self.s, parent), name

    @rule(data=st.data(), name=NAMES, content=DATA)
    def create(self, data, name, content):
        parent = data.draw(st.sampled_from(self.dirs()))
        path = self.join(parent, name)
        if path in self.model:
            with pytest.raises(Exists):
                self.s.create(ino_of(self.s, parent), name, 0o644, UID, GID)
            return
        add_file(self.s, ino_of(self.s, parent), name, content)
        self.model[path] = content

    @precondition(lambda self: self.files())
    @rule(data=st.data(), content=DATA, truncate=st.booleans())
    def write(self, data, content, truncate):
        path = data.draw(st.sampled_from(self.files()))
        write(self.s, ino_of(self.s, path), content, truncate)
        old = b"" if truncate else self.model[path]
        self.model[path] = content + old[len(content):]

    @precondition(lambda self: self.files())
    @rule(data=st.data())
    def unlink(self, data):
        path = data.draw(st.sampled_from(self.files()))
        self.s.unlink(*self.parent_ino(path))
        del self.model[path]

    @rule(data=st.data(), name=NAMES)
    def mkdir(self, data, name):
        parent = data.draw(st.sampled_from(self.dirs()))
        path = self.join(parent, name)
        if path in self.model or parent.count(b"/") >= 2:
            return
        self.s.mkdir(ino_of(self.s, parent), name, 0o755, UID, GID)
        self.model[path] = "d"

    @precondition(lambda self: len(self.dirs()) > 1)
    @rule(data=st.data())
    def rmdir(self, data):
        path = data.draw(st.sampled_from(self.dirs()[1:]))
        if any(p.startswith(path + b"/") for p in self.model):
            with pytest.raises(NotEmpty):
                self.s.rmdir(*self.parent_ino(path))
            return
        self.s.rmdir(*self.parent_ino(path))
        del self.model[path]

    @precondition(lambda self: self.model)
    @rule(data=st.data(), name=NAMES)
    def rename(self, data, name):
        src = data.draw(st.sampled_from(sorted(self.model)))
        dst = self.join(data.draw(st.sampled_from(self.dirs())), name)
        expected = self.rename_outcome(src, dst)
        args = (*self.parent_ino(src), *self.parent_ino(dst))
        if expected is not None:
            with pytest.raises(expected):
                self.s.rename(*args)
            return
        self.s.rename(*args)
        if src == dst:
            return
        for p in [p for p in self.model if p == dst or p.startswith(dst + b"/")]:
            del self.model[p]
        for p in [p for p in self.model if p == src or p.startswith(src + b"/")]:
            self.model[dst + p[len(src):]] = self.model.pop(p)

    def rename_outcome(self, src: bytes, dst: bytes):
        if src == dst:
            return None
        is_dir = self.model[src] == "d"
        if is_dir and dst.startswith(src + b"/"):
            return InvalidInput
        if dst not in self.model:
            return None
        if is_dir != (self.model[dst] == "d"):
            return NotADirectory if is_dir else IsADirectory
        if any(p.startswith(dst + b"/") for p in self.model):
            return NotEmpty
        return None

    @rule()
    def commit(self):
        v, created = commit(self.repo, "m")
        if v is not None:
            assert stored(self.repo, v.root) == self.model
        self.committed = dict(self.model)
        assert self.s.status() == {"added": [], "modified": [], "deleted": [], "interrupted": []}

    @rule()
    def reset(self):
        self.s.reset()
        self.model = dict(self.committed)

    @rule()
    def reopen(self):
        self.repo.close()
        self.repo = Repo(self.path)
        self.s = Staging(self.repo, "m")

    @invariant()
    def shows_the_model(self):
        assert staged(self.s) == self.model


TestStagingMachine = StagingMachine.TestCase
TestStagingMachine.settings = settings(max_examples=300, stateful_step_count=30, deadline=None)


def test_directory_records_of_an_older_artfs_get_their_link_count(repo, based):
    """A directory recorded before records kept the subdirectory count (no _SUBDIRS flag) shows
    2 + its subdirectories, counted from its origin tree and overlay, and keeps it once it
    changes again."""
    s = Staging(repo, "ds")
    d = s.lookup(ROOT, b"sub")                       # a committed directory
    s.mkdir(d.ino, b"new", 0o755, 0, 0)
    s.mkdir(ROOT, b"top", 0o755, 0, 0)
    before = {name: s.lookup(ROOT, name).nlink for name in (b"sub", b"top")} | {b"": s.getattr(ROOT).nlink}
    assert before == {b"sub": 4, b"top": 2, b"": 4}   # sub/deep and sub/new; sub and top

    def as_older_artfs(txn):
        for ino in (ROOT, d.ino, s.lookup(ROOT, b"top").ino):
            node = s.index.node(txn, ino)
            node.subdirs = None                    # encodes exactly as an older artfs did
            s.index.put_node(txn, node)
    repo.db.write(as_older_artfs)
    with repo.db.read() as txn:
        assert s.index.node(txn, d.ino).subdirs is None
    s = Staging(repo, "ds")
    assert {name: s.lookup(ROOT, name).nlink for name in (b"sub", b"top")} | \
        {b"": s.getattr(ROOT).nlink} == before
    s.rmdir(d.ino, b"new")
    assert s.lookup(ROOT, b"sub").nlink == 3
    assert commit(repo, "ds")[1]
    assert_verified(repo)
