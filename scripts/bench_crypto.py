"""Workload 9 of scripts/bench.py: the cost of encryption at rest, encrypted vs unencrypted
artfs stores in the same run, repeats interleaved (issue 11: reads >= 0.9x, commit >= 0.8x).

Per repeat and per store kind (a fresh store each time, on the big file of workload 1):
put of the file; cp into a mount's staging then commit (commit timed); a cold sequential read
(drop_caches, or fadvise without root, and a fresh mount); a warm one (a fresh mount over the
store's pages still in memory, so artfs opens and authenticates every chunk again; the FUSE page
cache of the previous mount is gone with it). The table shows encrypted/unencrypted per row
(median of the per-repeat ratios); the MB/s of each side are printed as they are measured.

The encrypted stores are unlocked by a key file: the per-command cost of a passphrase (Argon2id,
about 0.5 s on the reference machine) is a constant per command, reported as row 9e.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from pathlib import Path

METRICS = (("9a", "put"), ("9b", "commit (cp into staging, then commit timed)"),
           ("9c", "cold sequential read"), ("9d", "warm read (fresh mount, store pages cached)"))


def _one(bm, b, store: Path, encrypted: bool) -> dict[str, float]:
    sz, src = b.sz, b.data / "big" / "data.bin"
    mb = sz.big / 1e6
    for path in (store, store.with_name(store.name + "-commit")):
        shutil.rmtree(path, ignore_errors=True)
        bm.run(bm.artfs_cmd(path, "init", *(["--encrypt"] if encrypted else [])))
    bm.read_file(src)
    t = time.perf_counter()
    bm.artfs_put(store, "big", src.parent)
    out = {"put": mb / (time.perf_counter() - t)}

    commit_store, mnt = store.with_name(store.name + "-commit"), b.work / "crypto" / "mnt"
    with bm.artfs_mount(commit_store, mnt, b.work / "logs" / "crypto.log"):
        (mnt / "c").mkdir()
        bm.timed_cmd(["cp", str(src), str(mnt / "c" / "staging" / "data.bin")], sz.timeout)
        out["commit"] = mb / bm.timed_cmd(bm.artfs_cmd(commit_store, "commit", "c"), sz.timeout)
    shutil.rmtree(commit_store, ignore_errors=True)

    if b.can_drop:
        bm.drop_caches()
        time.sleep(sz.settle)
    else:
        bm.fadvise_dontneed(store)
    for label in ("cold", "warm"):
        with bm.artfs_mount(store, mnt, b.work / "logs" / "crypto.log") as m:
            out[label] = bm.timed_read(m.mnt / "big" / "v0" / "data.bin", sz.big)
    shutil.rmtree(store, ignore_errors=True)
    return out


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
    rows = {name: b.row(rid, f"crypto: {title}, {bm.human(b.sz.big)}: encrypted / unencrypted", "ratio")
            for (rid, title), name in zip(METRICS, ("put", "commit", "cold", "warm"))}
    for _ in range(b.sz.repeats):
        try:
            plain = _one(bm, b, work / "plain", False)
            enc = _one(bm, b, work / "enc", True)
        except Exception as e:   # recorded like any failed cell; the run goes on
            for r in rows.values():
                r.errors.setdefault("artfs", f"{type(e).__name__}: {e}"[:300])
            break
        print("  crypto MB/s " + ", ".join(f"{k} {plain[k]:.0f} -> {enc[k]:.0f}" for k in rows), flush=True)
        for k, r in rows.items():
            r.samples.setdefault("artfs", []).append(enc[k] / plain[k])
    kdf = b.row("9e", "crypto: Argon2id unlock of a passphrase, once per command", "s", False)
    kdf.samples["artfs"] = [statistics.median(_kdf_seconds() for _ in range(3))]
    del os.environ["ARTFS_KEY_FILE"]
    shutil.rmtree(work, ignore_errors=True)
