"""put's files cache (repo/files_cache.py): unchanged files are not opened, changed ones always are.

That a file was not opened is shown by permissions: the files are unreadable (mode 000, owner root)
from the start; the first put runs as root, which may read them anyway; the second runs as uid 65534
(nobody), which cannot open them, so it succeeds only if it does not open them. (A chmod after the
first put would change the files' ctime, which the cache rightly takes as a change.)
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import pytest

from artfs.repo.facade import Repo
from artfs.repo.files_cache import GRACE_NS, INLINE_CHUNKS
from artfs.repo.verify import verify

from .helpers import need_root, write

NOBODY = 65534
OLD_NS = time.time_ns() - 3600 * 10**9   # an hour ago


def settle() -> None:
    """Let the files' ctimes (set now, whatever their mtime) age past the cache's grace period."""
    time.sleep(GRACE_NS / 1e9 + 0.1)


@pytest.fixture
def nobody_dir():
    """A directory owned by nobody (pytest's tmp_path is private to root)."""
    need_root("runs put as uid 65534 to show which files it opens")
    d = tempfile.mkdtemp(prefix="artfs-files-cache-")
    os.chmod(d, 0o755)
    os.chown(d, NOBODY, NOBODY)
    yield d
    shutil.rmtree(d)


def nobody_put(store, name, src) -> tuple[int, str]:
    """Run Repo.put in a forked child as uid 65534: (exit status, its output or error)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:   # pragma: no cover - the child
        status = 1
        try:
            os.close(r)
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            with Repo(store) as repo:
                v, created = repo.put(name, src, warn=lambda m: None)
            out, status = f"{v.number} {created}", 0
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            out = f"{type(e).__name__}: {e}"
        os.write(w, out.encode())
        os._exit(status)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), out


def make_tree(src, files: dict[str, bytes], mode: int = 0) -> None:
    for rel, data in files.items():
        write(os.path.join(src, rel), data, mode=mode, mtime_ns=OLD_NS)


def hand_over(store) -> None:
    """Give the store (made by root's first put) to nobody for the second."""
    for root, dirs, names in os.walk(store):
        for n in dirs + names:
            os.chown(os.path.join(root, n), NOBODY, NOBODY)
    os.chown(store, NOBODY, NOBODY)


def content(store, name, rel: str) -> bytes:
    with Repo(store) as repo:
        node = repo.tree(repo.resolve(name).root)
        parts = rel.split("/")
        for part in parts[:-1]:
            node = repo.tree(node.lookup(part.encode()).ref)
        entry = node.lookup(parts[-1].encode())
        fobj = repo.file(entry.ref)
        return repo.read(fobj, 0, entry.size)


def test_second_put_of_an_unchanged_tree_opens_no_file(nobody_dir):
    store, src = os.path.join(nobody_dir, "store"), os.path.join(nobody_dir, "src")
    files = {"a.bin": os.urandom(300_000), "sub/b.bin": os.urandom(70_000), "sub/c.txt": b"hello",
             "big.bin": os.urandom(8 << 20)}   # more than INLINE_CHUNKS chunks: kept by id
    make_tree(src, files)
    settle()
    with Repo(store) as repo:
        repo.put("ds", src)
        assert len(repo.file(repo.tree(repo.resolve("ds").root).lookup(b"big.bin").ref).chunks) > INLINE_CHUNKS
    hand_over(store)
    write(os.path.join(src, "new.txt"), b"a new file")

    status, out = nobody_put(store, "ds", src)

    assert (status, out) == (0, "1 True"), out     # before the cache: "cannot read .../a.bin"
    for rel, data in files.items():
        assert content(store, "ds", rel) == data
    assert content(store, "ds", "new.txt") == b"a new file"
    with Repo(store) as repo:
        assert verify(repo).ok


def test_a_file_changed_within_the_grace_period_is_read_again(nobody_dir):
    store, src = os.path.join(nobody_dir, "store"), os.path.join(nobody_dir, "src")
    make_tree(src, {"old.bin": b"o" * 1000})
    settle()
    make_tree(src, {"fresh.bin": b"f" * 1000})   # an old mtime, but a ctime within the grace period
    with Repo(store) as repo:
        repo.put("ds", src)
    hand_over(store)

    status, out = nobody_put(store, "ds", src)

    assert status != 0       # fresh.bin was not trusted, so it had to be opened
    assert "fresh.bin" in out and "Permission denied" in out and "old.bin" not in out


def test_a_same_size_edit_with_the_same_mtime_is_read_again(tmp_path):
    store, src = str(tmp_path / "store"), str(tmp_path / "src")
    write(os.path.join(src, "f.bin"), b"A" * 5000, mtime_ns=OLD_NS)
    settle()
    with Repo(store) as repo:
        repo.put("ds", src)
    st = os.stat(os.path.join(src, "f.bin"))
    write(os.path.join(src, "f.bin"), b"B" * 5000, mtime_ns=OLD_NS)
    after = os.stat(os.path.join(src, "f.bin"))
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)
    assert after.st_ctime_ns != st.st_ctime_ns

    with Repo(store) as repo:
        v, created = repo.put("ds", src)
    assert created and v.number == 1
    assert content(store, "ds", "f.bin") == b"B" * 5000


def test_a_cached_file_object_that_was_deleted_is_read_again(tmp_path):
    store, src = str(tmp_path / "store"), str(tmp_path / "src")
    data = os.urandom(200_000)
    write(os.path.join(src, "f.bin"), data, mtime_ns=OLD_NS)
    settle()
    with Repo(store) as repo:
        repo.put("one", src)
        repo.delete_artifact("one")    # frees the file object the cache names
        repo.put("two", src)
        assert verify(repo).ok
    assert content(store, "two", "f.bin") == data


def test_a_file_object_deleted_while_the_put_runs_is_read_again(tmp_path):
    """The cache's file object is still referenced when put looks it up, and deleted before the
    put references its chunks: the check in that transaction catches it and the file is read."""
    store, src = str(tmp_path / "store"), str(tmp_path / "src")
    data = {f"f{i}.bin": os.urandom(100_000) for i in range(3)}
    for rel, d in data.items():
        write(os.path.join(src, rel), d, mtime_ns=OLD_NS)
    settle()
    with Repo(store) as repo:
        repo.put("one", src)
        deleted = []

        def progress(n):
            if not deleted:     # the first file was taken from the cache: delete what it names
                deleted.append(repo.delete_artifact("one"))
        repo.put("two", src, progress=progress)
        assert deleted == [1]
        assert verify(repo).ok
    for rel, d in data.items():
        assert content(store, "two", rel) == d


def test_the_cache_survives_other_roots_and_forgets_unseen_files(tmp_path):
    from artfs.repo.files_cache import MAX_AGE, FilesCache, cache_dir
    store = str(tmp_path / "store")
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    write(os.path.join(a, "x"), b"x" * 100, mtime_ns=OLD_NS)
    write(os.path.join(a, "gone"), b"g" * 100, mtime_ns=OLD_NS)
    write(os.path.join(b, "y"), b"y" * 100, mtime_ns=OLD_NS)
    settle()
    with Repo(store) as repo:
        repo.put("a", a)
        repo.put("b", b)
        assert len(os.listdir(cache_dir(store))) == 2
        os.unlink(os.path.join(a, "gone"))
        for _ in range(MAX_AGE):
            repo.put("a", a)
        cache = FilesCache(store, a, repo.objects.store.object_id)
    assert set(cache.old) == {b"x"}


def test_an_unchanged_put_reads_and_rewrites_no_file_object(tmp_path):
    """The cache holds the file objects themselves: a put of an unchanged tree asks the store
    for none of them but a big file's (over INLINE_CHUNKS chunks, kept by id) and writes none
    again (the version's file objects are referenced once more as they are), and still records
    an equal, verified version."""
    store, src = str(tmp_path / "store"), str(tmp_path / "src")
    files = {f"d{i % 4}/f{i:03d}": b"%d" % i * (1 + i * 50) for i in range(60)}
    files["big.bin"] = os.urandom(8 << 20)
    make_tree(src, files)
    settle()
    with Repo(store) as repo:
        repo.put("ds", src)
        write(os.path.join(src, "d0/f000"), b"changed", mtime_ns=OLD_NS)   # one file read again
    with Repo(store) as repo:
        v0 = repo.resolve("ds")
        fids, todo = set(), [v0.root]
        while todo:
            for e in repo.tree(todo.pop()).entries:
                (todo.append if e.kind == "d" else fids.add)(e.ref)
        big = repo.tree(v0.root).lookup(b"big.bin").ref
        assert len(repo.file(big).chunks) > INLINE_CHUNKS
    with Repo(store) as repo:
        asked, written, real = [], [], repo.objects.store
        get_many, put_many = real.get_many, real.put_many

        def counted_get(oids):
            asked.extend(oids)
            return get_many(oids)

        def counted_put(objs):
            written.extend(o.id for o in objs)
            return put_many(objs)
        real.get_many, real.put_many = counted_get, counted_put
        v1, created = repo.put("ds", src)
        assert created and v1.number == 1
        assert fids & set(asked) == {big} and not fids & set(written)
        assert len(set(written) - fids) >= 1     # the changed file's object (and the new trees)
        assert verify(repo).ok
    assert content(store, "ds", "d0/f000") == b"changed"
    for rel, data in list(files.items())[1:]:
        assert content(store, "ds", rel) == data
