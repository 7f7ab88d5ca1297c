"""artfs:// through fsspec, pandas and pyarrow, for real: a store in tmp_path, no mocks."""

from __future__ import annotations

import errno
import multiprocessing
import os
import pickle
import random
import subprocess
import sys

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import artfs
from tests.helpers import MiB, run_cli, write

LABELS_V0 = b"name,label\ncat,1\ndog,2\n"
LABELS_V1 = b"name,label\ncat,1\ndog,2\nrat,3\n"


@pytest.fixture
def store(tmp_path):
    """A store holding animals:v0: labels.csv, a 1 MiB random file (many chunks), a nested dir,
    a symlink, an empty file and a parquet dataset of two files written by pyarrow."""
    src = tmp_path / "animals"
    write(src / "labels.csv", LABELS_V0)
    write(src / "big.bin", random.Random(1).randbytes(MiB))
    write(src / "nested" / "deep" / "note.txt", b"deep")
    write(src / "empty", b"")
    os.symlink("labels.csv", src / "link")
    os.makedirs(src / "tables")
    pq.write_table(pa.table({"x": [1, 2, 3], "s": ["a", "b", "c"]}), src / "tables" / "a.parquet")
    pq.write_table(pa.table({"x": [4], "s": ["d"]}), src / "tables" / "b.parquet")
    path = str(tmp_path / "store")
    with artfs.Store(path) as s:
        s.put("animals", str(src))
    yield path
    assert run_cli(path, "verify").returncode == 0


def put_labels(store: str, tmp_path, data: bytes, *aliases) -> str:
    src = tmp_path / f"labels-{len(data)}-{'-'.join(aliases)}"
    write(src / "labels.csv", data)
    with artfs.Store(store) as s:
        return s.put("animals", str(src), aliases=aliases).version


