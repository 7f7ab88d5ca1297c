"""Rows of scripts/bench.py for pushing to a remote (issue 9; docs/REMOTE.md, docs/SCALE.md).

Run with ``python scripts/bench.py --only remote [--quick]`` (1 GiB and 10,000 files of 16 KiB;
--quick 8 MiB and 300 files; --size-scale multiplies). One Ceph RGW (memstore, loopback; moto when
Ceph is not installed) is started for the run. The "native" column holds the peer, `rclone copy`
of the same directory to the same bucket (configured by environment variables, no config file),
so artfs/native is the ratio the issue asks for (target >= 0.8):

  12a push of one 1 GiB file (to an emptied bucket; the local `put` before it is not timed) vs
      rclone copy of the same directory
  12b push of 10,000 small files vs rclone copy
  12c incremental push of a 1%-changed version of the 1 GiB file (8 regions overwritten) after
      the first: bytes uploaded as % of the version's bytes (target <= 3)
  12d-12k requests of one command each (ARTFS_REMOTE_STATS, store/s3.py), on a remote holding the
      versions above: put of a 1-file version with the remote bound (a commit), push of a version
      the remote has, pull with nothing new, clone (metadata), a cold `cat` of the 1 GiB file (lazy
      read), rm of a version (with its sweep), gc --remote, and the daemon's refresh (a pull of
      one artifact with nothing new); the requests by operation are printed below the table.

Every upload goes to an emptied bucket, so each repeat measures the same work.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from bench_lazy import REPO, _server

ROWS = {
    "put": ("12d", "requests: put of a 1-file version, remote bound (a commit)"),
    "push_noop": ("12e", "requests: push with nothing to send"),
    "pull_noop": ("12f", "requests: pull with nothing new"),
    "refresh": ("12g", "requests: pull NAME with nothing new (the lazy mount's refresh)"),
    "clone": ("12h", "requests: clone (metadata of every version)"),
    "cat": ("12i", "requests: get of the big file from the clone (lazy read)"),
    "rm": ("12j", "requests: rm of a version (tombstone + sweep)"),
    "gc": ("12k", "requests: gc --remote with nothing to free"),
}
CHANGED_REGIONS = 8


def _empty(server, bucket: str) -> None:
    """Delete every object of BUCKET (1,000 per request), and on RGW free their space now (its
    garbage collector would free it hours later: memstore would fill over the repeats)."""
    client = server.boto3_client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    if server.kind == "rgw":
        subprocess.run(["radosgw-admin", "-c", os.path.join(server.dir, "ceph.conf"), "gc", "process",
                        "--include-all"], capture_output=True, timeout=600, check=True)


def _change_one_percent(path: Path, rng: random.Random) -> int:
    """Overwrite 1% of PATH in CHANGED_REGIONS regions spread over it; returns the bytes changed."""
    size = path.stat().st_size
    region = max(1, size // 100 // CHANGED_REGIONS)
    with open(path, "r+b") as f:
        for k in range(CHANGED_REGIONS):
            f.seek(size * (2 * k + 1) // (2 * CHANGED_REGIONS))
            f.write(rng.randbytes(region))
    return region * CHANGED_REGIONS


class Run:
    """One artfs store and the remote it pushes to, with the bench module's helpers."""

    def __init__(self, B, server, bucket: str, work: Path):
        self.B, self.server, self.bucket, self.work = B, server, bucket, work
        self.url = f"s3://{bucket}/artfs"
        self.stats = work / "stats.jsonl"

    def artfs(self, store: Path, *args: str, timeout: float = 3600) -> str:
        return self.B.run(self.B.artfs_cmd(store, *args), timeout=timeout).stdout

    def requests(self, argv: list[str], timeout: float = 3600) -> dict:
        """Run ARGV with ARTFS_REMOTE_STATS set; the requests it made, by operation."""
        self.stats.unlink(missing_ok=True)
        self.B.run(argv, timeout=timeout, env={**os.environ, "ARTFS_REMOTE_STATS": str(self.stats)})
        total: dict[str, int] = {}
        for line in self.stats.read_text().splitlines():
            for op, n in json.loads(line)["requests"].items():
                total[op] = total.get(op, 0) + n
        return total

    def bind(self, store: Path) -> None:
        self.artfs(store, "remote", "add", "origin", self.url, "--endpoint", self.server.endpoint, "--allow-http")

    def push(self, store: Path, ref: str) -> tuple[float, dict]:
        t = time.perf_counter()
        report = json.loads(self.artfs(store, "push", ref, "--json"))
        return time.perf_counter() - t, report

    def rclone(self, src: Path) -> float:
        creds = self.server.users["full"]
        env = {**os.environ, "RCLONE_CONFIG_BENCH_TYPE": "s3", "RCLONE_CONFIG_BENCH_PROVIDER": "Ceph",
               "RCLONE_CONFIG_BENCH_ENDPOINT": self.server.endpoint,
               "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": creds.access_key,
               "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": creds.secret_key}
        t = time.perf_counter()
        self.B.run(["rclone", "copy", str(src), f"bench:{self.bucket}/rclone"], timeout=3600, env=env)
        return time.perf_counter() - t


