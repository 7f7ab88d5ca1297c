"""The mount, for real: a daemon in a subprocess, used with ordinary system calls and the CLI.

Every test leaves no mount and no daemon behind (conftest.Mount.stop) and, unless it damages the
store on purpose, ends with ``verify`` clean (the ``mounted`` fixture).
"""

from __future__ import annotations

import errno
import glob
import json
import mmap
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

import artfs
from artfs.repo.facade import Repo
from artfs.store.segments import cached_pages
from tests.conftest import in_mount_table, pid_alive
from tests.helpers import (MiB, cli_json, flip_stored_byte, oserror, put_file, rchar, read, run_cli, wait_for_marks,
                           write)

pytestmark = pytest.mark.fuse

# Chunk-format overhead allowed in byte accounting (file chunk lists, trees); chunks are exact.
SLACK = 64 * 1024


def committed(m, name: str, *extra) -> str:
    return m.cli("commit", name, *extra).stdout.strip()


@pytest.fixture
def animals(mounted, tmp_path):
    """MNT/animals with v0 = cat.png (2 MiB) + dog.png (1 MiB), committed through the mount."""
    src = {"cat.png": os.urandom(2 * MiB), "dog.png": os.urandom(1 * MiB)}
    os.mkdir(mounted.path("animals"))
    for name, data in src.items():
        write(str(tmp_path / "src" / name), data)
        shutil.copy2(tmp_path / "src" / name, mounted.path("animals", "staging", name))
    assert committed(mounted, "animals") == "animals:v0"
    return mounted, src


def test_seed_scenario(animals, tmp_path):
    m, src = animals
    rat = os.urandom(3 * MiB)
    write(str(tmp_path / "src" / "rat.png"), rat)
    shutil.copyfile(tmp_path / "src" / "rat.png", m.path("animals", "staging", "rat.png"))
    assert committed(m, "animals") == "animals:v1"

    assert sorted(os.listdir(m.path("animals"))) == ["latest", "staging", "v0", "v1"]
    assert sorted(os.listdir(m.path("animals", "v0"))) == ["cat.png", "dog.png"]
    assert sorted(os.listdir(m.path("animals", "v1"))) == ["cat.png", "dog.png", "rat.png"]
    assert os.readlink(m.path("animals", "latest")) == "v1"
    for name, data in {**src, "rat.png": rat}.items():
        assert read(m.path("animals", "v1", name)) == data
        assert read(m.path("animals", "latest", name)) == data
        assert read(m.path("animals", "staging", name)) == data
    for name, data in src.items():
        assert read(m.path("animals", "v0", name)) == data
        st = os.stat(m.path("animals", "v0", name))
        assert st.st_ino == os.stat(m.path("animals", "v1", name)).st_ino  # one inode per content
        orig = os.stat(tmp_path / "src" / name)
        assert (st.st_mtime_ns, st.st_mode, st.st_size) == (orig.st_mtime_ns, orig.st_mode, len(data))
    du = {v["version"]: v for v in cli_json(m.store, "du", "animals")["artifacts"][0]["versions"]}
    assert du["v1"]["logical_bytes"] == 6 * MiB
    assert abs(du["v1"]["unique_bytes"] - 3 * MiB) <= SLACK
    assert run_cli(m.store, "status", "animals", check=True).stdout == ""


def test_daemonized_mount_and_unmount(mount_factory):
    m = mount_factory()
    proc = m.start_daemonized()
    assert proc.returncode == 0, proc.stderr
    assert os.path.ismount(m.mnt)
    info_path = os.path.join(m.store, "daemon.json")
    info = json.loads(read(info_path))
    assert info["mountpoint"] == m.mnt and pid_alive(info["pid"])
    assert os.stat(info_path).st_mode & 0o777 == 0o600
    assert os.listdir(m.mnt) == []
    proc = run_cli(m.store, "unmount", m.mnt)
    assert proc.returncode == 0, proc.stderr
    assert not in_mount_table(m.mnt) and not pid_alive(info["pid"])
    assert not os.path.exists(info_path) and not os.path.exists(info["socket"])


