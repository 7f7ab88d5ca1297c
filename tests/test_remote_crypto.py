"""Encrypted remotes (docs/REMOTE.md "Encrypted remotes"): the remote of an encrypted store holds
only sealed objects, sealed records and opaque names; a clone with the passphrase reads it all,
a wrong one is exit 12. Each test runs on Ceph RGW and on moto (tests/conftest_s3.py); the bucket
is read behind artfs's back with boto3."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest

from artfs.store.ids import object_id
from tests.helpers import need_fuse, run_cli, tree_snapshot, write
from tests.test_lazy import lazy_mount, wait_for
from tests.test_remote import PREFIX, aws_env, url

pytest.importorskip("obstore", reason="needs obstore: scripts/setup-s3.sh installs it")

PASS = "correct horse battery staple"
ARTIFACT = "payroll-2026-7c1e"
ALIAS = "audited-9d2f"
NAME = "salaries-of-everyone-3b8a.csv"
LINE = b"artfs-remote-crypto: a plaintext line nobody may find in the bucket 51e0d7\n"
SMALL = b"a small file, one chunk, whose plain id must not be in the bucket 0c4e\n" * 100   # < 16 KiB


def cli(store, s3, *args, passphrase: str | None = PASS, check: bool = False):
    env = {k: v for k, v in aws_env(s3).items() if k not in ("ARTFS_PASSPHRASE", "ARTFS_KEY_FILE")}
    if passphrase is not None:
        env["ARTFS_PASSPHRASE"] = passphrase
    return run_cli(store, *args, env=env, check=check)


def clone(dest, s3, bucket, passphrase: str | None = PASS):
    env = {k: v for k, v in aws_env(s3).items() if k != "ARTFS_PASSPHRASE"}
    if passphrase is not None:
        env["ARTFS_PASSPHRASE"] = passphrase
    return subprocess.run([sys.executable, "-m", "artfs", "clone", url(bucket), str(dest), "--endpoint",
                           s3.endpoint, "--allow-http"], capture_output=True, text=True, env=env, timeout=600)


def bucket(s3, name: str) -> dict[str, bytes]:
    """Every object under the remote's prefix: key -> body."""
    client = s3.boto3_client()
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name, Prefix=PREFIX + "/"):
        for o in page.get("Contents", []):
            out[o["Key"]] = client.get_object(Bucket=name, Key=o["Key"])["Body"].read()
    return out


def make_input(d, random: bytes) -> None:
    write(d / NAME, LINE * 4000)                                      # ~300 kB, several chunks
    write(d / "deep" / "random-bits-e5a1.bin", random)
    write(d / "small-file-8f2d.txt", SMALL)


def cache_files(store) -> bytes:
    out = b""
    for path in glob.glob(os.path.join(str(store), "cache", "objects", "*")):
        with open(path, "rb") as f:
            out += f.read()
    return out


def assert_opaque(objects: dict[str, bytes], random: bytes) -> None:
    """No name, no plaintext and no plain id in any key or body; records and indexes sealed."""
    secrets = [ARTIFACT, ALIAS, NAME, "random-bits-e5a1", "small-file-8f2d", "later.txt", "deep",
               "salaries", "payroll", "audited"]
    plain_ids = [object_id(SMALL), object_id(LINE * 4000)]
    for key, body in objects.items():
        for s in secrets:
            assert s not in key and s.encode() not in body, (s, key)
        for oid in plain_ids:
            assert oid.hex() not in key and oid not in body, key
        assert LINE[:40] not in body and SMALL[:40] not in body, key
        for i in range(0, len(random) - 64, 50_000):
            assert random[i:i + 64] not in body, key
        if "/versions/" in key or "/aliases/" in key or key.endswith(".idx"):
            with pytest.raises(ValueError):                                 # sealed, not JSON
                json.loads(body)


