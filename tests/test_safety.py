"""Safety and recovery on the command line (issue 12): what rm asks before it deletes, what it
names, mounting over files, unmounting after the daemon was killed, a closed pipe."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys

from tests.conftest import in_mount_table
from tests.helpers import cli_json, marked_writing, put_file, run_cli, wait_for_marks


def _two_versions(tmp_path, store, name="scratch"):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    for i in (1, 2):
        (src / "f").write_bytes(b"x" * (1000 * i))
        run_cli(store, "put", name, src, check=True)
    run_cli(store, "alias", f"{name}:v0", "prod", check=True)
    run_cli(store, "alias", f"{name}:v1", "best", check=True)


def test_rm_artifact_without_tty_needs_force(tmp_path):
    store = tmp_path / "store"
    _two_versions(tmp_path, store)
    refused = run_cli(store, "rm", "scratch")
    assert refused.returncode == 5
    line, = refused.stderr.strip().splitlines()
    assert "2 versions" in line and "best, prod" in line and "--force" in line
    assert "scratch" in run_cli(store, "ls", check=True).stdout
    assert run_cli(store, "rm", "scratch", "--force", check=True).stdout == "deleted scratch\n"
    assert run_cli(store, "ls", check=True).stdout == ""


def _rm_on_tty(store, target, answer: bytes):
    """Run ``artfs rm TARGET`` with stdin and stderr on a pseudo-terminal, answer its question."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "artfs", "--store", str(store), "rm", target],
                            stdin=slave, stderr=slave, stdout=subprocess.PIPE)
    os.close(slave)
    prompt = b""
    while not prompt.rstrip().endswith(b"[y/N]"):
        prompt += os.read(master, 1024)
    os.write(master, answer)
    out, _ = proc.communicate(timeout=60)
    os.close(master)
    return proc.returncode, prompt.decode(), out.decode()


def test_rm_artifact_on_tty_asks_naming_what_goes(tmp_path):
    store = tmp_path / "store"
    _two_versions(tmp_path, store)
    code, prompt, out = _rm_on_tty(store, "scratch", b"n\n")
    assert code == 5 and "2 versions (v0-v1)" in prompt and "best, prod" in prompt
    assert "scratch" in run_cli(store, "ls", check=True).stdout
    code, prompt, out = _rm_on_tty(store, "scratch", b"y\n")
    assert code == 0 and out == "deleted scratch\n"
    assert run_cli(store, "ls", check=True).stdout == ""


def test_rm_aliased_version_names_aliases_and_asks_on_tty(tmp_path):
    store = tmp_path / "store"
    _two_versions(tmp_path, store)
    refused = run_cli(store, "rm", "scratch:v0")
    assert refused.returncode == 5 and "prod" in refused.stderr and "--force" in refused.stderr
    code, prompt, out = _rm_on_tty(store, "scratch:v0", b"y\n")
    assert code == 0 and "scratch:v0" in prompt and "prod" in prompt and out == "deleted scratch:v0\n"


def test_rm_by_alias_prints_the_version(tmp_path):
    store = tmp_path / "store"
    _two_versions(tmp_path, store)
    run_cli(store, "alias", "--delete", "scratch", "best", check=True)
    assert run_cli(store, "rm", "scratch:latest", check=True).stdout == "deleted scratch:v1\n"


def test_rm_by_alias_through_the_daemon_prints_the_version(tmp_path, mounted):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"one")
    mounted.cli("put", "animals", src)
    (src / "f").write_bytes(b"two")
    mounted.cli("put", "animals", src)
    assert mounted.cli("rm", "animals:latest").stdout == "deleted animals:v1\n"


def test_commit_alias_without_changes_says_where_it_points(tmp_path):
    store = tmp_path / "store"
    _two_versions(tmp_path, store)
    proc = run_cli(store, "commit", "scratch", "-a", "prod", check=True)
    assert proc.stdout == "scratch:v1\n"
    assert "no changes" in proc.stderr and "alias prod now points at v1" in proc.stderr
    versions = json.loads(run_cli(store, "ls", "scratch", "--json", check=True).stdout)
    assert "prod" in versions[1]["aliases"]


def test_mount_refuses_a_non_empty_directory(mount_factory, tmp_path):
    m = mount_factory()
    (tmp_path / "mnt0" / "keep.txt").write_text("mine")
    refused = run_cli(m.store, "mount", m.mnt)
    assert refused.returncode == 8
    line, = refused.stderr.strip().splitlines()
    assert m.mnt in line and "--nonempty" in line
    assert not in_mount_table(m.mnt)
    over = run_cli(m.store, "mount", m.mnt, "--nonempty")
    m.daemon = m._info_pid()
    assert over.returncode == 0 and os.path.ismount(m.mnt)
    assert run_cli(m.store, "unmount", m.mnt).returncode == 0
    assert (tmp_path / "mnt0" / "keep.txt").read_text() == "mine"


def test_closed_stdout_is_quiet_and_exits_141(tmp_path):
    store = tmp_path / "store"
    _two_versions(tmp_path, store)
    r, w = os.pipe()
    os.close(r)   # like `| head -1` after it has its line: every write fails with EPIPE
    proc = subprocess.run([sys.executable, "-m", "artfs", "--store", str(store), "log"],
                          stdout=w, stderr=subprocess.PIPE, text=True, timeout=60)
    os.close(w)
    assert proc.returncode == 141 and proc.stderr == ""


def _kill_daemon(m) -> None:
    m.proc.send_signal(signal.SIGKILL)
    m.proc.wait(timeout=30)


