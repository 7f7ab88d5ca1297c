"""Reference files (docs/SEMANTICS.md "Reference files"): versions whose bytes stay at their source.

Sources are real: files in tmp dirs, buckets on the session's RGW and moto (tests/conftest_s3.py),
and web servers started here (one honouring Range, one ignoring it, as Python's simple server
does). Each source is changed or deleted behind artfs's back; a read must then fail (exit 7, EIO
in a real mount with one log line naming the URL), never return other bytes.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import hashlib
import http.server
import os
import re
import ssl
import subprocess
import sys
import threading
import time

import pytest

from artfs import Store
from artfs.catalog.objects import Reference
from artfs.repo.facade import Repo
from artfs.repo.references import block_size
from tests.helpers import run_cli, write
from tests.s3servers import make_tls

MiB = 1 << 20


def cli(store, *args, env=None):
    return run_cli(store, *args, env=env)


def ok(store, *args, env=None) -> str:
    proc = run_cli(store, *args, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def cat(store, spec: str, env=None) -> subprocess.CompletedProcess:
    """``artfs cat SPEC`` with its stdout as bytes."""
    return subprocess.run([sys.executable, "-m", "artfs", "--store", str(store), "cat", spec],
                          capture_output=True, env=env, timeout=600)


def refused(store, spec: str, original: bytes, message: str, env=None) -> None:
    """``cat SPEC`` exits 7 with MESSAGE, having written at most a prefix of ORIGINAL (the blocks
    checked before the changed one), never other bytes."""
    proc = cat(store, spec, env)
    assert proc.returncode == 7 and message in proc.stderr.decode(), proc.stderr
    assert original.startswith(proc.stdout)


def get_bytes(store, spec: str, env=None) -> bytes:
    with Store(store).get(spec.split("/", 1)[0]).open(spec.split("/", 1)[1]) as f:
        return f.read()


def references_of(store, name: str) -> dict[str, Reference]:
    """path -> the Reference object of each file of NAME's latest version."""
    out = {}
    with Repo(str(store)) as repo:
        v = repo.resolve(name)
        stack = [("", v.root)]
        while stack:
            prefix, tid = stack.pop()
            for e in repo.tree(tid).entries:
                path = prefix + e.name.decode()
                if e.kind == "d":
                    stack.append((path + "/", e.ref))
                elif e.kind == "f":
                    fobj = repo.file(e.ref)
                    if isinstance(fobj, Reference):
                        out[path] = fobj
    return out


def same_size_change(path) -> None:
    """Overwrite one byte in the middle: same size, other bytes."""
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0xFF]))


@pytest.fixture
def srcdir(tmp_path):
    d = tmp_path / "src"
    write(d / "big.bin", os.urandom(3 * MiB + 12345))
    write(d / "sub" / "small.txt", b"hello reference\n")
    write(d / "sub" / "empty", b"")
    return d


# file:// -----------------------------------------------------------------------------------------
def test_file_reference_stores_no_bytes_and_reads_them_back(tmp_path, srcdir):
    store = tmp_path / "store"
    assert ok(store, "put", "ds", "--reference", f"file://{srcdir}").strip() == "ds:v0"
    du = Store(str(store)).du("ds")
    assert du["store"]["stored_bytes"] == 0 and du["store"]["chunks"] == 0     # no bytes stored
    assert du["store"]["logical_bytes"] == 3 * MiB + 12345 + 16                # the files' size
    assert du["artifacts"][0]["versions"][0]["unique_bytes"] == 0
    v = Store(str(store)).get("ds")
    assert v.size == 3 * MiB + 12345 + 16                   # the logical size is the files'
    out = tmp_path / "out"
    ok(store, "get", "ds", out)
    for rel in ("big.bin", "sub/small.txt", "sub/empty"):
        assert (out / rel).read_bytes() == (srcdir / rel).read_bytes(), rel
    assert ok(store, "cat", "ds:v0/sub/small.txt") == "hello reference\n"
    refs = references_of(store, "ds")
    big = refs["big.bin"]
    assert big.record["sha256"] == hashlib.sha256((srcdir / "big.bin").read_bytes()).hexdigest()
    assert big.record["url"] == f"file://{srcdir}/big.bin" and big.record["size"] == 3 * MiB + 12345
    assert big.record["validators"]["mtime_ns"] == os.stat(srcdir / "big.bin").st_mtime_ns
    assert len(big.blocks) == 4 and not big.chunks
    # a ranged read across a block boundary
    with v.open("big.bin") as f:
        f.seek(MiB - 10)
        assert f.read(30) == (srcdir / "big.bin").read_bytes()[MiB - 10:MiB + 20]
    assert "0 problems" in ok(store, "verify")