def test_mount_errors(mount_factory, tmp_path):
    m = mount_factory().start()
    missing = run_cli(m.store, "mount", tmp_path / "nope")
    assert missing.returncode == 8 and "does not exist" in missing.stderr
    write(str(tmp_path / "file"), b"x")
    not_dir = run_cli(m.store, "mount", tmp_path / "file")
    assert not_dir.returncode == 8 and "not a directory" in not_dir.stderr
    again = mount_factory(store=tmp_path / "other-store", mnt=m.mnt).start_daemonized()
    assert again.returncode == 8 and "already a mount point" in again.stderr
    twice = mount_factory(mnt=tmp_path / "second").start_daemonized()   # found in the forked child
    assert twice.returncode == 8 and "already mounted" in twice.stderr
    assert not os.path.ismount(tmp_path / "second")
    assert len(twice.stderr.strip().splitlines()) == 1


def test_unmount_refused_while_busy(mount_factory):
    m = mount_factory().start()
    os.mkdir(m.path("a"))
    put_file(m.path("a", "staging", "f"), b"data")
    with open(m.path("a", "staging", "f"), "rb"):
        busy = run_cli(m.store, "unmount", m.mnt)
        assert busy.returncode == 5 and "busy" in busy.stderr.lower()
        assert os.path.ismount(m.mnt)
    assert run_cli(m.store, "unmount", m.mnt).returncode == 0
    assert m.proc.wait(timeout=10) == 0 and not in_mount_table(m.mnt)


def test_teardown_after_sigkill_leaves_nothing(mount_factory):
    m = mount_factory().start()
    pid = m.proc.pid
    os.kill(pid, signal.SIGKILL)
    m.proc.wait(timeout=10)
    assert oserror(os.listdir, m.mnt) == errno.ENOTCONN   # dead, not silently unmounted
    m.stop()
    assert not in_mount_table(m.mnt) and not pid_alive(pid)


def test_sigterm_unmounts_cleanly(mount_factory):
    m = mount_factory().start()
    m.proc.send_signal(signal.SIGTERM)
    assert m.proc.wait(timeout=10) == 0
    assert not in_mount_table(m.mnt)
    assert not os.path.exists(os.path.join(m.store, "daemon.json"))


def test_versions_are_read_only(animals):
    m, _ = animals
    v0 = m.path("animals", "v0")
    cat = os.path.join(v0, "cat.png")
    assert oserror(open, cat, "r+b") == errno.EROFS
    assert oserror(open, cat, "ab") == errno.EROFS
    assert oserror(open, os.path.join(v0, "new"), "wb") == errno.EROFS
    assert oserror(os.mkdir, os.path.join(v0, "d")) == errno.EROFS
    assert oserror(os.unlink, cat) == errno.EROFS
    assert oserror(os.rename, cat, os.path.join(v0, "x.png")) == errno.EROFS
    assert oserror(os.chmod, cat, 0o600) == errno.EROFS
    assert oserror(os.utime, cat, None) == errno.EROFS
    assert oserror(os.truncate, cat, 0) == errno.EROFS
    assert oserror(os.symlink, "cat.png", os.path.join(v0, "l")) == errno.EROFS
    assert oserror(os.link, cat, os.path.join(v0, "hard")) == errno.EROFS
    assert oserror(os.setxattr, cat, "user.x", b"1") == errno.EROFS
    assert oserror(os.unlink, m.path("animals", "latest")) == errno.EROFS
    assert oserror(os.mkdir, m.path("animals", "v9")) == errno.EROFS
    assert oserror(os.rmdir, m.path("animals", "v0")) == errno.EROFS
    assert not os.access(cat, os.W_OK) and os.access(cat, os.R_OK)


