"""The mount's tree model (fs/model.py, fs/nodes.py, fs/inodes.py) in-process, without FUSE."""

from __future__ import annotations

import os
import stat
import types

import pytest
import trio

from artfs.catalog.objects import FILE, Entry, Tree
from artfs.staging.commit import commit
from artfs.errors import CorruptData, NotFound
from artfs.mount.actions import Actions
from artfs.mount.inodes import RECENT, ROOT_INODE, InodeTable
from artfs.mount.model import Filesystem
from artfs.repo.facade import Repo
from artfs.repo.verify import verify
from tests.helpers import write


@pytest.fixture
def fs(tmp_path):
    src = tmp_path / "src"
    write(str(src / "same.txt"), b"same", mtime_ns=10**18)
    write(str(src / "changes.txt"), b"one")
    for i in range(50):
        write(str(src / "many" / f"f{i:02}"), b"%d" % i)
    with Repo(str(tmp_path / "store")) as repo:
        repo.put("a", str(src))
        write(str(src / "changes.txt"), b"two")
        repo.put("a", str(src))
        yield Filesystem(repo)
        assert verify(repo).ok


def walk(fs, *names) -> int:
    ino = ROOT_INODE
    for name in names:
        ino = fs.lookup(ino, name.encode()).ino
    return ino


def test_a_file_is_one_inode_in_every_version_that_holds_it(fs):
    assert walk(fs, "a", "v0", "same.txt") == walk(fs, "a", "v1", "same.txt")
    assert walk(fs, "a", "v0", "changes.txt") != walk(fs, "a", "v1", "changes.txt")
    assert walk(fs, "a", "v0", "many") != walk(fs, "a", "v1", "many")   # directories: per version
    a = fs.getattr(walk(fs, "a", "v0", "same.txt"))
    assert (stat.S_ISREG(a.mode), a.size, a.mtime_ns, a.ctime_ns) == (True, 4, 10**18, 10**18)
    assert (a.uid, a.gid, a.nlink) == (os.getuid(), os.getgid(), 1)


def test_forget_honours_lookup_counts_and_identities_keep_their_inode(fs):
    ino = walk(fs, "a", "v0", "same.txt")
    fs.lookup(walk(fs, "a", "v1"), b"same.txt")        # second lookup of the same inode
    fs.forget(ino, 1)
    assert fs.getattr(ino).ino == ino                  # still known: one lookup left
    fs.forget(ino, 1)
    with pytest.raises(NotFound):
        fs.getattr(ino)
    assert walk(fs, "a", "v0", "same.txt") == ino      # same identity, same number (recent)


def test_identities_the_kernel_does_not_hold_are_kept_only_among_the_last_recent():
    """The table holds what the kernel holds plus RECENT identities (forgotten lately, or not
    told yet): walking ever more files does not grow it. An identity that fell out of the recent
    ones gets a new number - never one handed out before."""
    def key(i: int) -> tuple:
        return ("f", b"%d" % i, 0o644, 0)
    table = InodeTable(root=None)
    told = table.inode(key(0))
    table.remember(types.SimpleNamespace(ino=told))
    untold = table.inode(key(1))                       # e.g. a readdir entry that did not fit
    table.forget(told, 1)
    for i in range(2, RECENT):                         # RECENT numbers not held: both kept
        table.inode(key(i))
    assert (table.inode(key(0)), table.inode(key(1))) == (told, untold)
    kept = table.inode(key(RECENT - 1))
    table.remember(types.SimpleNamespace(ino=kept))    # held by the kernel: not counted
    for i in range(RECENT, RECENT + 3):
        table.inode(key(i))                            # two more not held: the oldest two went
    assert table.inode(key(0)) > table.inode(key(RECENT + 2))
    assert table.inode(key(1)) > table.inode(key(0))
    assert table.inode(key(RECENT - 1)) == kept


