"""The remote (docs/REMOTE.md) against real S3 servers: each test runs on Ceph RGW and on moto.

Stores talk to the bucket through the CLI in subprocesses (credentials in their environment, as
a user would give them) or through artfs.Store; servers are the session's (tests/conftest_s3.py).
"""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys

import pytest

from artfs import Store
from artfs.store.chunker import chunk_fd
from tests.helpers import run_cli, write
from tests.s3servers import free_port

pytest.importorskip("obstore", reason="needs obstore: scripts/setup-s3.sh installs it")

PREFIX = "team/ml"


def aws_env(s3, user: str = "full", **extra) -> dict:
    creds = s3.users[user]
    return dict(os.environ, AWS_ACCESS_KEY_ID=creds.access_key, AWS_SECRET_ACCESS_KEY=creds.secret_key,
                **extra)


def url(bucket: str) -> str:
    return f"s3://{bucket}/{PREFIX}"


def cli(store, s3, *args, user: str = "full", check: bool = True, **extra):
    return run_cli(store, *args, env=aws_env(s3, user, **extra), check=check)


def bind(store, s3, bucket, user: str = "full"):
    return cli(store, s3, "remote", "add", "origin", url(bucket), "--endpoint", s3.endpoint, "--allow-http",
               user=user)


def clone(dest, s3, bucket, user: str = "full", check: bool = True):
    proc = subprocess.run([sys.executable, "-m", "artfs", "clone", url(bucket), str(dest), "--endpoint",
                           s3.endpoint, "--allow-http"], capture_output=True, text=True,
                          env=aws_env(s3, user), timeout=600)
    assert proc.returncode == 0 or not check, proc.stderr
    return proc


def pack_keys(s3, bucket) -> list[str]:
    listing = s3.boto3_client().list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}/packs/")
    return sorted(o["Key"] for o in listing.get("Contents", []) if not o["Key"].endswith(".idx"))


@pytest.fixture
def src(tmp_path):
    """Two versions' sources: v1 changes one file and adds one; `big` and `copy` share chunks."""
    base = os.urandom(3 << 20)
    v0, v1 = tmp_path / "v0", tmp_path / "v1"
    for d in (v0, v1):
        write(d / "big", base)
        write(d / "sub" / "copy", base[:1 << 20] + b"tail")
        write(d / "sub" / "empty", b"")
    write(v1 / "big", base[:1 << 20] + os.urandom(4096) + base[(1 << 20) + 4096:])
    write(v1 / "new", b"added in v1")
    return v0, v1


def test_push_clone_pull_data_get_byte_exact(s3, s3_bucket, tmp_path, src):
    a = tmp_path / "A"
    for d in src:
        cli(a, s3, "put", "ds", d)
    bind(a, s3, s3_bucket)
    out = cli(a, s3, "push").stdout
    assert "pushed ds:v0" in out and "pushed ds:v1" in out and "2 versions pushed" in out
    sent = int(out.split("versions pushed, ")[1].split()[0])
    assert sent < (4 << 20) + (1 << 20)       # 8 MiB of files; shared chunks went up once
    again = json.loads(cli(a, s3, "push", "--json").stdout)
    assert (again["versions"], again["bytes_sent"]) == ([], 0)
    assert again["requests"]["PUT"] == 1          # its lock: no pack, no record
    assert cli(a, s3, "ls", "--remote", "origin").stdout.splitlines()[1].split() == ["ds", "dataset", "2", "v1", "-"]

    b = tmp_path / "B"
    cloned = run_cli(b, "clone", url(s3_bucket), "--endpoint", s3.endpoint, "--allow-http", "--json",
                     env=aws_env(s3), check=True)
    assert json.loads(cloned.stdout) == {"url": url(s3_bucket), "store": str(b), "remote": "origin"}
    assert cli(b, s3, "ls").stdout.splitlines()[1].split()[:3] == ["ds", "dataset", "2"]  # data read lazily
    out = json.loads(cli(b, s3, "pull", "--data", "--json").stdout)
    assert out["versions"] == ["ds:v0", "ds:v1"] and out["bytes_received"] > 0, out
    for n, d in enumerate(src):
        dest = tmp_path / f"out{n}"
        cli(b, s3, "get", f"ds:v{n}", dest)
        cmp = filecmp.dircmp(d, dest)
        assert not (cmp.diff_files or cmp.left_only or cmp.right_only)
        assert (dest / "big").read_bytes() == (d / "big").read_bytes()
        assert (dest / "sub" / "copy").read_bytes() == (d / "sub" / "copy").read_bytes()
    assert cli(b, s3, "verify").returncode == 0
    with Store(str(a)) as sa, Store(str(b)) as sb:
        assert [v.digest for v in sa.versions("ds")] == [v.digest for v in sb.versions("ds")]
        assert sb.get("ds:latest").version == "v1"


