"""Shared test helpers: requirements, building input trees, running the CLI, damaging a store."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import lmdb
import pytest

from artfs.store.ids import DIGEST_LEN
from artfs.store.segments import DIR as SEGMENTS, LOCATION, MIN_BYTES, segment_name

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


SMALL = MIN_BYTES - 1024   # a file this long is one object kept in LMDB, not in a segment


def small_files(directory, total: int) -> None:
    """Random files of SMALL bytes, TOTAL bytes in all, under DIRECTORY (replacing any there):
    bytes that go into LMDB's map, as segments take only bigger objects (store/segments.py)."""
    for i in range(total // SMALL):
        write(os.path.join(directory, f"{i:05}"), os.urandom(SMALL))


def data_files(store) -> list[str]:
    """The files that hold the store's objects' bytes: the object environment's LMDB file and
    its segments (store/segments.py)."""
    env = objects_env(store)
    directory = os.path.join(env, SEGMENTS)
    names = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    return [os.path.join(env, "data.mdb")] + [os.path.join(directory, n) for n in names]


def drop_data_cache(store) -> None:
    """Drop the page cache of the store's data files: the next read of an object waits for the disk."""
    for path in data_files(store):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def flip_stored_byte(store, needle: bytes, at: int) -> None:
    """Flip the byte AT bytes into NEEDLE where the store's data files hold it (in exactly one
    place), behind artfs's back."""
    hits = []
    for path in data_files(store):
        raw = read(path)
        start = raw.find(needle)
        while start >= 0:
            hits.append((path, start))
            start = raw.find(needle, start + 1)
    assert len(hits) == 1, hits
    path, start = hits[0]
    with open(path, "r+b") as f:
        f.seek(start + at)
        byte = f.read(1)[0]
        f.seek(start + at)
        f.write(bytes([byte ^ 0xFF]))


def segment_bytes(store) -> int:
    """Bytes the store's segment files take on disk (holes punched out of them excluded)."""
    directory = os.path.join(objects_env(store), SEGMENTS)
    return sum(e.stat().st_blocks * 512 for e in os.scandir(directory))


def stored(store, key: bytes) -> tuple[bytes, bytes] | None:
    """(digest, bytes) the store keeps for object KEY (as sealed, in an encrypted store), read
    behind artfs's back from its LMDB record or its segment file (store/segments.py)."""
    env = lmdb.open(objects_env(store), max_dbs=16, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            location = txn.get(key, db=env.open_db(b"located", txn=txn, create=False))
            value = txn.get(key, db=env.open_db(b"objects", txn=txn, create=False))
            value = None if value is None else bytes(value)
    finally:
        env.close()
    if location is None:
        return None if value is None else (value[:DIGEST_LEN], value[DIGEST_LEN:])
    segment, offset, length, digest = LOCATION.unpack(location)
    with open(os.path.join(objects_env(store), SEGMENTS, segment_name(segment)), "rb") as f:
        f.seek(offset)
        return digest, f.read(length)


def stored_ids(store) -> set[bytes]:
    """Every object id the store holds (LMDB records and segment locations)."""
    env = lmdb.open(objects_env(store), max_dbs=16, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return {bytes(k) for name in (b"objects", b"located")
                    for k, _ in txn.cursor(db=env.open_db(name, txn=txn, create=False))}
    finally:
        env.close()


def replace_object(store, key: bytes, data: bytes | None, digest: bytes | None = None) -> None:
    """Store DATA as object KEY's bytes with DIGEST (default: DATA's SHA-256), or remove the object
    (DATA None), behind artfs's back: an LMDB record, its segment location dropped."""
    env = lmdb.open(objects_env(store), max_dbs=16)
    with env.begin(write=True) as txn:
        txn.delete(key, db=env.open_db(b"located", txn=txn))
        objects = env.open_db(b"objects", txn=txn)
        txn.delete(key, db=objects)
        if data is not None:
            txn.put(key, (digest or hashlib.sha256(data).digest()) + data, db=objects)
    env.close()


def damage_blob(store, key: bytes, how: str) -> None:
    """Flip a byte of a stored object ('corrupt') or remove it ('missing'), behind artfs's back."""
    if how == "missing":
        replace_object(store, key, None)
        return
    digest, data = stored(store, key)
    data = bytearray(data)
    data[len(data) // 2] ^= 0xFF   # a byte of the object, not its digest
    replace_object(store, key, bytes(data), digest)


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


def rchar(pid: int) -> int:
    """Bytes the process (all its threads) read with read(2) and the like so far."""
    with open(f"/proc/{pid}/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])
