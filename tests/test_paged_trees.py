"""Paged trees (large directories stored as pages) and subdirectory counts in directory entries:
real stores in tmp_path, staging through its API (tier 2), one FUSE round trip (slow)."""

from __future__ import annotations

import os
import random
import subprocess

import fsspec
import pytest

from artfs.catalog.objects import DIR, FILE, FLAT_MAX, Entry, Tree
from artfs.errors import NotFound
from artfs.remote.sync import _walk
from artfs.repo.accounting import du
from artfs.repo.diff import diff_trees, walk_files
from artfs.repo.export import export_tree
from artfs.repo.facade import Repo
from artfs.repo.verify import verify
from artfs.staging.commit import commit
from artfs.staging.overlay import ROOT, Staging
from tests.helpers import tree_snapshot, write

UID, GID = os.getuid(), os.getgid()


class _Discard(Exception):
    pass


def _reads(repo: Repo) -> list[bytes]:
    """Ids the store is asked for from now on (a counting wrapper around the real store)."""
    asked, store = [], repo.objects.store
    get_many = store.get_many

    def counted(ids):
        asked.extend(ids)
        return get_many(ids)
    store.get_many = counted
    return asked


def _from_scratch(repo: Repo, entries: list[Entry]) -> bytes:
    """The id put_tree gives ENTRIES, in a write that is then discarded."""
    def action(txn):
        for e in entries:
            repo.objects.hold_entry(txn, e)
        raise _Discard(repo.objects.put_tree(txn, entries))
    try:
        repo.db.write(action)
    except _Discard as done:
        return done.args[0]
    raise AssertionError("unreachable")


def _dir_tree(repo: Repo, version, name: bytes = b"d") -> Tree:
    return repo.tree(repo.tree(version.root).lookup(name).ref)


def _edit(repo: Repo, rng: random.Random, names: list[bytes], steps: int, ops: str = "cruw") -> None:
    """Random creates, removals, renames and rewrites in staging's directory d."""
    s = Staging(repo, "ds")
    d = s.lookup(ROOT, b"d").ino
    for _ in range(steps):
        op = rng.choice(ops)
        if op == "c":
            name = b"n%07d" % rng.randrange(10**7)
            if name not in names:
                ino = s.create(d, name, 0o644, UID, GID).ino
                with open(s.open_data(ino, truncate=True), "wb") as f:
                    f.write(name)
                names.append(name)
        elif op == "r" and names:
            s.unlink(d, names.pop(rng.randrange(len(names))))
        elif op == "u" and names:
            old = names.pop(rng.randrange(len(names)))
            new = b"m%07d" % rng.randrange(10**7)
            if new not in names:
                s.rename(d, old, d, new)
                names.append(new)
            else:
                names.append(old)
        elif names:
            e = s.lookup(d, rng.choice(names))
            with open(s.open_data(e.ino, truncate=True), "wb") as f:
                f.write(b"rewritten %d" % rng.randrange(1000))


@pytest.fixture
def big(tmp_path):
    """A store whose v0 has directory d of 3,000 files (paged) and a small directory s."""
    src = tmp_path / "src"
    for i in range(3000):
        write(str(src / "d" / f"f{i:05d}"), b"%d" % i, mtime_ns=10**18)
    for i in range(3):
        write(str(src / "s" / f"sub{i}" / "x"), b"x", mtime_ns=10**18)
    with Repo(str(tmp_path / "store")) as repo:
        repo.put("ds", str(src))
        yield repo, src
        report = verify(repo)
        assert report.ok, report.problems


