"""In transit (issue 11): https endpoints with a private CA (`remote add --ca-bundle`), on RGW's and
moto's TLS endpoints; plain http refused unless loopback or --allow-http."""

from __future__ import annotations

import os

import pytest

from tests.helpers import write
from tests.test_remote import PREFIX, cli

pytest.importorskip("obstore", reason="needs obstore: scripts/setup-s3.sh installs it")


def test_https_with_a_private_ca_bundle(s3_tls, tmp_path):
    bucket = s3_tls.make_bucket(f"t-tls-{os.getpid()}-{s3_tls.kind}".lower())
    a, b = tmp_path / "A", tmp_path / "B"
    cli(a, s3_tls, "init")
    url = f"s3://{bucket}/{PREFIX}"
    proc = cli(a, s3_tls, "remote", "add", "origin", url, "--endpoint", s3_tls.tls_endpoint, check=False,
               ARTFS_REMOTE_RETRIES="0")
    assert proc.returncode == 11, proc.stderr                 # the server's CA is not trusted
    assert len(proc.stderr.splitlines()) == 1 and cli(a, s3_tls, "remote", "ls").stdout == ""
    cli(a, s3_tls, "remote", "add", "origin", url, "--endpoint", s3_tls.tls_endpoint, "--ca-bundle", s3_tls.ca_file)
    assert f"ca_bundle={s3_tls.ca_file}" in cli(a, s3_tls, "remote", "ls").stdout
    write(tmp_path / "d" / "f", os.urandom(100_000))
    assert cli(a, s3_tls, "put", "ds", tmp_path / "d").stdout.strip() == "ds:v0"
    cli(b, s3_tls, "init")
    cli(b, s3_tls, "remote", "add", "origin", url, "--endpoint", s3_tls.tls_endpoint, "--ca-bundle", s3_tls.ca_file)
    cli(b, s3_tls, "pull", "--data")
    cli(b, s3_tls, "get", "ds:v0", tmp_path / "out")
    assert (tmp_path / "out" / "f").read_bytes() == (tmp_path / "d" / "f").read_bytes()
    bad = tmp_path / "not-a-ca.pem"
    bad.write_text("hello")
    proc = cli(b, s3_tls, "remote", "add", "other", url, "--endpoint", s3_tls.tls_endpoint, "--ca-bundle", bad,
               check=False)
    assert proc.returncode == 4 and "holds no PEM certificate" in proc.stderr


def test_plain_http_only_to_loopback_unless_allowed(s3, s3_bucket, tmp_path):
    a = tmp_path / "A"
    cli(a, s3, "init")
    proc = cli(a, s3, "remote", "add", "far", f"s3://{s3_bucket}/p", "--endpoint", "http://192.0.2.1:9000",
               check=False)
    assert proc.returncode == 2, proc.stderr
    assert "refusing plain http to 192.0.2.1" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert cli(a, s3, "remote", "ls").stdout == ""
    loopback = s3.endpoint.replace("127.0.0.1", "localhost")
    cli(a, s3, "remote", "add", "origin", f"s3://{s3_bucket}/p", "--endpoint", loopback)   # no --allow-http
    assert "allow-http" not in cli(a, s3, "remote", "ls").stdout