def workload(b, B) -> None:
    """Fill rows 12a-12k of Bench ``b``; ``B`` is the bench module (its helpers)."""
    sz, work = b.sz, b.work / "remote"
    size = sz.big
    r_big = b.row("12a", f"push {B.human(size)} (1 file) / rclone copy (native col)", "MB/s")
    r_small = b.row("12b", f"push {sz.small_n:,} files of {B.human(sz.small_size)} / rclone copy (native col)",
                    "files/s")
    r_inc = b.row("12c", f"incremental push of a 1%-changed {B.human(size)}: uploaded", "%", False)
    big, small, changed = work / "big", work / "small", work / "changed"
    B.build_big(big, sz)
    B.build_small(small, sz)
    changed.mkdir(parents=True)
    (changed / "data.bin").write_bytes((big / "data.bin").read_bytes())
    _change_one_percent(changed / "data.bin", random.Random(11))
    server = _server().start()
    saved = dict(os.environ)
    try:
        creds = server.users["full"]
        os.environ.update(AWS_ACCESS_KEY_ID=creds.access_key, AWS_SECRET_ACCESS_KEY=creds.secret_key)
        os.environ.pop("AWS_CA_BUNDLE", None)
        run = Run(B, server, server.make_bucket("bench-remote"), work)
        stores = {}
        for row, src, unit in ((r_small, small, sz.small_n), (r_big, big, size / 1e6)):   # 12a's remote stays for 12d-12k
            stores[row.id] = store = work / f"store-{row.id}"
            run.artfs(store, "put", "ds", str(src))
            if row is r_big:           # a second, 1%-changed version: the incremental push
                run.artfs(store, "put", "ds", str(changed))
            for _ in range(sz.repeats):
                _empty(server, run.bucket)
                try:     # rclone missing or failing: an error cell, the artfs column still runs
                    row.samples.setdefault("native", []).append(unit / run.rclone(src))
                except (B.BenchError, OSError, subprocess.TimeoutExpired) as e:
                    row.errors.setdefault("native", f"{type(e).__name__}: {e}"[:300])
                _empty(server, run.bucket)
                (store / "remotes.json").unlink(missing_ok=True)
                run.bind(store)
                dt, first = run.push(store, "ds:v0")
                row.samples.setdefault("artfs", []).append(unit / dt)
                b.extra.setdefault("remote_requests", {})[f"push ({row.id})"] = first["requests"]
                if row is r_big:
                    _, report = run.push(store, "ds:v1")
                    r_inc.samples.setdefault("artfs", []).append(100 * report["bytes_sent"] / size)
                    b.extra["remote_requests"]["incremental push (12c)"] = report["requests"]
        _requests(b, run, stores[r_big.id], work)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        with contextlib.suppress(Exception):
            server.stop()