def test_rename_across_artifacts_or_out_of_staging_is_exdev(animals):
    m, _ = animals
    os.mkdir(m.path("birds"))
    put_file(m.path("animals", "staging", "x"), b"x")
    assert oserror(os.rename, m.path("animals", "staging", "x"), m.path("birds", "staging", "x")) == errno.EXDEV
    assert oserror(os.rename, m.path("animals", "v0", "cat.png"), m.path("animals", "staging", "c")) == errno.EXDEV
    os.rename(m.path("animals", "staging", "x"), m.path("animals", "staging", "y"))
    assert read(m.path("animals", "staging", "y")) == b"x"
    shutil.move(m.path("animals", "staging", "y"), m.path("birds", "staging", "y"))  # mv copies
    assert read(m.path("birds", "staging", "y")) == b"x"


def test_staging_semantics(animals):
    m, src = animals
    s = m.path("animals", "staging")
    os.makedirs(os.path.join(s, "a", "b"))
    os.symlink("../cat.png", os.path.join(s, "a", "link"))
    assert os.readlink(os.path.join(s, "a", "link")) == "../cat.png"
    with open(os.path.join(s, "dog.png"), "r+b") as f:       # copy-up on write, in place
        f.seek(10)
        f.write(b"WOOF")
    dog = src["dog.png"][:10] + b"WOOF" + src["dog.png"][14:]
    assert read(os.path.join(s, "dog.png")) == dog
    with open(os.path.join(s, "dog.png"), "ab") as f:
        f.write(b"tail")
    assert os.stat(os.path.join(s, "dog.png")).st_size == len(dog) + 4
    os.truncate(os.path.join(s, "cat.png"), 100)
    assert read(os.path.join(s, "cat.png")) == src["cat.png"][:100]
    os.chmod(os.path.join(s, "cat.png"), 0o600)
    os.utime(os.path.join(s, "cat.png"), ns=(10**18, 10**18))
    st = os.stat(os.path.join(s, "cat.png"))
    assert (st.st_mode & 0o777, st.st_mtime_ns) == (0o600, 10**18)
    with open(os.path.join(s, "gone"), "w+b") as f:          # unlinked while open: still usable
        f.write(b"abc")
        os.unlink(os.path.join(s, "gone"))
        assert "gone" not in os.listdir(s)
        f.write(b"def")
        f.seek(0)
        assert f.read() == b"abcdef" and os.fstat(f.fileno()).st_size == 6
    assert oserror(os.rmdir, os.path.join(s, "a")) == errno.ENOTEMPTY
    status = cli_json(m.store, "status", "animals")
    assert {"a/", "a/link"} <= set(status["added"]) and "gone" not in status["added"]
    assert (status["modified"], status["deleted"]) == (["cat.png", "dog.png"], [])
    assert committed(m, "animals") == "animals:v1"
    assert read(m.path("animals", "v1", "dog.png")) == dog + b"tail"
    assert os.stat(m.path("animals", "v1", "cat.png")).st_mtime_ns == 10**18


def test_write_only_opens_bypass_the_mounts_page_cache(animals):
    """A staging file opened write-only sends its writes to the daemon without the mount's page
    cache holding a copy (direct_io: nothing could read it through that descriptor); one opened
    read-write keeps them cached (and mmap). Readers see the bytes either way."""
    m, src = animals
    path = m.path("animals", "staging", "new.bin")
    data = os.urandom(4 * MiB + 123)
    reader = os.open(m.path("animals", "staging", "cat.png"), os.O_RDONLY)
    try:
        with open(path, "wb") as f:                       # O_WRONLY | O_CREAT | O_TRUNC
            for at in range(0, len(data), MiB):
                f.write(data[at:at + MiB])
            f.flush()
            assert cached_pages(f.fileno(), 0, len(data)) == 0
        with open(m.path("animals", "staging", "cat.png"), "ab") as f:   # O_WRONLY | O_APPEND
            f.write(b"tail")
        assert os.pread(reader, 10, len(src["cat.png"])) == b"tail"
        with open(path, "r+b") as f:                      # O_RDWR: through the page cache
            f.write(data[:MiB])
            f.flush()
            assert cached_pages(f.fileno(), 0, MiB) == MiB // mmap.PAGESIZE
            with mmap.mmap(f.fileno(), 0) as mm:
                assert mm[:MiB] == data[:MiB]
    finally:
        os.close(reader)
    assert read(path) == data
    assert committed(m, "animals") == "animals:v1"
    assert read(m.path("animals", "v1", "new.bin")) == data
    assert read(m.path("animals", "v1", "cat.png")) == src["cat.png"] + b"tail"