async def test_an_open_after_the_delete_of_its_version_is_enoent(fs, tmp_path):
    """The kernel may still know a file of a deleted version (an entry it cached): opening it
    after ``rm`` is NotFound (ENOENT), never a handle on freed chunks (issue 8, failure 6)."""
    write(str(tmp_path / "only" / "gone.bin"), os.urandom(300_000))
    fs.repo.put("a", str(tmp_path / "only"))
    ino = walk(fs, "a", "v2", "gone.bin")
    fh, _ = await fs.open(ino, os.O_RDONLY)                # the file object is cached now
    await fs.read(fh, 0, 4096)
    await fs.release(fh)
    await Actions(fs).delete_version("a", "v2")
    with pytest.raises(NotFound):
        await fs.open(ino, os.O_RDONLY)


async def test_opens_at_once_of_one_staging_file_share_its_state(fs):
    """Opening a staging file pins its base in a worker thread: opens racing each other end up
    with one shared open state, and the last close unpins the base (deleting the only version
    holding it then frees it at once: no zombie)."""
    ino = walk(fs, "a", "staging", "changes.txt")          # "two": only in v1
    handles = []

    async def open_it():
        handles.append((await fs.open(ino, os.O_RDONLY))[0])
    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(open_it)
    assert len({fs.files.get(fh).file for fh in handles}) == 1
    assert [await fs.read(fh, 0, 100) for fh in handles] == [b"two"] * 4
    for fh in handles:
        await fs.release(fh)
    assert fs.staging_of(fs.artifact("a")).opened == {}
    await Actions(fs).delete_version("a", "v1")
    with fs.repo.db.read() as txn:
        assert fs.repo.objects.zombies(txn) == []


async def test_staging_keeps_its_inode_numbers_when_renumbered(fs):
    """fs/moves.py: a commit gives staging's nodes new staging inodes, but every number the mount
    handed out stays with its path - also for names looked up while the commit runs, before or
    after it lands - and ``staging`` itself is not invalidated; after a reset, what is gone is."""
    actions, art = Actions(fs), fs.artifact("a")
    new = (await fs.mkdir(walk(fs, "a", "staging"), b"new", 0o755, 0, 0)).ino
    fh, made = await fs.create(new, b"f", 0o644, os.O_WRONLY, 0, 0)
    await fs.write(fh, 0, b"x")
    await fs.release(fh)
    paths = [("new",), ("new", "f"), ("many",), ("many", "f01"), ("same.txt",), ()]
    numbers = {p: walk(fs, "a", "staging", *p) for p in paths}
    result, entries = await actions.commit("a")
    assert result == {"version": "v2", "created": True} and entries == [(art.ino, b"latest")]
    assert {p: walk(fs, "a", "staging", *p) for p in paths} == numbers
    assert fs.getattr(numbers[("new", "f")]).size == 1

    fh, _ = await fs.open(numbers[("same.txt",)], os.O_WRONLY | os.O_TRUNC)   # a change
    await fs.release(fh)
    staging = fs.staging_of(art)
    await staging._start()                                 # what follow() does around a commit
    early = walk(fs, "a", "staging", "many", "f02")         # learned before the commit lands
    commit(fs.repo, "a")
    late = walk(fs, "a", "staging", "many", "f03")          # ... and after, by the same path
    assert walk(fs, "a", "staging", "many", "f02") == early
    assert fs.getattr(numbers[("many", "f01")]).size == 1   # found by its path meanwhile
    assert await staging._settle() == []
    numbers |= {("many", "f02"): early, ("many", "f03"): late}
    assert {p: walk(fs, "a", "staging", *p) for p in numbers} == numbers
    assert len(set(numbers.values())) == len(numbers)

    gone = (await fs.mkdir(new, b"gone", 0o755, 0, 0)).ino
    _, entries = await actions.reset("a")
    assert (new, b"gone") in entries
    with pytest.raises(NotFound):
        fs.getattr(gone)
    assert {p: walk(fs, "a", "staging", *p) for p in numbers} == numbers


