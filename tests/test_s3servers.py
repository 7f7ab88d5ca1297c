"""The S3 semantics the artfs remote relies on, checked on real servers (Ceph RGW and moto, through
obstore, the Rust object_store client), and the fixtures that run those servers.

Each ``s3`` test runs once per server. Behaviour that differs between servers is asserted per
server, so a server that changes it fails here first. Atomicity is shown on RGW only: moto checks
preconditions without a lock.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

if os.environ.get("CI", "").lower() not in ("true", "1"):   # under CI a missing client fails the run
    pytest.importorskip("obstore", reason="needs obstore: scripts/setup-s3.sh installs it")
import obstore  # noqa: E402
from obstore.exceptions import AlreadyExistsError, BaseError, PermissionDeniedError, PreconditionError  # noqa: E402
from obstore.store import S3Store  # noqa: E402

from tests.s3servers import RGW_LOCK, MotoServer, RgwServer, ServerError, reap_orphans, start_time, unquoted_etag

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = bytes(range(256)) * 4100 + b"tail"      # 1 MiB and a bit: not a multiple of anything


def store(server, bucket, **options) -> S3Store:
    return S3Store(bucket, **server.obstore_options(**options))


def read(st, path) -> bytes:
    return obstore.get(st, path).bytes().to_bytes()


# -- conditional writes ----------------------------------------------------------------------------

def test_create_only_put_refuses_an_existing_key(s3, s3_bucket):
    st = store(s3, s3_bucket)
    obstore.put(st, "log/1", b"first", mode="create")
    with pytest.raises(AlreadyExistsError):
        obstore.put(st, "log/1", b"second", mode="create")
    assert read(st, "log/1") == b"first"


def test_compare_and_swap_put_succeeds_once_per_etag(s3, s3_bucket):
    st = store(s3, s3_bucket)
    v1 = obstore.put(st, "ref", b"v1")["e_tag"]
    v2 = obstore.put(st, "ref", b"v2", mode={"e_tag": unquoted_etag(v1)})["e_tag"]
    with pytest.raises(PreconditionError):      # a writer that still holds v1 lost the race
        obstore.put(st, "ref", b"v2-by-the-loser", mode={"e_tag": unquoted_etag(v1)})
    assert read(st, "ref") == b"v2"
    assert unquoted_etag(obstore.head(st, "ref")["e_tag"]) == unquoted_etag(v2)
    obstore.put(st, "ref", b"v3", mode={"e_tag": unquoted_etag(v2)})
    assert read(st, "ref") == b"v3"


def test_if_match_with_the_quoted_etag_per_server(s3, s3_bucket):
    """Why unquoted_etag exists: RGW compares If-Match without the quotes it returned."""
    st = store(s3, s3_bucket)
    etag = obstore.put(st, "ref", b"v1")["e_tag"]
    assert etag.startswith('"') and etag.endswith('"')
    if s3.kind == "rgw":
        with pytest.raises(PreconditionError, match="412"):
            obstore.put(st, "ref", b"v2", mode={"e_tag": etag})
        assert read(st, "ref") == b"v1"
    else:
        obstore.put(st, "ref", b"v2", mode={"e_tag": etag})
        assert read(st, "ref") == b"v2"


def test_if_match_on_a_missing_key_per_server(s3, s3_bucket):
    """obstore reports both as PreconditionError; the status differs: 412 on RGW, 404 on moto (and AWS)."""
    st = store(s3, s3_bucket)
    etag = unquoted_etag(obstore.put(st, "other", b"x")["e_tag"])
    with pytest.raises(PreconditionError, match={"rgw": "412", "moto": "404"}[s3.kind]):
        obstore.put(st, "missing", b"v1", mode={"e_tag": etag})
    with pytest.raises(FileNotFoundError):
        obstore.head(st, "missing")


def test_create_only_puts_racing_on_rgw_have_one_winner(rgw):
    """32 threads put the same new key with If-None-Match: * at once, 20 times: one wins each time,
    every other gets AlreadyExistsError, and the object holds the winner's bytes."""
    st = store(rgw, rgw.make_bucket("race"))
    writers, rounds = 32, 20
    barrier = threading.Barrier(writers)

    def attempt(key, i):
        barrier.wait()
        try:
            obstore.put(st, key, f"writer {i}".encode(), mode="create")
            return "won"
        except AlreadyExistsError:
            return "lost"

    with ThreadPoolExecutor(writers) as pool:
        for r in range(rounds):
            outcomes = list(pool.map(attempt, [f"commit/{r}"] * writers, range(writers)))
            assert outcomes.count("won") == 1, outcomes
            assert read(st, f"commit/{r}") == f"writer {outcomes.index('won')}".encode()