def test_pandas_reads_a_url_through_the_entry_point(store):
    """A process that never imports artfs: pandas asks fsspec, fsspec finds artfs by its entry
    point; the store is $ARTFS_STORE, or the ``store`` storage option."""
    code = ("import sys, pandas as pd\n"
            "assert 'artfs' not in sys.modules\n"
            "print(pd.read_csv('artfs://animals:v0/labels.csv').to_csv(index=False), end='')\n"
            "print(pd.read_csv('artfs://animals/labels.csv', storage_options={'store': sys.argv[1]})"
            ".label.sum())\n"
            "assert 'artfs.api.fsspec' in sys.modules\n")
    env = {**os.environ, "ARTFS_STORE": store}
    proc = subprocess.run([sys.executable, "-c", code, store], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == LABELS_V0.decode() + "3\n"


def test_a_missing_store_is_an_error_and_is_not_created(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as e:
        fsspec.filesystem("artfs", store=str(missing))
    assert str(missing) in str(e.value) and not missing.exists()


def test_parquet_written_by_pyarrow_reads_back(store, tmp_path):
    tables = tmp_path / "animals" / "tables"
    expected = pa.concat_tables([pq.read_table(tables / "a.parquet"), pq.read_table(tables / "b.parquet")])
    fs, path = fsspec.core.url_to_fs("artfs://animals:v0/tables/", store=store)
    assert path == "animals:v0/tables"
    assert ds.dataset(path, filesystem=fs, format="parquet").to_table().sort_by("x").equals(expected)
    assert pq.read_table(f"{path}/a.parquet", filesystem=fs).equals(expected.slice(0, 3))
    frame = pd.read_parquet("artfs://animals:latest/tables/", storage_options={"store": store})
    assert frame.sort_values("x").reset_index(drop=True).equals(expected.to_pandas())


def test_ls_info_find_glob_exists_and_ranged_reads(store, tmp_path):
    fs = fsspec.filesystem("artfs", store=store)
    src = tmp_path / "animals"
    assert fs.ls("", detail=False) == ["animals:v0"]
    assert sorted(fs.ls("artfs://animals:v0/", detail=False)) == [
        "animals:v0/big.bin", "animals:v0/empty", "animals:v0/labels.csv", "animals:v0/link",
        "animals:v0/nested", "animals:v0/tables"]
    assert fs.find("animals/nested") == ["animals/nested/deep/note.txt"]
    assert fs.glob("animals:latest/**/*.parquet") == ["animals:latest/tables/a.parquet",
                                                       "animals:latest/tables/b.parquet"]
    info = fs.info("animals:latest")
    assert (info["type"], info["version"]) == ("directory", "v0")
    big = fs.info("animals/big.bin")
    assert (big["type"], big["size"], big["mode"] & 0o777) == ("file", MiB, os.stat(src / "big.bin").st_mode & 0o777)
    assert fs.info("animals/link")["destination"] == "labels.csv" and fs.info("animals/empty")["size"] == 0
    assert fs.isdir("animals/nested/deep") and fs.isfile("animals/labels.csv")
    assert fs.exists("animals:v0/labels.csv") and not fs.exists("animals:v0/nope")
    assert not fs.exists("animals:v7") and not fs.exists("no such/name")
    for bad, code in (("animals/nope", errno.ENOENT), ("animals:v7/labels.csv", errno.ENOENT),
                      ("zebras/labels.csv", errno.ENOENT), ("animals/labels.csv/x", errno.ENOTDIR),
                      ("bad name/x", errno.EINVAL)):
        with pytest.raises(OSError) as e:
            fs.info(bad)
        assert e.value.errno == code, bad
    with pytest.raises(IsADirectoryError):
        fs.open("animals/nested")

    data = (src / "big.bin").read_bytes()
    assert fs.cat_file("animals/big.bin") == data and fs.cat("artfs://animals:v0/empty") == b""
    rng = random.Random(2)
    for _ in range(40):
        start, end = sorted(rng.randrange(-MiB - 10, MiB + 10) for _ in range(2))
        assert fs.cat_file("animals/big.bin", start, end) == data[start:end], (start, end)
        assert fs.cat_file("animals/big.bin", start=start) == data[start:], start
    with fs.open("animals/big.bin", block_size=4096) as f:
        assert f.size == MiB
        for _ in range(40):
            pos, n = rng.randrange(MiB), rng.randrange(200_000)
            f.seek(pos)
            assert f.read(n) == data[pos:pos + n]
    with fsspec.open("artfs://animals/labels.csv", "rt", store=store) as f:
        assert f.read() == LABELS_V0.decode()


def test_writes_are_refused_and_change_nothing(store):
    fs = fsspec.filesystem("artfs", store=store)
    before = artfs.Store(store).log()
    attempts = [lambda: fs.open("animals/new.csv", "wb"), lambda: fs.open("animals/labels.csv", "ab"),
                lambda: fs.pipe_file("animals/new.csv", b"x"), lambda: fs.mkdir("animals/d"),
                lambda: fs.makedirs("zebras/d"), lambda: fs.rm("animals/labels.csv"),
                lambda: fs.rm_file("animals/labels.csv"), lambda: fs.rmdir("animals/nested"),
                lambda: fs.mv("animals/labels.csv", "animals/x.csv"), lambda: fs.touch("animals/t"),
                lambda: fs.cp_file("animals/labels.csv", "animals/c.csv"),
                lambda: fs.put(store, "animals/p"), lambda: fsspec.open("artfs://animals/x", "w",
                                                                        store=store).open()]
    for attempt in attempts:
        with pytest.raises(OSError) as e:
            attempt()
        assert e.value.errno == errno.EROFS and "read-only" in str(e.value)
    with artfs.Store(store) as s:
        assert s.log() == before and [v.version for v in s.versions("animals")] == ["v0"]


def test_a_version_stays_pinned_while_latest_moves(store, tmp_path):
    fs = fsspec.filesystem("artfs", store=store)
    assert fs.cat_file("animals:latest/labels.csv") == LABELS_V0
    assert put_labels(store, tmp_path, LABELS_V1) == "v1"
    opts = {"store": store}
    # the filesystem object keeps latest = v0; every new URL call resolves latest anew
    assert fs.cat_file("animals:latest/labels.csv") == LABELS_V0 and fs.info("animals")["version"] == "v0"
    assert fs.find("animals:latest") == [p.replace("animals:v0", "animals:latest")
                                         for p in fs.find("animals:v0")]
    assert pd.read_csv("artfs://animals:latest/labels.csv", storage_options=opts).shape == (3, 2)
    assert fsspec.filesystem("artfs", store=store).info("animals")["version"] == "v1"
    # an alias made after the filesystem is resolved at first use, then kept
    with artfs.Store(store) as s:
        s.alias("animals:v1", "best")
        assert fs.cat_file("animals:best/labels.csv") == LABELS_V1
        s.alias("animals:v0", "best")
    assert fs.cat_file("animals:best/labels.csv") == LABELS_V1
    # a pickled copy (a spawned worker's) carries the pins
    copy = pickle.loads(pickle.dumps(fs))
    assert copy.info("animals:latest")["version"] == "v0" and copy.info("animals:best")["version"] == "v1"
    # an open file reads the version it was opened in, whatever moves afterwards
    with fsspec.open("artfs://animals/labels.csv", store=store) as f:
        assert put_labels(store, tmp_path, b"x,y\n") == "v2"
        assert f.read() == LABELS_V1


_FS = None   # the filesystem the forked workers inherit


def _read_in_worker(path: str) -> tuple[int, bytes, str]:
    fresh = fsspec.filesystem("artfs", store=_FS.store.path)
    return os.getpid(), _FS.cat_file(path), fresh.info("animals")["version"]


def test_forked_workers_read_through_one_filesystem_object(store, tmp_path):
    """DataLoader-style: the filesystem is made (and used) in the parent, latest moves, then forked
    workers read through the inherited object: each reopens the store's environments and keeps
    the parent's pins; a filesystem a worker makes itself sees the new latest."""
    global _FS
    _FS = fsspec.filesystem("artfs", store=store)
    paths = [f"animals:latest/{p.partition('/')[2]}" for p in _FS.find("animals:latest")
             if not p.endswith("/link")]
    expected = {p: _FS.cat_file(p) for p in paths}
    put_labels(store, tmp_path, LABELS_V1)
    try:
        with multiprocessing.get_context("fork").Pool(2) as pool:
            results = pool.map(_read_in_worker, paths * 3, chunksize=1)
    finally:
        _FS = None
    assert os.getpid() not in {pid for pid, _, _ in results}
    assert [data for _, data, _ in results] == [expected[p] for p in paths * 3]
    assert {latest for _, _, latest in results} == {"v1"}


@pytest.mark.fuse
def test_reading_while_the_store_is_mounted(mounted, tmp_path):
    """A live mount: versions committed through the mount's staging read the same through
    artfs:// as through the mount, and a filesystem object stays pinned across a commit there."""
    os.mkdir(mounted.path("animals"))
    write(mounted.path("animals", "staging", "labels.csv"), LABELS_V0)
    os.mkdir(mounted.path("animals", "staging", "tables"))
    pq.write_table(pa.table({"x": [1, 2]}), mounted.path("animals", "staging", "tables", "a.parquet"))
    mounted.cli("commit", "animals")
    fs = fsspec.filesystem("artfs", store=mounted.store)
    write(mounted.path("animals", "staging", "labels.csv"), LABELS_V1)
    mounted.cli("commit", "animals")
    assert os.readlink(mounted.path("animals", "latest")) == "v1"

    assert fs.cat_file("animals:latest/labels.csv") == LABELS_V0
    for v in ("v0", "v1"):
        for rel in ("labels.csv", "tables/a.parquet"):
            with open(mounted.path("animals", v, rel), "rb") as f:
                assert fs.cat_file(f"animals:{v}/{rel}") == f.read()
        assert sorted(os.listdir(mounted.path("animals", v))) == \
            sorted(p.rpartition("/")[2] for p in fs.ls(f"animals:{v}", detail=False))
    frame = pd.read_csv("artfs://animals:latest/labels.csv", storage_options={"store": mounted.store})
    assert list(frame.name) == ["cat", "dog", "rat"]
    assert pq.read_table("animals:v1/tables/a.parquet", filesystem=fs).column("x").to_pylist() == [1, 2]
