"""Retention with a remote bound (remote/gc.py apply_retention, live_roots), on Ceph RGW and moto:
`artfs gc` deletes on the remote the versions retention lets go here, and frees their bytes
there in one sweep that reads the metadata this store has from here, not from the bucket."""

from __future__ import annotations

import json
import os

import pytest

from artfs import Store
from tests.helpers import write
from tests.test_remote import bind, bucket_bytes, cli, clone

pytest.importorskip("obstore", reason="needs obstore: scripts/setup-s3.sh installs it")

MiB = 1 << 20


def requests_of(tmp_path, store, s3, *args) -> tuple[str, dict]:
    """Run an artfs command with ARTFS_REMOTE_STATS: (its stdout, its requests by operation)."""
    stats = tmp_path / "stats.jsonl"
    stats.unlink(missing_ok=True)
    out = cli(store, s3, *args, ARTFS_REMOTE_STATS=str(stats)).stdout
    lines = [json.loads(line) for line in stats.read_text().splitlines()]
    return out, {op: sum(rec["requests"].get(op, 0) for rec in lines)
                 for op in {op for rec in lines for op in rec["requests"]}}


def test_gc_deletes_on_the_remote_what_retention_lets_go(s3, s3_bucket, tmp_path):
    a, c = tmp_path / "A", tmp_path / "C"
    data = [os.urandom(MiB) for _ in range(3)]
    for i, d in enumerate(data):
        write(tmp_path / f"v{i}" / "f", d)
    cli(a, s3, "init")
    bind(a, s3, s3_bucket)
    for i in range(3):
        cli(a, s3, "put", "ds", tmp_path / f"v{i}")          # published: the remote has them too
    before = bucket_bytes(s3, s3_bucket)
    cli(a, s3, "retain", "ds", "--keep-last", "1")
    out, requests = requests_of(tmp_path, a, s3, "gc")
    assert "gc: deleted 2 versions" in out and "deleted 2 of them on the remote" in out, out
    assert before - bucket_bytes(s3, s3_bucket) >= 2 * MiB   # v0's and v1's own bytes left the bucket
    # the sweep read v2's tree and file object here: no ranged read of any pack
    assert requests.get("GET-range", 0) == 0, requests
    rows = cli(a, s3, "ls", "--remote", "origin", "ds").stdout.splitlines()[1:]
    assert [r.split()[:2] for r in rows] == [["v2", "latest"]]
    with Store(str(a)) as sa:
        assert [v.version for v in sa.versions("ds")] == ["v2"]
    assert cli(a, s3, "verify", "--remote", "origin").returncode == 0
    clone(c, s3, s3_bucket)
    cli(c, s3, "get", "ds:latest", tmp_path / "out")
    assert (tmp_path / "out" / "f").read_bytes() == data[2]


def test_a_second_sweep_reads_no_version_record_again(s3, s3_bucket, tmp_path):
    """The sweep lists the version records and GETs only those not seen under their ETag: a
    gc --remote after another reads none (it read every record before: records.json), and leaves
    records.json as it was."""
    a = tmp_path / "A"
    bind_first = tmp_path / "v"
    for i in range(4):
        write(bind_first / "f", os.urandom(1000))
        if i == 1:
            bind(a, s3, s3_bucket)
        cli(a, s3, "put", "ds", bind_first)
    cli(a, s3, "push")
    _, first = requests_of(tmp_path, a, s3, "gc", "--remote", "origin")
    [records] = (a / "remotes").glob("*/records.json")
    written = os.stat(records).st_ino
    _, second = requests_of(tmp_path, a, s3, "gc", "--remote", "origin")
    assert first.get("GET", 0) >= 4, first                  # artfs-remote.json and the 4 records
    assert second.get("GET", 0) == 1, second                # artfs-remote.json only
    assert os.stat(records).st_ino == written               # nothing new read: the file is not rewritten
