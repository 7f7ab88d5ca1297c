"""Pushing versions made before binding (remote/sync.py push), on Ceph RGW and moto."""

from __future__ import annotations

import json

import pytest

from artfs import Store
from tests.helpers import write
from tests.test_remote import bind, cli

pytest.importorskip("obstore", reason="needs obstore: scripts/setup-s3.sh installs it")


def test_push_renumbers_several_local_versions_past_the_local_numbers(s3, s3_bucket, tmp_path):
    """A has ds:v0 and ds:v1 made unbound; the remote already has another host's ds:v0. A's push
    numbers its v0 where neither the remote nor A has a version (not v1: A's own v1 is there),
    keeps the order (v0 before v1) and pushes both; the push's --json report counts requests."""
    a, b = tmp_path / "A", tmp_path / "B"
    for d in ("b", "a0", "a1"):
        write(tmp_path / d / "f", d.encode())
    cli(b, s3, "put", "ds", tmp_path / "b")
    bind(b, s3, s3_bucket)
    cli(b, s3, "push")
    cli(a, s3, "put", "ds", tmp_path / "a0")
    cli(a, s3, "put", "ds", tmp_path / "a1")
    bind(a, s3, s3_bucket)
    report = json.loads(cli(a, s3, "push", "--json").stdout)
    assert report["versions"] == ["ds:v2", "ds:v3"]
    assert report["requests"]["PUT"] >= 4 and report["requests"]["LIST"] >= 1    # 2 packs + 2 records
    with Store(str(a)) as sa:
        got = {}
        for v in sa.versions("ds"):
            with v.open("f") as f:
                got[v.version] = f.read()
        assert got == {"v2": b"a0", "v3": b"a1"}
    rows = cli(a, s3, "ls", "--remote", "origin", "ds").stdout.splitlines()[1:]
    assert [r.split()[:2] for r in rows] == [["v0", "-"], ["v2", "-"], ["v3", "latest"]]
    assert "0 versions pushed" in cli(a, s3, "push").stdout