def test_mmap_seek_walk_glob(animals):
    m, src = animals
    with open(m.path("animals", "v0", "cat.png"), "rb") as f:
        with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
            assert mm[:] == src["cat.png"]
            assert mm[MiB:MiB + 7] == src["cat.png"][MiB:MiB + 7]
        f.seek(12345)
        assert f.read(100) == src["cat.png"][12345:12445]
        f.seek(-10, os.SEEK_END)
        assert f.read() == src["cat.png"][-10:]
    walked = sorted(os.path.relpath(os.path.join(top, n), m.mnt)
                    for top, dirs, files in os.walk(m.mnt) for n in files)
    assert walked == ["animals/staging/cat.png", "animals/staging/dog.png",
                      "animals/v0/cat.png", "animals/v0/dog.png"]
    assert sorted(glob.glob(m.path("animals", "*", "*.png"))) == sorted(
        m.path("animals", d, f) for d in ("latest", "staging", "v0") for f in ("cat.png", "dog.png"))


def test_reader_keeps_its_version_while_latest_moves(animals):
    m, src = animals
    with open(m.path("animals", "latest", "cat.png"), "rb") as reader:
        first = reader.read(MiB)
        for i in range(2):
            put_file(m.path("animals", "staging", "cat.png"), bytes([i]) * (2 * MiB))
            assert committed(m, "animals") == f"animals:v{i + 1}"
        assert first + reader.read() == src["cat.png"]
        assert os.readlink(m.path("animals", "latest")) == "v2"
    assert read(m.path("animals", "latest", "cat.png")) == b"\1" * (2 * MiB)


def test_put_alias_and_rm_through_the_cli_show_at_once(animals, tmp_path):
    m, src = animals
    assert sorted(os.listdir(m.path("animals"))) == ["latest", "staging", "v0"]
    assert os.readlink(m.path("animals", "latest")) == "v0"
    write(str(tmp_path / "new" / "x"), b"x")
    m.cli("put", "animals", tmp_path / "new")               # another process: daemon is told
    assert os.readlink(m.path("animals", "latest")) == "v1"
    assert os.listdir(m.path("animals", "staging")) == ["x"]
    m.cli("alias", "animals:v0", "best")
    assert os.readlink(m.path("animals", "best")) == "v0"
    m.cli("alias", "animals:v1", "best")
    assert os.readlink(m.path("animals", "best")) == "v1"
    m.cli("alias", "--delete", "animals", "best")
    assert not os.path.lexists(m.path("animals", "best"))
    m.cli("rm", "animals:v1")
    assert os.readlink(m.path("animals", "latest")) == "v0"
    assert sorted(os.listdir(m.path("animals"))) == ["latest", "staging", "v0"]
    with artfs.Store(m.store) as store:
        assert store.get("animals:v0").path == m.path("animals", "v0")
    assert oserror(os.stat, m.path("birds")) == errno.ENOENT
    m.cli("put", "birds", tmp_path / "new")                 # a new artifact appears at once
    assert os.listdir(m.path("birds", "v0")) == ["x"]
    m.cli("rm", "birds", "--force")
    assert sorted(os.listdir(m.mnt)) == ["animals"]
    assert oserror(os.stat, m.path("birds", "v0")) == errno.ENOENT
    os.mkdir(m.path("birds"))                               # re-created: empty, new inode
    assert sorted(os.listdir(m.path("birds"))) == ["staging"]