def test_a_large_directory_is_paged_and_an_edit_rewrites_about_one_page(big):
    repo, _ = big
    v0 = repo.resolve("ds")
    d0 = _dir_tree(repo, v0)
    assert len(d0.pages) > 2 and d0.count == 3000
    s = Staging(repo, "ds")
    e = s.lookup(s.lookup(ROOT, b"d").ino, b"f01500")
    with open(s.open_data(e.ino, truncate=True), "wb") as f:
        f.write(b"edited")
    asked = _reads(repo)
    v1, created = commit(repo, "ds")
    assert created
    d1 = _dir_tree(repo, v1)
    old_pages = {p.tid for p in d0.pages}
    # of d's pages the commit read only the one it rewrote, once
    assert [oid for oid in asked if oid in old_pages] == [d0.pages[d0.page_of(b"f01500")].tid]
    new_pages = [p for p in d1.pages if p.tid not in old_pages]
    assert len(new_pages) == 1 and len(d1.pages) == len(d0.pages)
    # what v1 stores beyond v0: the root, d's page list, one page (and the edited file)
    trees0 = set(_walk(repo.tree, repo.file, v0.root)[0])
    trees1 = _walk(repo.tree, repo.file, v1.root)[0]
    added = [t for t in trees1 if t not in trees0]
    assert sorted(added) == sorted([v1.root, repo.tree(v1.root).lookup(b"d").ref, new_pages[0].tid])
    page = len(repo.objects.raw(new_pages[0].tid))
    assert sum(len(repo.objects.raw(t)) for t in added) < 2 * page
    assert diff_trees(repo.tree, v0.root, v1.root) == {"added": [], "removed": [],
                                                       "modified": ["d/f01500"]}
    # du: what each version holds alone is its own bytes of that file (the shared pages' files
    # are released by neither: their references come from pages both versions hold)
    unique = {v["version"]: v["unique_bytes"] for v in du(repo, "ds")["artifacts"][0]["versions"]}
    assert unique == {"v0": len(b"1500"), "v1": len(b"edited")}


def test_incremental_pages_equal_pages_built_from_scratch(big):
    """Whatever the edits (boundary names removed, pages grown and split, shrunk below the
    flat size), a commit's paged directory is the one put_tree builds from its entries: the
    same content has the same id however it was reached."""
    repo, _ = big
    rng = random.Random(5)
    names = [b"f%05d" % i for i in range(3000)]
    for steps, ops in ((1, "w"), (40, "cruw"), (400, "cruw"), (1000, "c"), (3100, "r")):
        _edit(repo, rng, names, steps, ops)
        v, _ = commit(repo, "ds")
        d = _dir_tree(repo, v)
        assert sorted(e.name for e in d.entries) == sorted(names)
        assert d.count == len(names) and bool(d.pages) == (len(names) > FLAT_MAX)
        assert repo.tree(v.root).lookup(b"d").ref == _from_scratch(repo, d.entries)
    assert len(names) <= FLAT_MAX   # the last round shrank it: flat again


def test_a_lookup_reads_one_page(big):
    repo, _ = big
    root = repo.resolve("ds").root
    with Repo(repo.path) as fresh:
        asked = _reads(fresh)
        d = fresh.tree(fresh.tree(root).lookup(b"d").ref)
        assert d.lookup(b"f02222").ref and d.lookup(b"f0222") is None
        pages = {p.tid for p in d.pages}
        assert len([oid for oid in asked if oid in pages]) == 1


def test_staging_lookup_stat_and_edits_of_one_name_read_one_page(big):
    """Staging over a paged directory: a lookup of one name in staging/d, a stat of it by inode
    (from a fresh Staging: a path down the base by number), and making, writing and removing
    names there read only the pages that hold those names, not all of d's pages."""
    repo, _ = big
    root = repo.resolve("ds").root
    with Repo(repo.path) as fresh:
        asked = _reads(fresh)
        d = fresh.tree(fresh.tree(root).lookup(b"d").ref)
        pages = {p.tid for p in d.pages}
        page_of = {name: d.pages[d.page_of(name)].tid for name in (b"f01500", b"f00007", b"f02999")}
        assert len(set(page_of.values())) == 3

        def read_pages():
            return {oid for oid in asked if oid in pages}
        s = Staging(fresh, "ds")
        dino = s.lookup(ROOT, b"d").ino
        e = s.lookup(dino, b"f01500")
        assert (e.name, e.size) == (b"f01500", 4)
        assert read_pages() == {page_of[b"f01500"]}
        assert s.getattr(e.ino).name == b"f01500"   # from its number alone
        with pytest.raises(NotFound):
            s.lookup(dino, b"f01500x")              # a name that would be on the same page
        assert read_pages() == {page_of[b"f01500"]}
        s.unlink(dino, b"f00007")
        with open(s.open_data(s.lookup(dino, b"f02999").ino), "ab") as f:
            f.write(b" and more")
        s.create(dino, b"f01500a", 0o644, UID, GID)
        assert read_pages() == set(page_of.values())
        assert len(asked) == len(set(asked))        # and each once


