"""Rows of scripts/bench.py for the lazy mount of a remote (issue 10; docs/REMOTE.md "Lazy mount").

Run with ``python scripts/bench.py --only lazy [--quick]`` (1 GiB; --quick 8 MiB, --size-scale
multiplies). One Ceph RGW (memstore, loopback; moto when Ceph is not installed) is started for the
run. The artfs column is the lazy mount; the "native" column holds the row's peer, so artfs/native
is the ratio the issue asks for:

  10a cold sequential read through a fresh lazy mount (empty cache, caches dropped) vs a plain
      parallel ranged download of the same bytes with obstore (8 threads x 8 MiB ranges, to memory)
  10b the same cold read vs `rclone mount` (vfs-cache-mode off) of the same bytes as one object
  10c the same cold read vs `s3fs` of that object
  10d warm: the lazy mount with the file in its chunk cache (fresh daemon, caches dropped) vs the
      same version mounted from the local store that pushed it
  10e the lazy daemon's peak RSS (MiB; artfs column only)
  10f small files (the bench's ``small`` set: 10,000 x 16 KiB in 100 dirs), cold walk+read through
      a fresh lazy mount vs `rclone mount` of the same files as plain objects (files/s)
  10g the first `ls -lR` of a version of the bench's ``tree`` set (100,000 files) on a fresh lazy
      mount, caches dropped (seconds; artfs column only; the issue asks <= 3 s)
  10h the floor of 10a on this machine: the pyfuse3 passthrough (scripts/passthrough.py, the
      same FUSE plumbing, no store) reading the big file from the page cache, vs the same
      repeat's obstore download (native col): what a Python FUSE daemon serving bytes it
      already holds reaches, before any fetch, hash or cache write

The small and tree sets keep the issue's sizes whatever ``--size-scale`` says (it scales the big
file only); ``--quick`` makes them small.

Peers read the files as plain objects (``raw/data.bin``, ``raw/small/...``) uploaded next to
artfs's packs.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PART = 8 << 20
THREADS = 8


def _server():
    sys.path.insert(0, str(REPO))
    from tests.s3servers import MotoServer, RgwServer
    if RgwServer.missing() is None:
        return RgwServer(memstore_bytes=4 << 30)
    return MotoServer()


def _obstore(server, bucket: str):
    from obstore.store import S3Store
    return S3Store(bucket, **server.obstore_options())


def _download(store, key: str, size: int) -> float:
    """MB/s of a parallel ranged download of KEY into memory."""
    import obstore
    t = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        got = sum(pool.map(lambda s: len(obstore.get_range(store, key, start=s, end=min(s + PART, size))),
                           range(0, size, PART)))
    dt = time.perf_counter() - t
    assert got == size, (got, size)
    return size / 1e6 / dt


class Peer:
    """A FUSE mount of the bucket by another tool, reading ``raw/data.bin``."""

    def __init__(self, B, work: Path, name: str, argv: list[str]):
        self.mount = B.FuseMount(name, argv, work / "mnt" / name, work / "logs" / f"{name}.log", ra_kb=1024)

    def read(self, B, size: int) -> float:
        with self.mount:
            return B.timed_read(self.mount.mnt / "raw" / "data.bin", size)

    def walk(self, B, files: int) -> float:
        with self.mount:
            return B.walk_read(self.mount.mnt / "raw" / "small", files)["x"]


def _upload_tree(store, root: Path, prefix: str) -> None:
    """Every file under ROOT as an object PREFIX/RELPATH (16 PUTs at once)."""
    import obstore
    paths = [p for p in root.rglob("*") if p.is_file()]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda p: obstore.put(store, f"{prefix}/{p.relative_to(root)}", p.read_bytes()), paths))


def _timed_ls(path: Path) -> float:
    """Seconds of ``ls -lR PATH`` (output discarded)."""
    t = time.perf_counter()
    subprocess.run(["ls", "-lR", str(path)], stdout=subprocess.DEVNULL, check=True, timeout=600)
    return time.perf_counter() - t


def workload(b, B) -> None:
    """Fill rows 10a-10g of Bench ``b``; ``B`` is the bench module (its helpers)."""
    size, work = b.sz.big, b.work / "lazy"
    sets = B.Sizes.make(b.args.quick, 1.0)    # the small and tree sets at the sizes
    rows = {k: b.row(f"10{k}", title, unit, hib) for k, title, unit, hib in (
        ("a", f"lazy mount cold read {B.human(size)} / obstore ranged download (native col)", "MB/s", True),
        ("b", "  same / rclone mount (native col)", "MB/s", True),
        ("c", "  same / s3fs (native col)", "MB/s", True),
        ("d", "lazy mount warm (cached) read / local store mount (native col)", "MB/s", True),
        ("e", "lazy mount daemon peak RSS", "MiB", False),
        ("f", f"lazy mount {sets.small_n:,} x {B.human(sets.small_size)} cold walk+read / rclone mount (native col)",
         "files/s", True),
        ("g", f"lazy mount first ls -lR of a {B.tree_count(sets):,}-file version", "s", False),
        ("h", f"floor: passthrough read of {B.human(size)} in memory / obstore ranged download (native col)",
         "MB/s", True))}
    server = _server().start()
    saved = dict(os.environ)
    try:
        creds = server.users["full"]
        os.environ.update(AWS_ACCESS_KEY_ID=creds.access_key, AWS_SECRET_ACCESS_KEY=creds.secret_key)
        os.environ.pop("AWS_CA_BUNDLE", None)     # plain http; rclone refuses a CA bundle it cannot use
        bucket = server.make_bucket("bench-lazy")
        (work / "logs").mkdir(parents=True, exist_ok=True)
        data = work / "data" / "data.bin"
        B.write_random(data, size, __import__("random").Random(9))
        a, lazy = work / "A", work / "B"
        B.run(B.artfs_cmd(a, "put", "big", str(data.parent)), timeout=3600)
        for name, build in (("small", B.build_small), ("tree", B.build_tree)):
            build(work / name, sets)
            B.run(B.artfs_cmd(a, "put", name, str(work / name)), timeout=3600)
        B.run(B.artfs_cmd(a, "remote", "add", "origin", f"s3://{bucket}/artfs", "--endpoint", server.endpoint,
                          "--allow-http"))
        B.run(B.artfs_cmd(a, "push"), timeout=3600)
        (work / "floor" / "raw").mkdir(parents=True, exist_ok=True)
        os.link(data, work / "floor" / "raw" / "data.bin")
        store = _obstore(server, bucket)
        import obstore
        with open(data, "rb") as f:
            obstore.put(store, "raw/data.bin", f)
        _upload_tree(store, work / "small", "raw/small")
        B.run([sys.executable, "-m", "artfs", "clone", f"s3://{bucket}/artfs", str(lazy), "--endpoint",
               server.endpoint, "--allow-http"], timeout=600)
        endpoint = server.endpoint
        passwd = work / "s3fs.passwd"
        passwd.write_text(f"{creds.access_key}:{creds.secret_key}\n")
        passwd.chmod(0o600)
        peers = {
            "b": Peer(B, work, "rclone", ["rclone", "mount", f":s3:{bucket}", str(work / "mnt" / "rclone"),
                                          "--s3-provider", "Ceph", "--s3-endpoint", endpoint,
                                          "--s3-access-key-id", creds.access_key,
                                          "--s3-secret-access-key", creds.secret_key,
                                          "--read-only", "--vfs-cache-mode", "off"]),
            "c": Peer(B, work, "s3fs", ["s3fs", bucket, str(work / "mnt" / "s3fs"), "-f", "-o", f"url={endpoint}",
                                        "-o", "use_path_request_style", "-o", f"passwd_file={passwd}", "-o", "ro"]),
        }
        floor = Peer(B, work, "passthrough", [sys.executable, str(B.PASSTHROUGH), str(work / "floor"),
                                              str(work / "mnt" / "passthrough")])

        def artfs_read(store_dir: Path, name: str, clear: bool, how=None) -> tuple[float, int]:
            if clear:
                shutil.rmtree(store_dir / "cache", ignore_errors=True)
            cold()
            m = B.artfs_mount(store_dir, work / "mnt" / name, work / "logs" / f"{name}.log")
            with m:
                v = (how or (lambda mnt: B.timed_read(mnt / "big" / "v0" / "data.bin", size)))(m.mnt)
                m.sample_rss()
            print(f"  {name} daemon: peak RSS {m.peak_rss >> 20} MiB, anonymous {m.peak_anon >> 20} MiB", flush=True)
            return v, m.peak_rss

        def cached(store_dir: Path) -> None:
            """Say how much of the big file the chunk cache holds (a warm read fetches the rest)."""
            import json
            got = json.loads(B.run(B.artfs_cmd(store_dir, "cache", "ls", "big", "--json")).stdout)
            big = got["versions"][0]
            print(f"  cache after the cold read: {big['cached'] >> 20} of {(big['cached'] + big['remote']) >> 20}"
                  f" MiB of the big file, {got['cache']['chunks']:,} chunks", flush=True)

        def cold() -> None:
            if b.can_drop:
                B.drop_caches()
                time.sleep(b.sz.settle)

        for _ in range(b.sz.repeats):
            cold()
            rows["a"].samples.setdefault("native", []).append(_download(store, "raw/data.bin", size))
            for k, peer in peers.items():
                cold()
                try:
                    rows[k].samples.setdefault("native", []).append(peer.read(B, size))
                except (Exception, subprocess.TimeoutExpired) as e:
                    rows[k].errors.setdefault("native", f"{type(e).__name__}: {e}"[:300])
            speed, rss = artfs_read(lazy, "lazy", clear=True)
            for k in "abc":
                rows[k].samples.setdefault("artfs", []).append(speed)
            rows["e"].samples.setdefault("artfs", []).append(rss / (1 << 20))
            cached(lazy)
            warm, _ = artfs_read(lazy, "lazy", clear=False)
            rows["d"].samples.setdefault("artfs", []).append(warm)
            local, _ = artfs_read(a, "local", clear=False)
            rows["d"].samples.setdefault("native", []).append(local)
            B.read_file(data)                    # in the page cache: the floor serves memory
            rows["h"].samples.setdefault("artfs", []).append(floor.read(B, size))
            rows["h"].samples.setdefault("native", []).append(rows["a"].samples["native"][-1])
            cold()
            try:
                rows["f"].samples.setdefault("native", []).append(peers["b"].walk(B, sets.small_n))
            except (Exception, subprocess.TimeoutExpired) as e:
                rows["f"].errors.setdefault("native", f"{type(e).__name__}: {e}"[:300])
            small, _ = artfs_read(lazy, "lazy", clear=True,
                                  how=lambda mnt: B.walk_read(mnt / "small" / "v0", sets.small_n)["x"])
            rows["f"].samples.setdefault("artfs", []).append(small)
            ls, _ = artfs_read(lazy, "lazy", clear=False, how=lambda mnt: _timed_ls(mnt / "tree" / "v0"))
            rows["g"].samples.setdefault("artfs", []).append(ls)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        with contextlib.suppress(Exception):
            server.stop()