def test_commit_without_a_daemon(mount_factory):
    m = mount_factory().start()
    os.mkdir(m.path("a"))
    put_file(m.path("a", "staging", "f"), b"one")
    m.stop()
    assert committed(m, "a") == "a:v0"                         # on the unmounted store
    assert run_cli(m.store, "commit", "a", check=True).stderr.startswith("artfs: no changes")
    m.start()
    assert read(m.path("a", "v0", "f")) == b"one"
    m.stop()
    m.verify()


def test_staging_survives_sigkill_and_remount(mount_factory):
    m = mount_factory().start()
    os.mkdir(m.path("a"))
    data = os.urandom(3 * MiB + 17)
    put_file(m.path("a", "staging", "big"), data)
    os.makedirs(m.path("a", "staging", "d", "e"))
    put_file(m.path("a", "staging", "d", "e", "small"), b"small")
    wait_for_marks(m.store, "a")   # closed files are not flagged (files open then would be)
    m.proc.send_signal(signal.SIGKILL)
    m.proc.wait(timeout=10)
    m.stop()
    m.start()
    assert read(m.path("a", "staging", "big")) == data
    assert read(m.path("a", "staging", "d", "e", "small")) == b"small"
    assert committed(m, "a") == "a:v0"
    assert read(m.path("a", "v0", "big")) == data
    m.stop()
    m.verify()


