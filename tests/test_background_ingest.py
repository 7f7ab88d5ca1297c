"""Staging files stored in the background once closed, so that commit only writes trees
(staging/precommit.py; files of 1 MiB up to repo/ingest.py ADOPT_MIN: bigger ones are only read
ahead, and adopted by the commit), on real mounts: the commit takes what was stored and does not read the
file again; any change after the file was stored (same second, same size) commits the new bytes;
renames, links and unlinks keep what was stored right; reset and the daemon's exit give it back;
a daemon killed while storing leaks nothing. Each test ends with ``artfs verify`` clean.
"""

from __future__ import annotations

import glob
import os
import random
import signal
import subprocess
import threading
import time

import pytest

from artfs.repo.facade import Repo
from artfs.store.chunker import hashed_chunks
from tests.conftest import in_mount_table
from tests.helpers import MiB, cli_json, rchar, read, write

pytestmark = pytest.mark.fuse


def data(key: str, size: int) -> bytes:
    return random.Random(key).randbytes(size)


def chunks(tmp_path, content: bytes) -> dict[bytes, int]:
    """chunk id -> length of each chunk of CONTENT."""
    path = tmp_path / "chunked"
    path.write_bytes(content)
    fd = os.open(path, os.O_RDONLY)
    try:
        return {obj.id: n for obj, n in hashed_chunks(fd, len(content))}
    finally:
        os.close(fd)


def chunk_ids(tmp_path, content: bytes) -> list[bytes]:
    return list(chunks(tmp_path, content))


def distinct_bytes(tmp_path, *contents: bytes) -> int:
    """What a store holding these contents (and nothing else) stores: their distinct chunks."""
    seen = {}
    for content in contents:
        seen.update(chunks(tmp_path, content))
    return sum(seen.values())


def stage_stored(m, tmp_path, names, size: int) -> tuple[str, dict[str, bytes]]:
    """Files NAMES of SIZE bytes written into a new artifact's staging, once the mount stored them."""
    os.mkdir(m.path("a"))
    staged = m.path("a", "staging")
    files = {n: data(n, size) for n in names}
    for name, content in files.items():
        write(os.path.join(staged, name), content)
    wait_stored(m.store, [c for v in files.values() for c in chunk_ids(tmp_path, v)])
    return staged, files


def held(store) -> list[bytes]:
    """Every chunk reference that a session holds (a mount's stored-ahead files, ingests)."""
    with Repo(str(store)) as repo, repo.db.read() as txn:
        return [cid for _, cid in repo.sessions.held(txn)]