def test_unmount_cleans_a_dead_mount(mounted):
    _kill_daemon(mounted)
    assert in_mount_table(mounted.mnt)
    proc = run_cli(mounted.store, "unmount", mounted.mnt)
    assert proc.returncode == 0 and "dead mount" in proc.stdout
    assert not in_mount_table(mounted.mnt)


def test_unmount_cleans_a_dead_busy_mount_lazily(mounted):
    os.mkdir(mounted.path("a"))
    put_file(mounted.path("a", "staging", "f"), b"data")
    with open(mounted.path("a", "staging", "f"), "rb"):
        _kill_daemon(mounted)
        proc = run_cli(mounted.store, "unmount", mounted.mnt)
        assert proc.returncode == 0 and "dead mount" in proc.stdout
        assert not in_mount_table(mounted.mnt)


def test_a_dead_daemon_whose_pid_was_reused_says_to_unmount(mounted, tmp_path):
    """The daemon was killed and its pid is now another live process: the socket refuses."""
    os.mkdir(mounted.path("a"))
    _kill_daemon(mounted)
    info_file = os.path.join(mounted.store, "daemon.json")
    with open(info_file) as f:
        info = json.load(f)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        info["pid"] = other.pid
        with open(info_file, "w") as f:
            json.dump(info, f)
        proc = run_cli(mounted.store, "status", "a")
        assert proc.returncode == 8
        line, = proc.stderr.strip().splitlines()
        assert f"the mount daemon of {mounted.store} died: run artfs unmount {mounted.mnt}" in line
    finally:
        other.kill()
        other.wait()
    assert run_cli(mounted.store, "unmount", mounted.mnt).returncode == 0


def test_reading_commands_on_a_path_without_a_store_exit_6_and_create_nothing(tmp_path):
    typo = tmp_path / "sotre"
    for args in (["ls"], ["log"], ["du"], ["verify"], ["status", "a"], ["rm", "a", "--force"]):
        proc = run_cli(typo, *args)
        line, = proc.stderr.strip().splitlines()
        assert proc.returncode == 6 and f"no artfs store at {typo}" in line, args
        assert not typo.exists(), args


def test_init_and_put_create_a_store(tmp_path):
    made = run_cli(tmp_path / "a", "init", check=True)
    assert made.stdout == f"{tmp_path / 'a'}\n"
    assert run_cli(tmp_path / "a", "ls", check=True).stdout == ""
    assert run_cli(tmp_path / "a", "init", check=True).returncode == 0   # an existing store stays
    (tmp_path / "f").write_bytes(b"data")
    assert run_cli(tmp_path / "b", "put", "x", tmp_path / "f", check=True).stdout == "x:v0\n"
    assert run_cli(tmp_path / "b", "ls", "x", check=True).stdout


def test_a_non_creating_open_shares_an_open_store(tmp_path):
    """catalog/db.py keeps one Database per path: a non-creating open of a store this process
    already has open (or that exists on disk) works."""
    from artfs.api.store import Store
    from artfs.errors import StoreError
    with Store(tmp_path / "s") as writer, Store(tmp_path / "s", create=False) as reader:
        assert reader.artifacts() == writer.artifacts() == []
    with Store(tmp_path / "s", create=False) as again:
        assert again.artifacts() == []
    try:
        Store(tmp_path / "missing", create=False)
    except StoreError as e:
        assert "no artfs store at" in str(e)
    else:
        raise AssertionError("a non-creating open made a store")
    assert not (tmp_path / "missing").exists()


def test_files_open_for_writing_when_the_daemon_died_are_flagged(mounted):
    """A file open for writing when the daemon was killed may be short: status marks it (!), commit
    refuses it without --force; a file closed before the kill, or overwritten since, is not."""
    os.mkdir(mounted.path("a"))
    put_file(mounted.path("a", "staging", "old"), b"o" * 100)
    mounted.cli("commit", "a")
    put_file(mounted.path("a", "staging", "done"), b"complete")
    edited = os.open(mounted.path("a", "staging", "old"), os.O_WRONLY)    # copied up
    os.write(edited, b"O" * 10)
    partial = os.open(mounted.path("a", "staging", "partial"), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(partial, b"p" * 10)
    wait_for_marks(mounted.store, "a", {"old", "partial"})   # the close of done landed
    _kill_daemon(mounted)
    for fd in (edited, partial):
        try:
            os.close(fd)
        except OSError:
            pass
    assert run_cli(mounted.store, "unmount", mounted.mnt).returncode == 0

    status = run_cli(mounted.store, "status", "a", check=True)
    assert status.stdout == "A done\nA partial\nM old\n! old\n! partial\n"
    assert "commit --force" in status.stderr
    assert cli_json(mounted.store, "status", "a")["interrupted"] == ["old", "partial"]
    refused = run_cli(mounted.store, "commit", "a")
    line, = refused.stderr.strip().splitlines()
    assert refused.returncode == 5 and "staging/old and 1 more" in line and "--force" in line
    assert cli_json(mounted.store, "ls")[0]["latest"] == "v0"

    mounted.start()   # a new daemon: the dead one's marks stay; overwriting a file clears its own
    assert cli_json(mounted.store, "status", "a")["interrupted"] == ["old", "partial"]
    with open(mounted.path("a", "staging", "old"), "r+b") as f:   # no O_TRUNC: may still be short
        f.write(b"x")
    put_file(mounted.path("a", "staging", "partial"), b"rewritten")
    assert cli_json(mounted.store, "status", "a")["interrupted"] == ["old"]
    assert mounted.cli("commit", "a", "--force").stdout == "a:v1\n"
    assert cli_json(mounted.store, "status", "a")["interrupted"] == []
    assert marked_writing(mounted.store, "a") == set()