def test_reput_unchanged_or_touched_makes_no_version_changed_bytes_do(tmp_path, srcdir):
    store = tmp_path / "store"
    url = f"file://{srcdir}"
    ok(store, "put", "ds", "--reference", url)
    proc = cli(store, "put", "ds", "--reference", url)
    assert proc.returncode == 0 and "no changes" in proc.stderr and proc.stdout.strip() == "ds:v0"
    for touched in ("big.bin", "sub/empty"):                          # only the mtime: same bytes
        os.utime(srcdir / touched, ns=(1, 10**18))
    proc = cli(store, "put", "ds", "--reference", url)
    assert "no changes" in proc.stderr, proc.stderr
    assert "0 problems" in ok(store, "verify")               # the checksum decides, not the mtime
    write(srcdir / "sub" / "small.txt", b"edited\n")
    assert ok(store, "put", "ds", "--reference", url, "--alias", "edited").strip() == "ds:v1"
    diff = ok(store, "diff", "ds:v0", "ds:edited")
    assert "sub/small.txt" in diff and "big.bin" not in diff
    # Python API likewise; a plain path means file://
    s = Store(str(store))
    v, created = s.put_ex("ds", str(srcdir), reference=True)
    assert (v.version, created) == ("v1", False)
    assert s.put("other", str(srcdir / "sub"), reference=True, checksum=False).version == "v0"
    assert "sha256" not in references_of(store, "other")["small.txt"].record


def test_file_changed_or_deleted_is_exit_7_never_other_bytes(tmp_path, srcdir):
    store = tmp_path / "store"
    big = (srcdir / "big.bin").read_bytes()
    ok(store, "put", "ds", "--reference", f"file://{srcdir}")
    same_size_change(srcdir / "big.bin")
    proc = cli(store, "get", "ds", tmp_path / "out")
    assert proc.returncode == 7, proc.stderr
    assert f"reference source changed since put: file://{srcdir}/big.bin" in proc.stderr
    assert not (tmp_path / "out").exists()                  # complete or not at all
    refused(store, "ds:v0/big.bin", big, "reference source changed since put")
    assert ok(store, "cat", "ds:v0/sub/small.txt") == "hello reference\n"   # others still read
    proc = cli(store, "verify")
    assert proc.returncode == 7
    assert f"ds:v0 big.bin: reference source changed since put: file://{srcdir}/big.bin" in proc.stdout
    os.unlink(srcdir / "sub" / "small.txt")
    refused(store, "ds:v0/sub/small.txt", b"", f"reference source is gone: file://{srcdir}/sub/small.txt")
    proc = cli(store, "verify", "ds")
    assert proc.returncode == 7 and f"sub/small.txt: reference source is gone: file://{srcdir}" in proc.stdout


def test_no_checksum_records_what_the_source_reports_and_refuses_a_rewrite(tmp_path, srcdir):
    store = tmp_path / "store"
    ok(store, "put", "ds", "--reference", f"file://{srcdir}", "--no-checksum")
    refs = references_of(store, "ds")
    assert "sha256" not in refs["big.bin"].record and not refs["big.bin"].blocks
    assert refs["big.bin"].record["validators"]["mtime_ns"] == os.stat(srcdir / "big.bin").st_mtime_ns
    big = (srcdir / "big.bin").read_bytes()
    assert get_bytes(store, "ds/big.bin") == big
    same_size_change(srcdir / "big.bin")                    # a write moves the mtime
    refused(store, "ds:v0/big.bin", b"", "reference source changed since put")
    proc = cli(store, "verify")
    assert proc.returncode == 7 and "big.bin: reference source changed since put" in proc.stdout


def test_cache_keeps_the_bytes_in_the_store(tmp_path, srcdir):
    store = tmp_path / "store"
    ok(store, "put", "ds", "--reference", f"file://{srcdir}", "--cache")
    with Repo(str(store)) as repo:
        assert repo.stats()["stored_bytes"] == 3 * MiB + 12345 + 16
    assert references_of(store, "ds")["big.bin"].chunks
    want = (srcdir / "big.bin").read_bytes()
    os.unlink(srcdir / "big.bin")
    assert get_bytes(store, "ds/big.bin") == want           # served from the store's chunks
    assert "0 problems" in ok(store, "verify")


