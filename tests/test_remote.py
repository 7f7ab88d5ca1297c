"""The remote (docs/REMOTE.md) against real S3 servers: each test runs on Ceph RGW and on moto.

Stores talk to the bucket through the CLI in subprocesses (credentials in their environment, as
a user would give them) or through artfs.Store; servers are the session's (tests/conftest_s3.py).
"""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys

import pytest

from artfs import Store
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
    assert "0 versions pushed, 0 bytes sent" in cli(a, s3, "push").stdout
    assert cli(a, s3, "ls", "--remote", "origin").stdout.splitlines()[1].split() == ["ds", "dataset", "2", "v1", "-"]

    b = tmp_path / "B"
    clone(b, s3, s3_bucket)
    assert cli(b, s3, "ls").stdout.splitlines()[1].split()[:3] == ["ds", "dataset", "2"]  # data read lazily
    out = cli(b, s3, "pull", "--data").stdout
    assert "pulled ds:v0" in out and "pulled ds:v1" in out
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


def test_incremental_push_uploads_only_what_changed(s3, s3_bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("ARTFS_REMOTE_PACK_SIZE", str(1 << 20))      # several packs per push
    for k, v in aws_env(s3).items():
        monkeypatch.setenv(k, v)
    data = bytearray(os.urandom(8 << 20))
    write(tmp_path / "d" / "f", bytes(data))
    with Store(str(tmp_path / "A")) as store:
        store.put("ds", str(tmp_path / "d"))
        store.remote_add("origin", url(s3_bucket), endpoint=s3.endpoint, allow_http=True)
        first = store.push()["bytes_sent"]
        packs = len(pack_keys(s3, s3_bucket))
        data[4 << 20:(4 << 20) + len(data) // 100] = os.urandom(len(data) // 100)   # 1% changed
        write(tmp_path / "d" / "f", bytes(data))
        store.put("ds", str(tmp_path / "d"))
        second = store.push()
    assert packs >= 8 and first >= 8 << 20
    assert second["versions"] == ["ds:v1"]
    assert second["bytes_sent"] < first * 0.05, (second["bytes_sent"], first)
    assert len(pack_keys(s3, s3_bucket)) - packs <= 2


def test_concurrent_pushes_of_one_number_one_wins(s3, s3_bucket, tmp_path):
    """Two stores push different v1s at once: create-only records let exactly one win; the other
    is refused naming the version, and `latest` ends at v1 with the winner's content."""
    a, b = tmp_path / "A", tmp_path / "B"
    write(tmp_path / "v0" / "f", b"base")
    cli(a, s3, "put", "ds", tmp_path / "v0")
    bind(a, s3, s3_bucket)
    cli(a, s3, "push")
    clone(b, s3, s3_bucket)
    cli(b, s3, "pull", "--data")
    for store, text in ((a, b"from A"), (b, b"from B")):
        write(tmp_path / store.name / "f", text)
        cli(store, s3, "put", "ds", tmp_path / store.name)
    env = aws_env(s3)
    procs = [subprocess.Popen([sys.executable, "-m", "artfs", "--store", str(s), "push"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in (a, b)]
    results = [(p.wait(timeout=600), p.stdout.read(), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 5], results
    winner = (a, b)[[code for code, _, _ in results].index(0)]
    loser_err = next(err for code, _, err in results if code == 5)
    assert "ds:v1" in loser_err and len(loser_err.strip().splitlines()) == 1
    c = tmp_path / "C"
    clone(c, s3, s3_bucket)
    cli(c, s3, "pull", "--data")
    with Store(str(winner)) as w, Store(str(c)) as cs:
        assert [v.digest for v in cs.versions("ds")] == [v.digest for v in w.versions("ds")]
        assert cs.get("ds:latest").version == "v1"


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
    cli(b, s3, "put", "ds", src[1], user="readonly")
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
