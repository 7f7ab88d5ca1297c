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


def published_and_cloned(s3, bucket, tmp_path, versions):
    """Store A with ds:v0, v1 put from VERSIONS and pushed; store B a clone of the remote."""
    a, b = tmp_path / "A", tmp_path / "B"
    for d in versions:
        cli(a, s3, "put", "ds", d)
    bind(a, s3, bucket)
    cli(a, s3, "push")
    clone(b, s3, bucket)
    return a, b


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
    a, b = published_and_cloned(s3, s3_bucket, tmp_path, two_versions)
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


def test_pull_drops_versions_deleted_on_the_remote_but_never_unpublished_ones(s3, s3_bucket, tmp_path,
                                                                                two_versions):
    """B pulled v0 and v1; A deletes both on the remote and puts v2. B's pull deletes its v0 here
    (audited with the reason) and keeps v1, the base of B's staging with changes, saying so. C's
    own ds:v0, never published (the same number as a tombstone, other content), stays."""
    from artfs.staging.overlay import ROOT, Staging
    a, b = published_and_cloned(s3, s3_bucket, tmp_path, two_versions)
    c = tmp_path / "C"
    cli(c, s3, "put", "ds", two_versions[1])              # C's v0: never on the remote
    with Store(str(b)) as sb:                              # B: a staging with changes on v1
        staging = Staging(sb._repo, "ds")
        ino = staging.create(ROOT, b"new", 0o644, os.getuid(), os.getgid()).ino
        with open(staging.open_data(ino, truncate=True), "r+b") as f:
            f.write(b"B's change")
    cli(a, s3, "rm", "ds:v0")
    cli(a, s3, "rm", "ds:v1")
    write(tmp_path / "v2" / "f", b"v2")
    cli(a, s3, "put", "ds", tmp_path / "v2")
    out = cli(b, s3, "pull").stdout.splitlines()
    assert out[0] == "dropped ds:v0 (deleted on remote origin)"
    assert out[1].startswith("ds:v1 (deleted on remote origin) kept here: staging of ds has uncommitted")
    assert "pulled ds:v2" in out
    with Store(str(b)) as sb:
        assert [v.version for v in sb.versions("ds")] == ["v1", "v2"]
        deletes = [e for e in sb.log("ds") if e["action"] == "version.delete"]
        assert [(e["version"], e["reason"]) for e in deletes] == [("v0", "deleted on remote origin")]
    assert cli(b, s3, "cat", "ds:v2/f").stdout == "v2"
    bind(c, s3, s3_bucket)
    assert "dropped" not in cli(c, s3, "pull").stdout
    with Store(str(c)) as cs:
        assert [v.version for v in cs.versions("ds")] == ["v0", "v2"]
        assert cs.get("ds:v0").digest != cs.get("ds:v2").digest
    assert cli(c, s3, "verify").returncode == 0