def test_encrypted_remote_hides_names_and_bytes_and_clones_with_the_passphrase(s3, s3_bucket, tmp_path):
    random = os.urandom(400_000)
    src = tmp_path / "src"
    make_input(src, random)
    a = tmp_path / "A"
    cli(a, s3, "init", "--encrypt", check=True)
    cli(a, s3, "put", ARTIFACT, src, check=True)                              # v0, local: then pushed
    bound = cli(a, s3, "remote", "add", "origin", url(s3_bucket), "--endpoint", s3.endpoint, "--allow-http",
                "--encrypt", check=True)
    assert "remote origin" in bound.stdout
    assert "pushed " + ARTIFACT + ":v0" in cli(a, s3, "push", check=True).stdout
    write(src / "later.txt", LINE * 3)
    assert cli(a, s3, "put", ARTIFACT, src, check=True).stdout.strip() == f"{ARTIFACT}:v1"   # published
    cli(a, s3, "alias", f"{ARTIFACT}:v0", ALIAS, check=True)                  # compare-and-swap there

    # the bucket: no name, no plaintext, no plain id, in any key or body -------------------------
    objects = bucket(s3, s3_bucket)
    config = json.loads(objects[f"{PREFIX}/artfs-remote.json"])
    assert config["format"] == 2 and config["key"]["wrap"] == "passphrase"
    assert any("/packs/" in k for k in objects) and sum("/versions/" in k for k in objects) == 2
    assert sum("/aliases/" in k for k in objects) == 2                       # latest and ALIAS
    assert_opaque(objects, random)

    # a clone with the passphrase reads everything, lazily, byte-exact -------------------------
    b = tmp_path / "B"
    proc = clone(b, s3, s3_bucket)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((b / "ARTFS-STORE").read_text())["format"] == 3          # an encrypted store
    listing = cli(b, s3, "ls", ARTIFACT, check=True).stdout
    assert "v0" in listing and "v1" in listing and ALIAS in listing
    lazy = cli(b, s3, "cat", f"{ARTIFACT}:v0/{NAME}")                             # fetched on read
    assert lazy.returncode == 0 and lazy.stdout.encode() == LINE * 4000, lazy.stderr
    cached = cache_files(b)
    assert len(cached) > len(LINE) * 4000                                         # the chunks were kept
    assert LINE[:40] not in cached                                                # sealed in the cache
    assert cli(b, s3, "cache", "ls", check=True).returncode == 0
    cli(b, s3, "get", f"{ARTIFACT}:{ALIAS}", tmp_path / "out0", check=True)       # cached + fetched
    del_later = tree_snapshot(src)
    del_later.pop("later.txt")
    assert tree_snapshot(tmp_path / "out0") == del_later
    assert (tmp_path / "out0" / "deep" / "random-bits-e5a1.bin").read_bytes() == random
    cli(b, s3, "get", f"{ARTIFACT}:v1", tmp_path / "out1", check=True)
    assert tree_snapshot(tmp_path / "out1") == tree_snapshot(src)
    assert cli(b, s3, "verify").returncode == 0

    # numbering through sealed records: B's put is v2, A pulls it
    write(src / "from-b.txt", b"b")
    assert cli(b, s3, "put", ARTIFACT, src, check=True).stdout.strip() == f"{ARTIFACT}:v2"
    assert f"pulled {ARTIFACT}:v2" in cli(a, s3, "pull", check=True).stdout
    cli(a, s3, "get", f"{ARTIFACT}:v2", tmp_path / "out2", check=True)
    assert tree_snapshot(tmp_path / "out2") == tree_snapshot(src)
    assert cli(a, s3, "verify", "--remote", "origin").returncode == 0

    # a delete on the remote repacks v0's pack (its chunks live on in v1): sealed again, same bytes
    packs = {k for k in bucket(s3, s3_bucket) if "/packs/" in k}
    cli(a, s3, "rm", f"{ARTIFACT}:v0", "--force", check=True)
    objects = bucket(s3, s3_bucket)
    assert {k for k in objects if "/packs/" in k} - packs                                # a new pack
    assert_opaque(objects, random)
    assert cli(a, s3, "verify", "--remote", "origin").returncode == 0
    d = tmp_path / "D"
    assert clone(d, s3, s3_bucket).returncode == 0
    cli(d, s3, "get", f"{ARTIFACT}:v2", tmp_path / "out3", check=True)
    assert tree_snapshot(tmp_path / "out3") == tree_snapshot(src)

    # a wrong or missing passphrase: exit 12, one line, no store made
    for i, passphrase in enumerate(["wrong horse", None]):
        proc = clone(tmp_path / f"C{i}", s3, s3_bucket, passphrase)
        assert proc.returncode == 12, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert not (tmp_path / f"C{i}" / "ARTFS-STORE").exists()


