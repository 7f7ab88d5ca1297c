"""Deletes on a remote and its garbage collector (docs/REMOTE.md, "Deletes and garbage
collection"), on Ceph RGW and moto: rm frees a version's unique bytes in the same command (packs
partly live are repacked), never while a push holds its lock; gc removes orphans past the grace
period and stale locks; verify --remote checks what is left."""

from __future__ import annotations

import json
import os
import time

import pytest

from artfs import Store
from tests.helpers import write
from tests.test_remote import PREFIX, bind, bucket_bytes, cli, clone, pack_keys

pytest.importorskip("obstore", reason="needs obstore: scripts/setup-s3.sh installs it")

MiB = 1 << 20


@pytest.fixture
def two_versions(tmp_path):
    """v0: 2 MiB of its own plus 1 MiB shared with v1; v1: the shared MiB plus 1 MiB of its own."""
    shared = os.urandom(MiB)
    v0, v1 = tmp_path / "v0", tmp_path / "v1"
    write(v0 / "own", os.urandom(2 * MiB))
    write(v0 / "shared", shared)
    write(v1 / "shared", shared)
    write(v1 / "own", os.urandom(MiB))
    return v0, v1


def put_object(s3, bucket, key: str, body: bytes) -> None:
    s3.boto3_client().put_object(Bucket=bucket, Key=f"{PREFIX}/{key}", Body=body)


def keys(s3, bucket, under: str) -> list[str]:
    listing = s3.boto3_client().list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}/{under}")
    return sorted(o["Key"][len(PREFIX) + 1:] for o in listing.get("Contents", []))


def test_rm_frees_unique_bytes_at_once_and_keeps_shared(s3, s3_bucket, tmp_path, two_versions):
    a, c = tmp_path / "A", tmp_path / "C"
    for d in two_versions:
        cli(a, s3, "put", "ds", d)
    bind(a, s3, s3_bucket)
    cli(a, s3, "push")                         # v0's pack, then v1's (its own MiB only)
    before = bucket_bytes(s3, s3_bucket)
    assert cli(a, s3, "rm", "ds:v0").stdout == "deleted ds:v0\n"
    after = bucket_bytes(s3, s3_bucket)
    assert before - after >= 2 * MiB           # v0's own bytes are gone from the bucket
    assert after >= 2 * MiB                    # v1's (the shared MiB repacked, its own MiB) stay
    assert [r.split()[:2] for r in cli(a, s3, "ls", "--remote", "origin", "ds").stdout.splitlines()[1:]] \
        == [["v1", "latest"]]
    assert cli(a, s3, "verify", "--remote", "origin").returncode == 0
    clone(c, s3, s3_bucket)
    cli(c, s3, "pull", "--data")
    with Store(str(c)) as cs:
        assert [v.version for v in cs.versions("ds")] == ["v1"]
        for f in ("own", "shared"):
            with cs.get("ds:v1").open(f) as fh:
                assert fh.read() == (two_versions[1] / f).read_bytes()
    with Store(str(a)) as sa:
        assert [v.version for v in sa.versions("ds")] == ["v1"]

    assert cli(a, s3, "rm", "ds", "--force").stdout == "deleted ds\n"
    assert bucket_bytes(s3, s3_bucket) == 0 and pack_keys(s3, s3_bucket) == []
    assert cli(a, s3, "ls", "--remote", "origin").stdout.count("\n") <= 1     # header at most
    write(tmp_path / "v2" / "f", b"new")       # numbers are never reused: the next is v2
    assert cli(a, s3, "put", "ds", tmp_path / "v2").stdout.strip() == "ds:v2"


def test_rm_of_a_version_only_on_the_remote(s3, s3_bucket, tmp_path, two_versions):
    """A metadata clone deletes a version it never pulled: on the remote only."""
    a, b = tmp_path / "A", tmp_path / "B"
    for d in two_versions:
        cli(a, s3, "put", "ds", d)
    bind(a, s3, s3_bucket)
    cli(a, s3, "push")
    clone(b, s3, s3_bucket)
    assert cli(b, s3, "rm", "ds:v1").stdout == "deleted ds:v1\n"
    rows = cli(b, s3, "ls", "--remote", "origin", "ds").stdout.splitlines()[1:]
    assert [r.split()[:2] for r in rows] == [["v0", "latest"]]      # latest moved back
    assert cli(b, s3, "verify", "--remote", "origin").returncode == 0


def test_rm_waits_for_a_running_push_and_gc_clears_stale_locks_and_orphans(s3, s3_bucket, tmp_path,
                                                                           two_versions):
    a = tmp_path / "A"
    cli(a, s3, "put", "ds", two_versions[0])
    bind(a, s3, s3_bucket)
    cli(a, s3, "push")
    lock = json.dumps({"kind": "push", "host": "elsewhere", "pid": 1, "started": 0}).encode()
    put_object(s3, s3_bucket, "locks/push-0000.json", lock)        # another host's push, running
    orphan = "packs/ab/ab" + "0" * 62                               # a push killed before its index
    put_object(s3, s3_bucket, orphan, os.urandom(1000))
    proc = cli(a, s3, "rm", "ds:v0", check=False, ARTFS_REMOTE_LOCK_WAIT="1")
    assert proc.returncode == 5, proc.stderr
    assert "stayed locked" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    with Store(str(a)) as sa:                                       # nothing deleted anywhere
        assert [v.version for v in sa.versions("ds")] == ["v0"]
    assert len(cli(a, s3, "ls", "--remote", "origin", "ds").stdout.splitlines()) == 2
    assert cli(a, s3, "gc", "--remote", "origin", check=False, ARTFS_REMOTE_LOCK_WAIT="1").returncode == 5

    time.sleep(1.1)          # S3 times have whole seconds: the lock and orphan must be older than gc's
    out = cli(a, s3, "gc", "--remote", "origin", ARTFS_REMOTE_LOCK_STALE="0").stdout
    assert out.startswith("gc --remote origin: freed")
    assert orphan in keys(s3, s3_bucket, "packs/")                  # younger than the grace period
    assert keys(s3, s3_bucket, "locks/") == []                      # the stale lock went
    cli(a, s3, "gc", "--remote", "origin", ARTFS_REMOTE_GRACE="0")
    assert orphan not in keys(s3, s3_bucket, "packs/")
    assert cli(a, s3, "verify", "--remote", "origin").returncode == 0
    assert cli(a, s3, "rm", "ds:v0").stdout == "deleted ds:v0\n"
    assert keys(s3, s3_bucket, "packs/") == []


def test_verify_remote_names_a_missing_pack(s3, s3_bucket, tmp_path, two_versions):
    a = tmp_path / "A"
    cli(a, s3, "put", "ds", two_versions[0])
    bind(a, s3, s3_bucket)
    cli(a, s3, "push")
    (key,) = pack_keys(s3, s3_bucket)
    s3.boto3_client().delete_object(Bucket=s3_bucket, Key=key)
    proc = cli(a, s3, "verify", "--remote", "origin", check=False)
    assert proc.returncode == 7, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ds:v0: ") and key.rsplit("/", 1)[1] in proc.stdout
    assert "DAMAGED" in proc.stdout
