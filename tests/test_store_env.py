"""The store's environments under concurrency: map growth with readers, other processes growing
the map, one environment per process, fork, and the guard on ingest sessions."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from contextlib import contextmanager

import pytest

import artfs
from artfs.errors import StoreError
from artfs.repo.facade import Repo
from artfs.repo.ingest import Ingest
from artfs.repo.verify import verify
from artfs.store.lmdb_env import Env
from tests.helpers import MiB, SMALL, segment_bytes, small_files, write

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextmanager
def reading(repo, fobj, expected: bytes, threads: int = 1):
    """Threads re-reading a file in a loop for the life of the block; yields the read count (a
    one-item list); any wrong byte or error fails the test when the block ends."""
    stop, errors, reads = threading.Event(), [], [0]

    def reader():
        try:
            while not stop.is_set():
                assert repo.read(fobj, 0, len(expected)) == expected
                reads[0] += 1
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
    workers = [threading.Thread(target=reader) for _ in range(threads)]
    for t in workers:
        t.start()
    try:
        yield reads
    finally:
        stop.set()
        for t in workers:
            t.join()
    assert not errors, errors


def test_map_grows_while_threads_read(tmp_path, monkeypatch):
    """Growing the map re-maps it: before the map lock, a reader thread hashing a view into the
    old map crashed the process (segfault in xxhash/memcpy). Readers now pause for the re-map."""
    monkeypatch.setenv("ARTFS_MAP_SIZE", str(1 * MiB))
    src = tmp_path / "src"
    data = os.urandom(SMALL)   # read from the map (segments take bigger objects)
    write(src / "f", data)
    with Repo(str(tmp_path / "s")) as repo:
        v = repo.put("a", str(src))[0]
        fobj = repo.file(repo.tree(v.root).entries[0].ref)
        with reading(repo, fobj, data, threads=3) as reads:
            grown = repo.db.objects.env.map_size()
            for i in range(6):
                small_files(src / f"more{i}", 1 * MiB)
                repo.put("a", str(src))
        assert repo.db.objects.env.map_size() > grown and reads[0] > 0
        assert verify(repo).ok


class _Refused(Exception):
    pass


def test_a_write_aborts_while_threads_read(tmp_path):
    """py-lmdb 3 aborts a write transaction only at an instant when no LMDB call of any thread is
    in flight on the environment: readers that keep one in flight nearly all the time (a get of
    a big value pages it in with the GIL released) starved an aborted write (an error, a full
    map) without end, the intermittent hang of test_map_grows_while_threads_read. A write now
    aborts with every other thread's transactions ended and new ones waiting (MapLock)."""
    env = Env(str(tmp_path / "env"), (b"d",), initial_map=1 << 30)
    db, big = env.dbs["d"], os.urandom(16 * MiB)
    env.write(lambda txn: txn.put(b"big", big, db=db), lambda txn: None)
    stop, errors = threading.Event(), []

    def reader():
        try:
            while not stop.is_set():
                with env.read() as txn:
                    assert len(txn.get(b"big", db=db)) == len(big)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def refused(txn):
        txn.put(b"partial", b"x", db=db)
        raise _Refused()

    def writer():
        for _ in range(20):
            with pytest.raises(_Refused):
                env.write(refused, lambda txn: None)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in readers:
        t.start()
    aborting = threading.Thread(target=writer)
    aborting.start()
    aborting.join(timeout=120)   # a hang, not a speed: each abort waits for a read or two
    hung = aborting.is_alive()
    stop.set()
    for t in readers + [aborting]:
        t.join()
    assert not hung and not errors, errors
    with env.read() as txn:
        assert txn.get(b"partial", db=db) is None
    env.close()


_GROW = """
import os, sys
sys.path.insert(0, sys.argv[1])
from artfs.repo.facade import Repo
with Repo(sys.argv[2]) as repo:
    repo.put("b", sys.argv[3])
"""