def test_encrypted_and_plain_stores_and_remotes_never_mix(s3, s3_bucket, tmp_path):
    """Each mix that would put plaintext in an encrypted remote, or objects under another key, is
    refused with one line before anything is written; a key-file remote clones with its key file."""
    src = tmp_path / "src"
    write(src / NAME, LINE)
    keyfile = tmp_path / "key"
    keyfile.write_bytes(os.urandom(32))
    a = tmp_path / "A"
    run_cli(a, "--key-file", keyfile, "init", "--encrypt", env=aws_env(s3), check=True)
    add = ["remote", "add", "origin", url(s3_bucket), "--endpoint", s3.endpoint, "--allow-http"]
    run_cli(a, "--key-file", keyfile, *add, env=aws_env(s3), check=True)       # encrypted: no --encrypt needed
    run_cli(a, "--key-file", keyfile, "put", ARTIFACT, src, env=aws_env(s3), check=True)
    before = bucket(s3, s3_bucket)

    plain = tmp_path / "plain"
    cli(plain, s3, "init", check=True)
    other = tmp_path / "other"
    cli(other, s3, "init", "--encrypt", check=True)
    for store, args, code, says in [
            (plain, add, 2, "clone"),                                      # plain store, encrypted remote
            (plain, add[:3] + [url(s3_bucket) + "-new"] + add[4:] + ["--encrypt"], 2, "init --encrypt"),
            (other, add, 12, "another key")]:                              # encrypted, but another key
        proc = cli(store, s3, *args)
        assert proc.returncode == code and says in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    cli(plain, s3, *add[:3], url(s3_bucket) + "-plain", *add[4:], check=True)   # a plain remote
    proc = cli(other, s3, *add[:3], url(s3_bucket) + "-plain", *add[4:])
    assert proc.returncode == 2 and "not" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert bucket(s3, s3_bucket) == before

    env = {k: v for k, v in aws_env(s3).items() if k != "ARTFS_PASSPHRASE"}
    b = tmp_path / "B"
    proc = subprocess.run([sys.executable, "-m", "artfs", "--key-file", str(keyfile), "clone", url(s3_bucket),
                           str(b), "--endpoint", s3.endpoint, "--allow-http"], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = run_cli(b, "--key-file", keyfile, "cat", f"{ARTIFACT}:v0/{NAME}", env=env, check=True)
    assert out.stdout.encode() == LINE
    wrong = tmp_path / "wrong"
    wrong.write_bytes(os.urandom(32))
    proc = subprocess.run([sys.executable, "-m", "artfs", "--key-file", str(wrong), "clone", url(s3_bucket),
                           str(tmp_path / "C"), "--endpoint", s3.endpoint, "--allow-http"], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 12 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_lazy_mount_of_an_encrypted_clone_reads_and_follows_new_versions(s3, s3_bucket, tmp_path, monkeypatch,
                                                                          mount_factory):
    """The mount of an encrypted clone reads files fetched on first read, and its refresh finds a
    version another host published under its opaque name (the daemon maps names by their records)."""
    need_fuse()
    for k, v in aws_env(s3).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("ARTFS_PASSPHRASE", PASS)
    old, new = os.urandom(3 << 20), os.urandom(1 << 20)
    a = tmp_path / "A"
    cli(a, s3, "init", "--encrypt", check=True)
    cli(a, s3, "remote", "add", "origin", url(s3_bucket), "--endpoint", s3.endpoint, "--allow-http", check=True)
    write(tmp_path / "src" / NAME, old)
    cli(a, s3, "put", ARTIFACT, tmp_path / "src", check=True)
    b = tmp_path / "B"
    assert clone(b, s3, s3_bucket).returncode == 0
    m = lazy_mount(mount_factory, b, "--refresh", "0.5")
    with open(m.path(ARTIFACT, "latest", NAME), "rb") as f:
        assert f.read() == old
    write(tmp_path / "src" / NAME, new)
    cli(a, s3, "put", ARTIFACT, tmp_path / "src", check=True)
    wait_for(lambda: os.readlink(m.path(ARTIFACT, "latest")) == "v1", "latest moved to v1 on host B")
    with open(m.path(ARTIFACT, "v1", NAME), "rb") as f:
        assert f.read() == new


def test_a_moved_record_or_damaged_index_on_the_remote_is_an_error_never_other_data(s3, s3_bucket, tmp_path):
    """A version record copied over another number's key, and a flipped byte in a sealed pack
    index, each fail to open: exit 7 with one line naming the object, not a wrong version."""
    a = tmp_path / "A"
    cli(a, s3, "init", "--encrypt", check=True)
    cli(a, s3, "remote", "add", "origin", url(s3_bucket), "--endpoint", s3.endpoint, "--allow-http", check=True)
    for n in range(2):
        write(tmp_path / "src" / NAME, LINE * (n + 1))
        cli(a, s3, "put", ARTIFACT, tmp_path / "src", check=True)
    client = s3.boto3_client()
    objects = bucket(s3, s3_bucket)
    records = sorted(k for k in objects if "/versions/" in k)
    client.put_object(Bucket=s3_bucket, Key=records[0], Body=objects[records[1]])     # v1's record as v0
    proc = cli(a, s3, "ls", "--remote", "origin", ARTIFACT)
    assert proc.returncode == 7 and "authentication" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    client.put_object(Bucket=s3_bucket, Key=records[0], Body=objects[records[0]])     # restored
    assert cli(a, s3, "ls", "--remote", "origin", ARTIFACT).returncode == 0

    index = sorted(k for k in objects if k.endswith(".idx"))[0]
    body = bytearray(objects[index])
    body[len(body) // 2] ^= 1
    client.put_object(Bucket=s3_bucket, Key=index, Body=bytes(body))
    proc = clone(tmp_path / "B", s3, s3_bucket)                                    # reads every index
    assert proc.returncode == 7 and "authentication" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_change_passphrase_rewraps_the_remotes_copy_of_the_key(s3, s3_bucket, tmp_path):
    """After `artfs key change-passphrase` a new clone needs the new passphrase: the old one, which
    may have leaked, opens the remote's copy of the key no more (exit 12)."""
    a = tmp_path / "A"
    cli(a, s3, "init", "--encrypt", check=True)
    cli(a, s3, "remote", "add", "origin", url(s3_bucket), "--endpoint", s3.endpoint, "--allow-http", check=True)
    write(tmp_path / "src" / NAME, LINE)
    cli(a, s3, "put", ARTIFACT, tmp_path / "src", check=True)
    env = {k: v for k, v in aws_env(s3).items() if k != "ARTFS_KEY_FILE"}
    proc = run_cli(a, "key", "change-passphrase", env={**env, "ARTFS_PASSPHRASE": PASS,
                                                       "ARTFS_NEW_PASSPHRASE": "new passphrase"})
    assert proc.returncode == 0 and "remote origin" in proc.stdout, proc.stderr
    old = clone(tmp_path / "B", s3, s3_bucket, PASS)
    assert old.returncode == 12 and "wrong passphrase" in old.stderr, old.stderr
    new = clone(tmp_path / "C", s3, s3_bucket, "new passphrase")
    assert new.returncode == 0, new.stderr
    out = cli(tmp_path / "C", s3, "cat", f"{ARTIFACT}:v0/{NAME}", passphrase="new passphrase", check=True)
    assert out.stdout.encode() == LINE
    assert cli(a, s3, "put", ARTIFACT, tmp_path / "src", passphrase="new passphrase").returncode == 0


def test_mount_remote_url_on_a_fresh_path_clones_an_encrypted_remote(s3, s3_bucket, tmp_path, monkeypatch,
                                                                      mount_factory):
    """`artfs mount MNT --remote URL` where no store is yet makes the store a clone: of an encrypted
    remote, an encrypted store with the remote's key (the passphrase unwraps it), reading the files
    fetched on first read. A wrong passphrase: exit 12, one line, no store made."""
    need_fuse()
    for k, v in aws_env(s3).items():
        monkeypatch.setenv(k, v)
    data = os.urandom(2 << 20)
    a = tmp_path / "A"
    cli(a, s3, "init", "--encrypt", check=True)
    cli(a, s3, "remote", "add", "origin", url(s3_bucket), "--endpoint", s3.endpoint, "--allow-http", check=True)
    write(tmp_path / "src" / NAME, data)
    cli(a, s3, "put", ARTIFACT, tmp_path / "src", check=True)
    remote = ["--remote", url(s3_bucket), "--endpoint", s3.endpoint, "--allow-http"]
    os.mkdir(tmp_path / "mntw")
    wrong = cli(tmp_path / "W", s3, "mount", tmp_path / "mntw", *remote, passphrase="not the passphrase")
    assert wrong.returncode == 12 and len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr
    assert not os.path.exists(tmp_path / "W" / "ARTFS-KEY")
    monkeypatch.setenv("ARTFS_PASSPHRASE", PASS)
    b = tmp_path / "B"
    m = lazy_mount(mount_factory, b, *remote)
    with open(m.path(ARTIFACT, "latest", NAME), "rb") as f:
        assert f.read() == data
    assert os.path.exists(b / "ARTFS-KEY")
