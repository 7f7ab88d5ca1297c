"""The files of one version: ``ls NAME:REF [PATH]``, ``get NAME:REF/PATH``, ``cat``; the API's
``Version.entries``/``download`` (a writable copy) and its pinned ``path``."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

import artfs
from artfs.errors import Exists, InvalidInput, IsADirectory, NotFound
from artfs.repo.facade import Repo
from tests.helpers import MiB, cli_json, put_file, read, run_cli, tree_snapshot, write

NAME = "my.data-set_1"                 # every kind of character a name may hold
ODD = "dir with space/x:y ü.bin"       # ':' and spaces and UTF-8 in a path
RAW = b"raw-\xff\xfe.bin"              # a file name that is not UTF-8


@pytest.fixture
def version(tmp_path):
    """STORE with NAME:v0 holding files of every kind; returns (store, source dir, blob)."""
    store, src = tmp_path / "store", tmp_path / "src"
    blob = os.urandom(MiB) + b"\0\r\n\x1a" + bytes(range(256))     # binary, not text
    write(src / "top.txt", b"top\n", mode=0o640, mtime_ns=1_600_000_000_123_456_789)
    write(src / ODD, blob, mode=0o755)
    write(src / "dir with space" / "deeper" / "leaf", b"leaf")
    os.makedirs(src / "empty")
    os.symlink("top.txt", src / "link")
    write(os.path.join(os.fsencode(src), RAW), b"raw")
    run_cli(store, "put", NAME, src, check=True)
    yield store, src, blob
    proc = run_cli(store, "verify")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ls_lists_the_files_of_a_version(version):
    store, src, blob = version
    rows = cli_json(store, "ls", f"{NAME}:v0")
    assert [r["path"] for r in rows] == [
        "dir with space", "dir with space/deeper", "dir with space/deeper/leaf", ODD, "empty",
        "link", os.fsdecode(RAW), "top.txt"]
    by = {r["path"]: r for r in rows}
    assert by["top.txt"] == {"path": "top.txt", "kind": "file", "mode": "0640", "size": 4,
                             "mtime": 1_600_000_000.123456789, "digest": by["top.txt"]["digest"]}
    assert by[ODD]["size"] == len(blob) and by[ODD]["mode"] == "0755"
    assert by["link"]["kind"] == "symlink" and by["link"]["target"] == "top.txt" and by["link"]["digest"] is None
    assert by["empty"]["kind"] == "dir" and by["empty"]["size"] is None
    with Repo(str(store)) as repo:                         # digest: the content id of the file object
        v = repo.resolve(NAME, "v0")
        entry = repo.tree(v.root).lookup(b"top.txt")
        assert by["top.txt"]["digest"] == entry.ref.hex()
        sub = repo.tree(v.root).lookup(b"dir with space")
        assert by["dir with space"]["digest"] == sub.ref.hex()
    # a subtree, by argument or by NAME:REF/PATH; one file; default ref latest
    under = [r["path"] for r in cli_json(store, "ls", f"{NAME}:v0", "dir with space")]
    assert under == ["dir with space/deeper", "dir with space/deeper/leaf", ODD]
    assert [r["path"] for r in cli_json(store, "ls", f"{NAME}:latest/dir with space/deeper")] == [
        "dir with space/deeper/leaf"]
    assert [r["path"] for r in cli_json(store, "ls", f"{NAME}:latest/{ODD}")] == [ODD]
    human = subprocess.run([sys.executable, "-m", "artfs", "--store", str(store), "ls", f"{NAME}:v0"],
                           capture_output=True, check=True).stdout          # bytes: RAW is no UTF-8
    assert b"link -> top.txt" in human and by["top.txt"]["digest"].encode() in human
    assert ODD.encode() in human and RAW in human
    for args, code in [([f"{NAME}:v0", "nothing"], NotFound), ([f"{NAME}:v0/top.txt/x"], NotFound),
                       ([f"{NAME}:v9"], NotFound), (["bad name:v0"], InvalidInput),
                       ([f"{NAME}/top.txt"], InvalidInput)]:                  # a path needs a REF
        proc = run_cli(store, "ls", *args)
        assert proc.returncode == code.exit_code and len(proc.stderr.splitlines()) == 1, (args, proc.stderr)


def test_get_one_file_or_directory(version, tmp_path):
    store, src, blob = version
    out = tmp_path / "out"
    assert run_cli(store, "get", f"{NAME}:v0/{ODD}", out, check=True).stdout == f"{out}\n"
    assert out.read_bytes() == blob and stat.S_IMODE(os.stat(out).st_mode) == 0o755
    os.mkdir(tmp_path / "into")                             # an existing directory: into it
    run_cli(store, "get", f"{NAME}:latest/top.txt", tmp_path / "into", check=True)
    got = tmp_path / "into" / "top.txt"
    assert got.read_bytes() == b"top\n" and os.stat(got).st_mtime_ns == 1_600_000_000_123_456_789
    proc = run_cli(store, "get", f"{NAME}:v0/top.txt", tmp_path / "into")   # never replaced
    assert proc.returncode == Exists.exit_code and got.read_bytes() == b"top\n"
    assert [n for n in os.listdir(tmp_path / "into") if n.startswith(".artfs")] == []
    run_cli(store, "get", f"{NAME}:v0/link", tmp_path / "l", check=True)
    assert os.readlink(tmp_path / "l") == "top.txt"
    run_cli(store, "get", f"{NAME}:v0/dir with space", tmp_path / "sub", check=True)
    assert tree_snapshot(tmp_path / "sub") == tree_snapshot(src / "dir with space")
    run_cli(store, "get", os.fsdecode(os.fsencode(f"{NAME}:v0/") + RAW), tmp_path / "raw", check=True)
    assert read(tmp_path / "raw") == b"raw"
    run_cli(store, "get", NAME, tmp_path / "all", check=True)        # the whole version, as before
    assert tree_snapshot(tmp_path / "all") == tree_snapshot(src)
    proc = run_cli(store, "get", f"{NAME}:v0/missing", tmp_path / "m")
    assert proc.returncode == NotFound.exit_code and not os.path.lexists(tmp_path / "m")


def test_cat_writes_the_bytes_to_stdout(version):
    store, src, blob = version
    cmd = [sys.executable, "-m", "artfs", "--store", str(store), "cat"]
    proc = subprocess.run(cmd + [f"{NAME}:v0/{ODD}"], capture_output=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == blob and proc.stderr == b""
    proc = subprocess.run(cmd + [os.fsencode(f"{NAME}:v0/") + RAW], capture_output=True, timeout=60)
    assert proc.stdout == b"raw"
    # the reader stops early (| head -c): no message, not a failure
    shell = subprocess.run(f"{' '.join(map(repr, cmd))} '{NAME}:v0/{ODD}' | head -c 10 > /dev/null",
                           shell=True, capture_output=True, timeout=60)
    assert shell.returncode == 0 and shell.stderr == b""
    for spec, code in [(f"{NAME}:v0", IsADirectory), (f"{NAME}:v0/dir with space", IsADirectory),
                       (f"{NAME}:v0/nothing", NotFound), ("nothing:v0/x", NotFound)]:
        proc = subprocess.run(cmd + [spec], capture_output=True, text=True, timeout=60)
        assert proc.returncode == code.exit_code and len(proc.stderr.splitlines()) == 1, (spec, proc.stderr)


def test_download_is_a_writable_copy_reused_while_unchanged(version, tmp_path, monkeypatch):
    store, src, blob = version
    monkeypatch.chdir(tmp_path)
    with artfs.Store(str(store)) as s:
        v = s.get(f"{NAME}:latest")
        path = v.download()
        assert path == str(tmp_path / "artifacts" / f"{NAME}:v0")          # W&B's layout
        assert tree_snapshot(path) == tree_snapshot(src)
        with open(os.path.join(path, "top.txt"), "ab") as f:             # writable: a copy
            f.write(b"more")
        with pytest.raises(Exists):                                     # changed: never overwritten
            v.download()
        assert read(os.path.join(path, "top.txt")) == b"top\nmore"
        os.truncate(os.path.join(path, "top.txt"), 4)
        os.utime(os.path.join(path, "top.txt"), ns=(0, 1_600_000_000_123_456_789))
        assert v.download() == path                                     # as written again: reused
        os.unlink(os.path.join(path, "link"))
        with pytest.raises(Exists):
            v.download()
        assert v.download(str(tmp_path / "explicit")) == str(tmp_path / "explicit")
        with pytest.raises(Exists):                                     # an explicit root: as get
            v.download(str(tmp_path / "explicit"))
        one = v.download(path=ODD)
        assert one == str(tmp_path / "artifacts" / f"{NAME}:v0" / ODD) and read(one) == blob
        entries = v.entries("dir with space/deeper")
        assert [(e["path"], e["kind"]) for e in entries] == [("dir with space/deeper/leaf", "file")]


@pytest.mark.fuse
def test_the_api_path_is_pinned_while_latest_moves(mounted, tmp_path):
    """store.get("NAME:latest").path names vN: a reader going through it keeps one version while
    a commit moves latest (MOUNT/NAME/latest/ is resolved again at every open)."""
    m = mounted
    os.mkdir(m.path("ds"))
    for name in ("a", "b"):
        put_file(m.path("ds", "staging", name), b"old " + name.encode())
    assert m.cli("commit", "ds").stdout == "ds:v0\n"
    with artfs.Store(m.store) as s:
        v = s.get("ds:latest")
        assert v.path == m.path("ds", "v0") and os.path.realpath(m.path("ds", "latest")) == v.path
        first = read(os.path.join(v.path, "a"))
        for name in ("a", "b"):
            put_file(m.path("ds", "staging", name), b"new " + name.encode())
        assert m.cli("commit", "ds").stdout == "ds:v1\n"
        assert (first, read(os.path.join(v.path, "b"))) == (b"old a", b"old b")    # one version
        assert read(m.path("ds", "latest", "b")) == b"new b"                         # latest/ moved
        copy = v.download(str(tmp_path / "copy"))                # a copy even while mounted
        assert copy != v.path and read(os.path.join(copy, "b")) == b"old b"
        put_file(os.path.join(copy, "b"), b"mine")                                    # writable
        assert read(os.path.join(v.path, "b")) == b"old b"