def test_staging_numbers_of_a_paged_directory_with_subdirectories(tmp_path):
    """Staging numbers each unmodified node by its preorder index in the base tree; in a paged
    directory whose pages hold subdirectories (of several sizes) too, every name found by a
    lookup and by a listing has the number of a plain preorder walk, and going back from that
    number (getattr, paths) finds the same node."""
    src = tmp_path / "src"
    for i in range(2500):
        if i % 97 == 0:
            for j in range(i % 5):
                write(str(src / "d" / f"e{i:05d}" / f"x{j}"), b"x", mtime_ns=10**18)
            (src / "d" / f"e{i:05d}").mkdir(parents=True, exist_ok=True)
        else:
            write(str(src / "d" / f"e{i:05d}"), b"%d" % i, mtime_ns=10**18)
    write(str(src / "z"), b"z", mtime_ns=10**18)
    with Repo(str(tmp_path / "store")) as repo:
        v = repo.put("ds", str(src))[0]
        preorder = {}

        def walk(prefix, tid):   # the oracle: a recursive preorder walk of the base tree
            for e in repo.tree(tid).entries:
                path = prefix + b"/" + e.name if prefix else e.name
                preorder[path] = len(preorder) + 1
                if e.kind == DIR:
                    walk(path, e.ref)
        walk(b"", v.root)
        assert len(_dir_tree(repo, v).pages) > 2
    with Repo(str(tmp_path / "store")) as repo:
        s = Staging(repo, "ds")
        offset = s.lookup(ROOT, b"d").ino - preorder[b"d"]
        dino = s.lookup(ROOT, b"d").ino
        listed = {b"d/" + e.name: e.ino for e in s.readdir(dino)}
        for path, index in preorder.items():
            parent, _, name = path.rpartition(b"/")
            found = s.lookup(ROOT if not parent else offset + preorder[parent], name)
            assert found.ino == offset + index, path
            assert listed.get(path, found.ino) == found.ino
        assert s.paths([offset + i for i in preorder.values()]) == {offset + i: p for p, i in preorder.items()}
        assert {s.getattr(offset + i).name for i in preorder.values()} == {p.rpartition(b"/")[2] for p in preorder}


def test_a_listing_keeps_no_pages_outside_the_tree_cache(big, monkeypatch):
    """A paged directory's entries are read page by page through the Repo's cache of parsed
    trees, which is bounded by bytes: listing it keeps no copy of its pages of its own (a cached
    directory object counted as its small page list would hold every page listed). With a cache
    of one tree, listing twice reads every page twice."""
    from artfs.repo import facade
    repo, _ = big
    root = repo.resolve("ds").root
    monkeypatch.setattr(facade, "TREE_CACHE_BYTES", 1)
    with Repo(repo.path) as fresh:
        d = fresh.tree(fresh.tree(root).lookup(b"d").ref)
        pages = {p.tid for p in d.pages}
        asked = _reads(fresh)
        listed = [[e.name for e in d.entries], [d.entries[i].name for i in range(d.count)]]
        assert listed[0] == listed[1] == [b"f%05d" % i for i in range(3000)]
        assert len([oid for oid in asked if oid in pages]) > len(pages)


def test_old_flat_large_trees_still_read_and_an_edit_pages_them(tmp_path):
    """A directory stored flat by an older artfs (one tree object of 2,000 entries) reads as
    before; the first commit that changes it stores it paged, with the same content."""
    with Repo(str(tmp_path / "store")) as repo:
        src = tmp_path / "src"
        write(str(src / "one"), b"1")
        v0, _ = repo.put("ds", str(src))
        f = repo.tree(v0.root).lookup(b"one")
        flat = [Entry(b"f%05d" % i, FILE, 0o644, f.size, 10**18, f.ref) for i in range(2000)]

        def old_format(txn):
            for e in flat:
                repo.objects.hold_entry(txn, e)
            tid = repo.objects._put_flat(txn, flat)   # as an older artfs wrote every tree
            root = repo.objects.put_tree(txn, [Entry(b"d", DIR, 0o755, 2000, 10**18, tid, subdirs=0)])
            return repo.add_version(txn, "ds", root, 2000, 2000 * f.size)
        v1, _ = repo.db.write(old_format)
        assert not _dir_tree(repo, v1).pages and _dir_tree(repo, v1).count == 2000
        s = Staging(repo, "ds")
        s.unlink(s.lookup(ROOT, b"d").ino, b"f00007")
        v2, _ = commit(repo, "ds")
        assert _dir_tree(repo, v2).pages and _dir_tree(repo, v2).count == 1999
        assert diff_trees(repo.tree, v1.root, v2.root)["removed"] == ["d/f00007"]
        assert verify(repo).ok


