"""Read-ahead of version files (mount/readahead.py): files of a directory opened in order get
the next ones' bytes into the kernel's page cache before they are opened, and what any reader
then gets is the stored bytes, whatever the order and offsets of its reads."""

from __future__ import annotations

import errno
import mmap
import os
import random
import threading
import time

import trio

from artfs.catalog.objects import FLAT_MAX
from artfs.mount.inodes import ROOT_INODE
from artfs.mount.model import Filesystem
from artfs.mount.readahead import PUSH_MAX, TREES, WINDOW_MIN
from artfs.repo.facade import Repo
from artfs.store.lmdb_env import resident
from tests.helpers import flip_stored_byte, oserror, read, write
from tests.test_paged_trees import _reads

N = 80


def in_page_cache(path) -> bool:
    """Whether every page of the (non-empty) file at PATH is in the kernel's page cache; mapping
    it and asking mincore(2) reads nothing, so the daemon is not asked."""
    fd = os.open(path, os.O_RDONLY)
    try:
        with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as m:
            view = memoryview(m)
            try:
                return resident(view)
            finally:
                view.release()
    finally:
        os.close(fd)


def wait_until(cond, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def small_dataset(src, rng: random.Random) -> dict[str, bytes]:
    """N files of 1 byte to 200 KiB (names in listing order), an empty one, one bigger than
    PUSH_MAX and a subdirectory among them."""
    files = {f"f{i:03d}": rng.randbytes(rng.choice([1, 4095, 4096, 4097, 16384, 70_000, 200_000]))
             for i in range(N)}
    files["f010"] = b""
    files["f020"] = rng.randbytes(PUSH_MAX + 5000)
    del files["f030"]
    files["f030/inner"] = rng.randbytes(1000)
    for name, data in files.items():
        write(os.path.join(src, name), data)
    return files


def test_files_opened_in_order_are_read_ahead_and_read_byte_exact(mount_factory, tmp_path):
    """A reader opens the files of a fresh mount's version directory in order: after its first
    few, the next files are in the page cache before it opens them (read-ahead; before, no file
    was until it was read), and every file reads back exactly, sequentially and at random
    offsets."""
    m = mount_factory()
    rng = random.Random(5)
    files = small_dataset(tmp_path / "src", rng)
    m.cli("put", "a", tmp_path / "src")
    m.start()
    d = m.path("a", "v0")
    names = sorted(os.listdir(d))
    assert names == sorted([n for n in files if "/" not in n] + ["f030"])
    for name in names[:3]:
        assert read(os.path.join(d, name)) == files[name]
    ahead = [n for n in names[4:12] if n not in ("f010",)]
    assert wait_until(lambda: all(in_page_cache(os.path.join(d, n)) for n in ahead)), \
        [n for n in ahead if not in_page_cache(os.path.join(d, n))]
    for name in names[3:]:
        if name != "f030":
            assert read(os.path.join(d, name)) == files[name], name
    for _ in range(300):   # random reads over all files (many served from the pushed pages)
        name = rng.choice([n for n in files if files[n]])
        data = files[name]
        off = rng.randrange(len(data))
        size = rng.randrange(1, 70_000)
        fd = os.open(os.path.join(d, name), os.O_RDONLY)
        try:
            assert os.pread(fd, size, off) == data[off:off + size], (name, off, size)
        finally:
            os.close(fd)
    m.stop()
    m.verify()


def test_files_opened_out_of_order_are_not_read_ahead(mount_factory, tmp_path):
    """Random readers (no two opens of a directory one or two entries apart) get no read-ahead:
    files nobody opened stay out of the page cache."""
    m = mount_factory()
    files = small_dataset(tmp_path / "src", random.Random(6))
    m.cli("put", "a", tmp_path / "src")
    m.start()
    d = m.path("a", "v0")
    names = sorted(n for n in os.listdir(d) if files.get(n))
    opened = names[0::7][::-1] + names[3::7]   # gaps of 7 entries, backwards then forwards
    for name in opened:
        assert read(os.path.join(d, name)) == files[name]
    time.sleep(0.5)   # what a read-ahead would have done by now (nothing must have been)
    checked = [n for i in range(5) for n in names[i::5] if n not in opened]   # opens out of order too
    assert [n for n in checked if in_page_cache(os.path.join(d, n))] == []


def test_a_damaged_file_read_ahead_reads_as_eio(mount_factory, tmp_path):
    """A file whose stored chunk is damaged, among files read in order: read-ahead puts none of
    its bytes in the page cache (every chunk it reads is hash-checked), so the reader gets EIO,
    and the files around it read exactly."""
    m = mount_factory()
    rng = random.Random(7)
    files = {f"f{i:03d}": rng.randbytes(16384) for i in range(30)}
    for name, data in files.items():
        write(str(tmp_path / "src" / name), data)
    m.cli("put", "a", tmp_path / "src")
    flip_stored_byte(m.store, files["f012"][:64], 100)
    m.start()
    d = m.path("a", "v0")
    assert sorted(os.listdir(d)) == sorted(files)
    for name in sorted(files)[:6]:   # the listing and these opens read ahead up to f028
        assert read(os.path.join(d, name)) == files[name]
    assert wait_until(lambda: in_page_cache(os.path.join(d, "f013")))   # read ahead past it
    assert not in_page_cache(os.path.join(d, "f012"))
    for name in sorted(files)[6:]:
        if name == "f012":
            assert oserror(read, os.path.join(d, name)) == errno.EIO
        else:
            assert read(os.path.join(d, name)) == files[name]
    assert "fails its hash check" in m.log_text()


def test_a_file_read_ahead_cannot_be_opened_once_its_version_is_deleted(mount_factory, tmp_path):
    """Read-ahead checks that the next files exist, so that their opens skip that check: a
    delete of their version afterwards still makes an open of one of them (through a directory
    descriptor opened before) ENOENT, never a file whose chunks are gone."""
    m = mount_factory()
    files = {f"f{i:03d}": os.urandom(5000) for i in range(20)}
    for name, data in files.items():
        write(str(tmp_path / "src" / name), data)
    m.cli("put", "a", tmp_path / "src")
    write(str(tmp_path / "src2" / "other"), b"other")
    m.cli("put", "a", tmp_path / "src2")
    m.start()
    dfd = os.open(m.path("a", "v0"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.listdir(dfd)
        for name in sorted(files)[:3]:
            assert read(name, dir_fd=dfd) == files[name]
        assert wait_until(lambda: in_page_cache(m.path("a", "v0", "f008")))
        m.cli("rm", "a:v0")
        assert oserror(read, "f008", dir_fd=dfd) == errno.ENOENT
    finally:
        os.close(dfd)
    m.stop()
    m.verify()


def test_files_whose_pages_the_kernel_dropped_are_read_ahead_again(mount_factory, tmp_path):
    """Files read ahead once are not read ahead again while the kernel keeps their pages (a warm
    walk would only redo it); once it dropped them (here: fadvise DONTNEED on each file) and a
    walk read them, the next walk in order gets them read ahead again (before, none was: they
    counted as read ahead)."""
    m = mount_factory()
    files = {f"f{i:03d}": os.urandom(9000) for i in range(40)}
    for name, data in files.items():
        write(str(tmp_path / "src" / name), data)
    m.cli("put", "a", tmp_path / "src")
    m.start()
    d = m.path("a", "v0")
    names = sorted(os.listdir(d))
    for name in names:
        assert read(os.path.join(d, name)) == files[name]
    shuffled = [n for i in range(5) for n in names[i::5]]   # opened out of order: no read-ahead
    for _ in range(2):
        for name in shuffled:
            fd = os.open(os.path.join(d, name), os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
        assert [n for n in shuffled if in_page_cache(os.path.join(d, n))] == []
        if _ == 0:
            for name in names:   # each read reaches the daemon
                assert read(os.path.join(d, name)) == files[name]
    for name in names[:4]:
        assert read(os.path.join(d, name)) == files[name]
    assert wait_until(lambda: all(in_page_cache(os.path.join(d, n)) for n in names[6:12]))
    for name in names:
        assert read(os.path.join(d, name)) == files[name]


def test_an_object_loaded_by_two_threads_at_once_is_cached_once():
    """The Repo's caches of trees and chunk lists are shared by the mount's loop, its worker
    threads and read-ahead: two threads loading one object at once keep one copy, counted once
    (before, both were counted, and the cache's budget shrank for good)."""
    from artfs.repo.facade import _LRU
    lru, both = _LRU(1 << 20), threading.Barrier(2)

    def load():
        both.wait(timeout=30)   # each thread loads while the other does
        return object(), 100
    got = []
    threads = [threading.Thread(target=lambda: got.append(lru.get(b"k", load))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got[0] is got[1] and lru.get(b"k", load) is got[0]
    assert len(lru.items) == 1 and lru.used == lru.items[b"k"][1]


def test_opens_in_a_paged_directory_read_only_their_pages(tmp_path):
    """A directory of more than FLAT_MAX entries is stored as pages, and a lookup reads one of
    them (catalog/objects.py). Opening a file there places it among its directory's entries for
    read-ahead: that reads no other page (before, every page of the directory was read on the
    loop at the first open); and files opened in order up to a page's end get the first files
    of the next page read ahead (with the last of the first page, which the first two opens in
    order read ahead). In-process (no FUSE): the adapter's ``store_pages`` hook
    records what would go to the kernel's page cache."""
    src = tmp_path / "src"
    for i in range(3 * FLAT_MAX):
        write(str(src / "d" / f"f{i:05d}"), b"%d" % i)
    with Repo(str(tmp_path / "store")) as repo:
        v0, _ = repo.put("ds", str(src))
        d = repo.tree(repo.tree(v0.root).lookup(b"d").ref)
        assert len(d.pages) > 2
        tail = [e.name for e in d.page(d.pages[0]).entries[-3:]]
        head = [e.name for e in d.page(d.pages[1]).entries[:WINDOW_MIN]]
    with Repo(str(tmp_path / "store")) as repo:
        fs, stored = Filesystem(repo), {}
        fs.store_pages = lambda ino, data: stored.__setitem__(ino, bytes(data))
        ino = ROOT_INODE
        for part in (b"ds", b"v0", b"d"):
            ino = fs.lookup(ino, part).ino
        inos = {name: fs.lookup(ino, name).ino for name in tail + head}   # the kernel holds them
        asked = _reads(repo)

        async def walk():
            for name in tail:
                await fs.open(inos[name], os.O_RDONLY)
            with trio.fail_after(60):
                while len(stored) < len(ahead):
                    await trio.sleep(0.01)
        ahead = tail[-1:] + head
        trio.run(walk)
        pages = {p.tid for p in d.pages}
        assert [oid for oid in asked if oid in pages] == []
        assert stored == {inos[name]: b"%d" % int(name[1:]) for name in ahead}


def test_listing_loads_at_most_trees_ahead_next_level_first(tmp_path):
    """Opening a version directory for listing loads the trees a walk lists next in a worker
    thread: its subdirectories' first (their entries hold their link counts, so the listing
    itself reads none of them), then theirs, TREES in all (before, every subdirectory's tree was
    loaded uncounted, and TREES of the next level after them)."""
    src = tmp_path / "src"
    for i in range(TREES + 10):
        write(str(src / "d" / f"s{i:05d}" / "below" / "f"), b"x")
    with Repo(str(tmp_path / "store")) as repo:
        v0, _ = repo.put("ds", str(src))
        d = repo.tree(repo.tree(v0.root).lookup(b"d").ref)
        children = [e.ref for e in d.entries]
    with Repo(str(tmp_path / "store")) as repo:
        fs = Filesystem(repo)
        asked = _reads(repo)
        trio.run(trio.to_thread.run_sync, fs.ahead._trees, children)
        assert asked == children[:TREES]


def test_read_ahead_does_not_confirm_a_file_being_freed(tmp_path):
    """Read-ahead checks that the next files exist and confirms them, so that their opens skip
    that check. A file whose version was deleted while it was open (a zombie) still exists to
    that check while its last close frees it: read-ahead checking it then must not confirm it,
    or an open after the free would skip the check and read freed chunks (before: the open's
    pin reported it existing). In-process: the read-ahead thread's batch runs between the start
    and the end of the free."""
    from artfs.mount.actions import Actions
    from artfs.repo.verify import verify

    src = tmp_path / "src"
    write(str(src / "f"), os.urandom(5000))
    with Repo(str(tmp_path / "store")) as repo:
        repo.put("a", str(src))
        write(str(src / "f"), b"other")
        repo.put("a", str(src))
        fs = Filesystem(repo)
        fs.store_pages = lambda ino, data: None

        async def race():
            ino = ROOT_INODE
            for part in (b"a", b"v0", b"f"):
                ino = fs.lookup(ino, part).ino
            fid = fs.inodes.node(ino).entry.ref
            fh, _ = await fs.open(ino, os.O_RDONLY)
            await Actions(fs).delete_version("a", "v0")         # open: a zombie
            assert fs.files.pop(fh).close() == fid
            assert fs.files.drop(fid, wait=True)                # its last close: the free begins
            await trio.to_thread.run_sync(fs.ahead._read, [(ino, fid, 5000)])
            await trio.to_thread.run_sync(fs.files.free, fid)   # the free ends
            assert fs.files.pin(fid, wait=True) is False        # an open checks it again
            assert not repo.file_exists(fid)
            fs.files.drop(fid, wait=True)
        trio.run(race)
        assert verify(repo).ok


def test_a_walk_gets_read_ahead_from_its_first_open_after_listing(mount_factory, tmp_path):
    """A walk lists a directory, then opens its files in order: the listing counts as an open
    before its first entry, so the open of the first file already starts the read-ahead of the
    next ones (before, two opens in order did, and the second file was always read cold); a
    directory listed and then read from the middle gets none."""
    m = mount_factory()
    files = {f"{d}/f{i:03d}": os.urandom(9000) for d in ("a", "b") for i in range(20)}
    for name, data in files.items():
        write(str(tmp_path / "src" / name), data)
    m.cli("put", "a", tmp_path / "src")
    m.start()
    walked, middle = m.path("a", "v0", "a"), m.path("a", "v0", "b")
    names = sorted(os.listdir(walked))
    assert read(os.path.join(walked, names[0])) == files["a/" + names[0]]
    ahead = names[WINDOW_MIN:0:-1]   # checked backwards: opens out of order start nothing
    assert wait_until(lambda: all(in_page_cache(os.path.join(walked, n)) for n in ahead)), \
        [n for n in ahead if not in_page_cache(os.path.join(walked, n))]
    assert sorted(os.listdir(middle)) == names
    assert read(os.path.join(middle, names[10])) == files["b/" + names[10]]
    time.sleep(0.5)   # what a read-ahead would have done by now (nothing must have been)
    checked = [n for i in range(5) for n in names[i::5] if n != names[10]]   # out of order too
    assert [n for n in checked if in_page_cache(os.path.join(middle, n))] == []
    for name in names:
        assert read(os.path.join(walked, name)) == files["a/" + name]
    m.stop()
    m.verify()
