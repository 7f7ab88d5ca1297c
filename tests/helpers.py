"""Shared test helpers: requirements, building input trees, running the CLI, damaging a store."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import lmdb
import pytest

from artfs.store.ids import DIGEST_LEN

MiB = 1 << 20
DEEP = 2000   # directory levels of the deep-tree tests: 2 bytes each, paths over 4000 bytes


def missing(reason: str) -> None:
    """A test's requirement is missing: skip it, but fail it under CI=true, where every test must
    really run (a skip there would hide that the CI machine lost FUSE or root)."""
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def need_root(reason: str) -> None:
    if os.geteuid() != 0:
        missing(reason)


def fuse_unavailable() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "needs /dev/fuse (FUSE kernel module)"
    if shutil.which("fusermount3") is None:
        return "needs fusermount3 (fuse3 package)"
    return None


def need_fuse() -> None:
    reason = fuse_unavailable()
    if reason:
        missing(reason)


def write(path, data: bytes, mode: int | None = None, mtime_ns: int | None = None) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    if mode is not None:
        os.chmod(path, mode)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def oserror(fn, *args, **kwargs) -> int:
    """The errno of the OSError that ``fn(*args)`` must raise."""
    with pytest.raises(OSError) as e:
        fn(*args, **kwargs)
    return e.value.errno


def read(path, dir_fd=None) -> bytes:
    fd = os.open(path, os.O_RDONLY, dir_fd=dir_fd)
    with open(fd, "rb") as f:
        return f.read()


def put_file(path, data: bytes, dir_fd=None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=dir_fd)
    with open(fd, "wb") as f:
        f.write(data)


def seed_files(d, rat: bool = False) -> None:
    """The seed scenario's animals: cat.png 2 MiB, dog.png 1 MiB, optionally rat.png 3 MiB."""
    write(os.path.join(d, "cat.png"), os.urandom(2 * MiB))
    write(os.path.join(d, "dog.png"), os.urandom(1 * MiB))
    if rat:
        write(os.path.join(d, "rat.png"), os.urandom(3 * MiB))


def run_cli(store, *args, check: bool = False, env=None, input=None):
    """Run ``python -m artfs --store STORE ARGS`` and return the CompletedProcess."""
    cmd = [sys.executable, "-m", "artfs", "--store", str(store), *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, input=input, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}): {proc.stderr}")
    return proc


def cli_json(store, *args):
    return json.loads(run_cli(store, *args, "--json", check=True).stdout)


def tree_snapshot(root) -> dict:
    """path -> (kind, mode, size-or-target, bytes) for comparing trees byte-exactly."""
    out = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(top, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if os.path.islink(p):
                out[rel] = ("l", os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = ("d", st.st_mode & 0o7777)
            else:
                with open(p, "rb") as f:
                    out[rel] = ("f", st.st_mode & 0o7777, st.st_mtime_ns, f.read())
    return out


def objects_env(store) -> str:
    """The directory of the store's object environment (its data.mdb holds every object's bytes)."""
    with open(os.path.join(str(store), "ARTFS-STORE")) as f:
        return os.path.join(str(store), json.load(f)["data"], "objects")


def damage_blob(store, key: bytes, how: str) -> None:
    """Flip a byte of a stored object ('corrupt') or remove it ('missing'), behind artfs's back."""
    env = lmdb.open(objects_env(store), max_dbs=16)
    db = env.open_db(b"objects")
    with env.begin(write=True, db=db) as txn:
        if how == "missing":
            txn.delete(key)
        else:
            data = bytearray(txn.get(key))
            data[DIGEST_LEN + (len(data) - DIGEST_LEN) // 2] ^= 0xFF   # a byte of the object, not its digest
            txn.put(key, bytes(data))
    env.close()


def marked_writing(store, name: str) -> set[str]:
    """Paths in NAME's staging that the staging index marks open for writing (mount/writing.py)."""
    from artfs.repo.facade import Repo
    from artfs.staging.overlay import Staging
    repo = Repo(store, create=False)
    staging = Staging(repo, name)
    with repo.db.read() as txn:
        inos = staging.index.writers(txn)
    return {os.fsdecode(p) for p in staging.paths(inos).values()}


def wait_for_marks(store, name: str, expected: set[str] = frozenset(), timeout: float = 30.0) -> None:
    """Wait until the mount has dropped the marks of closed files (it batches them): only the
    files still open for writing, EXPECTED, are marked."""
    deadline = time.monotonic() + timeout
    while (marked := marked_writing(store, name)) != set(expected):
        assert time.monotonic() < deadline, f"files marked open for writing: {sorted(marked)}"
        time.sleep(0.05)
