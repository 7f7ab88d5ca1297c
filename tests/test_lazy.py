"""The lazy mount of a remote (docs/REMOTE.md "Lazy mount"), against Ceph RGW and moto.

"Hosts" are stores in their own directories used by their own processes (the CLI and mount
daemons in subprocesses); the servers are the session's (tests/conftest_s3.py). Every byte read is
compared with the source.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from artfs.mount.readahead import WINDOW_MIN
from artfs.repo.facade import Repo
from tests.helpers import need_fuse, write
from tests.s3servers import free_port
from tests.test_readahead import in_page_cache, wait_until
from tests.test_remote import PREFIX, aws_env, bind, cli, clone, url

pytest.importorskip("obstore", reason="needs obstore: scripts/setup-s3.sh installs it")

MiB = 1 << 20


@pytest.fixture
def creds(s3, monkeypatch):
    """The S3 user's credentials in this process's environment (mount daemons inherit them)."""
    for k, v in aws_env(s3).items():
        monkeypatch.setenv(k, v)


def published(tmp_path, s3, bucket, files: dict[str, bytes], name: str = "ds"):
    """Host A: a store with FILES as NAME:v0, pushed to the bucket. Returns its path."""
    a = tmp_path / "A"
    for rel, data in files.items():
        write(tmp_path / "src" / rel, data)
    cli(a, s3, "put", name, tmp_path / "src")
    bind(a, s3, bucket)
    cli(a, s3, "push")
    return a


def pack_bytes(s3, bucket) -> int:
    listing = s3.boto3_client().list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}/packs/")
    return sum(o["Size"] for o in listing.get("Contents", []))


def cache_chunks(store) -> int:
    with Repo(str(store)) as repo:
        cache = repo.db.objects.cache(create=False)
        return 0 if cache is None else cache.stats()["chunks"]


def test_clone_reads_lazily_byte_exact(s3, s3_bucket, tmp_path):
    """After a clone (metadata only) `cat` and `get` read through the remote, byte-exact; the chunks
    fetched stay in the cache, and verify accepts the store."""
    big = random.randbytes(6 * MiB)
    a = published(tmp_path, s3, s3_bucket, {"big": big, "sub/small": b"small file"})
    b = tmp_path / "B"
    clone(b, s3, s3_bucket)
    assert cli(b, s3, "ls").stdout.splitlines()[1].split()[0] == "ds"        # the version is there at once
    assert cache_chunks(b) == 0
    assert cli(b, s3, "cat", "ds:v0/sub/small").stdout == "small file"
    cli(b, s3, "get", "ds", tmp_path / "out")
    assert (tmp_path / "out" / "big").read_bytes() == big
    assert cache_chunks(b) > 0
    assert cli(b, s3, "verify").returncode == 0
    del a


def lazy_mount(mount_factory, store, *options):
    """A started foreground mount of STORE with extra mount OPTIONS."""
    m = mount_factory(store=store)
    m.extra = list(options)
    cmd = [sys.executable, "-m", "artfs", "--store", m.store, "mount", m.mnt, "--foreground", *options]
    with open(m.log, "ab") as log:
        m.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (os.path.ismount(m.mnt) and m._info_pid() == m.proc.pid):
        assert m.proc.poll() is None, m.log_text()
        assert time.monotonic() < deadline, m.log_text()
        time.sleep(0.05)
    return m


def cached_ids(store, ids) -> list[bool]:
    with Repo(str(store)) as repo:
        return repo.db.objects.cache().present(list(ids))


def file_chunks(store, ref: str, path: str) -> list[bytes]:
    with Repo(str(store)) as repo:
        v = repo.resolve(*ref.split(":"))
        tree = repo.tree(v.root)
        for part in path.split("/")[:-1]:
            tree = repo.tree(tree.lookup(part.encode()).ref)
        return repo.file(tree.lookup(path.split("/")[-1].encode()).ref).chunks


def test_mount_random_reads_byte_exact(s3, s3_bucket, tmp_path, creds, mount_factory):
    """A fresh store mounted with --remote URL lists the remote's versions and serves random
    reads of files it never downloaded, byte for byte."""
    need_fuse()
    files = {f"d{i}/f{j}": random.randbytes(random.randrange(0, 3 * MiB)) for i in range(3) for j in range(4)}
    published(tmp_path, s3, s3_bucket, files)
    b = tmp_path / "B"
    m = lazy_mount(mount_factory, b, "--remote", url(s3_bucket), "--endpoint", s3.endpoint, "--allow-http")
    assert sorted(os.listdir(m.path("ds"))) == ["latest", "staging", "v0"]
    assert sorted(os.listdir(m.path("ds", "latest", "d1"))) == ["f0", "f1", "f2", "f3"]
    rng = random.Random(1)
    for _ in range(200):
        rel, data = rng.choice(sorted(files.items()))
        offset = rng.randrange(0, len(data) + 1)
        size = rng.randrange(0, 300_000)
        with open(m.path("ds", "v0", rel), "rb") as f:
            f.seek(offset)
            assert f.read(size) == data[offset:offset + size], (rel, offset, size)
    for rel, data in files.items():
        with open(m.path("ds", "latest", rel), "rb") as f:
            assert f.read() == data, rel


def test_eviction_under_small_cache_keeps_open_files(s3, s3_bucket, tmp_path, creds, mount_factory):
    """With a 4 MiB cache, reading 12 MiB of other files evicts, but never the chunks of a file
    held open; the cache stays within 5% of its limit and every byte read is right."""
    need_fuse()
    files = {"held": random.randbytes(MiB), **{f"other{i}": random.randbytes(2 * MiB) for i in range(6)}}
    published(tmp_path, s3, s3_bucket, files)
    b = tmp_path / "B"
    clone(b, s3, s3_bucket)
    m = lazy_mount(mount_factory, b, "--cache-size", "4M")
    held_chunks = file_chunks(b, "ds:v0", "held")
    with open(m.path("ds", "v0", "held"), "rb") as held:
        assert held.read() == files["held"]
        for i in range(6):
            with open(m.path("ds", "v0", f"other{i}"), "rb") as f:
                assert f.read() == files[f"other{i}"]
        assert all(cached_ids(b, held_chunks))
        held.seek(0)
        assert held.read() == files["held"]
    first_other = file_chunks(b, "ds:v0", "other0")
    assert not all(cached_ids(b, first_other))          # evicted: the cache is bounded
    with Repo(str(b)) as repo:
        cache = repo.db.objects.cache()
        assert cache.stats()["bytes"] <= 4 * MiB * 1.05
        assert all(p is None for p in cache.objects.check(cache.ids()))


def wait_for(predicate, what: str, seconds: float = 120):
    """Poll until PREDICATE holds (a liveness wait with a generous bound, not a timing claim)."""
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)


def test_version_pushed_by_another_host_appears_and_open_file_keeps_its_version(
        s3, s3_bucket, tmp_path, creds, mount_factory):
    """Host A pushes v1 while host B's mount runs: B shows v1 and moves latest to it by itself
    (the daemon's refresh), and a file B opened through latest before keeps reading v0."""
    need_fuse()
    old, new = random.randbytes(3 * MiB), random.randbytes(3 * MiB)
    a = published(tmp_path, s3, s3_bucket, {"f": old})
    b = tmp_path / "B"
    clone(b, s3, s3_bucket)
    m = lazy_mount(mount_factory, b, "--refresh", "0.5")
    with open(m.path("ds", "latest", "f"), "rb") as f:
        assert f.read(MiB) == old[:MiB]
        write(tmp_path / "src" / "f", new)
        cli(a, s3, "put", "ds", tmp_path / "src")
        cli(a, s3, "push")
        wait_for(lambda: os.readlink(m.path("ds", "latest")) == "v1", "latest moved to v1 on host B")
        assert f.read() == old[MiB:]
    with open(m.path("ds", "latest", "f"), "rb") as f:
        assert f.read() == new


def test_sigkill_mid_fetch_leaves_a_cache_verify_accepts(s3, s3_bucket, tmp_path, creds, mount_factory):
    """SIGKILL of the daemon while a big file is being fetched (read slowly, so read-ahead keeps the
    fetches within 32 MiB of the reader): the store verifies clean, every
    cached chunk hashes right, and a new mount reads the file byte for byte."""
    need_fuse()
    big = random.randbytes(96 * MiB)
    published(tmp_path, s3, s3_bucket, {"big": big})
    b = tmp_path / "B"
    clone(b, s3, s3_bucket)
    m = lazy_mount(mount_factory, b)
    slow_reader = ("import sys, time\nwith open(sys.argv[1], 'rb') as f:\n"
                   "    while f.read(1 << 20):\n        time.sleep(0.05)\n")
    reader = subprocess.Popen([sys.executable, "-c", slow_reader, m.path("ds", "v0", "big")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)   # read-ahead: <= 32 MiB ahead
    try:
        wait_for(lambda: os.path.exists(b / "cache" / "objects") and cache_chunks(b) > 16
                 or reader.poll() is not None, "chunks cached")
        os.kill(m.proc.pid, signal.SIGKILL)
        m.proc.wait()
    finally:
        reader.wait(timeout=60)
    m.stop()
    assert cache_chunks(b) < len(file_chunks(b, "ds:v0", "big")), "killed too late to be mid-fetch"
    proc = cli(b, s3, "verify", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with Repo(str(b)) as repo:
        cache = repo.db.objects.cache()
        assert all(p is None for p in cache.objects.check(cache.ids()))
    m2 = lazy_mount(mount_factory, b)
    with open(m2.path("ds", "v0", "big"), "rb") as f:
        assert f.read() == big


def test_remote_down_cached_reads_work_uncached_fail_with_eio(s3, s3_bucket, tmp_path, creds, mount_factory,
                                                              monkeypatch):
    """With the remote unreachable, a file read before is served from the cache; another fails
    with EIO within the configured timeout, and the daemon's log says why in one line."""
    need_fuse()
    files = {"seen": random.randbytes(2 * MiB), "unseen": random.randbytes(2 * MiB)}
    published(tmp_path, s3, s3_bucket, files)
    b = tmp_path / "B"
    clone(b, s3, s3_bucket)
    seen = subprocess.run([sys.executable, "-m", "artfs", "--store", str(b), "cat", "ds:v0/seen"],
                          capture_output=True, env=aws_env(s3), check=True).stdout
    assert seen == files["seen"]                                     # now cached
    remotes = json.loads((b / "remotes.json").read_text())        # the server goes away:
    remotes["origin"]["endpoint"] = f"http://127.0.0.1:{free_port()}"   # nothing listens there
    (b / "remotes.json").write_text(json.dumps(remotes))
    monkeypatch.setenv("ARTFS_LAZY_TIMEOUT", "5")
    monkeypatch.setenv("ARTFS_REMOTE_RETRIES", "1")
    m = lazy_mount(mount_factory, b, "--refresh", "1")
    with open(m.path("ds", "v0", "seen"), "rb") as f:
        assert f.read() == files["seen"]
    with pytest.raises(OSError) as e:
        with open(m.path("ds", "v0", "unseen"), "rb") as f:
            f.read()
    assert e.value.errno == errno.EIO
    log = m.log_text()
    assert "fetching" in log and "failed" in log, log


def test_pull_data_prefills_cache_ls_and_clear(s3, s3_bucket, tmp_path):
    """`cache ls` shows each version's bytes as local, cached or remote; `pull NAME:REF --data`
    moves them all into the cache (reads then need no remote); `cache clear` empties it."""
    files = {"a": random.randbytes(3 * MiB), "b": random.randbytes(MiB)}
    published(tmp_path, s3, s3_bucket, files)
    b = tmp_path / "B"
    clone(b, s3, s3_bucket)

    def where():
        info = json.loads(cli(b, s3, "cache", "ls", "--json").stdout)
        (row,) = info["versions"]
        return info["cache"], (row["local"], row["cached"], row["remote"])
    total = sum(map(len, files.values()))
    assert where()[1] == (0, 0, total)
    assert "pulled ds:v0" in cli(b, s3, "pull", "ds:v0", "--data").stdout
    stats, split = where()
    assert split == (0, total, 0) and stats["bytes"] == total
    remotes = json.loads((b / "remotes.json").read_text())
    good = remotes["origin"]["endpoint"]
    remotes["origin"]["endpoint"] = f"http://127.0.0.1:{free_port()}"   # the remote goes away
    (b / "remotes.json").write_text(json.dumps(remotes))
    cli(b, s3, "get", "ds:v0", tmp_path / "out")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == files
    assert "cache cleared" in cli(b, s3, "cache", "clear").stdout
    assert where()[1] == (0, 0, total)
    remotes["origin"]["endpoint"] = good
    (b / "remotes.json").write_text(json.dumps(remotes))
    assert cli(b, s3, "verify").returncode == 0


def test_staging_and_commit_on_a_lazy_mount_upload_only_new_chunks(s3, s3_bucket, tmp_path, creds,
                                                                   mount_factory):
    """On a lazy mount, staging changes commit as locally; the commit (published on the bound
    remote) uploads only the new chunks (not the lazily read ones), and a third host reads the new
    version byte-exact."""
    need_fuse()
    files = {"big": random.randbytes(6 * MiB), "small": b"old small"}
    published(tmp_path, s3, s3_bucket, files)
    b = tmp_path / "B"
    clone(b, s3, s3_bucket)
    m = lazy_mount(mount_factory, b)
    added = random.randbytes(MiB)
    with open(m.path("ds", "staging", "small"), "ab") as f:        # copied up: fetched first
        f.write(b" + new")
    with open(m.path("ds", "staging", "added"), "wb") as f:
        f.write(added)
    before = pack_bytes(s3, s3_bucket)
    assert m.cli("commit", "ds").stdout.strip() == "ds:v1"          # published on the bound remote
    sent = pack_bytes(s3, s3_bucket) - before
    assert MiB <= sent < MiB + (256 << 10)                        # the new chunks, not big's 6 MiB
    c = tmp_path / "C"
    clone(c, s3, s3_bucket)
    cli(c, s3, "get", "ds:v1", tmp_path / "out")
    assert (tmp_path / "out" / "big").read_bytes() == files["big"]
    assert (tmp_path / "out" / "small").read_bytes() == b"old small + new"
    assert (tmp_path / "out" / "added").read_bytes() == added


def test_cache_never_exceeds_its_limit_and_survives_a_reopen(tmp_path):
    """A batch bigger than the whole cache keeps only what fits; the entries and their recency
    order survive closing and reopening (a remount); the oldest go first after that."""
    from artfs.store.backend import Obj
    from artfs.store.cache import ChunkCache
    from artfs.store.ids import object_id, strong_digest

    def chunks(n, seed):
        rng = random.Random(seed)
        return [Obj(object_id(d), strong_digest(d), d) for d in (rng.randbytes(64 << 10) for _ in range(n))]
    cache = ChunkCache(str(tmp_path), limit=4 * MiB)
    first = chunks(160, 1)                                  # 10 MiB at once
    cache.put_many(first)
    assert cache.stats()["bytes"] <= 4 * MiB
    kept = cache.ids()
    assert kept == [o.id for o in first[-len(kept):]] and len(kept) >= 60
    cache.close()
    cache = ChunkCache(str(tmp_path))                       # the limit is kept too
    assert cache.ids() == kept and cache.stats()["limit"] == 4 * MiB
    cache.put_many(chunks(8, 2))
    assert cache.ids()[:len(kept) - 8] == kept[8:]          # the 8 oldest made room
    assert all(p is None for p in cache.objects.check(cache.ids()))
    cache.close()


MMAP_READER = """import ctypes, mmap, sys
with open(sys.argv[1], "rb") as f:
    m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
m.madvise(mmap.MADV_RANDOM)     # no readahead: each fault is one synchronous FUSE read
sys.stdout.buffer.write(m[:])
"""


def via(proxy, store) -> None:
    """STORE reaches its origin through PROXY (tests/faultproxy.py) from now on."""
    remotes = json.loads((store / "remotes.json").read_text())
    remotes["origin"]["endpoint"] = proxy.endpoint
    (store / "remotes.json").write_text(json.dumps(remotes))


def mount_via(proxy, mount_factory, store, monkeypatch, **env):
    """A lazy mount of STORE reaching its origin through PROXY, with ENV set for its daemon and
    no refresh during the test."""
    via(proxy, store)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return lazy_mount(mount_factory, store, "--refresh", "3600")


def waiting_in_fuse(pid: int) -> bool:
    """Whether process PID is blocked on an answer of the FUSE daemon."""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            where = f.read()
    except OSError:
        return False
    return "fuse" in where or where == "request_wait_answer"


def test_cached_reads_do_not_queue_behind_stalled_remote_reads(s3, s3_bucket, tmp_path, creds, mount_factory,
                                                              monkeypatch):
    """With the remote stalled and 20 uncached reads waiting for it in the mount (more than its
    16 worker threads; synchronous reads, so the kernel's background limit does not hold them),
    a read of a cached file still completes; once the remote answers, every read returns its bytes."""
    need_fuse()
    from urllib.parse import urlparse
    from tests.faultproxy import FaultProxy
    files = {"seen": random.randbytes(MiB), **{f"u{i}": random.randbytes(256 << 10) for i in range(20)}}
    published(tmp_path, s3, s3_bucket, files)
    b = tmp_path / "B"
    clone(b, s3, s3_bucket)
    seen = subprocess.run([sys.executable, "-m", "artfs", "--store", str(b), "cat", "ds:v0/seen"],
                          capture_output=True, env=aws_env(s3), check=True).stdout
    assert seen == files["seen"]                                     # now in the chunk cache
    target = urlparse(s3.endpoint)
    with FaultProxy(target.hostname, target.port, mode="stall") as proxy:
        m = mount_via(proxy, mount_factory, b, monkeypatch, ARTFS_LAZY_TIMEOUT="600", ARTFS_REMOTE_TIMEOUT="3",
                      ARTFS_REMOTE_RETRIES="50", ARTFS_REMOTE_RETRY_TIMEOUT="600")
        readers = [subprocess.Popen([sys.executable, "-c", MMAP_READER, m.path("ds", "v0", f"u{i}")],
                                    stdout=subprocess.PIPE) for i in range(20)]
        try:
            wait_for(lambda: all(waiting_in_fuse(r.pid) or r.poll() is not None for r in readers),
                     "20 reads waiting in the mount")
            assert all(r.poll() is None for r in readers)
            done = []
            t = threading.Thread(target=lambda: done.append(open(m.path("ds", "v0", "seen"), "rb").read()),
                                 daemon=True)
            t.start()
            wait_for(lambda: done or any(r.poll() is not None for r in readers), "the cached read done", 60)
            assert all(r.poll() is None for r in readers), "the remote answered: nothing was stalled"
            assert done == [files["seen"]]
            proxy.mode = "pass"
            for r, i in zip(readers, range(20)):
                out, _ = r.communicate(timeout=600)
                assert r.returncode == 0 and out == files[f"u{i}"], i
        finally:
            proxy.mode = "pass"
            for r in readers:
                if r.poll() is None:
                    r.kill()
                    r.wait()


def test_mount_remote_url_with_a_private_ca_bundle(s3_tls, tmp_path, monkeypatch, mount_factory):
    """`artfs mount --remote https-URL --ca-bundle FILE` on a fresh store binds the remote with the
    CA kept (`remote ls` shows it) and reads its files lazily over TLS, byte-exact."""
    need_fuse()
    for k, v in aws_env(s3_tls).items():
        monkeypatch.setenv(k, v)
    bucket = s3_tls.make_bucket(f"t-lazy-tls-{os.getpid()}-{s3_tls.kind}".lower().replace("_", "-"))
    a, b = tmp_path / "A", tmp_path / "B"
    remote = f"s3://{bucket}/{PREFIX}"
    cli(a, s3_tls, "init")
    cli(a, s3_tls, "remote", "add", "origin", remote, "--endpoint", s3_tls.tls_endpoint, "--ca-bundle",
        s3_tls.ca_file)
    data = random.randbytes(3 * MiB)
    write(tmp_path / "d" / "f", data)
    assert cli(a, s3_tls, "put", "ds", tmp_path / "d").stdout.strip() == "ds:v0"   # published
    m = lazy_mount(mount_factory, b, "--remote", remote, "--endpoint", s3_tls.tls_endpoint,
                   "--ca-bundle", s3_tls.ca_file)
    assert f"ca_bundle={s3_tls.ca_file}" in m.cli("remote", "ls").stdout
    with open(m.path("ds", "v0", "f"), "rb") as f:
        assert f.read() == data


def test_connection_resets_fail_a_read_with_eio_then_it_works_after_healing(s3, s3_bucket, tmp_path, creds,
                                                                             mount_factory, monkeypatch):
    """The remote resets every connection (tests/faultproxy.py): a lazy read fails with EIO once the
    client's bounded retries are spent, the daemon logs it in one line and stays up (listings
    work); after the proxy heals, the same read returns the right bytes."""
    need_fuse()
    from urllib.parse import urlparse
    from tests.faultproxy import FaultProxy
    data = random.randbytes(200_000)                     # one fetch
    published(tmp_path, s3, s3_bucket, {"f": data})
    b = tmp_path / "B"
    clone(b, s3, s3_bucket)
    target = urlparse(s3.endpoint)
    with FaultProxy(target.hostname, target.port, mode="reset") as proxy:
        m = mount_via(proxy, mount_factory, b, monkeypatch, ARTFS_REMOTE_RETRIES="2", ARTFS_REMOTE_TIMEOUT="2",
                      ARTFS_REMOTE_RETRY_TIMEOUT="3", ARTFS_REMOTE_CONNECT_TIMEOUT="1")
        with pytest.raises(OSError) as e:
            with open(m.path("ds", "v0", "f"), "rb") as f:
                f.read()
        assert e.value.errno == errno.EIO
        failed = [line for line in m.log_text().splitlines() if "fetching" in line and "failed" in line]
        assert len(failed) == 1 and "from s3://" in failed[0], failed           # names the remote
        assert m.proc.poll() is None and sorted(os.listdir(m.path("ds"))) == ["latest", "staging", "v0"]
        proxy.mode = "pass"
        with open(m.path("ds", "v0", "f"), "rb") as f:
            assert f.read() == data
        assert "works again" in m.log_text()


@contextlib.contextmanager
def stalled_fetch(tmp_path, s3, bucket, monkeypatch, call):
    """A clone of a 2 MiB file whose remote stalls (tests/faultproxy.py; ARTFS_LAZY_TIMEOUT 600 s)
    and a thread running CALL(its lazy store, the file's chunk ids), waiting for the remote.
    Yields (the proxy, the Repo, the ids, the thread, [what CALL returned or raised, once it has])."""
    from urllib.parse import urlparse
    from tests.faultproxy import FaultProxy
    published(tmp_path, s3, bucket, {"f": random.randbytes(2 * MiB)})
    b = tmp_path / "B"
    clone(b, s3, bucket)
    target = urlparse(s3.endpoint)
    monkeypatch.setenv("ARTFS_LAZY_TIMEOUT", "600")
    with FaultProxy(target.hostname, target.port, mode="stall") as proxy:
        via(proxy, b)
        ids = file_chunks(b, "ds:v0", "f")
        repo = Repo(str(b))
        outcome = []

        def run():
            try:
                outcome.append(call(repo.db.objects, ids))
            except Exception as e:
                outcome.append(e)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        wait_for(lambda: repo.db.objects._inflight, "a fetch in flight", 60)
        yield proxy, repo, ids, thread, outcome


def test_closing_a_store_while_a_fetch_is_stalled_leaves_no_thread_using_it(s3, s3_bucket, tmp_path, creds,
                                                                               monkeypatch):
    """A store closed while its fetch waits on a stalled remote closes at once (a command that has
    its bytes exits); when the remote answers later, the late bytes are dropped: no keeper thread
    starts, nothing touches the closed cache (CI once hung in the cache's close this way)."""
    prefetch = lambda objects, ids: objects.prefetch(ids)    # noqa: E731 - raises once the store closed
    with stalled_fetch(tmp_path, s3, s3_bucket, monkeypatch, prefetch) as (proxy, repo, _, fetcher, outcome):
        closer = threading.Thread(target=repo.close, daemon=True)
        closer.start()
        closer.join(120)
        assert not closer.is_alive(), "close waited for the stalled fetch"
        proxy.mode = "pass"                     # the stalled request goes through now
        fetcher.join(600)
        assert outcome and not fetcher.is_alive()     # its bytes were served (kept or not)
        assert [t.name for t in threading.enumerate() if t.name == "artfs-keep"] == []


def test_du_splits_each_version_into_local_cached_and_remote_bytes(s3, s3_bucket, tmp_path):
    """On a store bound to a remote `du` tells, per version, the distinct chunk bytes here, in the
    chunk cache and only on the remote (what a first read fetches); a store without a remote does
    not grow the columns."""
    files = {"a": random.randbytes(2 * MiB), "b": random.randbytes(MiB)}
    a = published(tmp_path, s3, s3_bucket, files)
    b = tmp_path / "B"
    clone(b, s3, s3_bucket)

    def split(store):
        (art,) = json.loads(cli(store, s3, "du", "--json").stdout)["artifacts"]
        (v,) = art["versions"]
        return v["local_bytes"], v["cached_bytes"], v["remote_bytes"]
    total = sum(map(len, files.values()))
    assert split(b) == (0, 0, total)
    cli(b, s3, "get", "ds:v0/b", tmp_path / "out")
    assert split(b) == (0, len(files["b"]), len(files["a"]))
    assert split(a) == (total, 0, 0)
    header = cli(b, s3, "du").stdout.splitlines()[1].split()
    assert header[-3:] == ["LOCAL", "CACHED", "REMOTE"]
    solo = tmp_path / "solo"
    cli(solo, s3, "put", "ds", tmp_path / "src")
    assert "remote_bytes" not in json.loads(cli(solo, s3, "du", "--json").stdout)["artifacts"][0]["versions"][0]
    assert "REMOTE" not in cli(solo, s3, "du").stdout


def test_a_damaged_cache_entry_is_dropped_and_fetched_again_never_served(s3, s3_bucket, tmp_path):
    """A cached chunk whose bytes were damaged on disk is never served: the read drops it, fetches
    it again and returns the source's bytes; afterwards every cache entry hashes right."""
    import lmdb
    data = random.randbytes(3 * MiB)
    published(tmp_path, s3, s3_bucket, {"f": data})
    b = tmp_path / "B"
    clone(b, s3, s3_bucket)
    cli(b, s3, "pull", "ds:v0", "--data")
    victim = file_chunks(b, "ds:v0", "f")[3]
    env = lmdb.open(str(b / "cache" / "objects"), max_dbs=4, subdir=True)
    db = env.open_db(b"objects")
    with env.begin(write=True, db=db) as txn:
        value = bytearray(txn.get(victim))
        value[-1] ^= 0xFF                          # the chunk's last byte, past its digest
        txn.put(victim, bytes(value))
    env.close()
    with Repo(str(b)) as repo:
        assert repo.db.objects.cache().objects.check([victim]) == ["corrupt"]
    cli(b, s3, "get", "ds:v0", tmp_path / "out")
    assert (tmp_path / "out" / "f").read_bytes() == data
    with Repo(str(b)) as repo:
        cache = repo.db.objects.cache()
        assert cache.present([victim]) == [True]
        assert all(p is None for p in cache.objects.check(cache.ids()))


HOLD_WRITE = """
import sys, lmdb
env = lmdb.open(sys.argv[1], max_dbs=4, subdir=True)
txn = env.begin(write=True)        # LMDB's writer lock: no other process or thread can write
print("held", flush=True)
sys.stdin.read()
txn.abort()
"""


def test_read_here_serves_fetched_chunks_before_they_are_kept(s3, s3_bucket, tmp_path, creds):
    """``read_here`` (the mount's read without a thread of its own) serves chunks that a fetch
    verified but the keeper has not stored in the cache yet, byte-exact, and still gives up
    (None) on a chunk nobody fetched. The cache's writer lock is held by another process, so the
    fetched chunks stay unkept for the whole test."""
    data = random.randbytes(2 * MiB)
    published(tmp_path, s3, s3_bucket, {"f": data})
    b = tmp_path / "B"
    clone(b, s3, s3_bucket)
    ids = file_chunks(b, "ds:v0", "f")
    assert len(ids) >= 3
    with Repo(str(b)) as repo:
        lazy = repo.db.objects
        cache = lazy.cache()
        holder = subprocess.Popen([sys.executable, "-c", HOLD_WRITE, cache.objects.env.env.path()],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline() == "held\n"
            fetched = lazy.get_many(ids[:2])                # fetched and verified; the keeper waits
            assert b"".join(fetched) == data[:sum(map(len, fetched))]
            assert cache.present(ids[:2]) == [False, False]
            assert lazy.read_here(lazy.get_many, ids[:2]) == fetched
            assert lazy.read_here(lazy.get_many, ids[2:3]) is None
        finally:
            holder.communicate("", timeout=60)
    with Repo(str(b)) as repo:
        assert repo.db.objects.cache().present(ids[:2]) == [True, True]   # kept once the lock went


def remote_totals(stats_file, command: str) -> dict:
    """The requests by S3 operation and the bytes received of the processes running artfs COMMAND
    (ARTFS_REMOTE_STATS): {OP: n, ..., "bytes_received": n}."""
    total: dict = {}
    with open(stats_file) as f:
        for line in f:
            entry = json.loads(line)
            if command in entry["argv"]:
                for op, n in [*entry["requests"].items(), ("bytes_received", entry["bytes_received"])]:
                    total[op] = total.get(op, 0) + n
    return total


def test_walking_small_files_in_order_fetches_them_in_few_gets(s3, s3_bucket, tmp_path, creds, mount_factory,
                                                                 monkeypatch):
    """A walk reading many small files in listing order through a cold lazy mount (``cp -r``, a
    training loop) fetches their chunks ahead of the opens, neighbours coalesced: far fewer ranged
    GETs than files (not one per file), each byte fetched once, every byte right."""
    need_fuse()
    files = {f"d{i}/f{j:03d}": random.randbytes(16 << 10) for i in range(2) for j in range(150)}
    published(tmp_path, s3, s3_bucket, files)
    b = tmp_path / "B"
    clone(b, s3, s3_bucket)
    stats = tmp_path / "stats.jsonl"
    monkeypatch.setenv("ARTFS_REMOTE_STATS", str(stats))
    m = lazy_mount(mount_factory, b)
    for dirpath, dirs, names in os.walk(m.path("ds", "v0")):
        dirs.sort()
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                assert f.read() == files[os.path.relpath(path, m.path("ds", "v0"))], path
    m.stop()
    totals = remote_totals(stats, "mount")
    assert 0 < totals.get("GET-range", 0) <= len(files) // 10, totals
    assert totals["bytes_received"] < 1.25 * sum(map(len, files.values())), totals   # each fetched once


def test_files_opened_in_order_are_in_the_page_cache_before_their_opens(s3, s3_bucket, tmp_path, creds,
                                                                         mount_factory):
    """On a cold lazy mount, once three files of a directory were opened in order, the next ones
    are fetched and put in the kernel's page cache before they are opened (their reads never
    reach the daemon); every file then reads back exactly."""
    need_fuse()
    files = {f"f{i:03d}": random.randbytes(16 << 10) for i in range(40)}
    published(tmp_path, s3, s3_bucket, files)
    b = tmp_path / "B"
    clone(b, s3, s3_bucket)
    m = lazy_mount(mount_factory, b)
    d = m.path("ds", "v0")
    names = sorted(os.listdir(d))
    for name in names[:3]:
        with open(os.path.join(d, name), "rb") as f:
            assert f.read() == files[name]
    ahead = names[3:3 + 2 * WINDOW_MIN]
    assert wait_until(lambda: all(in_page_cache(os.path.join(d, n)) for n in ahead)), \
        [n for n in ahead if not in_page_cache(os.path.join(d, n))]
    for name in names:
        with open(os.path.join(d, name), "rb") as f:
            assert f.read() == files[name], name
READ = 128 << 10       # the kernel's read size on a FUSE mount


def read_ahead_is_kept(tmp_path, s3, s3_bucket, first_read) -> None:
    """An 8 MiB file on the remote, a clone, FIRST_READ(repo, fobj, data) of its first READ bytes:
    then the read-ahead window after them (READ_AHEAD_MIN) must be fetched and kept, right."""
    from artfs.store.lazy import READ_AHEAD_MIN
    data = random.randbytes(8 * MiB)
    published(tmp_path, s3, s3_bucket, {"f": data})
    b = tmp_path / "B"
    clone(b, s3, s3_bucket)
    with Repo(str(b)) as repo:
        fobj = repo.file(repo.tree(repo.resolve("ds").root).lookup(b"f").ref)
        first_read(repo, fobj, data)
        ahead = [oid for oid, _, _ in fobj.span(READ, READ_AHEAD_MIN)]
        wait_for(lambda: all(repo.db.objects.cache().present(ahead)), "the read-ahead window fetched and kept", 60)
        assert repo.read(fobj, READ, READ_AHEAD_MIN) == data[READ:READ + READ_AHEAD_MIN]


def test_read_ahead_planned_by_a_read_here_that_gave_up_is_fetched(s3, s3_bucket, tmp_path, creds):
    """The mount reads first with ``read_here``, which gives up on chunks nobody fetched yet, then
    again in a thread that waits: the read-ahead window the first attempt planned (it advances
    the file's sequential state) is fetched too, not lost until a later read fetches it on demand."""
    def first_read(repo, fobj, data):
        assert repo.db.objects.read_here(repo.read, fobj, 0, READ) is None    # nothing fetched yet
        assert repo.read(fobj, 0, READ) == data[:READ]
    read_ahead_is_kept(tmp_path, s3, s3_bucket, first_read)


def test_read_ahead_planned_within_the_memory_bound_is_not_dropped(s3, s3_bucket, tmp_path, creds, monkeypatch):
    """Read-ahead is planned only while less than AHEAD_BYTES are in flight; a window
    planned so is fetched even when the read's own chunks, scheduled just before it, reach the
    bound (dropped then, the window would be skipped by every later read of the file)."""
    from artfs.store import lazy as lazy_module
    monkeypatch.setattr(lazy_module, "AHEAD_BYTES", 1)
    def first_read(repo, fobj, data):
        assert repo.read(fobj, 0, READ) == data[:READ]
    read_ahead_is_kept(tmp_path, s3, s3_bucket, first_read)


def test_read_fetched_serves_read_ahead_from_memory_byte_exact_before_it_is_kept(s3, s3_bucket, tmp_path, creds):
    """``read_fetched`` (a read that never waits: the mount may call it on its event loop) serves
    what a sequential reader's read-ahead fetched, byte-exact at unaligned offsets, while the
    chunks are not kept yet (the cache's writer lock is held by another process), and so does the
    mount's no-thread read (``Repo.read_nowait``); for chunks nobody fetched it gives None and
    fetches nothing."""
    data, other = random.randbytes(8 * MiB), random.randbytes(MiB)
    published(tmp_path, s3, s3_bucket, {"f": data, "g": other})
    b = tmp_path / "B"
    clone(b, s3, s3_bucket)
    with Repo(str(b)) as repo:
        lazy = repo.db.objects
        root = repo.tree(repo.resolve("ds").root)
        fobj, gobj = (repo.file(root.lookup(name).ref) for name in (b"f", b"g"))
        cache = lazy.cache()
        holder = subprocess.Popen([sys.executable, "-c", HOLD_WRITE, cache.objects.env.env.path()],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline() == "held\n"
            assert repo.read(fobj, 0, 100_000) == data[:100_000]
            for offset in range(101_000, 900_000, 77_777):     # within the first read's window
                got = []
                wait_for(lambda: got.append(lazy.read_fetched(fobj, offset, 77_777)) or got[-1] is not None,
                         "the read-ahead fetched", 60)
                assert got[-1] == data[offset:offset + 77_777]
                assert repo.read_nowait(fobj, offset, 77_777) == data[offset:offset + 77_777]   # the mount's loop
            assert lazy.read_fetched(gobj, 1000, 5000) is None
            assert cache.present(fobj.chunks[:2]) == [False, False]
            assert lazy.read_fetched(gobj, 0, MiB) is None
            assert lazy.read_here(lazy.get_many, gobj.chunks) is None      # g: still nothing fetched
        finally:
            holder.communicate("", timeout=60)


def mapped_bytes(path) -> int:
    """This process's resident bytes of its mappings of file PATH (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            if "-" in line.split(None, 1)[0]:          # a mapping's header line
                inside = line.rstrip("\n").endswith(" " + str(path))
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1]) * 1024
    return total


def test_reading_the_cache_does_not_keep_its_pages_in_the_resident_set(tmp_path):
    """Reads served from the chunk cache come from LMDB's map; the pages they touch are dropped
    from the process every RELEASE_EVERY bytes (they stay in the page cache), so reading 64 MiB
    of cached chunks never leaves more than 24 MiB of the map resident, and the bytes are right."""
    from artfs.store.backend import Obj
    from artfs.store.cache import ChunkCache
    from artfs.store.ids import object_id, strong_digest
    bound = 24 * MiB                 # RELEASE_EVERY (16 MiB), one chunk, the B-tree's pages
    rng = random.Random(3)
    chunks = [rng.randbytes(256 << 10) for _ in range(256)]               # 64 MiB
    objs = [Obj(object_id(d), strong_digest(d), d) for d in chunks]
    cache = ChunkCache(str(tmp_path), limit=1 << 30)
    for i in range(0, len(objs), 32):
        cache.put_many(objs[i:i + 32])
    data_file = os.path.realpath(tmp_path / "cache" / "objects" / "data.mdb")
    for o, d in zip(objs, chunks):
        assert cache.read_ranges([(o.id, 1000, 200_000)]) == d[1000:200_000]
        assert mapped_bytes(data_file) <= bound
    assert cache.get_many([o.id for o in objs[:64]]) == chunks[:64]
    assert mapped_bytes(data_file) <= bound
    cache.close()


def test_opening_the_cache_leaves_none_of_its_map_resident(tmp_path):
    """Opening a cache whose index is not trusted looks up every entry's size, and py-lmdb's
    lookups touch every page of each value: a reopened 32 MiB cache mapped all of it in the process until something else
    released it. Now the pages are dropped once loaded; the entries are all there."""
    from artfs.store.cache import ChunkCache
    objs = random_objs(4, 128, 256 << 10)
    closed_cache(tmp_path, objs, trusted=False, batch=len(objs))
    cache = ChunkCache(str(tmp_path))
    assert mapped_bytes(os.path.realpath(tmp_path / "cache" / "objects" / "data.mdb")) <= MiB
    assert sorted(cache.ids()) == sorted(o.id for o in objs)
    cache.close()


OPEN_CACHE = """import sys
from artfs.store.cache import ChunkCache
def status(key):
    return next(int(line.split()[1]) << 10 for line in open("/proc/self/status") if line.startswith(key))
before = status("VmRSS:")
cache = ChunkCache(sys.argv[1])
print(status("VmHWM:") - before, len(cache.ids()))
"""


def test_opening_a_cache_never_maps_all_of_it_at_once(tmp_path):
    """Opening a cache whose index is not trusted looks up every entry (py-lmdb touches each
    value's pages): a fresh process
    opening a 128 MiB cache peaks less than half of it above where it started, and knows every
    entry (before: the whole cache was mapped before any of it was released)."""
    objs = random_objs(5, 2048, 64 << 10)
    closed_cache(tmp_path, objs, trusted=False, batch=len(objs))
    out = subprocess.run([sys.executable, "-c", OPEN_CACHE, str(tmp_path)], capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout
    rise, entries = map(int, out.split())
    assert entries == len(objs)
    assert rise < 64 * MiB, rise >> 20


OPEN_CACHE_IO = """import os, sys
from artfs.store.cache import ChunkCache
def read_bytes():
    return next(int(line.split()[1]) for line in open("/proc/self/io") if line.startswith("read_bytes:"))
before = read_bytes()
cache = ChunkCache(sys.argv[1])
opened = read_bytes() - before
ids = cache.ids()
cache.get_many(ids)
print(opened, read_bytes() - before - opened, len(ids), cache.stats()["bytes"])
cache.close()
"""


def open_cache_reads(store) -> tuple[int, int, int, int]:
    """A fresh process opens the cache of STORE with its data file out of the page cache: the
    bytes it read from disk to open it, then to read every entry, the entries and bytes it knows."""
    data = os.path.realpath(store / "cache" / "objects" / "data.mdb")
    fd = os.open(data, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    out = subprocess.run([sys.executable, "-c", OPEN_CACHE_IO, str(store)], capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout
    opened, read, entries, used = map(int, out.split())
    return opened, read, entries, used


def test_opening_a_closed_cache_reads_far_less_than_it_holds(tmp_path):
    """A cache closed cleanly is opened from its index (ids, sizes, recency order): a fresh process
    opening a 128 MiB cache, its data out of the page cache, reads less than a quarter of it from disk
    (LMDB's open faults its first pages in, with the device's read-ahead: 8 MiB on the test VM;
    before, every entry's size was looked up in LMDB, reading the whole cache), and knows every entry;
    reading them all then does read the cache (the measure sees reads). While another process
    has it open, the index is not trusted: the entries are looked up in LMDB, all known; the
    last to close it, which knew every entry, leaves an index trusted again."""
    from artfs.store.cache import ChunkCache
    objs = random_objs(6, 2048, 64 << 10)
    closed_cache(tmp_path, objs)
    opened, read, entries, used = open_cache_reads(tmp_path)
    assert (entries, used) == (len(objs), 128 * MiB)
    assert opened + read >= 64 * MiB, (opened + read) >> 20     # reads from disk are seen
    assert opened < 32 * MiB, opened >> 20
    other = ChunkCache(str(tmp_path))                       # open elsewhere: not trusted
    opened, _, entries, used = open_cache_reads(tmp_path)
    assert (entries, used) == (len(objs), 128 * MiB) and opened >= 64 * MiB
    other.put_many(chunk_objs(b"x" * 100))
    other.close()                        # its view may have missed the other process's changes
    opened, _, entries, used = open_cache_reads(tmp_path)
    assert (entries, used) == (len(objs) + 1, 128 * MiB + 100) and opened >= 64 * MiB
    opened, _, entries, used = open_cache_reads(tmp_path)   # that one had it alone: trusted
    assert (entries, used) == (len(objs) + 1, 128 * MiB + 100) and opened < 32 * MiB
    subprocess.run([sys.executable, "-c", KILLED_WHILE_OPEN, str(tmp_path)], check=False,
                   cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    opened, _, entries, used = open_cache_reads(tmp_path)   # SIGKILL-ed after a store: not trusted
    assert (entries, used) == (len(objs) + 2, 128 * MiB + 200) and opened >= 64 * MiB


KILLED_WHILE_OPEN = """import os, signal, sys
from artfs.store.backend import Obj
from artfs.store.cache import ChunkCache
from artfs.store.ids import object_id, strong_digest
cache = ChunkCache(sys.argv[1])
data = b"y" * 100
cache.put_many([Obj(object_id(data), strong_digest(data), data)])
os.kill(os.getpid(), signal.SIGKILL)
"""


def chunk_objs(*chunks: bytes) -> list:
    from artfs.store.backend import Obj
    from artfs.store.ids import object_id, strong_digest
    return [Obj(object_id(d), strong_digest(d), d) for d in chunks]


def random_objs(seed: int, n: int, size: int) -> list:
    rng = random.Random(seed)
    return chunk_objs(*(rng.randbytes(size) for _ in range(n)))


def closed_cache(path, objs, *, trusted: bool = True, batch: int = 64) -> None:
    """A chunk cache at PATH holding OBJS, closed; not TRUSTED: as after a crash, its index is
    not used at the next open (every entry is looked up in LMDB)."""
    from artfs.store.cache import ChunkCache
    cache = ChunkCache(str(path), limit=1 << 30)
    for i in range(0, len(objs), batch):
        cache.put_many(objs[i:i + batch])
    cache.close()
    if not trusted:
        (path / "cache" / "clean").unlink()


def test_abandoning_a_store_ends_reads_waiting_on_a_stalled_remote_at_once(s3, s3_bucket, tmp_path, creds,
                                                                            monkeypatch):
    """``abandon`` (what a daemon calls when its FUSE loop ends) fails at once a read waiting for
    a stalled remote, with ARTFS_LAZY_TIMEOUT at 600 s: it returns RemoteError well within half
    of that (before, such a read held the daemon's exit until the timeout); nothing is fetched
    after it, and the store still closes."""
    from artfs.errors import RemoteError
    from artfs.store.lazy import timeout
    read = lambda objects, ids: objects.get_many(ids)      # noqa: E731
    with stalled_fetch(tmp_path, s3, s3_bucket, monkeypatch, read) as (proxy, repo, ids, reader, outcome):
        repo.db.objects.abandon()
        reader.join(timeout() / 2)
        assert not reader.is_alive(), "the read waited for the stalled remote"
        assert len(outcome) == 1 and isinstance(outcome[0], RemoteError), outcome
        with pytest.raises(Exception, match="closed|closing"):
            repo.db.objects.get_many(ids)
        proxy.mode = "pass"
        repo.close()


def test_unmounting_while_read_ahead_waits_on_a_stalled_remote_exits_well_within_the_read_timeout(
        s3, s3_bucket, tmp_path, creds, mount_factory, monkeypatch):
    """Files opened in order start the mount's read-ahead of the next ones, which waits for the
    stalled remote (tests/faultproxy.py, ARTFS_LAZY_TIMEOUT 120 s); with no file open, the mount
    is unmounted: the daemon exits within half the read timeout (before, the read-ahead's worker
    thread held its exit until its wait timed out)."""
    need_fuse()
    from urllib.parse import urlparse
    from tests.faultproxy import FaultProxy
    published(tmp_path, s3, s3_bucket, {f"d/f{i:02}": random.randbytes(64 << 10) for i in range(32)})
    b = tmp_path / "B"
    clone(b, s3, s3_bucket)
    target = urlparse(s3.endpoint)
    with FaultProxy(target.hostname, target.port, mode="stall") as proxy:
        m = mount_via(proxy, mount_factory, b, monkeypatch, ARTFS_LAZY_TIMEOUT="120",
                      ARTFS_REMOTE_TIMEOUT="3", ARTFS_REMOTE_RETRIES="50", ARTFS_REMOTE_RETRY_TIMEOUT="600")
        for name in sorted(os.listdir(m.path("ds", "v0", "d")))[:4]:     # in order: read-ahead starts
            os.close(os.open(m.path("ds", "v0", "d", name), os.O_RDONLY))
        wait_for(lambda: proxy._conns, "a fetch reaching the remote")
        subprocess.run(["fusermount3", "-u", m.mnt], check=True, capture_output=True)
        try:
            m.proc.wait(timeout=120 / 2)
        finally:
            proxy.mode = "pass"


def test_closing_a_store_keeps_every_chunk_it_fetched(s3, s3_bucket, tmp_path, creds, monkeypatch):
    """A store closed right after a read whose fetched chunks still wait for the keeper (the
    cache's writer lock held by another process; KEEP_BYTES 1, so the fetchers queue their
    chunks one batch at a time) keeps every one of them once the lock goes: the next process
    finds the whole file cached. Before, the fetchers still waiting to hand their chunks to the
    keeper when the store closed were refused, and the next (warm) read fetched them again,
    loading the remote's whole pack index for it."""
    from artfs.store import lazy as lazy_module
    monkeypatch.setattr(lazy_module, "KEEP_BYTES", 1)
    data = random.randbytes(12 * MiB)
    published(tmp_path, s3, s3_bucket, {"f": data})
    b = tmp_path / "B"
    clone(b, s3, s3_bucket)
    ids = set(file_chunks(b, "ds:v0", "f"))
    repo = Repo(str(b))
    lazy = repo.db.objects
    holder = subprocess.Popen([sys.executable, "-c", HOLD_WRITE, lazy.cache().objects.env.env.path()],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        fobj = repo.file(repo.tree(repo.resolve("ds").root).lookup(b"f").ref)
        assert repo.read(fobj, 0, len(data)) == data      # served: fetched, verified, not kept
        assert lazy.fetched_bytes == len(data)
        closer = threading.Thread(target=repo.close)
        closer.start()
        wait_for(lambda: lazy._closed, "the store closing")
    finally:
        holder.communicate("", timeout=60)
    closer.join()
    assert cache_chunks(b) == len(ids)


def cached_file(tmp_path, s3, bucket, data: bytes):
    """A clone whose chunk cache holds file ``f`` (DATA) whole, read and closed by another
    Repo: its path."""
    published(tmp_path, s3, bucket, {"f": data})
    b = tmp_path / "B"
    clone(b, s3, bucket)
    with Repo(str(b)) as repo:
        fobj = repo.file(repo.tree(repo.resolve("ds").root).lookup(b"f").ref)
        assert repo.read(fobj, 0, len(data)) == data
    return b


def test_a_warm_read_opens_no_remote_and_maps_each_cached_byte_once(s3, s3_bucket, tmp_path, creds,
                                                                    monkeypatch):
    """A sequential read (the kernel's 128 KiB reads) of a file the cache holds whole, in a
    fresh process: byte-exact, without opening the remote (no S3 client made: ~50 ms on the
    first read before) and with the cache's map released about once per RELEASE_EVERY bytes
    read. Before, the read-ahead looked every planned chunk up in LMDB (mapping its pages) and
    a chunk read in two reads counted twice: about 8 releases for 48 MiB, now at most 4."""
    from artfs.store.cache import RELEASE_EVERY
    data = random.randbytes(48 * MiB)
    b = cached_file(tmp_path, s3, s3_bucket, data)
    with Repo(str(b)) as repo:
        lazy = repo.db.objects
        fobj = repo.file(repo.tree(repo.resolve("ds").root).lookup(b"f").ref)
        env = lazy.cache().objects.env
        releases = []
        release = env.release_map
        monkeypatch.setattr(env, "release_map", lambda: releases.append(1) or release())
        got = b"".join(repo.read(fobj, offset, READ) for offset in range(0, len(data), READ))
        assert got == data
        assert len(releases) <= len(data) // RELEASE_EVERY + 1, len(releases)
        assert lazy._remote is None


def test_the_mount_loop_reads_cached_chunks_in_memory_without_a_thread(s3, s3_bucket, tmp_path, creds):
    """``Repo.read_nowait`` (the mount's read on its event loop, no thread hop) serves chunks of
    the cache that this process read recently and that are in memory, byte-exact, as it does
    for the local store's; a chunk not read yet is still None (before: None for every cached
    chunk, so each read of a cached file took a worker thread)."""
    data = random.randbytes(4 * MiB)
    b = cached_file(tmp_path, s3, s3_bucket, data)
    with Repo(str(b)) as repo:
        fobj = repo.file(repo.tree(repo.resolve("ds").root).lookup(b"f").ref)
        assert repo.read_nowait(fobj, 0, READ) is None             # not read by this process yet
        assert repo.read(fobj, 0, 2 * MiB) == data[:2 * MiB]
        for offset in range(0, 2 * MiB - 100_000, 333_333):
            assert repo.read_nowait(fobj, offset, 100_000) == data[offset:offset + 100_000]
        assert repo.read_nowait(fobj, 3 * MiB, READ) is None
        assert repo.db.objects._remote is None


def test_a_warm_read_missing_a_later_chunk_tries_the_whole_cache_read_once(s3, s3_bucket, tmp_path, creds,
                                                                          monkeypatch):
    """A read whose first chunk is cached but a later one is not (evicted): byte-exact, the
    missing chunk fetched, and the cache's whole-read attempt made once. Before, the read tried it
    in ``read_file`` and again in ``_fallback`` before fetching."""
    data = random.randbytes(4 * MiB)
    b = cached_file(tmp_path, s3, s3_bucket, data)
    ids = file_chunks(b, "ds:v0", "f")
    assert len(ids) >= 3
    with Repo(str(b)) as repo:
        repo.db.objects.cache().drop([ids[-1]])
    with Repo(str(b)) as repo:
        lazy = repo.db.objects
        cache = lazy.cache()
        tries = []
        read = cache.read_ranges
        monkeypatch.setattr(cache, "read_ranges", lambda spans: tries.append(len(spans)) or read(spans))
        fobj = repo.file(repo.tree(repo.resolve("ds").root).lookup(b"f").ref)
        assert repo.read(fobj, 0, len(data)) == data
        assert tries == [len(ids)]
        assert lazy.fetched_bytes == fobj.lengths[-1]
