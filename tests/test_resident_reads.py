"""Reads whose bytes are in memory are served on the mount's trio loop, without a worker thread
(mount/files.py read_nowait, repo/facade.py Repo.read_nowait), and return the right bytes."""

from __future__ import annotations

import os
import threading
import time

from artfs.mount.model import IO_THREADS
from tests.helpers import drop_data_cache, write
from tests.test_reliability_mount import slow_disk  # noqa: F401 - a fixture


def drop_page_cache(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_a_read_of_bytes_in_memory_does_not_wait_for_busy_worker_threads(slow_disk, mount_factory, tmp_path):  # noqa: F811
    """The store on a slow disk (every read of it waits 200 ms). Twice as many cold reads as there
    are worker threads wait for the disk; meanwhile a file whose chunks the daemon read a moment
    ago (its store pages in memory; the kernel's copy of the file dropped, so the read reaches the
    daemon) is read completely before any of the cold reads ends. Before, that read queued for a
    worker thread behind them."""
    m = mount_factory(store=slow_disk / "store").start()
    cold = {f"c{i:02d}": os.urandom(64 * 1024) for i in range(2 * IO_THREADS)}
    warm = os.urandom(100_000)
    for name, data in {**cold, "warm": warm}.items():
        write(str(tmp_path / "src" / name), data)
    m.cli("put", "a", tmp_path / "src")
    for _ in range(3):
        os.listdir(m.path("a", "v0"))
    drop_data_cache(slow_disk / "store")
    with open(m.path("a", "v0", "warm"), "rb") as f:   # read by the daemon: its chunks in memory
        assert f.read() == warm
    drop_page_cache(m.path("a", "v0", "warm"))          # the next read reaches the daemon again

    events, lock, go = [], threading.Lock(), threading.Barrier(len(cold) + 1)
    results = {}

    def reader(name):
        fd = os.open(m.path("a", "v0", name), os.O_RDONLY)
        try:
            go.wait()
            results[name] = os.pread(fd, len(cold[name]), 0)
        finally:
            os.close(fd)
        with lock:
            events.append(name)

    threads = [threading.Thread(target=reader, args=(n,)) for n in cold]
    for t in threads:
        t.start()
    go.wait()
    time.sleep(0.1)   # let the cold reads reach the daemon and take every worker thread
    with open(m.path("a", "v0", "warm"), "rb") as f:
        got = f.read()
    with lock:
        events.append("warm")
    for t in threads:
        t.join(timeout=120)
    assert got == warm
    assert events[0] == "warm", f"the in-memory read ended after {events.index('warm')} cold reads"
    assert results == cold
    m.stop()
    m.verify()


def test_staging_reads_from_memory_and_from_disk_agree(mounted, tmp_path):
    """A staging file read back right after it was written (its data file in the page cache: read
    on the loop with RWF_NOWAIT) and after the page caches of the file and of its data file were
    dropped (read in a worker thread), at its end too (a short read at end of file is not mistaken
    for bytes not in memory)."""
    m = mounted
    os.mkdir(m.path("s"))
    data = os.urandom(3 * 1024 * 1024 + 123)
    path = m.path("s", "staging", "f")
    with open(path, "wb") as f:
        f.write(data)
    for drop in (False, True, False):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)   # the read reaches the daemon
            if drop:
                for root, _, names in os.walk(os.path.join(m.store, "staging")):
                    for n in names:
                        drop_page_cache(os.path.join(root, n))
            assert os.pread(fd, 200, len(data) - 100) == data[-100:]
            assert os.pread(fd, len(data) + 10, 0) == data
        finally:
            os.close(fd)
