"""The remote under faults (docs/REMOTE.md, "Faults"), on Ceph RGW and moto through a
fault-injecting TCP proxy (tests/faultproxy.py): an endpoint down, resetting or stalling is one
line and exit 11 with nothing made anywhere; connections dropped mid-upload are retried a bounded
number of times, then exit 11 with nothing half-visible, and the push resumes; puts and pushes
killed with SIGKILL at random instants leave a remote that verifies, and a rerun completes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from urllib.parse import urlparse

import pytest

from artfs import Store
from tests.faultproxy import FaultProxy
from tests.helpers import write
from tests.test_remote import aws_env, cli, url

pytest.importorskip("obstore", reason="needs obstore: scripts/setup-s3.sh installs it")

FAST = dict(ARTFS_REMOTE_RETRIES="2", ARTFS_REMOTE_RETRY_TIMEOUT="3", ARTFS_REMOTE_TIMEOUT="2",
            ARTFS_REMOTE_CONNECT_TIMEOUT="1")


@pytest.fixture
def proxy(s3):
    target = urlparse(s3.endpoint)
    with FaultProxy(target.hostname, target.port) as p:
        yield p


def bind_via(store, s3, bucket, proxy):
    cli(store, s3, "remote", "add", "origin", url(bucket), "--endpoint", proxy.endpoint, "--allow-http")


def remote_versions(store, s3) -> list[str]:
    return [r.split()[0] for r in cli(store, s3, "ls", "--remote", "origin", "ds", check=False)
            .stdout.splitlines()[1:]]


@pytest.mark.parametrize("fault", ["refuse", "reset", "stall"])
def test_put_while_the_remote_fails_is_exit_11_and_makes_nothing(s3, s3_bucket, tmp_path, proxy, fault):
    a = tmp_path / "A"
    cli(a, s3, "init")
    bind_via(a, s3, s3_bucket, proxy)
    write(tmp_path / "d" / "f", os.urandom(1 << 20))
    proxy.mode = fault
    proc = cli(a, s3, "put", "ds", tmp_path / "d", check=False, **FAST)
    assert proc.returncode == 11, proc.stderr
    assert proc.stderr.startswith("artfs: error: remote s3://") and len(proc.stderr.splitlines()) == 1
    proxy.mode = "pass"
    assert cli(a, s3, "ls").stdout == ""                    # nothing made here
    assert remote_versions(a, s3) == []                     # nor there
    assert cli(a, s3, "put", "ds", tmp_path / "d").stdout.strip() == "ds:v0"
    assert remote_versions(a, s3) == ["v0"]


def test_connections_dropped_mid_upload_then_push_resumes(s3, s3_bucket, tmp_path, proxy):
    a = tmp_path / "A"
    write(tmp_path / "d" / "f", os.urandom(3 << 20))
    cli(a, s3, "put", "ds", tmp_path / "d")                 # made before binding
    bind_via(a, s3, s3_bucket, proxy)
    proxy.mode = "drop:300000"                               # every connection reset after 300 kB
    proc = cli(a, s3, "push", check=False, **FAST)
    assert proc.returncode == 11, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "after retries" in proc.stderr
    proxy.mode = "pass"
    assert remote_versions(a, s3) == []                     # nothing half-visible
    assert "pushed ds:v0" in cli(a, s3, "push").stdout
    assert cli(a, s3, "verify", "--remote", "origin").returncode == 0


def test_puts_killed_at_random_instants_leave_a_remote_that_verifies(s3, s3_bucket, tmp_path, monkeypatch):
    a = tmp_path / "A"
    cli(a, s3, "init")
    cli(a, s3, "remote", "add", "origin", url(s3_bucket), "--endpoint", s3.endpoint, "--allow-http")
    env = aws_env(s3, ARTFS_REMOTE_PACK_SIZE=str(256 << 10))   # many packs: many instants to die at
    rng = random.Random(os.getpid())
    for round in range(4):
        write(tmp_path / f"d{round}" / "f", os.urandom(4 << 20))
        proc = subprocess.Popen([sys.executable, "-m", "artfs", "--store", str(a), "put", "ds",
                                 str(tmp_path / f"d{round}")], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 2.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert cli(a, s3, "verify", "--remote", "origin").returncode == 0     # nothing half-visible
    cli(a, s3, "push")                                       # what the kills left local goes up
    cli(a, s3, "verify")
    for k, v in aws_env(s3).items():
        monkeypatch.setenv(k, v)
    with Store(str(a)) as sa:
        here = [(v.version, v.digest) for v in sa.versions("ds")] if "ds" in sa.artifacts() else []
        there = [(v.version, v.digest) for v in sa.remote_versions("origin").get("ds", [])]
    assert here == there
    cli(a, s3, "gc", "--remote", "origin", ARTFS_REMOTE_GRACE="0", ARTFS_REMOTE_LOCK_STALE="0")
    assert cli(a, s3, "verify", "--remote", "origin").returncode == 0


def test_a_slow_connection_is_not_an_error(s3, s3_bucket, tmp_path, proxy):
    """Bytes trickling through in 1 KiB steps: the put completes, published and verified."""
    a = tmp_path / "A"
    cli(a, s3, "init")
    bind_via(a, s3, s3_bucket, proxy)
    write(tmp_path / "d" / "f", os.urandom(200_000))
    proxy.mode = "slow"
    assert cli(a, s3, "put", "ds", tmp_path / "d").stdout.strip() == "ds:v0"
    assert remote_versions(a, s3) == ["v0"]
    assert cli(a, s3, "verify", "--remote", "origin").returncode == 0