def test_directory_entries_count_subdirectories(big):
    """A directory's entry holds its subdirectory count (its link count is 2 + that), so the
    count comes without reading the directory's own tree."""
    repo, _ = big
    root = repo.resolve("ds").root
    with Repo(repo.path) as fresh:
        top = fresh.tree(root)
        asked = _reads(fresh)
        s, d = top.lookup(b"s"), top.lookup(b"d")
        assert (s.subdirs, d.subdirs) == (3, 0)
        assert s.ref not in asked and d.ref not in asked
    assert repo.tree(s.ref).subdirs == 3


def test_trees_of_files_only_encode_as_before(tmp_path):
    """A tree without subdirectories (and small) has the encoding older artfs gave it: existing
    stores and remotes keep sharing its id."""
    entries = [Entry(b"a", FILE, 0o644, 3, 10**18, b"\x01" * 16), Entry(b"l", "l", 0o777, 1, 7, b"a")]
    expected = (b"T\x00\x00\x00\x02"
                + b"f" + (0o644).to_bytes(4, "big") + (3).to_bytes(8, "big") + (10**18).to_bytes(8, "big")
                + (1).to_bytes(2, "big") + (16).to_bytes(2, "big") + b"a" + b"\x01" * 16
                + b"l" + (0o777).to_bytes(4, "big") + (1).to_bytes(8, "big") + (7).to_bytes(8, "big")
                + (1).to_bytes(2, "big") + (1).to_bytes(2, "big") + b"l" + b"a")
    assert Tree(entries).encode() == expected
    assert Tree.decode(expected).entries == entries


@pytest.mark.slow
def test_a_100000_file_directory_round_trip(tmp_path, mount_factory):
    """Commit, diff, get, verify and a mount listing of a 100,000-file directory, paged."""
    src = tmp_path / "src"
    os.makedirs(src / "d")
    for i in range(100_000):
        with open(src / "d" / f"f{i:06d}", "wb") as f:
            f.write(b"%d" % i)
    store = str(tmp_path / "store")
    with Repo(store) as repo:
        v0, _ = repo.put("ds", str(src))
        s = Staging(repo, "ds")
        e = s.lookup(s.lookup(ROOT, b"d").ino, b"f054321")
        with open(s.open_data(e.ino, truncate=True), "wb") as f:
            f.write(b"edited")
        v1, _ = commit(repo, "ds")
        assert diff_trees(repo.tree, v0.root, v1.root)["modified"] == ["d/f054321"]
        assert sum(1 for _ in walk_files(repo.tree, v1.root)) == 100_000
        assert verify(repo).ok
        out = export_tree(repo, v1.root, str(tmp_path / "out"))
    snap = tree_snapshot(out)
    assert len(snap) == 100_001 and snap["d/f054321"][-1] == b"edited"
    fs = fsspec.filesystem("artfs", store=store)
    assert fs.cat_file("ds:v1/d/f054321") == b"edited" and fs.info("ds:v0/d/f099999")["size"] == 5
    assert len(fs.ls("ds:v1/d", detail=False)) == 100_000
    m = mount_factory(store=store).start()
    listed = subprocess.run(["ls", "-f", m.path("ds", "v1", "d")], capture_output=True,
                            check=True).stdout.split()
    assert sorted(n for n in listed if n not in (b".", b"..")) == [b"f%06d" % i for i in range(100_000)]
    with open(m.path("ds", "v1", "d", "f054321"), "rb") as f:
        assert f.read() == b"edited"


def _same_files(a, b) -> bool:
    names = sorted(os.listdir(a))
    return names == sorted(os.listdir(b)) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names)