# -- reads, listings, deletes ----------------------------------------------------------------------

def test_ranged_gets_return_exactly_the_range(s3, s3_bucket):
    st = store(s3, s3_bucket)
    obstore.put(st, "pack", DATA)
    n = len(DATA)
    ranges = [(0, 1), (5, 1000), (n - 1, n), (4096, 300_001), (0, n)]
    for start, end in ranges:
        assert obstore.get_range(st, "pack", start=start, end=end).to_bytes() == DATA[start:end]
    got = obstore.get_ranges(st, "pack", starts=[s for s, _ in ranges], ends=[e for _, e in ranges])
    assert [b.to_bytes() for b in got] == [DATA[s:e] for s, e in ranges]
    assert obstore.get(st, "pack", options={"range": {"suffix": 10}}).bytes().to_bytes() == DATA[-10:]
    assert obstore.get(st, "pack", options={"range": {"offset": n - 7}}).bytes().to_bytes() == DATA[-7:]


def test_concurrent_ranged_gets_from_threads(s3, s3_bucket):
    st = store(s3, s3_bucket)
    obstore.put(st, "pack", DATA)
    spans = [(i * 9973, i * 9973 + 65536) for i in range(64)]
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda span: obstore.get_range(st, "pack", start=span[0], end=span[1]).to_bytes(),
                            spans))
    assert got == [DATA[s:e] for s, e in spans]


def test_listing_with_a_prefix(s3, s3_bucket):
    st = store(s3, s3_bucket)
    for key in ["a/1", "a/2", "a/b/3", "ab/4", "b/5"]:
        obstore.put(st, key, key.encode())
    assert sorted(m["path"] for m in obstore.list(st, prefix="a").collect()) == ["a/1", "a/2", "a/b/3"]
    listing = obstore.list_with_delimiter(st, prefix="a")
    assert sorted(m["path"] for m in listing["objects"]) == ["a/1", "a/2"]
    assert listing["common_prefixes"] == ["a/b"]
    assert {m["path"]: m["size"] for m in obstore.list(st).collect()} == {
        "a/1": 3, "a/2": 3, "a/b/3": 5, "ab/4": 4, "b/5": 3}


def test_listing_pages_past_1000_keys(s3, s3_bucket):
    st = store(s3, s3_bucket)
    keys = [f"packs/{i:04x}" for i in range(1003)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: obstore.put(st, k, b""), keys))
    assert sorted(m["path"] for m in obstore.list(st, prefix="packs").collect()) == keys


def test_delete(s3, s3_bucket):
    st = store(s3, s3_bucket)
    obstore.put(st, "gone", b"x")
    obstore.put(st, "kept", b"y")
    obstore.delete(st, "gone")
    with pytest.raises(FileNotFoundError):
        obstore.head(st, "gone")
    obstore.delete(st, "gone")                  # deleting a missing key is not an error
    assert [m["path"] for m in obstore.list(st).collect()] == ["kept"]


# -- users and TLS ---------------------------------------------------------------------------------

def test_readonly_user_reads_and_lists_but_cannot_write(s3, s3_bucket):
    st = store(s3, s3_bucket)
    obstore.put(st, "k", b"v1")
    ro = store(s3, s3_bucket, user="readonly")
    assert read(ro, "k") == b"v1"
    assert [m["path"] for m in obstore.list(ro).collect()] == ["k"]
    for attempt in (lambda: obstore.put(ro, "k", b"v2"),
                    lambda: obstore.put(ro, "new", b"v2", mode="create")):
        with pytest.raises(PermissionDeniedError, match="(?s)403 Forbidden.*AccessDenied"):
            attempt()
    # RGW refuses the whole DeleteObjects request (403); moto refuses each key inside a 200
    with pytest.raises(BaseError, match="AccessDenied"):
        obstore.delete(ro, "k")
    assert [(m["path"], read(st, m["path"])) for m in obstore.list(st).collect()] == [("k", b"v1")]


def test_tls_endpoint_needs_the_servers_ca(s3_tls):
    bucket = s3_tls.make_bucket("tls")
    obstore.put(store(s3_tls, bucket, tls=True), "k", b"over tls")
    assert s3_tls.tls_endpoint.startswith("https://")
    assert read(store(s3_tls, bucket, tls=True), "k") == b"over tls"
    with pytest.raises(BaseError, match="InvalidCertificate"):
        obstore.get(store(s3_tls, bucket, tls=True, trust_ca=False), "k")