def wait_until(what, condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


def wait_stored(store, ids: list[bytes]) -> None:
    """Until the mount holds every chunk of a file it stores in the background."""
    wait_until("the file stored in the background", lambda: set(ids) <= set(held(store)))


def stored_bytes(store) -> int:
    return cli_json(store, "du")["store"]["stored_bytes"]


def test_commit_takes_the_file_stored_in_the_background(mounted, tmp_path):
    """A file closed in staging is chunked and stored by the daemon; the commit then does not read
    it (the daemon reads less than a tenth of it during the commit) and hands the references
    over: the version has the exact bytes, nothing stays held, du counts the file once."""
    m = mounted
    os.mkdir(m.path("a"))
    content = data("big", 3 * MiB)
    write(m.path("a", "staging", "big.bin"), content)
    wait_stored(m.store, chunk_ids(tmp_path, content))
    before = rchar(m.proc.pid)
    assert m.cli("commit", "a", check=True).stdout.strip() == "a:v0"
    assert rchar(m.proc.pid) - before < len(content) // 10
    assert read(m.path("a", "v0", "big.bin")) == content
    assert held(m.store) == []
    assert stored_bytes(m.store) == len(content)
    m.verify()


def test_a_commit_reads_files_changed_after_they_were_stored(mounted, tmp_path):
    """Changed after being stored, in the same second and to the same size: rewritten through
    the mount; truncated and extended back by path (no open: only the data file's ctime says it
    changed); written again and renamed. Each version has the new bytes; what was stored of the
    old ones is given back (du counts only the new bytes)."""
    m = mounted
    staged, old = stage_stored(m, tmp_path, ("rewritten", "truncated", "renamed"), 3 * MiB)
    new = data("new", 3 * MiB)
    with open(os.path.join(staged, "rewritten"), "r+b") as f:
        f.write(new)
    os.truncate(os.path.join(staged, "truncated"), 0)
    os.truncate(os.path.join(staged, "truncated"), 3 * MiB)
    with open(os.path.join(staged, "renamed"), "r+b") as f:
        f.seek(MiB)
        f.write(b"x")
    os.rename(os.path.join(staged, "renamed"), os.path.join(staged, "moved"))
    m.cli("commit", "a", check=True)
    moved = bytearray(old["renamed"])
    moved[MiB] = ord("x")
    assert read(m.path("a", "v0", "rewritten")) == new
    assert read(m.path("a", "v0", "truncated")) == bytes(3 * MiB)
    assert read(m.path("a", "v0", "moved")) == moved
    wait_until("stored-ahead chunks given back", lambda: held(m.store) == [])
    assert stored_bytes(m.store) == distinct_bytes(tmp_path, new, bytes(3 * MiB), moved)
    m.verify()


def test_renamed_linked_and_unlinked_files_after_they_were_stored(mounted, tmp_path):
    """Stored files renamed, hard-linked and unlinked before the commit: the version has the
    renamed file and both names of the linked one (one inode, nlink 2), without the unlinked
    one, whose stored chunks are given back."""
    m = mounted
    staged, files = stage_stored(m, tmp_path, ("renamed", "linked", "unlinked"), 3 * MiB)
    os.mkdir(os.path.join(staged, "d"))
    os.rename(os.path.join(staged, "renamed"), os.path.join(staged, "d", "moved"))
    os.link(os.path.join(staged, "linked"), os.path.join(staged, "d", "link"))
    os.unlink(os.path.join(staged, "unlinked"))
    m.cli("commit", "a", check=True)
    v0 = m.path("a", "v0")
    assert sorted(os.listdir(v0)) == ["d", "linked"]
    assert read(os.path.join(v0, "d", "moved")) == files["renamed"]
    assert read(os.path.join(v0, "d", "link")) == read(os.path.join(v0, "linked")) == files["linked"]
    st = os.stat(os.path.join(v0, "linked"))
    assert st.st_nlink == 2 and st.st_ino == os.stat(os.path.join(v0, "d", "link")).st_ino
    wait_until("stored-ahead chunks given back", lambda: held(m.store) == [])
    assert stored_bytes(m.store) == distinct_bytes(tmp_path, files["renamed"], files["linked"])
    m.verify()


def deleted_files_open(pid: int, under: str) -> list[str]:
    """Files under UNDER that process PID holds open although they were deleted."""
    names = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith(under) and target.endswith(" (deleted)"):
            names.append(target)
    return names


def test_unlinked_files_give_back_what_was_stored_at_once(mounted, tmp_path):
    """rm of a stored file gives its chunks back without waiting for a commit (du: nothing
    stored); rm of a file while the daemon stores it stops that: the daemon closes the deleted data
    file (its blocks are free) and holds nothing of it. So does a rename over a stored file."""
    m = mounted
    staged, files = stage_stored(m, tmp_path, ("stored", "replaced"), 3 * MiB)
    os.unlink(os.path.join(staged, "stored"))
    os.rename(os.path.join(staged, "replaced"), os.path.join(staged, "other"))
    write(os.path.join(staged, "small"), b"s")
    os.rename(os.path.join(staged, "small"), os.path.join(staged, "other"))   # over "replaced"
    wait_until("an unlinked file's chunks given back", lambda: held(m.store) == [], timeout=30)
    assert stored_bytes(m.store) == 0
    before = rchar(m.proc.pid)   # a big file: only read ahead (the WRITEs are read too)
    write(os.path.join(staged, "storing"), os.urandom(256 * MiB))
    wait_until("the daemon reading the file", lambda: rchar(m.proc.pid) - before > 272 * MiB)
    os.unlink(os.path.join(staged, "storing"))
    wait_until("the deleted data file closed",
               lambda: not deleted_files_open(m.proc.pid, str(m.store)), timeout=30)
    wait_until("its chunks given back", lambda: held(m.store) == [], timeout=30)
    assert m.cli("commit", "a", check=True).stdout.strip() == "a:v0"
    assert os.listdir(m.path("a", "v0")) == ["other"]
    assert stored_bytes(m.store) == 1
    m.verify()


def test_a_commit_while_the_file_is_being_stored(mounted, tmp_path):
    """Commit right after the close, while the daemon stores the file: exact bytes, nothing held."""
    m = mounted
    os.mkdir(m.path("a"))
    content = data("racing", 64 * MiB)
    write(m.path("a", "staging", "f"), content)
    m.cli("commit", "a", check=True)
    assert read(m.path("a", "v0", "f")) == content
    wait_until("stored-ahead chunks given back", lambda: held(m.store) == [])
    assert stored_bytes(m.store) == distinct_bytes(tmp_path, content)
    m.verify()


def test_reset_and_unmount_give_back_what_was_stored(mounted, tmp_path):
    """A reset voids what was stored of staging, an unmount what is still held, and so does rm
    of the artifact: no session holds any chunk afterwards and the store holds only committed bytes."""
    m = mounted
    os.mkdir(m.path("a"))
    kept = data("kept", 2 * MiB)
    write(m.path("a", "staging", "kept"), kept)
    m.cli("commit", "a", check=True)
    dropped = data("dropped", 3 * MiB)
    write(m.path("a", "staging", "dropped"), dropped)
    wait_stored(m.store, chunk_ids(tmp_path, dropped))
    m.cli("reset", "a", check=True)
    wait_until("reset chunks given back", lambda: held(m.store) == [])
    assert stored_bytes(m.store) == distinct_bytes(tmp_path, kept)
    pending = data("pending", 3 * MiB)
    write(m.path("a", "staging", "pending"), pending)
    wait_stored(m.store, chunk_ids(tmp_path, pending))
    m.stop()
    assert held(m.store) == []
    assert stored_bytes(m.store) == distinct_bytes(tmp_path, kept)
    m.start()
    assert read(m.path("a", "staging", "pending")) == pending   # still in staging: read at commit
    m.cli("commit", "a", check=True)
    assert read(m.path("a", "v1", "pending")) == pending
    os.mkdir(m.path("b"))                                       # rm of an artifact gives back too
    gone = data("gone", 3 * MiB)
    write(m.path("b", "staging", "gone"), gone)
    wait_stored(m.store, chunk_ids(tmp_path, gone))
    m.cli("rm", "b", "--force", check=True)
    wait_until("a deleted artifact's chunks given back", lambda: held(m.store) == [])
    m.verify()


def test_sigkill_while_files_are_stored_in_the_background(mount_factory, tmp_path):
    """SIGKILL the daemon 5 times: at a seeded instant while a 48 MiB file (one the commit adopts) is
    written into staging or read ahead (iterations 1, 3), or a seeded instant after the mount
    began to hold the chunks of a 3 MiB one (0, 2, 4): the next mount's commit has exactly the bytes staging
    shows, no session holds any chunk, `du` counts each chunk of the version once, verify is clean,
    and gc (retention) frees nothing the version uses."""
    rng = random.Random(13)
    m = mount_factory().start()
    os.mkdir(m.path("a"))

    def writer(path, content):
        try:
            write(path, content)
        except OSError:   # the daemon died under it
            pass
    for it in range(5):
        path = m.path("a", "staging", f"f{it}")
        size = 3 * MiB if it % 2 == 0 else 48 * MiB
        copying = threading.Thread(target=writer, args=(path, data(f"killed{it}", size)))
        copying.start()
        if it % 2 == 0:
            wait_until("chunks of it held", lambda: held(m.store))
            time.sleep(rng.uniform(0, 0.3))
        else:
            time.sleep(rng.uniform(0.05, 0.5))
        m.proc.send_signal(signal.SIGKILL)
        m.proc.wait(timeout=30)
        copying.join(timeout=60)
        subprocess.run(["fusermount3", "-u", "-z", m.mnt], capture_output=True, check=True)
        m.stop()
        assert not in_mount_table(m.mnt)
        m.start()
        staged = {n: read(m.path("a", "staging", n)) for n in os.listdir(m.path("a", "staging"))}
        # --force: files open (or just closed) when the daemon died are flagged (mount/writing.py)
        m.cli("commit", "a", "--force", check=True)
        version = m.path("a", f"v{it}")
        assert {n: read(os.path.join(version, n)) for n in os.listdir(version)} == staged
        assert held(m.store) == []
        assert stored_bytes(m.store) == distinct_bytes(tmp_path, *staged.values())
        m.verify()
    m.cli("gc", check=True)
    assert {n: read(m.path("a", "v4", n)) for n in staged} == staged
    m.stop()
    m.verify()


def test_a_big_file_is_only_read_ahead_and_the_commit_takes_it_in(mounted, tmp_path):
    """A staging file the commit will adopt (repo/ingest.py ADOPT_MIN and up) is only chunked and
    hashed once closed, nothing held; the commit then neither reads nor copies it: the store
    takes the data file in (the same inode, now a segment), the version has the exact bytes, du
    counts them once."""
    m = mounted
    os.mkdir(m.path("a"))
    content = data("adopted", 24 * MiB)
    before = rchar(m.proc.pid)
    write(m.path("a", "staging", "big.bin"), content)
    # the daemon reads the bytes twice: the WRITE requests from /dev/fuse, then the data file
    wait_until("the file read ahead", lambda: rchar(m.proc.pid) - before >= 2 * len(content))
    (name,) = os.listdir(os.path.join(m.store, "staging", "a"))
    inode = os.stat(os.path.join(m.store, "staging", "a", name)).st_ino
    assert held(m.store) == []
    before = rchar(m.proc.pid)
    assert m.cli("commit", "a", check=True).stdout.strip() == "a:v0"
    assert rchar(m.proc.pid) - before < len(content) // 10
    assert read(m.path("a", "v0", "big.bin")) == content
    segments = glob.glob(os.path.join(m.store, "data.*", "objects", "segments", "*"))
    assert inode in {os.stat(p).st_ino for p in segments}
    assert os.listdir(os.path.join(m.store, "staging", "a")) == []
    assert stored_bytes(m.store) == len(content)
    m.verify()
