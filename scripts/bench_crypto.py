"""Workload 9 of scripts/bench.py: the cost of encryption at rest, encrypted vs unencrypted
artfs stores in the same run, samples alternated (issue 11: reads >= 0.9x, commit >= 0.8x).

Per repeat, an unencrypted and an encrypted store side by side (fresh stores, on the big file of
workload 1), each step taken on both before the next, their order swapped every repeat (ABBA):
``WRITES`` pairs of puts of the file and of commits (cp into a mount's staging, then commit
timed); a cold sequential read (drop_caches, or fadvise without root, before each, and a fresh
mount); then ``WARM`` pairs of warm reads, alternated (ABBA) like the writes, each on a fresh
mount with the store's files read into the page cache just before (so both sides start alike:
artfs opens and, if encrypted, authenticates every chunk again; the previous mount's FUSE page
cache is gone with it). Before the warm pairs both stores' pages are dropped (fadvise): the cold
pair leaves the second side's store in the page cache as its mount's faults brought it in and
the first side's dropped (each cold read drops the caches first), and a mount reading a store
whose pages a mount's faults brought in takes more page faults than one that ``read`` brought in
(measured: ~1,800 more per 256 MiB; encrypted, 175 against 130 ms of daemon CPU), which made
row 9d depend on the repeat's order (docs/benchmarks.md, "Issue 11: encrypted warm reads
(stop 22)").

Each sample is the ratio encrypted / unencrypted of a pair taken one after the other (the load of
a shared machine drifts less within a pair than between repeats); a row's median is of all its
pairs, and the spread of the pairs and each side's median MB/s are printed (and the pairs are
the row's samples in the JSON).

The encrypted stores are unlocked by a key file: the per-command cost of a passphrase (Argon2id,
about 0.5 s on the reference machine) is a constant per command, reported as row 9e.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from pathlib import Path

METRICS = (("9a", "put", "put"), ("9b", "commit", "commit (cp into staging, then commit timed)"),
           ("9c", "cold", "cold sequential read"),
           ("9d", "warm", "warm read (fresh mount, store pages cached)"))
WRITES = 2   # put and commit pairs per repeat
WARM = 4     # warm read pairs per repeat
PAIRS = {"put": WRITES, "commit": WRITES, "cold": 1, "warm": WARM}


class _Side:
    """One store kind of the run: its store, and the MB/s of each of its samples per metric."""

    def __init__(self, work: Path, encrypted: bool):
        self.encrypted = encrypted
        self.store = work / ("enc" if encrypted else "plain")
        self.mbps: dict[str, list[float]] = {}

    def init(self, bm, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
        bm.run(bm.artfs_cmd(path, "init", *(["--encrypt"] if self.encrypted else [])))


def _put(bm, b, side: _Side) -> float:
    src = b.data / "big" / "data.bin"
    side.init(bm, side.store)
    bm.read_file(src)
    t = time.perf_counter()
    bm.artfs_put(side.store, "big", src.parent)
    return b.sz.big / 1e6 / (time.perf_counter() - t)


def _commit(bm, b, side: _Side) -> float:
    src, store = b.data / "big" / "data.bin", side.store.with_name(side.store.name + "-commit")
    side.init(bm, store)
    mnt = b.work / "crypto" / "mnt"
    try:
        with bm.artfs_mount(store, mnt, b.work / "logs" / "crypto.log"):
            (mnt / "c").mkdir()
            bm.timed_cmd(["cp", str(src), str(mnt / "c" / "staging" / "data.bin")], b.sz.timeout)
            return b.sz.big / 1e6 / bm.timed_cmd(bm.artfs_cmd(store, "commit", "c"), b.sz.timeout)
    finally:
        shutil.rmtree(store, ignore_errors=True)


def _read(bm, b, side: _Side, cold: bool) -> float:
    if cold and b.can_drop:
        bm.drop_caches()
        time.sleep(b.sz.settle)
    elif cold:
        bm.fadvise_dontneed(side.store)
    else:
        for f in side.store.rglob("*.mdb"):   # the store's pages in memory, as for the other side
            bm.read_file(f)
    with bm.artfs_mount(side.store, b.work / "crypto" / "mnt", b.work / "logs" / "crypto.log") as m:
        return bm.timed_read(m.mnt / "big" / "v0" / "data.bin", b.sz.big)


def _abba(order, i: int):
    """The pair order of the I-th pair of a series: swapped every other pair (ABBA)."""
    return order if i % 2 == 0 else order[::-1]


def _pair(sides, metric: str, fn, rows) -> None:
    """One sample of METRIC on each side, in the given order; the pair's ratio is a row sample."""
    got = {}
    for side in sides:
        got[side.encrypted] = fn(side)
        side.mbps.setdefault(metric, []).append(got[side.encrypted])
    rows[metric].samples.setdefault("artfs", []).append(got[True] / got[False])