def test_gc_remote_dry_run_counts_what_gc_deletes_and_changes_nothing(s3, s3_bucket, tmp_path, two_versions):
    """A delete that died before its sweep (tombstones written: ds:v0 partly shared, other:v0 all
    its own), an orphan pack, an orphan index (third:v0's, its pack gone), a stale lock: the dry
    run counts each and the bytes,
    the bucket stays as it was, and the real gc then frees exactly those bytes."""
    a = tmp_path / "A"
    for d in two_versions:
        cli(a, s3, "put", "ds", d)
    bind(a, s3, s3_bucket)
    cli(a, s3, "push")
    write(tmp_path / "o" / "x", os.urandom(MiB))
    cli(a, s3, "put", "other", tmp_path / "o")
    packs = pack_keys(s3, s3_bucket)
    write(tmp_path / "t" / "x", os.urandom(MiB))
    cli(a, s3, "put", "third", tmp_path / "t")
    client = s3.boto3_client()
    [third] = set(pack_keys(s3, s3_bucket)) - set(packs)
    client.delete_object(Bucket=s3_bucket, Key=third)
    for name in ("ds", "other", "third"):
        key = f"{PREFIX}/versions/{name}/{0:010d}.json"
        record = json.loads(client.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
        put_object(s3, s3_bucket, key[len(PREFIX) + 1:], json.dumps({**record, "deleted": 1.0}).encode())
        if name != "ds":     # the delete also dropped the aliases of what it deleted
            client.delete_object(Bucket=s3_bucket, Key=f"{PREFIX}/aliases/{name}/latest.json")
    put_object(s3, s3_bucket, "packs/ab/ab" + "0" * 62, os.urandom(1000))
    put_object(s3, s3_bucket, "locks/push-0000.json", b"{}")
    time.sleep(1.1)          # S3 times have whole seconds: the orphans and lock must be older than gc's

    def bucket():
        listing = client.list_objects_v2(Bucket=s3_bucket, Prefix=PREFIX).get("Contents", [])
        return sorted((o["Key"], o["ETag"]) for o in listing)
    before = bucket()
    env = {"ARTFS_REMOTE_GRACE": "0", "ARTFS_REMOTE_LOCK_STALE": "0"}
    plan = json.loads(cli(a, s3, "gc", "--remote", "origin", "--dry-run", "--json", **env).stdout)
    assert {k: plan[k] for k in ("dead_packs", "repacked_packs", "orphan_packs", "orphan_indexes",
                                 "stale_locks")} == {"dead_packs": 1, "repacked_packs": 1, "orphan_packs": 1,
                                                     "orphan_indexes": 1, "stale_locks": 1}
    assert plan["dry_run"] and plan["freed_bytes"] >= 3 * MiB + 1000
    assert bucket() == before
    assert "nothing was deleted" in cli(a, s3, "gc", "--remote", "origin", "--dry-run", **env).stdout
    assert bucket() == before
    done = json.loads(cli(a, s3, "gc", "--remote", "origin", "--json", **env).stdout)
    assert done["freed_bytes"] == plan["freed_bytes"] and bucket() != before
    assert json.loads(cli(a, s3, "gc", "--remote", "origin", "--dry-run", "--json", **env).stdout)["freed_bytes"] == 0
    assert cli(a, s3, "verify", "--remote", "origin").returncode == 0


def test_alias_moves_and_deletes_on_the_remote_by_compare_and_swap(s3, s3_bucket, tmp_path, two_versions):
    """A sets ds:best on the remote too; B, which has not seen it, cannot move it (exit 5, one
    line, nothing changed anywhere) unless --force; A's delete from its stale v0 is refused the
    same way, then forced."""
    a, b = published_and_cloned(s3, s3_bucket, tmp_path, two_versions)
    client = s3.boto3_client()
    best = f"{PREFIX}/aliases/ds/best.json"

    def there():
        return json.loads(client.get_object(Bucket=s3_bucket, Key=best)["Body"].read())["version"]

    def here(store):
        with Store(str(store)) as st:
            return st._repo.aliases("ds").get("best")
    cli(a, s3, "alias", "ds:v0", "best")
    assert there() == 0 and here(a) == 0
    proc = cli(b, s3, "alias", "ds:v1", "best", check=False)
    assert proc.returncode == 5 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "set by another host" in proc.stderr
    assert there() == 0 and here(b) is None
    cli(b, s3, "alias", "ds:v1", "best", "--force")
    assert there() == 1 and here(b) == 1
    proc = cli(a, s3, "alias", "--delete", "ds", "best", check=False)
    assert proc.returncode == 5 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert there() == 1 and here(a) == 0
    cli(a, s3, "alias", "--delete", "ds", "best", "--force")
    assert "best.json" not in " ".join(keys(s3, s3_bucket, "aliases/")) and here(a) is None
    assert cli(a, s3, "verify", "--remote", "origin").returncode == 0
