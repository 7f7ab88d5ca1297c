"""Crashes and resource limits without a mount: killed puts, a full map, a full disk."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from artfs.errors import NoSpace
from artfs.repo.facade import Repo
from artfs.repo.verify import verify
from artfs.store.segments import MIN_BYTES
from tests.helpers import MiB, need_root, run_cli, tree_snapshot, write


def _versions(store) -> list[str]:
    with Repo(str(store)) as repo:
        return [v.label for v in repo.versions("ds")] if "ds" in repo.artifacts() else []


@pytest.mark.slow
def test_put_killed_at_random_instants(tmp_path):
    """SIGKILL `artfs put` anywhere: the version exists completely or not at all; verify is clean."""
    store = tmp_path / "s"
    rng = random.Random(1234)
    sources = []
    for i in range(12):
        d = tmp_path / f"src{i}"
        for j in range(6):
            write(d / f"part{j}.bin", os.urandom(4 * MiB))
        write(d / "id", b"%d" % i)
        sources.append(d)
    made = {}
    for i, d in enumerate(sources):
        proc = subprocess.Popen([sys.executable, "-m", "artfs", "--store", str(store), "put", "ds", str(d)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.0, 0.6))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        if proc.returncode == 0:                          # it finished before the kill
            made[out.strip().split(":")[1]] = d
        with Repo(str(store)) as repo:
            report = verify(repo)
            assert report.ok, (i, report.problems)
    versions = _versions(store)
    assert set(made) <= set(versions)
    for label in versions:                                # every surviving version is byte-exact
        out = tmp_path / f"out-{label}"
        run_cli(store, "get", f"ds:{label}", out, check=True)
        ident = (out / "id").read_bytes()
        assert tree_snapshot(out) == tree_snapshot(sources[int(ident)])
    killed = len(sources) - len(made)
    assert killed > 0, "every put finished before its kill: the test proved nothing"


def test_map_full_grows_transparently(tmp_path, monkeypatch):
    """Objects smaller than a segment's minimum stay LMDB values (store/segments.py): 6 MiB of
    them fill a 2 MiB map, which grows."""
    monkeypatch.setenv("ARTFS_MAP_SIZE", str(2 * MiB))
    d = tmp_path / "d"
    size = MIN_BYTES // 2
    for i in range(6 * MiB // size):
        write(d / f"{i}", os.urandom(size))
    with Repo(str(tmp_path / "s")) as repo:
        repo.put("ds", str(d))
        assert repo.db.objects.env.map_size() > 6 * MiB
        assert verify(repo).ok
    assert run_cli(tmp_path / "s", "get", "ds:v0", tmp_path / "out").returncode == 0
    assert tree_snapshot(tmp_path / "out") == tree_snapshot(d)


@pytest.fixture
def small_fs(tmp_path):
    """A 40 MiB tmpfs for the store (needs root: fails under CI=true, skipped otherwise)."""
    need_root("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_fails_cleanly_and_recovers(tmp_path, small_fs):
    store = small_fs / "store"
    keep, big = tmp_path / "keep", tmp_path / "big"
    write(keep / "k", os.urandom(5 * MiB))
    write(big / "b", os.urandom(60 * MiB))
    with Repo(str(store)) as repo:
        repo.put("keep", str(keep))
    proc = run_cli(store, "put", "big", big)
    assert proc.returncode == NoSpace.exit_code, proc.stderr
    assert "no space left" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    with Repo(str(store)) as repo:
        assert repo.artifacts() == ["keep"]               # nothing half-written
        assert verify(repo).ok
        os.truncate(big / "b", 10 * MiB)
        repo.put("big", str(big))                         # usable again once it fits
        assert verify(repo).ok
        assert sorted(repo.artifacts()) == ["big", "keep"]


_PEAK_ANON = """
import sys, threading, time
from artfs.cli import main
peak = [0]
def sample():
    while True:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    peak[0] = max(peak[0], int(line.split()[1]) // 1024)
        time.sleep(0.01)
threading.Thread(target=sample, daemon=True).start()
rc = main(sys.argv[1:])
time.sleep(0.05)
print(peak[0], file=sys.stderr)
sys.exit(rc)
"""


@pytest.mark.slow
def test_put_memory_stays_bounded(tmp_path):
    """Chunks are stored in bounded batches: a put's own memory does not grow with the input.

    Measured as peak RssAnon: resident pages of the mapped store file (page cache the kernel can
    drop) are not the process's memory."""
    d = tmp_path / "d"
    os.makedirs(d)
    with open(d / "big.bin", "wb") as f:
        for _ in range(48):
            f.write(os.urandom(8 * MiB))                  # 384 MiB that does not deduplicate
    proc = subprocess.run([sys.executable, "-c", _PEAK_ANON, "--store", str(tmp_path / "s"), "put", "big", str(d)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    peak_mib = int(proc.stderr.split()[-1])
    assert peak_mib < 200, f"put of 384 MiB peaked at {peak_mib} MiB of anonymous memory"
    with Repo(str(tmp_path / "s")) as repo:
        assert verify(repo).ok


WRITER = """
import os, sys
import artfs
store, src = sys.argv[1], sys.argv[2]
with artfs.Store(store) as s:
    for i in range(int(sys.argv[3])):
        with open(os.path.join(src, "f"), "wb") as f:
            f.write(os.urandom(256 << 10))
        v = s.put("w", src)
        if i:
            s.delete(f"w:v{int(v.version[1:]) - 1}")
        print(i, flush=True)
"""


def test_verify_while_another_process_writes_reports_no_false_problem(tmp_path):
    """verify compares the reference counts with what references them as of one moment: another
    process putting and deleting versions meanwhile (a daemon storing and giving back chunks does
    the same) never makes it report a mismatch."""
    store = tmp_path / "store"
    for i in range(20):
        write(tmp_path / "base" / f"d{i}" / "f", os.urandom(64 << 10))
    run_cli(store, "put", "ds", tmp_path / "base", check=True)
    (tmp_path / "src").mkdir()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(store), str(tmp_path / "src"), "60"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "0"
        runs = 0
        while writer.poll() is None or runs < 3:
            with Repo(str(store)) as repo:
                report = verify(repo)
            assert report.problems == [], report.problems[:3]
            runs += 1
        assert writer.wait() == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