def bucket_bytes(s3, bucket, under: str = "packs/") -> int:
    listing = s3.boto3_client().list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}/{under}")
    return sum(o["Size"] for o in listing.get("Contents", []))


def test_incremental_put_uploads_only_what_changed(s3, s3_bucket, tmp_path, monkeypatch):
    """With a remote bound, put publishes the version; a 1%-changed file sends about 1% of it."""
    monkeypatch.setenv("ARTFS_REMOTE_PACK_SIZE", str(1 << 20))      # several packs per push
    for k, v in aws_env(s3).items():
        monkeypatch.setenv(k, v)
    data = bytearray(os.urandom(8 << 20))
    write(tmp_path / "d" / "f", bytes(data))
    with Store(str(tmp_path / "A")) as store:
        store.put("ds", str(tmp_path / "d"))
        store.remote_add("origin", url(s3_bucket), endpoint=s3.endpoint, allow_http=True)
        first = store.push()["bytes_sent"]
        packs, stored = len(pack_keys(s3, s3_bucket)), bucket_bytes(s3, s3_bucket)
        original = tmp_path / "v0-f"
        write(original, bytes(data))
        data[4 << 20:(4 << 20) + len(data) // 100] = os.urandom(len(data) // 100)   # 1% changed
        write(tmp_path / "d" / "f", bytes(data))
        v = store.put("ds", str(tmp_path / "d"))
        assert v.version == "v1" and store.push()["versions"] == []      # published by the put
        assert [x.version for x in store.remote_versions("origin", "ds")["ds"]] == ["v0", "v1"]
    assert packs >= 8 and first >= 8 << 20
    # the new chunks (the changed 1% and the chunks its edges cut) plus their file object, trees,
    # index entries and record: a few KiB over (content-defined chunks reach 256 KiB, so the
    # bytes around a change vary with the data)
    new_chunks = sum(n for _, n in chunk_bytes(tmp_path / "d" / "f") - chunk_bytes(original))
    assert new_chunks < len(data) * 0.10
    assert bucket_bytes(s3, s3_bucket) - stored < new_chunks + (32 << 10), (
        bucket_bytes(s3, s3_bucket), stored, new_chunks)
    assert len(pack_keys(s3, s3_bucket)) - packs <= 2


def chunk_bytes(path) -> set[tuple[bytes, int]]:
    """(content, size) of each content-defined chunk of the file at PATH, as put cuts them."""
    with open(path, "rb") as f:
        return {(bytes(c), len(c)) for c in chunk_fd(f.fileno())}


def run_all(cmds: list[list[str]], env: dict) -> list[tuple[int, str, str]]:
    """Run the commands at once (separate processes); (exit code, stdout, stderr) of each."""
    procs = [subprocess.Popen([sys.executable, "-m", "artfs", *map(str, c)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for c in cmds]
    out = [(p.wait(timeout=600), p.stdout.read(), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    return out


def test_two_hosts_putting_at_once_get_distinct_numbers(s3, s3_bucket, tmp_path):
    """Two stores bound to one remote put different content at once: create-only records give
    them v1 and v2 (none lost), each store holds its version under the remote's number, `latest`
    ends at v2, and a third host gets both byte-exact."""
    a, b = tmp_path / "A", tmp_path / "B"
    write(tmp_path / "v0" / "f", b"base")
    cli(a, s3, "put", "ds", tmp_path / "v0")
    bind(a, s3, s3_bucket)
    cli(a, s3, "push")
    clone(b, s3, s3_bucket)                       # metadata only: B has no local version of ds
    for store, text in ((a, b"from A"), (b, b"from B")):
        write(tmp_path / f"in{store.name}" / "f", text)
    results = run_all([["--store", s, "put", "ds", tmp_path / f"in{s.name}"] for s in (a, b)], aws_env(s3))
    assert [code for code, _, _ in results] == [0, 0], results
    labels = [out.strip() for _, out, _ in results]
    assert sorted(labels) == ["ds:v1", "ds:v2"], labels
    c = tmp_path / "C"
    clone(c, s3, s3_bucket)
    cli(c, s3, "pull", "--data")
    for store, label in zip((a, b), labels):
        with Store(str(store)) as mine, Store(str(c)) as theirs:
            number = label.split(":")[1]
            assert mine.get(f"ds:{number}").digest == theirs.get(f"ds:{number}").digest
            with theirs.get(f"ds:{number}").open("f") as f:
                assert f.read() == (b"from A" if store == a else b"from B")
    with Store(str(c)) as cs:
        assert cs.get("ds:latest").version == "v2"
    assert cli(c, s3, "verify", "--remote", "origin").returncode == 0


def test_push_numbers_a_local_version_on_the_remote(s3, s3_bucket, tmp_path):
    """A version made before binding, whose number the remote has with other content, is pushed
    under the remote's next number and renumbered here (it was refused before)."""
    a, b = tmp_path / "A", tmp_path / "B"
    write(tmp_path / "a" / "f", b"A's")
    write(tmp_path / "b" / "f", b"B's")
    cli(a, s3, "put", "ds", tmp_path / "a")
    bind(a, s3, s3_bucket)
    cli(a, s3, "push")
    cli(b, s3, "put", "ds", tmp_path / "b")       # B's own ds:v0, made unbound
    bind(b, s3, s3_bucket)
    out = cli(b, s3, "push").stdout
    assert "pushed ds:v1" in out
    with Store(str(b)) as sb:
        assert [v.version for v in sb.versions("ds")] == ["v1"]
        with sb.get("ds:latest").open("f") as f:
            assert f.read() == b"B's"
    assert "0 versions pushed" in cli(b, s3, "push").stdout
    rows = cli(a, s3, "ls", "--remote", "origin", "ds").stdout.splitlines()[1:]
    assert [r.split()[:2] for r in rows] == [["v0", "-"], ["v1", "latest"]]


def test_tampered_pack_is_corrupt_data_never_wrong_bytes(s3, s3_bucket, tmp_path, src):
    a, b = tmp_path / "A", tmp_path / "B"
    cli(a, s3, "put", "ds", src[0])
    bind(a, s3, s3_bucket)
    cli(a, s3, "push")
    (key,) = pack_keys(s3, s3_bucket)              # one pack: chunks first, trees last
    client = s3.boto3_client()
    body = bytearray(client.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
    body[10] ^= 0xFF                               # inside the first chunk
    client.put_object(Bucket=s3_bucket, Key=key, Body=bytes(body))
    clone(b, s3, s3_bucket)                        # metadata: ranged reads of other objects only
    proc = cli(b, s3, "pull", "--data", check=False)
    assert proc.returncode == 7, proc.stderr
    assert "fails its hash check" in proc.stderr and key.split("/")[-1] in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = cli(b, s3, "get", "ds", tmp_path / "out", check=False)   # recorded by the clone, read lazily:
    assert proc.returncode == 7 and "fails its hash check" in proc.stderr   # the damage, never its bytes


def test_readonly_user_clones_and_pulls_but_cannot_push(s3, s3_bucket, tmp_path, src):
    a, b = tmp_path / "A", tmp_path / "B"
    cli(a, s3, "put", "ds", src[0])
    bind(a, s3, s3_bucket)
    cli(a, s3, "push")
    clone(b, s3, s3_bucket, user="readonly")
    cli(b, s3, "pull", "--data", user="readonly")
    proc = cli(b, s3, "put", "ds", src[1], user="readonly", check=False)   # kept here, not published
    assert proc.returncode == 10, proc.stderr
    assert "ds:v1 was made here but not on remote origin" in proc.stderr and "artfs push ds" in proc.stderr
    assert "s3:PutObject" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert cli(b, s3, "ls", "ds").stdout.splitlines()[-1].split()[:2] == ["v1", "latest"]
    proc = cli(b, s3, "push", user="readonly", check=False)
    assert proc.returncode == 10, proc.stderr
    assert "s3:PutObject" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert cli(a, s3, "ls", "--remote", "origin", "ds").stdout.splitlines()[1].split()[:2] == ["v0", "latest"]
    assert len(cli(a, s3, "ls", "--remote", "origin", "ds").stdout.splitlines()) == 2   # no v1 there


def test_unreachable_endpoint_is_one_line_exit_11(tmp_path):
    port = free_port()                             # bound and closed again: nobody listens
    env = dict(os.environ, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y", ARTFS_REMOTE_RETRIES="2")
    run_cli(tmp_path / "A", "init", check=True)   # remote add binds an existing store
    proc = run_cli(tmp_path / "A", "remote", "add", "origin", "s3://bucket/p", "--endpoint",
                   f"http://127.0.0.1:{port}", "--allow-http", env=env)
    assert proc.returncode == 11, proc.stderr
    assert proc.stderr.startswith("artfs: error: remote s3://bucket/p") and len(proc.stderr.splitlines()) == 1
    assert run_cli(tmp_path / "A", "remote", "ls", env=env).stdout == ""   # nothing bound


def test_commit_takes_the_remotes_next_number_and_keeps_it_here(s3, s3_bucket, tmp_path, monkeypatch):
    """A commit of staging while another host published meanwhile: the version is created on the
    remote under the next free number, and this store holds it under that number too."""
    from artfs.staging.overlay import ROOT, Staging
    a, b = tmp_path / "A", tmp_path / "B"
    write(tmp_path / "v0" / "f", b"base")
    cli(a, s3, "put", "ds", tmp_path / "v0")
    bind(a, s3, s3_bucket)
    cli(a, s3, "push")
    clone(b, s3, s3_bucket)
    write(tmp_path / "b" / "f", b"B's v1")
    assert cli(b, s3, "put", "ds", tmp_path / "b").stdout.strip() == "ds:v1"     # A has not seen it
    for k, v in aws_env(s3).items():
        monkeypatch.setenv(k, v)
    with Store(str(a)) as sa:
        staging = Staging(sa._repo, "ds")
        ino = staging.create(ROOT, b"new", 0o644, os.getuid(), os.getgid()).ino
        with open(staging.open_data(ino, truncate=True), "r+b") as f:
            f.write(b"committed by A")
        v = sa.commit("ds", aliases=["best"])
        assert v.version == "v2" and [x.version for x in sa.versions("ds")] == ["v0", "v2"]
        assert sa.get("ds:latest").version == "v2" and sa.get("ds:best").version == "v2"
        there = {x.version: x for x in sa.remote_versions("origin", "ds")["ds"]}
        assert there["v2"].digest == v.digest and there["v2"].aliases == ["latest", "best"]
    assert cli(a, s3, "verify", "--remote", "origin").returncode == 0
    assert cli(a, s3, "verify").returncode == 0


@pytest.mark.slow
def test_sixteen_hosts_putting_at_once_get_sixteen_numbers(rgw, tmp_path):
    """16 committer processes with separate stores on one artifact (RGW: atomic create-only):
    16 distinct versions, latest at the highest, verify --remote clean."""
    bucket = rgw.make_bucket("t-sixteen-hosts")
    hosts = [tmp_path / f"h{i}" for i in range(16)]
    cli(hosts[0], rgw, "init")
    bind(hosts[0], rgw, bucket)
    for h in hosts[1:]:
        clone(h, rgw, bucket)
    for i, h in enumerate(hosts):
        write(tmp_path / f"in{i}" / "f", f"host {i}".encode())
    results = run_all([["--store", h, "put", "ds", tmp_path / f"in{i}"] for i, h in enumerate(hosts)],
                      aws_env(rgw))
    assert [code for code, _, _ in results] == [0] * 16, results
    labels = sorted((out.strip() for _, out, _ in results), key=lambda s: int(s.split(":v")[1]))
    assert labels == [f"ds:v{n}" for n in range(16)]
    rows = cli(hosts[0], rgw, "ls", "--remote", "origin", "ds").stdout.splitlines()[1:]
    assert len(rows) == 16 and rows[-1].split()[:2] == ["v15", "latest"]
    assert cli(hosts[0], rgw, "verify", "--remote", "origin").returncode == 0


def test_a_crash_between_the_remote_record_and_the_local_renumbering_is_repaired_by_push(
        s3, s3_bucket, tmp_path, monkeypatch):
    """The remote recorded A's version as v1 but A died before renumbering its local v0: the next
    push finds it there (same root and creation time), renumbers it here and uploads nothing."""
    from artfs.remote.sync import Remote, _upload_version
    a, b = tmp_path / "A", tmp_path / "B"
    write(tmp_path / "a" / "f", b"A's")
    write(tmp_path / "b" / "f", b"B's")
    cli(b, s3, "put", "ds", tmp_path / "b")
    bind(b, s3, s3_bucket)
    cli(b, s3, "push")                             # the remote's v0 is B's
    cli(a, s3, "put", "ds", tmp_path / "a")        # A's v0, made unbound
    bind(a, s3, s3_bucket)
    for k, v in aws_env(s3).items():
        monkeypatch.setenv(k, v)
    with Store(str(a)) as sa:                      # publish's first steps, then "the crash"
        remote = Remote.bound(sa._repo, "origin")
        v = sa._repo.resolve("ds", "v0")
        _upload_version(sa._repo, remote.objects, v.root)
        assert remote.catalog.allocate(v, at_least=v.number) == 1
    out = cli(a, s3, "push").stdout
    assert "0 versions pushed, 0 bytes sent" in out
    with Store(str(a)) as sa:
        assert [x.version for x in sa.versions("ds")] == ["v1"]
        assert sa.get("ds:v1").digest == v.digest and sa.get("ds:latest").version == "v1"
    assert cli(a, s3, "verify", "--remote", "origin").returncode == 0