def reading_offset(pid: int, prefix: str) -> int:
    """How far process PID has read a file whose path starts with PREFIX (0: none open)."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(prefix):
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    return int(f.readline().split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return 0


def test_sigkill_during_a_commit_loses_nothing(mount_factory):
    m = mount_factory().start()
    os.mkdir(m.path("a"))
    data = os.urandom(96 * MiB)
    before = rchar(m.proc.pid)
    put_file(m.path("a", "staging", "big"), data + os.urandom(MiB))
    staged = os.path.join(m.store, "staging", "a") + "/"
    deadline = time.monotonic() + 60   # read ahead (the WRITEs from /dev/fuse, then the file)
    while rchar(m.proc.pid) - before < 2 * (len(data) + MiB) or reading_offset(m.proc.pid, staged):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.truncate(m.path("a", "staging", "big"), len(data))   # changed since: the commit reads it
    cmd = [sys.executable, "-m", "artfs", "--store", m.store, "commit", "a"]
    committing = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while reading_offset(m.proc.pid, staged) == 0:       # the commit is chunking the data file
        assert time.monotonic() < deadline and committing.poll() is None
    m.proc.send_signal(signal.SIGKILL)
    m.proc.wait(timeout=10)
    assert committing.communicate(timeout=60) and committing.returncode == 8
    m.stop()
    m.verify()                                           # nothing half-written, nothing leaked
    m.start()
    assert not os.path.exists(m.path("a", "v0"))
    assert read(m.path("a", "staging", "big")) == data   # the staging is intact: commit again
    assert committed(m, "a") == "a:v0"
    assert read(m.path("a", "v0", "big")) == data
    m.stop()
    m.verify()


def test_status_and_reset(animals):
    m, src = animals
    s = m.path("animals", "staging")
    put_file(os.path.join(s, "new"), b"n")
    os.unlink(os.path.join(s, "dog.png"))
    put_file(os.path.join(s, "cat.png"), b"c")
    out = run_cli(m.store, "status", "animals", check=True).stdout.splitlines()
    assert out == ["A new", "M cat.png", "D dog.png"]
    m.cli("reset", "animals")
    assert sorted(os.listdir(s)) == ["cat.png", "dog.png"]
    assert read(os.path.join(s, "cat.png")) == src["cat.png"]
    assert cli_json(m.store, "status", "animals") == {"added": [], "modified": [], "deleted": [], "interrupted": []}


def test_commit_refused_while_a_staging_file_is_open_for_writing(animals):
    m, _ = animals
    with open(m.path("animals", "staging", "open.txt"), "wb") as f:
        f.write(b"partial")
        refused = run_cli(m.store, "commit", "animals")
        assert refused.returncode == 5
        assert "animals/staging/open.txt is open for writing" in refused.stderr
    assert committed(m, "animals") == "animals:v1"
    assert read(m.path("animals", "v1", "open.txt")) == b"partial"


def test_delete_a_version_while_its_file_is_open(animals):
    m, src = animals
    os.unlink(m.path("animals", "staging", "cat.png"))
    assert committed(m, "animals") == "animals:v1"          # cat.png only in v0 now
    with open(m.path("animals", "v0", "cat.png"), "rb") as reader:
        head = reader.read(1000)
        m.cli("rm", "animals:v0")
        assert oserror(os.stat, m.path("animals", "v0")) == errno.ENOENT
        assert oserror(os.stat, m.path("animals", "v0", "dog.png")) == errno.ENOENT
        assert "v0" not in os.listdir(m.path("animals"))
        assert head + reader.read() == src["cat.png"]     # the zombie is still readable
        assert zombies(m.store) == 1
    deadline = time.monotonic() + 10                      # RELEASE reaches the daemon after close
    while zombies(m.store) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert zombies(m.store) == 0
    assert run_cli(m.store, "verify", check=True).returncode == 0


def zombies(store) -> int:
    with Repo(store) as repo, repo.db.read() as txn:
        return len(repo.objects.zombies(txn))


def test_corrupted_chunk_reads_as_eio(mount_factory, tmp_path):
    m = mount_factory()
    data = os.urandom(8 * MiB)
    write(str(tmp_path / "src" / "f"), data)
    m.cli("put", "a", tmp_path / "src")
    flip_stored_byte(m.store, data[6 * MiB:6 * MiB + 64], 10)   # a chunk's byte, as stored
    m.start()
    with open(m.path("a", "v0", "f"), "rb") as f:
        assert f.read(4096) == data[:4096]      # other chunks still read fine
        f.seek(6 * MiB)
        assert oserror(f.read, 4096) == errno.EIO
    assert "fails its hash check" in m.log_text()
    assert run_cli(m.store, "verify").returncode == 7


def test_statfs_reports_the_store_filesystem(mounted):
    sv = os.statvfs(mounted.mnt)
    assert sv.f_blocks > 0 and sv.f_bsize > 0 and sv.f_bavail > 0
    df = subprocess.run(["df", "-P", mounted.mnt], capture_output=True, text=True, check=True)
    assert "artfs" in df.stdout


# staging keeps its inode numbers across commit, reset and a moved latest -------------------------
def staging_numbers(m) -> dict[str, int]:
    """path under NAME/staging ('.' for itself) -> st_ino, for everything in animals' staging."""
    s = m.path("animals", "staging")
    out = {".": os.stat(s).st_ino}
    for top, dirs, files in os.walk(s):
        for name in dirs + files:
            path = os.path.join(top, name)
            out[os.path.relpath(path, s)] = os.lstat(path).st_ino
    return out