def test_another_process_growing_the_map(tmp_path, monkeypatch):
    """A map grown by another process (MapResizedError on the next transaction) is adopted:
    reads, puts and commits of this process go on; before, every one failed until a restart."""
    monkeypatch.setenv("ARTFS_MAP_SIZE", str(1 * MiB))
    first, big = tmp_path / "first", tmp_path / "big"
    write(first / "f", b"first")
    small_files(big, 4 * MiB)
    with Repo(str(tmp_path / "s")) as repo:
        repo.put("a", str(first))
        before = repo.db.objects.env.map_size()
        subprocess.run([sys.executable, "-c", _GROW, HERE, str(tmp_path / "s"), str(big)], check=True,
                       env={**os.environ, "ARTFS_MAP_SIZE": str(1 * MiB)})
        v = repo.resolve("b")                                   # a read in the grown map
        entry = repo.tree(v.root).entries[0]
        assert repo.read(repo.file(entry.ref), 0, SMALL) == (big / os.fsdecode(entry.name)).read_bytes()
        write(first / "h", os.urandom(2 * MiB))
        repo.put("a", str(first))                               # and a write
        assert repo.db.objects.env.map_size() > before
        assert verify(repo).ok


def test_two_stores_on_one_path_in_one_process(tmp_path):
    """LMDB refuses a second environment on one path in a process: Stores share one."""
    src = tmp_path / "src"
    write(src / "f", b"shared")
    a = artfs.Store(str(tmp_path / "s"))
    b = artfs.Store(str(tmp_path / "s"))
    a.put("x", str(src))
    assert b.get("x:latest").files() == ["f"]
    a.close()
    with b.get("x:v0").open("f") as f:
        assert f.read() == b"shared"
    b.close()


def test_a_forked_child_opens_its_own_environment(tmp_path):
    src = tmp_path / "src"
    write(src / "f", b"parent")
    with artfs.Store(str(tmp_path / "s")) as store:
        store.put("x", str(src))
        pid = os.fork()
        if pid == 0:   # the child: its own environment, reading and writing
            code = 1
            try:
                with artfs.Store(str(tmp_path / "s")) as child:
                    write(src / "g", b"child")
                    child.put("x", str(src))
                    code = 0 if child.get("x:v0").files() == ["f"] else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert store.get("x:latest").version == "v1"
        assert verify(store._repo).ok


def test_final_transaction_fails_when_the_session_was_released(tmp_path):
    """If another process judged the ingest abandoned and released its chunks, the ingest must
    not record a version whose chunks may be gone."""
    src = tmp_path / "src"
    write(src / "f", os.urandom(2 * MiB))
    with Repo(str(tmp_path / "s")) as repo:
        with pytest.raises(StoreError, match="released by another process"):
            with Ingest(repo) as ingest:
                pending = ingest.scan(str(src))
                token = ingest._session.token
                repo.db.write(lambda txn: repo.sessions.release(txn, token))   # as a wrong judge would

                def action(txn):
                    repo.catalog.ensure_artifact(txn, "a", None)
                    root = ingest.build(txn, pending).ref
                    ingest.finish(txn)
                    return repo.add_version(txn, "a", root, 1, 2 * MiB)
                repo.db.write(action)
        assert repo.artifacts() == []
        assert verify(repo).ok and not os.listdir(tmp_path / "s" / "sessions")


def test_sessions_of_live_processes_are_never_abandoned(tmp_path):
    """Liveness is the session's flock, not a pid: a session this process holds is alive for
    any observer, and one whose holder closed it is abandoned."""
    with Repo(str(tmp_path / "s")) as repo:
        ingest = Ingest(repo).__enter__()
        token = ingest._session.token
        repo.db.write(lambda txn: repo.sessions.hold(txn, token, 0, []))
        with repo.db.read() as txn:
            assert repo.sessions.abandoned(txn) == []
        ingest._session.end()   # as if the process died: the kernel drops its lock
        with repo.db.read() as txn:
            assert repo.sessions.abandoned(txn) == [token]
        assert repo.collect_abandoned() == 1