async def test_staging_follows_latest_moved_by_a_put_or_rm_keeping_inode_numbers(fs, tmp_path):
    """A staging without changes shows latest: when a put from another process (the daemon is
    told: ``changed``) or ``rm`` of latest moves it, the paths that remain keep their numbers;
    what the new latest lacks is gone."""
    actions = Actions(fs)
    paths = [(), ("same.txt",), ("changes.txt",), ("many",), ("many", "f07")]
    numbers = {p: walk(fs, "a", "staging", *p) for p in paths}
    f49 = walk(fs, "a", "staging", "many", "f49")
    write(str(tmp_path / "next" / "same.txt"), b"same", mtime_ns=10**18)
    write(str(tmp_path / "next" / "many" / "f07"), b"seven")
    write(str(tmp_path / "next" / "changes.txt"), b"three")
    fs.repo.put("a", str(tmp_path / "next"))                 # "another process": v2
    _, entries = await actions.changed("a")
    staging = walk(fs, "a", "staging")
    assert {(walk(fs, "a", "staging", "many"), b"f07"), (staging, b"changes.txt"),
            (walk(fs, "a", "staging", "many"), b"f49")} <= set(entries)
    assert {p: walk(fs, "a", "staging", *p) for p in paths} == numbers
    assert fs.getattr(numbers[("many", "f07")]).size == 5
    with pytest.raises(NotFound):
        fs.getattr(f49)
    _, entries = await actions.delete_version("a", "v2")     # latest back to v1
    assert {p: walk(fs, "a", "staging", *p) for p in paths} == numbers
    assert fs.getattr(numbers[("changes.txt",)]).size == 3
    assert walk(fs, "a", "staging", "many", "f49") not in {f49, *numbers.values()}   # back: anew


async def test_a_listing_gives_each_kind_of_entry_the_attributes_its_lookup_does(tmp_path):
    """A readdir entry's attributes (what READDIRPLUS tells the kernel, built on the listing's
    own path) are the ones a lookup of the same name answers: a file, a hard-linked file, a
    symlink, a FIFO and a directory, with their modes, sizes, times and link counts."""
    src = tmp_path / "src"
    write(str(src / "f"), b"12345", mode=0o640, mtime_ns=10**18)
    write(str(src / "d" / "sub" / "x"), b"x")
    os.link(src / "f", src / "hard")
    os.symlink("f", src / "link")
    os.mkfifo(src / "fifo", 0o600)
    with Repo(str(tmp_path / "store")) as repo:
        repo.put("a", str(src))
        fs = Filesystem(repo)
        v0 = walk(fs, "a", "v0")
        dh = fs.opendir(v0)
        listed = {name: attr for _, name, attr, _ in fs.readdir(dh, 0)}
        fs.releasedir(dh)
        assert sorted(listed) == [b"d", b"f", b"fifo", b"hard", b"link"]
        assert {name: fs.lookup(v0, name) for name in listed} == listed
        kinds = {name: stat.S_IFMT(a.mode) for name, a in listed.items()}
        assert kinds == {b"d": stat.S_IFDIR, b"f": stat.S_IFREG, b"fifo": stat.S_IFIFO,
                         b"hard": stat.S_IFREG, b"link": stat.S_IFLNK}
        f = listed[b"f"]
        assert (stat.S_IMODE(f.mode), f.size, f.mtime_ns, f.nlink) == (0o640, 5, 10**18, 2)
        assert listed[b"hard"].ino == f.ino
        assert (listed[b"link"].size, listed[b"d"].nlink) == (1, 3)
        assert verify(repo).ok


def test_a_tree_entry_of_unknown_kind_is_corrupt_data():
    """A tree object whose entry has a kind byte artfs never writes is CorruptData (the mount
    answers EIO and logs it as an I/O error), not an entry that fails later on its kind."""
    data = bytearray(Tree([Entry(b"name", FILE, 0o644, 1, 0, b"r" * 32)]).encode())
    data[5:6] = b"x"   # the kind byte of the first entry (after "T" and the entry count)
    with pytest.raises(CorruptData, match="unknown kind"):
        Tree.decode(bytes(data))
