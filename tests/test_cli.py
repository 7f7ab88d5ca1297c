"""The CLI contract: every command, its output, --json, exit codes, and concurrent writers."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time

import pytest

from artfs.errors import Conflict, CorruptData, Exists, InvalidInput, NotFound, StoreError
from artfs.repo.facade import Repo
from artfs.staging.commit import create_artifact
from artfs.staging.overlay import ROOT, Staging
from tests.helpers import DEEP, MiB, cli_json, damage_blob, run_cli, seed_files, tree_snapshot, write


@pytest.fixture
def store(tmp_path):
    s = tmp_path / "store"
    run_cli(s, "init", check=True)   # only commands that write create a store
    yield s
    if s.exists():
        proc = run_cli(s, "verify")
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_seed_scenario_cli(store, tmp_path):
    d = tmp_path / "animals"
    seed_files(d)
    assert run_cli(store, "put", "animals", d, "-t", "dataset", "-m", "first", check=True).stdout == "animals:v0\n"
    write(d / "rat.png", os.urandom(3 * MiB))
    assert run_cli(store, "put", "animals", d, "-a", "best", check=True).stdout == "animals:v1\n"
    same = run_cli(store, "put", "animals", d, check=True)
    assert same.stdout == "animals:v1\n" and "no changes" in same.stderr

    du = cli_json(store, "du")
    assert set(du) == {"store", "artifacts"} and isinstance(du["store"]["stored_bytes"], int)
    (a,) = du["artifacts"]
    assert a["name"] == "animals"
    v0, v1 = a["versions"]
    assert set(v1) == {"version", "aliases", "files", "logical_bytes", "unique_bytes"}
    assert (v1["version"], v1["files"], v1["logical_bytes"]) == ("v1", 3, 6 * MiB)
    assert sorted(v1["aliases"]) == ["best", "latest"]
    assert 3 * MiB <= v1["unique_bytes"] < 3 * MiB + 65536 and v0["unique_bytes"] < 65536
    assert 6 * MiB <= du["store"]["stored_bytes"] < 6 * MiB + 65536

    human = run_cli(store, "du", check=True).stdout
    assert "animals" in human and "v1" in human

    ls = cli_json(store, "ls", "animals")
    assert [v["version"] for v in ls] == ["v0", "v1"]
    assert ls[0]["message"] == "first" and ls[1]["files"] == 3 and ls[1]["bytes"] == 6 * MiB
    assert cli_json(store, "ls") == [{"name": "animals", "type": "dataset", "versions": 2, "latest": "v1",
                                      "retain": None}]
    assert "animals" in run_cli(store, "ls", check=True).stdout

    out = tmp_path / "out"
    assert run_cli(store, "get", "animals:v0", out, check=True).returncode == 0
    assert sorted(os.listdir(out)) == ["cat.png", "dog.png"]
    assert (out / "cat.png").read_bytes() == (d / "cat.png").read_bytes()
    out2 = tmp_path / "out2"
    run_cli(store, "get", "animals", out2, check=True)          # default: latest
    assert tree_snapshot(out2) == tree_snapshot(d)

    assert cli_json(store, "diff", "animals:v0", "animals:latest") == {
        "added": ["rat.png"], "removed": [], "modified": []}
    assert run_cli(store, "diff", "animals:v0", "animals:v1", check=True).stdout == "+ rat.png\n"

    log = cli_json(store, "log", "animals")
    assert [e["action"] for e in log] == ["artifact.create", "version.create", "version.create", "alias.set"]
    assert all({"user", "uid", "time"} <= set(e) for e in log)
    assert "version.create" in run_cli(store, "log", "animals", check=True).stdout

    assert run_cli(store, "verify", "animals:v1", check=True).stdout.startswith("ok")


def test_alias_and_rm(store, tmp_path):
    d = tmp_path / "d"
    write(d / "f", b"1")
    run_cli(store, "put", "m", d, check=True)
    write(d / "f", b"2")
    run_cli(store, "put", "m", d, check=True)
    assert run_cli(store, "alias", "m:v0", "best", check=True).stdout == "m:best -> v0\n"
    refused = run_cli(store, "rm", "m:v0")
    assert refused.returncode == Conflict.exit_code and "best" in refused.stderr
    run_cli(store, "alias", "--delete", "m", "best", check=True)
    assert run_cli(store, "rm", "m:v0", check=True).returncode == 0
    run_cli(store, "alias", "m:v1", "prod", check=True)
    assert run_cli(store, "rm", "m:v1", "--force", check=True).returncode == 0
    assert cli_json(store, "ls", "m") == []
    run_cli(store, "rm", "m", "--force", check=True)
    assert cli_json(store, "ls") == []
    assert cli_json(store, "du")["store"]["stored_bytes"] == 0


@pytest.mark.parametrize("args, code, words", [
    (["put", "bad/name", "."], InvalidInput.exit_code, "invalid artifact name"),
    (["put", "", "."], InvalidInput.exit_code, "empty"),
    (["put", "x" * 129, "."], InvalidInput.exit_code, "longer than 128"),
    (["put", "ok", "/nonexistent/path"], InvalidInput.exit_code, "cannot read"),
    (["put", "ok", ".", "--metadata", "{nope"], InvalidInput.exit_code, "JSON"),
    (["get", "nothing", "/tmp/x-artfs-never"], NotFound.exit_code, "no artifact"),
    (["ls", "nothing"], NotFound.exit_code, "no artifact"),
    (["alias", "nothing:v0", "latest"], InvalidInput.exit_code, "cannot be an alias"),
    (["diff", "a:v0", "a:v1"], NotFound.exit_code, "no artifact"),
    (["rm", "nothing:v3"], NotFound.exit_code, "no artifact"),
    (["verify", "nothing"], NotFound.exit_code, "no artifact"),
    (["frobnicate"], 2, "invalid choice"),
])
def test_bad_input_one_line_and_exit_code(store, tmp_path, args, code, words):
    proc = run_cli(store, *args)
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert words in proc.stderr
    if code != 2:
        assert len(lines) == 1 and lines[0].startswith("artfs: error: ")
    assert proc.stdout == ""


def test_not_a_store_and_newer_format(tmp_path):
    d = tmp_path / "junk"
    write(d / "x", b"x")
    proc = run_cli(d, "ls")
    assert proc.returncode == StoreError.exit_code and "not an artfs store" in proc.stderr
    s = tmp_path / "s"
    run_cli(s, "init", check=True)
    (s / "ARTFS-STORE").write_text('{"format": 7}')
    proc = run_cli(s, "ls")
    assert proc.returncode == StoreError.exit_code and "upgrade artfs" in proc.stderr


def test_get_refuses_nonempty_dest(store, tmp_path):
    write(tmp_path / "d" / "f", b"x")
    run_cli(store, "put", "a", tmp_path / "d", check=True)
    proc = run_cli(store, "get", "a", tmp_path / "d")
    assert proc.returncode == Exists.exit_code
    assert (tmp_path / "d" / "f").read_bytes() == b"x"


def test_store_from_environment(tmp_path):
    write(tmp_path / "d" / "f", b"x")
    env = dict(os.environ, ARTFS_STORE=str(tmp_path / "envstore"))
    cmd = [sys.executable, "-m", "artfs", "put", "a", str(tmp_path / "d")]
    assert subprocess.run(cmd, env=env, capture_output=True, text=True).stdout == "a:v0\n"
    assert (tmp_path / "envstore" / "ARTFS-STORE").exists()


def test_concurrent_puts_get_consecutive_versions(store, tmp_path):
    """Writers wait for LMDB's writer lock; none fails and every version is complete."""
    dirs = []
    for i in range(4):
        d = tmp_path / f"d{i}"
        write(d / "data.bin", os.urandom(2 * MiB))
        write(d / "id.txt", b"%d" % i)
        dirs.append(d)
    procs = [subprocess.Popen([sys.executable, "-m", "artfs", "--store", str(store), "put", "shared", str(d)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for d in dirs]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sorted(o.strip() for o, _ in outs) == [f"shared:v{i}" for i in range(4)]
    by_version = {o.strip().split(":")[1]: d for (o, _), d in zip(outs, dirs)}
    for label, d in by_version.items():
        out = tmp_path / f"out-{label}"
        run_cli(store, "get", f"shared:{label}", out, check=True)
        assert tree_snapshot(out) == tree_snapshot(d)


def test_verify_exit_code_on_damage(store, tmp_path):
    write(tmp_path / "d" / "f", os.urandom(100_000))
    run_cli(store, "put", "a", tmp_path / "d", check=True)
    with Repo(str(store)) as repo:
        v = repo.resolve("a")
        cid = repo.file(repo.tree(v.root).entries[0].ref).chunks[0]
    damage_blob(store, cid, "corrupt")
    proc = run_cli(store, "verify")
    assert proc.returncode == CorruptData.exit_code
    assert "a:v0 f" in proc.stdout and "DAMAGED" in proc.stdout
    assert json.loads(run_cli(store, "verify", "--json").stdout)["ok"] is False
    damage_blob(store, cid, "corrupt")                  # flip back: clean again for teardown


def _run_on_terminal(store, *args) -> str:
    """Run the CLI with stderr on a pseudo-terminal; return what the terminal showed."""
    leader, follower = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "artfs", "--store", str(store), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=follower, env=dict(os.environ, COLUMNS="100"))
    os.close(follower)
    shown = b""
    while True:
        try:
            part = os.read(leader, 65536)
        except OSError:                                    # EIO: the terminal closed
            break
        if not part:
            break
        shown += part
    proc.wait(timeout=120)
    os.close(leader)
    assert proc.returncode == 0
    return shown.decode(errors="replace")


def test_progress_bar_only_on_a_terminal(store, tmp_path):
    write(tmp_path / "d" / "big", os.urandom(64 * MiB))
    shown = _run_on_terminal(store, "put", "big", tmp_path / "d")
    assert "put big" in shown and "MiB" in shown
    write(tmp_path / "d" / "big2", os.urandom(MiB))
    quiet = run_cli(store, "put", "big", tmp_path / "d", check=True)
    assert quiet.stderr == ""


def test_commit_status_reset_without_a_mount(store, tmp_path):
    """The exact output of the staging commands when no daemon runs (changes made on Staging)."""
    write(tmp_path / "d" / "a", b"a")
    with Repo(str(store)) as repo:
        create_artifact(repo, "empty")
    empty = run_cli(store, "commit", "empty", check=True)
    assert (empty.stdout, empty.stderr) == (
        "", "artfs: nothing to commit: empty has no versions and an empty staging\n")
    run_cli(store, "put", "ds", tmp_path / "d", check=True)
    same = run_cli(store, "commit", "ds", "-a", "best", check=True)
    assert (same.stdout, same.stderr) == ("ds:v0\n", "artfs: no changes: staging equals ds:v0; no version made; alias best now points at v0\n")
    assert sorted(cli_json(store, "ls", "ds")[0]["aliases"]) == ["best", "latest"]

    def change():
        with Repo(str(store)) as repo:
            s = Staging(repo, "ds")
            s.unlink(ROOT, b"a")
            s.mkdir(ROOT, b"new", 0o755, os.getuid(), os.getgid())
    change()
    assert run_cli(store, "status", "ds", check=True).stdout == "A new/\nD a\n"
    assert cli_json(store, "status", "ds") == {"added": ["new/"], "modified": [], "deleted": ["a"], "interrupted": []}
    reset = run_cli(store, "reset", "ds", check=True)
    assert reset.stdout == "reset the staging of ds to its latest version\n"
    clean = run_cli(store, "status", "ds", check=True)
    assert (clean.stdout, clean.stderr) == ("", "artfs: no changes in the staging of ds\n")
    change()
    made = run_cli(store, "commit", "ds", "-m", "no a", check=True)
    assert (made.stdout, made.stderr) == ("ds:v1\n", "")
    assert cli_json(store, "commit", "ds") == {"name": "ds", "version": "v1", "created": False,
                                               "aliases": ["latest"]}
    assert cli_json(store, "commit", "empty")["version"] is None
    assert cli_json(store, "put", "ds", tmp_path / "d", "-a", "best") == {
        "name": "ds", "version": "v2", "created": True, "aliases": ["best", "latest"]}
    assert cli_json(store, "ls", "ds")[1]["message"] == "no a"
    for args in (("commit", "a/b"), ("status", ".."), ("reset", "")):
        bad = run_cli(store, *args)
        assert bad.returncode == InvalidInput.exit_code and bad.stderr.count("\n") == 1, bad.stderr
    for args in (("commit", "nope"), ("status", "nope"), ("reset", "nope")):
        assert run_cli(store, *args).returncode == NotFound.exit_code


def test_path_of_4000_bytes_2000_directories_deep(store, deep):
    run_cli(store, "put", "deep", deep.src, check=True)
    write(os.path.join(deep.leaf(), "g"), b"second")
    run_cli(store, "put", "deep", deep.src, check=True)
    assert cli_json(store, "diff", "deep:v0", "deep:v1")["added"] == ["/".join(["d"] * DEEP + ["g"])]
    out = deep.out("out")
    run_cli(store, "get", "deep", out, check=True)
    assert open(os.path.join(deep.leaf(out), "g"), "rb").read() == b"second"


def test_a_store_being_created_is_waited_for(tmp_path):
    """A process meeting a store that another process is still creating waits for it (flock on
    the directory) instead of calling the half-made store "not an artfs store"."""
    store = tmp_path / "fresh"
    store.mkdir()
    fd = os.open(store, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)                      # as the creating process holds it
    (store / "ARTFS-STORE.tmp").write_text("{")
    proc = subprocess.Popen([sys.executable, "-m", "artfs", "--store", str(store), "ls"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    assert proc.poll() is None, proc.stderr.read()      # waiting, not failing
    (store / "ARTFS-STORE").write_text('{"format": 1}')
    (store / "ARTFS-STORE.tmp").unlink()
    os.close(fd)                                        # creation done: the lock goes
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