def test_lock_files_of_killed_owners_are_removed_by_the_next_put(tmp_path):
    """A session owner killed while it held no references (a mount's daemon that stored nothing
    ahead) left its lock file in STORE/sessions/ for good; the next writer removes it, and never
    the lock of a live owner nor a file whose owner has not locked and written it yet."""
    store, src = tmp_path / "s", tmp_path / "src"
    write(src / "f", b"data")
    with Repo(str(store)) as repo:
        repo.put("a", str(src))
        code = ("import os, signal; from artfs.catalog.sessions import Session; "
                f"Session({str(store)!r}); os.kill(os.getpid(), signal.SIGKILL)")
        assert subprocess.run([sys.executable, "-c", code]).returncode == -9
        (dead,) = os.listdir(store / "sessions")
        live = Ingest(repo).__enter__()._session   # held by this process
        (store / "sessions" / ("00" * 16)).touch()   # an owner that has not locked it yet
        write(src / "f", b"more data")
        repo.put("a", str(src))
        left = set(os.listdir(store / "sessions"))
        assert dead not in left
        assert left == {live.token.hex(), "00" * 16}
        live.end()
        assert verify(repo).ok


def test_deletes_and_compact_give_space_back_while_reads_go_on(tmp_path):
    """Deleting punches the bytes of objects kept in segments out of their files at once (store/
    segments.py); LMDB records of small objects free pages inside the LMDB file, never the file:
    compact rewrites it. Reads in other threads go on during the copy and the switch."""
    src = tmp_path / "src"
    keep = os.urandom(2 * MiB)
    write(src / "keep", keep)
    with Repo(str(tmp_path / "s")) as repo:
        v0 = repo.put("a", str(src))[0]
        for i in range(5):
            write(src / "big", os.urandom(8 * MiB))
            small_files(src / "small", 2 * MiB)
            repo.put("a", str(src))
        full = segment_bytes(tmp_path / "s")
        for v in repo.versions("a")[1:]:
            repo.delete_version("a", v.label)
        assert full - segment_bytes(tmp_path / "s") >= 40 * MiB   # the big files' bytes, at once
        (entry,) = repo.tree(v0.root).entries
        fobj = repo.file(entry.ref)
        with reading(repo, fobj, keep) as reads:
            before, after = repo.compact()
        assert reads[0] > 0
        assert before - after >= 8 * MiB and after < 6 * MiB, (before, after)   # the small files' pages
        assert after == repo.db.file_bytes()
        assert repo.read(fobj, 0, len(keep)) == keep
        write(src / "new", b"after compaction")
        repo.put("a", str(src))                          # writes go to the new files
        assert verify(repo).ok
    assert sorted(n for n in os.listdir(tmp_path / "s") if n.startswith("data.")) == ["data.1"]
    with Repo(str(tmp_path / "s")) as repo:
        assert [v.label for v in repo.versions("a")] == ["v0", "v6"]
        assert verify(repo).ok


def test_compact_refuses_while_another_process_uses_the_store(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, artfs; s = artfs.Store(sys.argv[1]); "
                               "print('open', flush=True); sys.stdin.read()", str(tmp_path / "s")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=HERE, text=True)
    try:
        assert holder.stdout.readline() == "open\n"
        with Repo(str(tmp_path / "s")) as repo:
            with pytest.raises(artfs.errors.Conflict, match=f"pid {holder.pid}"):
                repo.compact()
            repo.put("a", str(tmp_path))                 # the store is still usable
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    with Repo(str(tmp_path / "s")) as repo:
        repo.compact()
        assert verify(repo).ok


def test_writers_in_threads_of_one_process(tmp_path):
    """Writes of threads of one process are serialized by its write gate; every file and tree
    object each one created is stored and verify is clean."""
    with Repo(str(tmp_path / "s")) as repo:
        errors = []

        def writer(k):
            try:
                for i in range(12):
                    src = tmp_path / f"src{k}-{i}"
                    write(src / "sub" / "f", b"%d-%d" % (k, i))
                    write(src / "g", os.urandom(1000))
                    repo.put(f"a{k}", str(src))
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
        threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert verify(repo).ok
        for k in range(4):
            v = repo.resolve(f"a{k}")
            sub = repo.tree(repo.tree(v.root).lookup(b"sub").ref)
            assert repo.read(repo.file(sub.lookup(b"f").ref), 0, 10) == b"%d-11" % k