@pytest.mark.slow
def test_a_paged_directory_pushes_one_page_pulls_and_survives_a_remote_rm(s3, s3_bucket, tmp_path):
    """An edit in a paged directory uploads about one page, not the directory; a clone pulls and
    gets it byte-exact; deleting the older version on the remote keeps the pages both share."""
    pytest.importorskip("obstore", reason="needs obstore: scripts/setup-s3.sh installs it")
    from tests.test_remote import bind, bucket_bytes, cli, clone
    src, a, b, c = tmp_path / "src", tmp_path / "A", tmp_path / "B", tmp_path / "C"
    for i in range(3000):
        write(str(src / "d" / f"f{i:05d}"), b"%d" % i)
    cli(a, s3, "put", "ds", src)
    bind(a, s3, s3_bucket)
    cli(a, s3, "push")
    stored = bucket_bytes(s3, s3_bucket)
    write(str(src / "d" / "f01500"), b"edited")
    cli(a, s3, "put", "ds", src)                       # published by the put
    with Repo(str(a)) as repo:
        d = _dir_tree(repo, repo.resolve("ds"))
        flat = len(Tree(d.entries).encode())           # what the directory was as one object
    assert len(d.pages) > 2
    assert bucket_bytes(s3, s3_bucket) - stored < flat / 2
    clone(b, s3, s3_bucket)
    cli(b, s3, "pull", "--data")
    cli(b, s3, "get", "ds:v1", tmp_path / "out1")
    assert _same_files(src / "d", tmp_path / "out1" / "d")
    assert cli(b, s3, "verify").returncode == 0
    assert cli(a, s3, "rm", "ds:v0").stdout == "deleted ds:v0\n"
    assert cli(a, s3, "verify", "--remote", "origin").returncode == 0
    clone(c, s3, s3_bucket)
    cli(c, s3, "pull", "--data")
    cli(c, s3, "get", "ds:v1", tmp_path / "out2")
    assert _same_files(src / "d", tmp_path / "out2" / "d")


def test_version_directory_link_counts_from_entries_and_from_older_trees(tmp_path):
    """vN/ directories have link count 2 + subdirectories: from their entries, and for trees
    an older artfs wrote (no counts in the entries) from each directory's own tree."""
    from artfs.mount.inodes import ROOT_INODE
    from artfs.mount.model import Filesystem
    src = tmp_path / "src"
    for path in ("a/b/x/f", "a/c/f", "a/f"):
        write(str(src / path), b"1")
    with Repo(str(tmp_path / "store")) as repo:
        v0, _ = repo.put("ds", str(src))
        a = repo.tree(v0.root).lookup(b"a")
        assert a.subdirs == 2 and repo.tree(a.ref).lookup(b"b").subdirs == 1

        def older(txn):   # the same directories, written without counts
            put, obj = repo.objects._put_flat, repo.objects
            f = repo.tree(a.ref).lookup(b"f")

            def leaf():
                obj.hold_entry(txn, f)
                return put(txn, [f])
            x = Entry(b"x", DIR, 0o755, 1, 0, leaf())
            b = Entry(b"b", DIR, 0o755, 1, 0, put(txn, [x]))
            c = Entry(b"c", DIR, 0o700, 1, 0, leaf())   # (a change: a new version)
            obj.hold_entry(txn, f)
            top = Entry(b"a", DIR, 0o755, 3, 0, put(txn, [b, c, f]))
            return repo.add_version(txn, "ds", put(txn, [top]), 3, 3)
        v1, _ = repo.db.write(older)
        assert repo.tree(v1.root).lookup(b"a").subdirs is None
        fs = Filesystem(repo)
        for v in ("v0", "v1"):
            ino = fs.lookup(fs.lookup(ROOT_INODE, b"ds").ino, v.encode()).ino
            counts = {}
            for path in (b"a", b"a/b", b"a/c", b"a/b/x"):
                at = ino
                for part in path.split(b"/"):
                    at = fs.lookup(at, part).ino
                counts[path] = fs.getattr(at).nlink
            assert counts == {b"a": 4, b"a/b": 3, b"a/c": 2, b"a/b/x": 2}, v
        assert verify(repo).ok