def _requests(b, run: Run, store: Path, work: Path) -> None:
    """Rows 12d-12k: the requests of one command each, on the remote holding ds:v0 and ds:v1."""
    one = work / "one"
    one.mkdir()
    (one / "f.txt").write_text("one file\n")
    clone = work / "clone"
    B = run.B
    argv = {
        "put": B.artfs_cmd(store, "put", "small", str(one)),
        "push_noop": B.artfs_cmd(store, "push"),
        "pull_noop": B.artfs_cmd(store, "pull"),
        "refresh": B.artfs_cmd(store, "pull", "ds"),
        "clone": [sys.executable, "-m", "artfs", "clone", run.url, str(clone), "--endpoint",
                  run.server.endpoint, "--allow-http"],
        "cat": B.artfs_cmd(clone, "get", "ds:v1/data.bin", str(work / "got")),
        "rm": B.artfs_cmd(store, "rm", "ds:v0"),
        "gc": B.artfs_cmd(store, "gc", "--remote", "origin"),
    }
    seen = {}
    for key, cmd in argv.items():
        rid, title = ROWS[key]
        seen[key] = run.requests(cmd)
        b.row(rid, title, "requests", False).samples["artfs"] = [sum(seen[key].values())]
    b.extra.setdefault("remote_requests", {}).update({ROWS[k][1].split(": ", 1)[1]: v for k, v in seen.items()})


SCALING = ("put", "push_noop", "pull_noop", "refresh", "ls", "gc", "gc_again", "clone", "get", "rm", "retention")


def scaling(B, server, versions: int, work: Path) -> dict[str, dict]:
    """Requests by operation of each command of SCALING on a remote holding VERSIONS versions of
    one artifact (each a changed 100 KB file plus a new small file), for docs/SCALE.md: the last
    put; push, pull and `pull NAME` with nothing new; `ls --remote`; gc --remote twice (the second
    with the version records known); clone; a lazy get of the 100 KB file from the clone; rm of
    v0; gc by retention (--keep-last 2) of the rest but the last two (N-3 versions: v0 went by
    the rm)."""
    run = Run(B, server, server.make_bucket(f"scale-{versions}"), work)
    a, c, src = work / "A", work / "C", work / "src"
    run.artfs(a, "init")
    run.bind(a)
    src.mkdir(parents=True)
    rng = random.Random(versions)
    for i in range(versions):
        (src / "f").write_bytes(rng.randbytes(100_000))
        (src / f"g{i}").write_bytes(b"x" * i)
        if i < versions - 1:
            run.artfs(a, "put", "ds", str(src))
    art = lambda store, *args: B.artfs_cmd(store, *args)   # noqa: E731
    out = {"put": run.requests(art(a, "put", "ds", str(src))),
           "push_noop": run.requests(art(a, "push")),
           "pull_noop": run.requests(art(a, "pull")),
           "refresh": run.requests(art(a, "pull", "ds")),
           "ls": run.requests(art(a, "ls", "--remote", "origin", "ds")),
           "gc": run.requests(art(a, "gc", "--remote", "origin")),
           "gc_again": run.requests(art(a, "gc", "--remote", "origin")),
           "clone": run.requests([sys.executable, "-m", "artfs", "clone", run.url, str(c), "--endpoint",
                                  server.endpoint, "--allow-http"]),
           "get": run.requests(art(c, "get", "ds:latest/f", str(work / "got"))),
           "rm": run.requests(art(a, "rm", "ds:v0"))}
    run.artfs(a, "retain", "ds", "--keep-last", "2")
    out["retention"] = run.requests(art(a, "gc"))
    return out


def main(argv: list[str]) -> int:
    """``python scripts/bench_remote.py [N ...]``: requests per command at N versions (default 1
    and 21) on moto (fast; the counts are the client's, the same on any server)."""
    import tempfile
    sys.path[:0] = [str(Path(__file__).resolve().parent), str(REPO)]
    import bench as B
    from tests.s3servers import MotoServer
    counts = [int(n) for n in argv] or [1, 21]
    server = MotoServer().start()
    saved = dict(os.environ)
    try:
        creds = server.users["full"]
        os.environ.update(AWS_ACCESS_KEY_ID=creds.access_key, AWS_SECRET_ACCESS_KEY=creds.secret_key)
        with tempfile.TemporaryDirectory(prefix="artfs-scale-") as tmp:
            rows = {n: scaling(B, server, n, Path(tmp) / str(n)) for n in counts}
        print("command".ljust(12) + "".join(f"  {f'N={n}':>40}" for n in counts))
        for key in SCALING:
            cells = [", ".join(f"{op} {k}" for op, k in sorted(rows[n][key].items())) for n in counts]
            print(key.ljust(12) + "".join(f"  {f'{sum(rows[n][key].values())}: {c}':>40}"
                                          for n, c in zip(counts, cells)))
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