# -- the fixtures themselves -----------------------------------------------------------------------

def inner_pytest(path) -> list[str]:
    """A pytest run of tests outside tests/ with this project's settings and the S3 fixtures."""
    return [sys.executable, "-m", "pytest", "-q", "-rfs", "-p", "tests.conftest_s3", "-p", "no:cacheprovider",
            "--rootdir", REPO, "-c", os.path.join(REPO, "pyproject.toml"), str(path)]


@pytest.fixture
def own_tmp(moto_installed, tmp_path, monkeypatch):
    """Servers made in this test keep their dirs in tmp_path, so a leaked one shows."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def assert_cleaned_up(server, tmp):
    assert server.pids and [p for p in server.pids if start_time(p) is not None] == []
    assert os.listdir(tmp) == []
    assert server.dir is None


def test_stop_leaves_no_process_and_no_dir(own_tmp):
    server = MotoServer().start()
    assert all(start_time(p) for p in server.pids) and os.path.isdir(server.dir)
    server.stop()
    assert_cleaned_up(server, own_tmp)
    server.stop()                               # stopping twice is harmless


def test_a_daemon_that_dies_at_start_fails_with_its_log_in_one_line(own_tmp):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = MotoServer(port=busy.getsockname()[1])
        with pytest.raises(ServerError) as failure:
            server.start()
    message = str(failure.value)
    assert "\n" not in message
    assert "moto_server exited with status" in message and "in use" in message
    assert_cleaned_up(server, own_tmp)


def test_a_start_past_its_deadline_fails_and_stops_what_it_started(own_tmp):
    server = MotoServer(timeout=0)              # past due before moto can even import
    with pytest.raises(ServerError, match=r"no HTTP 200 from http://127\.0\.0\.1:\d+/moto-api/ after 0 s"):
        server.start()
    assert_cleaned_up(server, own_tmp)


def test_servers_of_a_killed_owner_are_reaped_by_the_next_start(moto_installed):
    owner = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import os, signal, sys
        from tests.s3servers import MotoServer
        s = MotoServer().start()
        print(s.pids[0], s.dir, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert owner.returncode == -signal.SIGKILL, owner.stderr
    pid, directory = owner.stdout.split()
    assert start_time(int(pid)) is not None and os.path.isdir(directory)    # orphaned
    reap_orphans()
    assert start_time(int(pid)) is None
    assert not os.path.exists(directory)


def test_ctrl_c_in_pytest_stops_the_session_servers(moto_installed, tmp_path):
    test_file = tmp_path / "test_interrupted.py"
    marker = tmp_path / "started"
    test_file.write_text(textwrap.dedent(f"""
        import time
        def test_waits(moto):
            open({str(marker)!r}, "w").write(f"{{moto.pids[0]}} {{moto.dir}}")
            time.sleep(60)
        """))
    inner = subprocess.Popen(inner_pytest(test_file), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (marker.exists() and marker.read_text()) and inner.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        pid, directory = marker.read_text().split()
        inner.send_signal(signal.SIGINT)
        out, _ = inner.communicate(timeout=60)
    finally:
        if inner.poll() is None:
            os.killpg(inner.pid, signal.SIGKILL)
            inner.wait()
    assert "KeyboardInterrupt" in out, out
    assert start_time(int(pid)) is None, out
    assert not os.path.exists(directory)


def test_a_second_rgw_waits_for_the_machine_lock_then_says_who_holds_it(rgw):
    second = RgwServer(lock_wait=0.3)
    with pytest.raises(ServerError, match=f"{RGW_LOCK} still held after 0.3 s by pid {os.getpid()}"):
        second.start()
    assert second.pids == [] and second.dir is None


@pytest.mark.parametrize("ci, outcome, status", [("true", "1 error", 1), ("", "1 skipped", 0)])
def test_a_missing_server_fails_under_ci_and_skips_elsewhere(tmp_path, ci, outcome, status):
    (tmp_path / "test_needs_rgw.py").write_text("def test_needs_rgw(rgw):\n    pass\n")
    env = {**os.environ, "PATH": str(tmp_path), "CI": ci}     # no Ceph binary on this PATH
    inner = subprocess.run(inner_pytest(tmp_path), cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert outcome in inner.stdout and inner.returncode == status, inner.stdout
    assert "rgw: needs Ceph (ceph-authtool, monmaptool, ceph-mon" in inner.stdout
    assert ("CI=true and rgw: needs Ceph" in inner.stdout) == (ci == "true")