def _kdf_seconds() -> float:
    from artfs.crypto import keyfile
    from artfs.crypto.keyfile import Secret
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        keyfile.create(d, Secret.passphrase("bench"))
        t = time.perf_counter()
        keyfile.unwrap(d, Secret.passphrase("bench"))
        return time.perf_counter() - t


def run(b, bm) -> None:
    """The workload; BM is the bench module (its helpers), B its Bench."""
    work = b.work / "crypto"
    work.mkdir(parents=True, exist_ok=True)
    key = work / "key"
    key.write_bytes(os.urandom(32))
    os.environ["ARTFS_KEY_FILE"] = str(key)   # the commands and mounts bench runs inherit it
    rows = {metric: b.row(rid, f"crypto: {title}, {bm.human(b.sz.big)}: encrypted / unencrypted", "ratio")
            for rid, metric, title in METRICS}
    plain, enc = _Side(work, False), _Side(work, True)
    for r in range(b.sz.repeats):
        order = (plain, enc) if r % 2 == 0 else (enc, plain)
        try:
            for i in range(WRITES):
                _pair(_abba(order, i), "put", lambda s: _put(bm, b, s), rows)
                _pair(_abba(order, i), "commit", lambda s: _commit(bm, b, s), rows)
            _pair(order, "cold", lambda s: _read(bm, b, s, cold=True), rows)
            for side in order:   # both stores' pages out, so that the warm reads bring both in alike
                bm.fadvise_dontneed(side.store)
            for i in range(WARM):
                _pair(_abba(order, i), "warm", lambda s: _read(bm, b, s, cold=False), rows)
        except Exception as e:   # recorded like any failed cell; the run goes on
            for row in rows.values():
                row.errors.setdefault("artfs", f"{type(e).__name__}: {e}"[:300])
            break
        finally:
            for side in order:
                shutil.rmtree(side.store, ignore_errors=True)
        print(f"  crypto repeat {r + 1}: " + ", ".join(
            f"{m} " + " ".join(f"{x:.2f}" for x in rows[m].samples["artfs"][-PAIRS[m]:]) for m in rows), flush=True)
    for m, row in rows.items():
        pairs = row.samples.get("artfs")
        if pairs:
            print(f"  crypto {m}: {len(pairs)} pairs, ratio median {statistics.median(pairs):.2f} "
                  f"(spread {min(pairs):.2f}-{max(pairs):.2f}); median MB/s unencrypted "
                  f"{statistics.median(plain.mbps[m]):.0f}, encrypted {statistics.median(enc.mbps[m]):.0f}",
                  flush=True)
    kdf = b.row("9e", "crypto: Argon2id unlock of a passphrase, once per command", "s", False)
    kdf.samples["artfs"] = [statistics.median(_kdf_seconds() for _ in range(3))]
    del os.environ["ARTFS_KEY_FILE"]
    shutil.rmtree(work, ignore_errors=True)
