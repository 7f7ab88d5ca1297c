"""Hard links in ``put``, ``get``, commits and the object graph (no mount: real stores, real files).

A version keeps link groups as tar and borg do: the names of one inode found under the input are
entries sharing a link group, each referencing the one file object. The mount's side (staging's
link(2), one inode in ``vN/``) is in tests/test_posix.py.
"""

from __future__ import annotations

import os
import stat

from artfs.catalog.objects import Entry, Tree
from artfs.repo.facade import Repo
from artfs.repo.verify import verify
from artfs.staging.commit import commit
from artfs.staging.overlay import ROOT, Staging
from tests.helpers import read, run_cli, write


def groups(root) -> list[tuple[int, list[str]]]:
    """(st_nlink, paths) for every inode below ROOT with more than one name there."""
    names: dict[int, list[str]] = {}
    nlinks = {}
    for top, _, files in os.walk(root):
        for name in files:
            path = os.path.join(top, name)
            st = os.lstat(path)
            names.setdefault(st.st_ino, []).append(os.path.relpath(path, root))
            nlinks[st.st_ino] = st.st_nlink
    return sorted((nlinks[ino], sorted(p)) for ino, p in names.items() if len(p) > 1)


def linked_tree(src, outside) -> None:
    """SRC: a file with three names in two directories, one with two, a plain file, and a file
    with a second name outside SRC (a plain file inside it)."""
    write(src / "a", b"three names")
    os.makedirs(src / "sub")
    os.link(src / "a", src / "sub" / "a2")
    os.link(src / "a", src / "z")
    write(src / "sub" / "p", b"two names", mode=0o600)
    os.link(src / "sub" / "p", src / "q")
    write(src / "plain", b"plain")
    write(outside, b"linked from outside")
    os.link(outside, src / "out")


def test_put_keeps_link_groups_and_get_recreates_them(tmp_path):
    src, store = tmp_path / "src", tmp_path / "store"
    linked_tree(src, tmp_path / "outside")
    assert run_cli(store, "put", "hl", src, check=True).stdout.strip() == "hl:v0"
    with Repo(str(store)) as repo:
        v0 = repo.resolve("hl", "v0")
        root = repo.tree(v0.root)
        a, z, q, out = (root.lookup(n) for n in (b"a", b"z", b"q", b"out"))
        a2 = repo.tree(root.lookup(b"sub").ref).lookup(b"a2")
        assert a.group == a2.group == z.group and (a.nlink, a2.nlink, z.nlink) == (3, 3, 3)
        assert a.ref == a2.ref == z.ref
        assert q.group and q.group != a.group and q.nlink == 2
        assert (out.group, out.nlink) == (b"", 1)        # its other name is not in the input
        assert (v0.files, v0.bytes) == (7, 3 * 11 + 2 * 9 + 5 + 19)   # names, as ``ls`` counts
        report = verify(repo)   # each name references the file object once
        assert report.ok, report.problems

    dest = tmp_path / "got"
    run_cli(store, "get", "hl:v0", dest, check=True)
    assert groups(dest) == groups(src) == [(2, ["q", "sub/p"]), (3, ["a", "sub/a2", "z"])]
    assert read(dest / "z") == b"three names" and stat.S_IMODE(os.stat(dest / "q").st_mode) == 0o600

    # the same input again: no new version; one more name: a new one
    assert "no changes" in run_cli(store, "put", "hl", src, check=True).stderr
    os.link(src / "plain", src / "sub" / "plain2")
    assert run_cli(store, "put", "hl", src, check=True).stdout.strip() == "hl:v1"
    assert run_cli(store, "diff", "hl:v0", "hl:v1", check=True).stdout.split().count("plain") == 1


