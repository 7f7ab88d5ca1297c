"""The mount at scale, for real: the daemon's memory stays bounded however many files it serves.

A daemon keeps state per inode the kernel knows (mount/inodes.py); when the kernel forgets inodes
(memory pressure, or ``drop_caches`` here) that state must go, or a walk over a big store grows the
daemon without bound. Marked slow: building and walking a million files takes minutes.
"""

from __future__ import annotations

import os
import threading

import pytest

import artfs

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

MiB = 1 << 20
DIRS = FILES = 1000
MTIME = 10**18   # file (d, f) gets MTIME + d * FILES + f: a million distinct identities


def make_tree(root) -> None:
    """DIRS x FILES empty files, each with its own mtime: one file object in the store (fast to
    make and to put), yet a million inodes in the mount (a version file's inode is its file id,
    mode and mtime)."""
    for d in range(DIRS):
        path = os.path.join(root, f"d{d:03d}")
        os.makedirs(path)
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for f in range(FILES):
                fd = os.open(f"f{f:03d}", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=dfd)
                t = MTIME + d * FILES + f
                os.utime(fd, ns=(t, t))
                os.close(fd)
        finally:
            os.close(dfd)


def rss_anon(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no RssAnon for {pid}")


def drop_dentries() -> None:
    """Make the kernel drop its dentries and inodes: it sends the daemon FORGETs for them."""
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2")


def test_walking_a_million_files_keeps_the_daemon_small(mounted, tmp_path):
    """A version of 1,000 directories x 1,000 files walked twice through the mount with os.walk
    and lstat of every file (each stat right), the kernel's dentries dropped every 100
    directories: the daemon's own memory (RssAnon, sampled every 0.1 s) stays under 300 MiB."""
    if os.geteuid() != 0:
        pytest.skip("dropping the kernel's dentry cache needs root")
    m = mounted
    make_tree(tmp_path / "src")
    with artfs.Store(m.store) as store:
        store.put("big", str(tmp_path / "src"))
    peak, stop = [rss_anon(m.proc.pid)], threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            peak.append(rss_anon(m.proc.pid))
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        for _ in range(2):
            seen = 0
            for top, dirs, files in os.walk(m.path("big", "v0")):
                dirs.sort()
                for name in files:
                    st = os.lstat(os.path.join(top, name))
                    d, f = int(os.path.basename(top)[1:]), int(name[1:])
                    assert st.st_mtime_ns == MTIME + d * FILES + f and st.st_size == 0
                    seen += 1
                if files and int(os.path.basename(top)[1:]) % 100 == 99:
                    drop_dentries()
            assert seen == DIRS * FILES
    finally:
        stop.set()
        sampler.join()
    assert max(peak) < 300 * MiB, f"daemon RssAnon peaked at {max(peak) / MiB:.0f} MiB"