def test_whole_file_reads_of_references_and_stored_files_together(tmp_path, srcdir):
    """Repo.read_whole (the mount's read-ahead of small files) of a version mixing references and
    stored files: each file gets its own bytes or None (a reference's source is not read ahead),
    never another file's (a reference has no chunks in the one store read)."""
    store = tmp_path / "store"
    ok(store, "put", "ds", "--reference", f"file://{srcdir}")
    stored = tmp_path / "stored"
    write(stored / "small.txt", b"stored bytes, longer than the reference\n")
    ok(store, "put", "plain", stored)
    with Repo(str(store)) as repo:
        ref = repo.tree(repo.tree(repo.resolve("ds").root).lookup(b"sub").ref).lookup(b"small.txt")
        plain = repo.tree(repo.resolve("plain").root).lookup(b"small.txt")
        fids = [ref.ref, plain.ref, ref.ref]
        want = [(srcdir / "sub" / "small.txt").read_bytes(), (stored / "small.txt").read_bytes()] * 2
        got = repo.read_whole(repo.files(fids))
        assert len(got) == 3 and got[1] == want[1]
        for data, expect in zip(got, want):
            assert data is None or bytes(data) == expect


def test_block_size_keeps_at_most_16384_block_hashes():
    """1 MiB blocks up to 16 GiB, then doubled as often as needed: never more than 16,384."""
    assert [block_size(n) for n in (0, 1, MiB + 1, 16384 * MiB)] == [MiB] * 4
    assert block_size(16384 * MiB + 1) == 2 * MiB and block_size(16384 * 2 * MiB + 1) == 4 * MiB
    for size in (16384 * MiB + 1, 10**13, 2**50 + 3):
        bsize = block_size(size)
        assert -(-size // bsize) <= 16384 < -(-size // (bsize // 2))


def test_put_errors_are_one_line_with_their_exit_codes(tmp_path, srcdir):
    store = tmp_path / "store"
    cases = [(("put", "ds"), 2, "give PATH or --reference URL"),
             (("put", "ds", srcdir, "--no-checksum"), 2, "go with --reference"),
             (("put", "ds", "--reference", f"file://{tmp_path}/nothing"), 4, "cannot reference"),
             (("put", "ds", "--reference", "http://192.0.2.1/x.bin"), 2, "refusing plain http"),
             (("put", "ds", "--reference", "ftp://host/x"), 2, "cannot reference ftp://")]
    for args, code, message in cases:
        proc = cli(store, *args)
        assert (proc.returncode, len(proc.stderr.splitlines())) == (code, 1), (args, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
    assert Store(str(store)).artifacts() == []


# the mount -----------------------------------------------------------------------------------------
def preads_exact(path, data: bytes) -> None:
    """Reads of PATH at block boundaries, across them and at the end give DATA's bytes."""
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset, n in ((0, 4096), (MiB - 7, 200_000), (3 * MiB, 20_000), (len(data) - 5, 100)):
            assert os.pread(fd, n, offset) == data[offset:offset + n], offset
    finally:
        os.close(fd)


def changed_source_is_eio_logged_once(mount_factory, store, path: tuple, url: str, reads: int = 1) -> None:
    """On a fresh mount of STORE (no page cache of the old bytes), each of READS reads of PATH is
    EIO, and the daemon's log has exactly one line naming URL as changed."""
    m = mount_factory(store=store).start()
    for _ in range(reads):
        with pytest.raises(OSError) as e:
            with open(m.path(*path), "rb") as f:
                f.read()
        assert e.value.errno == errno.EIO
    m.stop()
    lines = [ln for ln in m.log_text().splitlines() if url in ln]
    assert len(lines) == 1 and "reference source changed since put" in lines[0], m.log_text()


@pytest.mark.fuse
def test_mount_reads_through_copies_up_and_fails_with_eio_naming_the_url(tmp_path, srcdir, mount_factory):
    store = tmp_path / "store"
    ok(store, "put", "ds", "--reference", f"file://{srcdir}")
    m = mount_factory().start()
    big = (srcdir / "big.bin").read_bytes()
    preads_exact(m.path("ds", "v0", "big.bin"), big)
    assert os.stat(m.path("ds", "v0", "big.bin")).st_size == len(big)
    # staging: an edit copies the reference up (reading it through); the commit mixes both kinds
    with open(m.path("ds", "staging", "sub", "small.txt"), "ab") as f:
        f.write(b"appended\n")
    write(m.path("ds", "staging", "local.txt"), b"stored here\n")
    assert ok(store, "commit", "ds").strip() == "ds:v1"
    refs = references_of(store, "ds")
    assert set(refs) == {"big.bin", "sub/empty"}            # the edited file is stored now
    with open(m.path("ds", "v1", "sub", "small.txt"), "rb") as f:
        assert f.read() == b"hello reference\nappended\n"
    # behind artfs's back: a file never read through this mount changes, another vanishes
    write(srcdir / "late.bin", b"")
    same_size_change(srcdir / "big.bin")
    os.unlink(srcdir / "sub" / "empty")
    with open(m.path("ds", "v1", "sub", "small.txt"), "rb") as f:   # stored: unaffected
        assert f.read() == b"hello reference\nappended\n"
    m.stop()
    changed_source_is_eio_logged_once(mount_factory, store, ("ds", "v1", "big.bin"), f"file://{srcdir}/big.bin", 2)


# s3:// ---------------------------------------------------------------------------------------------
def aws_env(s3) -> dict:
    creds = s3.users["full"]
    return dict(os.environ, AWS_ACCESS_KEY_ID=creds.access_key, AWS_SECRET_ACCESS_KEY=creds.secret_key)


def test_s3_reference_overwritten_or_deleted_behind_artfs(s3, s3_bucket, tmp_path):
    pytest.importorskip("obstore")
    client, env = s3.boto3_client(), aws_env(s3)
    data = {"data/train/a.bin": os.urandom(2 * MiB + 3), "data/train/b.txt": b"bee\n",
            "data/val/c.bin": os.urandom(5000), "elsewhere": b"not under the prefix"}
    for key, body in data.items():
        client.put_object(Bucket=s3_bucket, Key=key, Body=body)
    store = tmp_path / "store"
    url = f"s3://{s3_bucket}/data"
    assert ok(store, "put", "ds", "--reference", url, "--endpoint", s3.endpoint, env=env).strip() == "ds:v0"
    ok(store, "put", "nock", "--reference", url, "--endpoint", s3.endpoint, "--no-checksum", env=env)
    ok(store, "put", "one", "--reference", f"{url}/val/c.bin", "--endpoint", s3.endpoint, env=env)
    refs = references_of(store, "ds")
    assert set(refs) == {"train/a.bin", "train/b.txt", "val/c.bin"}
    assert refs["train/b.txt"].record["validators"]["etag"]
    assert references_of(store, "one")["c.bin"].record["url"] == f"{url}/val/c.bin"
    with Repo(str(store)) as repo:
        assert repo.stats()["stored_bytes"] == 0
    out = tmp_path / "out"
    ok(store, "get", "ds", out, env=env)
    for key, body in data.items():
        if key.startswith("data/"):
            assert (out / key[5:]).read_bytes() == body, key
    assert "no changes" in cli(store, "put", "ds", "--reference", url, "--endpoint", s3.endpoint, env=env).stderr
    # overwritten with other bytes of the same size; deleted
    a = bytearray(data["data/train/a.bin"])
    a[MiB + 1] ^= 0xFF
    client.put_object(Bucket=s3_bucket, Key="data/train/a.bin", Body=bytes(a))
    client.delete_object(Bucket=s3_bucket, Key="data/val/c.bin")
    for name in ("ds", "nock"):
        refused(store, f"{name}:v0/train/a.bin", data["data/train/a.bin"][:MiB] if name == "ds" else b"",
                f"reference source changed since put: {url}/train/a.bin", env)
        refused(store, f"{name}:v0/val/c.bin", b"", f"reference source is gone: {url}/val/c.bin", env)
        assert ok(store, "cat", f"{name}:v0/train/b.txt", env=env) == "bee\n"
    proc = cli(store, "verify", env=env)
    assert proc.returncode == 7
    assert f"ds:v0 train/a.bin: reference source changed since put: {url}/train/a.bin" in proc.stdout
    assert f"nock:v0 val/c.bin: reference source is gone: {url}/val/c.bin" in proc.stdout
    assert cli(store, "get", "one", tmp_path / "out1", env=env).returncode == 7


def test_s3_folder_markers_are_directories_and_a_key_that_is_also_one_is_refused(s3, s3_bucket, tmp_path):
    """Zero-byte folder markers (KEY/, as S3 consoles make them: listed without their slash) are
    not files: put skips them (their keys make the directory). A key that is also the directory
    of other keys cannot be both in a version: refused, one line, nothing made."""
    pytest.importorskip("obstore")
    client, env = s3.boto3_client(), aws_env(s3)
    empties = {f"m/many/{i}": b"" for i in range(40)}   # told from markers by HEADs sent together
    for key, body in {"m/dir/": b"", "m/dir/x": b"x", "m/empty/": b"", "m/zero": b"",
                      "c/a": b"file a", "c/a/b": b"b", **empties}.items():
        client.put_object(Bucket=s3_bucket, Key=key, Body=body)
    store = tmp_path / "store"
    ok(store, "put", "m", "--reference", f"s3://{s3_bucket}/m", "--endpoint", s3.endpoint, env=env)
    assert set(references_of(store, "m")) == {"dir/x", "zero", *(k[2:] for k in empties)}
    assert cat(store, "m:v0/dir/x", env).stdout == b"x"
    assert "0 problems" in ok(store, "verify", env=env)
    proc = cli(store, "put", "c", "--reference", f"s3://{s3_bucket}/c", "--endpoint", s3.endpoint, env=env)
    assert (proc.returncode, len(proc.stderr.splitlines())) == (4, 1), proc.stderr
    assert f"s3://{s3_bucket}/c/a is both an object and the directory of others" in proc.stderr
    with Store(str(store)) as s:
        assert s.artifacts() == ["m"]


@pytest.mark.fuse
def test_mount_reads_an_s3_reference_through_and_fails_with_eio_once_it_changes(s3, s3_bucket, tmp_path, monkeypatch,
                                                                              mount_factory):
    """The mount serves an s3:// reference by ranged reads of the object, byte-exact at any offset
    (no bytes stored); once the object is overwritten behind artfs, a fresh mount's read is EIO
    with one log line naming the URL, never the new bytes."""
    pytest.importorskip("obstore")
    for k, v in aws_env(s3).items():
        monkeypatch.setenv(k, v)
    big = os.urandom(3 * MiB + 11)
    client = s3.boto3_client()
    client.put_object(Bucket=s3_bucket, Key="ref/big.bin", Body=big)
    store, url = tmp_path / "store", f"s3://{s3_bucket}/ref"
    ok(store, "put", "ds", "--reference", url, "--endpoint", s3.endpoint)
    m = mount_factory(store=store).start()
    preads_exact(m.path("ds", "v0", "big.bin"), big)
    m.stop()
    changed = bytearray(big)
    changed[2 * MiB] ^= 0xFF
    client.put_object(Bucket=s3_bucket, Key="ref/big.bin", Body=bytes(changed))
    changed_source_is_eio_logged_once(mount_factory, store, ("ds", "v0", "big.bin"), f"{url}/big.bin")


def test_reference_versions_push_and_pull_as_metadata(s3, s3_bucket, tmp_path, srcdir):
    """A store bound to a remote publishes a reference version; a clone reads it from the source."""
    pytest.importorskip("obstore")
    env = aws_env(s3)
    a, b = tmp_path / "A", tmp_path / "B"
    ok(a, "init")
    ok(a, "remote", "add", "origin", f"s3://{s3_bucket}/remote", "--endpoint", s3.endpoint, env=env)
    ok(a, "put", "ds", "--reference", f"file://{srcdir}", env=env)       # published as it is made
    ok(b, "clone", f"s3://{s3_bucket}/remote", b, "--endpoint", s3.endpoint, env=env)
    ok(b, "pull", env=env)
    assert get_bytes(b, "ds/big.bin") == (srcdir / "big.bin").read_bytes()
    with Repo(str(b)) as repo:
        assert repo.stats()["stored_bytes"] == 0
    assert "0 problems" in ok(b, "verify", env=env)


# http(s):// ------------------------------------------------------------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves the files of ``server.root``; Range (and If-Match on its ETag) only when
    ``server.ranges``. Logs each request's Range header in ``server.seen``."""

    def log_message(self, *args):
        pass

    def _file(self):
        path = os.path.join(self.server.root, self.path.lstrip("/"))
        try:
            with open(path, "rb") as f:
                return f.read(), os.stat(path)
        except OSError:
            self.send_error(404)
            return None, None

    def _head(self, status: int, length: int, st, extra=()):
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
        if self.server.ranges:
            self.send_header("ETag", f'"{st.st_size}-{st.st_mtime_ns}"')
            self.send_header("Accept-Ranges", "bytes")
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()

    def do_HEAD(self):
        data, st = self._file()
        if data is not None:
            self._head(200, len(data), st)

    def do_GET(self):
        data, st = self._file()
        if data is None:
            return
        rng = self.headers.get("Range")
        self.server.seen.append(rng)
        if self.server.ranges:
            match = self.headers.get("If-Match")
            if match and match != f'"{st.st_size}-{st.st_mtime_ns}"':
                self.send_error(412)
                return
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
            if m:
                start = int(m[1])
                end = int(m[2]) + 1 if m[2] else len(data)
                self._head(206, end - start, st, [("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")])
                self.wfile.write(data[start:end])
                return
        self._head(200, len(data), st)
        self.wfile.write(data)


def _serve(root, ranges: bool, tls: tuple[str, str] | None = None):
    os.makedirs(root, exist_ok=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.root, server.ranges, server.seen = str(root), ranges, []
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    with serving(server):
        yield server


@contextlib.contextmanager
def serving(server: http.server.HTTPServer):
    """SERVER answering in a thread of its own until the block ends, then closed."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(params=[True, False], ids=["ranges", "no-ranges"])
def web(request, tmp_path):
    yield from _serve(tmp_path / "www", request.param)


@pytest.fixture
def web_tls(tmp_path):
    """An https server whose certificate a CA made here signs: (server, CA file)."""
    ca, cert, key = make_tls(str(tmp_path))
    for server in _serve(tmp_path / "www", True, (cert, key)):
        yield server, ca


def test_https_reference_trusts_the_ca_bundle_it_is_given(web_tls, tmp_path):
    server, ca = web_tls
    data = os.urandom(300_000)
    write(os.path.join(server.root, "w.bin"), data)
    store = tmp_path / "store"
    url = f"https://127.0.0.1:{server.server_address[1]}/w.bin"
    proc = cli(store, "put", "w", "--reference", url)
    assert proc.returncode == 11 and "CERTIFICATE_VERIFY_FAILED" in proc.stderr, proc.stderr
    ok(store, "put", "w", "--reference", url, "--ca-bundle", ca)
    assert references_of(store, "w")["w.bin"].record["ca_bundle"] == ca
    assert get_bytes(store, "w/w.bin") == data


def test_s3_reference_over_tls_with_a_ca_bundle(s3_tls, tmp_path):
    pytest.importorskip("obstore")
    bucket = s3_tls.make_bucket(f"tls-references-{os.getpid()}-{time.monotonic_ns()}")
    body = os.urandom(70_000)
    s3_tls.boto3_client().put_object(Bucket=bucket, Key="d/x.bin", Body=body)
    store, env = tmp_path / "store", aws_env(s3_tls)
    ok(store, "put", "t", "--reference", f"s3://{bucket}/d", "--endpoint", s3_tls.tls_endpoint,
       "--ca-bundle", s3_tls.ca_file, env=env)
    assert cat(store, "t:v0/x.bin", env).stdout == body


def test_http_reference_with_and_without_range_support(web, tmp_path):
    data = os.urandom(2 * MiB + 777)
    write(os.path.join(web.root, "model.bin"), data)
    store = tmp_path / "store"
    url = f"http://127.0.0.1:{web.server_address[1]}/model.bin"
    ok(store, "put", "m", "--reference", url)
    assert references_of(store, "m")["model.bin"].record["size"] == len(data)
    web.seen.clear()
    with Store(str(store)).get("m").open("model.bin") as f:
        f.seek(MiB + 5)
        assert f.read(1000) == data[MiB + 5:MiB + 1005]     # the second block only
    assert web.seen == [f"bytes={MiB}-{len(data) - 1}"], web.seen   # one request: the blocks read
    out = tmp_path / "out"
    ok(store, "get", "m", out)
    assert (out / "model.bin").read_bytes() == data
    web.seen.clear()
    ok(store, "put", "nock", "--reference", url, "--no-checksum")
    assert web.seen == []                                   # put read nothing (a HEAD only)
    assert get_bytes(store, "nock/model.bin") == data
    changed = bytearray(data)
    changed[10] ^= 1
    st = os.stat(os.path.join(web.root, "model.bin"))
    write(os.path.join(web.root, "model.bin"), bytes(changed))
    os.utime(os.path.join(web.root, "model.bin"), ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**9))
    for name in ("m", "nock"):
        refused(store, f"{name}:v0/model.bin", b"", f"reference source changed since put: {url}")
    proc = cli(store, "verify")
    assert proc.returncode == 7 and proc.stdout.count(f"reference source changed since put: {url}") == 2
    os.unlink(os.path.join(web.root, "model.bin"))
    refused(store, "m:v0/model.bin", b"", f"reference source is gone: {url}")