def test_trees_without_links_encode_as_before():
    """The link-group trailer is only there when a tree has hard links: every tree an older artfs
    wrote decodes and re-encodes to the same bytes (so the same id)."""
    plain = Tree([Entry(b"f", "f", 0o644, 1, 5, b"\x01" * 16)])
    assert plain.encode() == b"T" + (1).to_bytes(4, "big") + plain.encode()[5:]
    assert not plain.encode().endswith(b"H")
    assert Tree.decode(plain.encode()).encode() == plain.encode()
    linked = Tree([Entry(b"a", "f", 0o644, 1, 5, b"\x01" * 16, b"g" * 16, 2),
                   Entry(b"b", "f", 0o644, 1, 5, b"\x01" * 16, b"g" * 16, 2)])
    assert Tree.decode(linked.encode()).entries == linked.entries
    assert Tree.decode(linked.encode()).encode() == linked.encode()


def test_staging_links_commit_as_one_group_with_exact_references(tmp_path):
    """link(2) in staging (no mount): names share bytes and attributes, unlink of one keeps the
    others, a rename over a link drops one name; the commit stores the group and verify (which
    recounts every reference) stays clean after each step, also after the versions are deleted."""
    src, store = tmp_path / "src", tmp_path / "store"
    write(src / "f", b"committed")
    run_cli(store, "put", "hl", src, check=True)
    with Repo(str(store)) as repo:
        s = Staging(repo, "hl")
        f = s.lookup(ROOT, b"f")
        d = s.mkdir(ROOT, b"d", 0o755, 0, 0)
        assert s.link(f.ino, d.ino, b"f2").nlink == 2
        with open(s.open_data(f.ino), "ab") as out:
            out.write(b"+")
        assert read(s.lookup(d.ino, b"f2").data) == b"committed+"
        s.setattr(f.ino, mode=0o600)
        assert s.lookup(d.ino, b"f2").mode == 0o600
        new = s.create(ROOT, b"new", 0o644, 0, 0)
        s.link(new.ino, ROOT, b"new2")
        s.link(new.ino, d.ino, b"new3")
        s.unlink(ROOT, b"new")
        assert [s.lookup(ROOT, b"new2").nlink, s.lookup(d.ino, b"new3").nlink] == [2, 2]
        assert s.lookup(ROOT, b"new2").data is not None and os.path.exists(s.lookup(ROOT, b"new2").data)
        assert commit(repo, "hl")[0].number == 1
        assert verify(repo).ok, verify(repo).problems
        root = repo.tree(repo.resolve("hl", "v1").root)
        sub = repo.tree(root.lookup(b"d").ref)
        assert root.lookup(b"f").group == sub.lookup(b"f2").group and sub.lookup(b"f2").nlink == 2
        assert root.lookup(b"new2").group == sub.lookup(b"new3").group

        # committed groups in staging: one inode, and changing one name records all of them
        s = Staging(repo, "hl")
        f, d = s.lookup(ROOT, b"f"), s.lookup(ROOT, b"d")
        assert s.lookup(d.ino, b"f2").ino == f.ino and f.nlink == 2
        with open(s.open_data(s.lookup(d.ino, b"f2").ino), "ab") as out:
            out.write(b"!")
        assert read(s.lookup(ROOT, b"f").data) == b"committed+!"
        s.rename(ROOT, b"new2", d.ino, b"f2")        # over a link: f loses one name
        assert s.lookup(ROOT, b"f").nlink == 1 and s.lookup(d.ino, b"new3").nlink == 2
        s.rename(d.ino, b"new3", d.ino, b"f2")       # two names of one inode: nothing happens
        assert s.lookup(d.ino, b"new3").ino == s.lookup(d.ino, b"f2").ino
        assert commit(repo, "hl")[0].number == 2
        assert verify(repo).ok, verify(repo).problems
        root = repo.tree(repo.resolve("hl", "v2").root)
        assert (root.lookup(b"f").group, root.lookup(b"f").nlink) == (b"", 1)
        for n in (0, 1):
            repo.delete_version("hl", f"v{n}")
        assert verify(repo).ok, verify(repo).problems