def listdir_fd(fd: int) -> list[str]:
    """The directory open as ``fd`` listed afresh (os.listdir(fd) rewinds fd's own listing)."""
    again = os.open(".", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    try:
        return sorted(os.listdir(again))
    finally:
        os.close(again)


def test_a_working_directory_in_staging_survives_commit(animals):
    """The shell scenario: cd into a staging subdirectory, commit from there, and keep working."""
    m, _ = animals
    artfs_cli = f"{shlex.quote(sys.executable)} -m artfs --store {shlex.quote(m.store)}"
    script = (f"cd {shlex.quote(m.path('animals', 'staging'))} && mkdir sub && cd sub && "
              f"echo hi > a.txt && {artfs_cli} commit animals && ls && /bin/pwd && cat a.txt && "
              f"mkdir more && echo x > more/y && {artfs_cli} commit animals && ls && cd more && "
              f"{artfs_cli} commit animals && ls && cat y")
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["animals:v1", "a.txt", m.path("animals", "staging", "sub"),
                                   "hi", "animals:v2", "a.txt", "more", "animals:v2", "y", "x"]


def test_directories_and_open_files_in_staging_survive_commit(animals):
    """A process whose working directory is in staging, a directory fd and files open for reading
    (unmodified, modified, new) all keep working across a commit, with the same inode numbers."""
    m, src = animals
    s = m.path("animals", "staging")
    os.makedirs(os.path.join(s, "sub", "deep"))
    put_file(os.path.join(s, "sub", "deep", "f"), b"new file")
    put_file(os.path.join(s, "dog.png"), b"woof")
    sitter = subprocess.Popen(
        [sys.executable, "-c", "import os, sys; sys.stdin.readline(); "
                               "print(sorted(os.listdir('.'))); print(os.getcwd())"],
        cwd=os.path.join(s, "sub", "deep"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)
    dfd = os.open(os.path.join(s, "sub"), os.O_RDONLY | os.O_DIRECTORY)
    want = {"cat.png": src["cat.png"], "dog.png": b"woof", "sub/deep/f": b"new file"}
    readers = {rel: open(os.path.join(s, rel), "rb") for rel in want}
    try:
        first = {rel: f.read(3) for rel, f in readers.items()}
        before = staging_numbers(m)
        assert committed(m, "animals") == "animals:v1"
        out, _ = sitter.communicate("go\n", timeout=60)
        assert out.splitlines() == ["['f']", os.path.join(s, "sub", "deep")]
        assert listdir_fd(dfd) == ["deep"] and os.fstat(dfd).st_ino == before["sub"]
        for rel, f in readers.items():
            assert first[rel] + f.read() == want[rel]
            assert os.fstat(f.fileno()).st_ino == before[rel]
        assert staging_numbers(m) == before
    finally:
        os.close(dfd)
        for f in readers.values():
            f.close()


def test_staging_inode_numbers_follow_paths_across_commits_and_resets(animals):
    """A staging node keeps its st_ino across commits and resets (if it still exists) and a
    rename through the mount; a number never stands for two paths, at once or over time."""
    m, _ = animals
    s = m.path("animals", "staging")
    owner: dict[int, str] = {}

    def check() -> dict[str, int]:
        now = staging_numbers(m)
        assert len(set(now.values())) == len(now)
        for rel, ino in now.items():
            assert owner.setdefault(ino, rel) == rel, (ino, rel, owner[ino])
        return now

    check()
    for r in range(3):
        os.makedirs(os.path.join(s, f"d{r}", "e"))
        put_file(os.path.join(s, f"d{r}", "e", "f"), b"%d" % r)
        put_file(os.path.join(s, "dog.png"), b"dog %d" % r)
        os.symlink("dog.png", os.path.join(s, f"link{r}"))
        before = check()
        assert committed(m, "animals") == f"animals:v{r + 1}"
        assert check() == before
        os.rename(os.path.join(s, f"d{r}"), os.path.join(s, f"moved{r}"))   # keeps the numbers
        for rel in [rel for rel in owner.values() if rel.split("/")[0] == f"d{r}"]:
            owner[before[rel]] = f"moved{r}" + rel[len(f"d{r}"):]
        renamed = check()
        os.makedirs(os.path.join(s, "tmp", "x"))                              # reset: gone again
        put_file(os.path.join(s, "cat.png"), b"short")
        os.unlink(os.path.join(s, f"link{r}"))
        m.cli("reset", "animals")
        after = check()
        assert {rel: after[rel] for rel in renamed if rel in after} == \
            {rel: ino for rel, ino in renamed.items() if not rel.startswith(f"moved{r}")}
        assert os.stat(os.path.join(s, "cat.png")).st_size == 2 * MiB   # the reset shows at once
        assert "tmp" not in after and f"link{r}" in after


def test_reset_and_a_put_with_working_directories_in_staging(animals, tmp_path):
    """After a reset, a directory that still exists keeps working and its number; one made since
    the last commit no longer exists, so using it fails with ENOENT, like any removed directory.
    A put from another process moves latest under a staging without changes: the directories
    the new version still has keep working and show its content; the others are gone (ENOENT)."""
    m, src = animals
    s = m.path("animals", "staging")
    os.makedirs(os.path.join(s, "keep", "inner"))
    put_file(os.path.join(s, "keep", "inner", "k"), b"k")
    assert committed(m, "animals") == "animals:v1"
    os.mkdir(os.path.join(s, "keep", "fresh"))
    put_file(os.path.join(s, "dog.png"), b"changed")
    keep = os.open(os.path.join(s, "keep"), os.O_RDONLY | os.O_DIRECTORY)
    fresh = os.open(os.path.join(s, "keep", "fresh"), os.O_RDONLY | os.O_DIRECTORY)
    inner = os.open(os.path.join(s, "keep", "inner"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        numbers = staging_numbers(m)
        m.cli("reset", "animals")
        assert listdir_fd(keep) == ["inner"] and os.fstat(keep).st_ino == numbers["keep"]
        assert oserror(listdir_fd, fresh) == errno.ENOENT
        assert read(os.path.join(s, "dog.png")) == src["dog.png"]
        assert os.stat(os.path.join(s, "dog.png")).st_ino == numbers["dog.png"]
        write(str(tmp_path / "new" / "keep" / "inner" / "k2"), b"k2")
        write(str(tmp_path / "new" / "other"), b"o")
        m.cli("put", "animals", tmp_path / "new")
        assert os.readlink(m.path("animals", "latest")) == "v2"
        assert listdir_fd(keep) == ["inner"] and os.fstat(keep).st_ino == numbers["keep"]
        assert listdir_fd(inner) == ["k2"] and os.fstat(inner).st_ino == numbers["keep/inner"]
        assert sorted(os.listdir(s)) == ["keep", "other"]
        assert oserror(os.stat, os.path.join(s, "dog.png")) == errno.ENOENT
        assert staging_numbers(m)["keep/inner"] == numbers["keep/inner"]
    finally:
        for fd in (keep, fresh, inner):
            os.close(fd)


def test_python_api_uses_the_mount(animals, tmp_path):
    """Version.path is the version's directory in the running mount, download() still writes a
    writable copy, and a put through the API is visible in the mount when it returns."""
    m, src = animals
    with artfs.Store(m.store) as store:
        v0 = store.get("animals:v0")
        assert v0.path == m.path("animals", "v0")
        assert read(os.path.join(v0.path, "cat.png")) == src["cat.png"]
        copy = v0.download(str(tmp_path / "copy"))           # a copy, not the mounted path
        assert copy == str(tmp_path / "copy") and read(os.path.join(copy, "dog.png")) == src["dog.png"]
        write(str(tmp_path / "more" / "x.bin"), b"x" * 1000)
        v1 = store.put("animals", str(tmp_path / "more"), aliases=["best"])
        assert os.readlink(m.path("animals", "latest")) == "v1" == v1.version
        assert os.readlink(m.path("animals", "best")) == "v1"
        assert os.listdir(m.path("animals", "v1")) == ["x.bin"]
    m.stop()
    with artfs.Store(m.store) as store:
        assert store.get("animals:v0").path is None           # not mounted any more
