"""Reliability of the mount, for real: crashes at random instants, concurrent readers and writers,
faults (full disk, corrupt chunks) and scale, each on a FUSE mount served by a daemon subprocess.

Every random loop is seeded and bounded. Every test leaves no mount, daemon or tmpfs behind
(conftest.Mount.stop; the tmpfs fixture unmounts) and ends with ``artfs verify`` clean unless it
damages the store on purpose. docs/RELIABILITY.md lists the guarantees and which test shows each.
"""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import random
import resource
import signal
import subprocess
import sys
import threading
import time

import pytest

import artfs
from artfs.catalog.staging_index import StagingIndex, staging_dir
from artfs.errors import NoSpace
from artfs.repo.facade import Repo
from tests.conftest import in_mount_table
from tests.helpers import (MiB, cli_json, damage_blob, drop_data_cache, need_root, oserror, put_file, read, run_cli,
                           tree_snapshot, write)

pytestmark = pytest.mark.fuse

PY = sys.executable
PASSTHROUGH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts",
                           "passthrough.py")


# helpers -------------------------------------------------------------------------------------
def data_for(key: str, size: int) -> bytes:
    """Deterministic bytes for KEY: the test re-creates what a writer subprocess wrote."""
    return random.Random(key).randbytes(size)


def reap(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Kill (if still running) and wait for a helper process this test started."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=timeout)


def crash(m, *users: subprocess.Popen) -> None:
    """SIGKILL the daemon, then the processes using the mount, lazily unmount the dead mount
    (``fusermount3 -u -z``) and reap the daemon. The users go first: a writer still running
    after the unmount would write into the mount point's own (underlying) directory."""
    m.proc.send_signal(signal.SIGKILL)
    m.proc.wait(timeout=30)
    for p in users:
        reap(p)
    subprocess.run(["fusermount3", "-u", "-z", m.mnt], capture_output=True, check=True)
    m.stop()
    assert not in_mount_table(m.mnt)
    assert os.listdir(m.mnt) == [], "something wrote into the mount point's own directory"


def verify_cli(store) -> str:
    """``artfs verify`` must exit 0: every object hashes, every reference count matches, nothing
    stored is unreferenced."""
    proc = run_cli(store, "verify")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def versions(store, name: str) -> dict[int, bytes]:
    """Version number -> root tree id (the content digest) of NAME."""
    with Repo(str(store)) as repo:
        if name not in repo.artifacts():
            return {}
        return {v.number: bytes(v.root) for v in repo.versions(name)}


def stray_data_files(store, name: str) -> set[str]:
    """Files in STORE/staging/NAME that the staging index does not reference."""
    with Repo(str(store)) as repo, repo.db.read() as txn:
        live = StagingIndex(repo.db.dbs, name).local_inos(txn)
    try:
        names = set(os.listdir(staging_dir(str(store), name)))
    except FileNotFoundError:
        return set()
    return names - {str(i) for i in live}


def ingest_sessions(store) -> int:
    """Ingest sessions in the store: chunk references a put/commit holds until it finishes."""
    with Repo(str(store)) as repo, repo.db.read() as txn:
        return len(repo.sessions.tokens(txn))


def files_under(root) -> dict[str, bytes]:
    """relative path -> bytes of every regular file below ROOT (directories implied)."""
    out = {}
    for top, _, names in os.walk(root):
        for n in names:
            p = os.path.join(top, n)
            if not os.path.islink(p):
                out[os.path.relpath(p, root)] = read(p)
    return out


def stored_bytes(store) -> int:
    return cli_json(store, "du")["store"]["stored_bytes"]


def wait_for(predicate, timeout: float = 10.0, what: str = "condition", poll: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


def lines(path) -> list[str]:
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return []
    return text.splitlines() if text.endswith("\n") else text.splitlines()[:-1]


def launch(*args) -> subprocess.Popen:
    return subprocess.Popen([PY, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


# 1. crashes at random instants ---------------------------------------------------------------
# A writer copies files into staging: each is opened, written in 128 KiB pieces, fsync'ed and
# closed, and only then logged as closed. "new" writes data_for("<tag>/<rel>", size) into a new
# file; "append" appends those bytes to an existing file (a committed one is copied up first).
WRITER = r"""
import json, os, random, sys, time
staging, plan_path, log_path, tag = sys.argv[1:5]
pause = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
vanish = len(sys.argv) > 6 and sys.argv[6] == "vanish"   # see test_commit_puts_and_staging_...
with open(plan_path) as f:
    plan = json.load(f)
log = open(log_path, "a", buffering=1)
for rel, size, how in plan:
    dst = os.path.join(staging, rel)
    data = random.Random(tag + "/" + rel).randbytes(size)
    flags = os.O_WRONLY | (os.O_CREAT | os.O_TRUNC if how == "new" else os.O_APPEND)
    for attempt in range(4):
        try:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            fd = os.open(dst, flags, 0o644)
            break
        except FileNotFoundError as e:
            if vanish and attempt < 3:
                print(f"{rel}: ENOENT, again", file=sys.stderr)
                continue
            print(f"{rel}: {e}", file=sys.stderr)
            sys.exit(3)
        except OSError as e:
            print(f"{rel}: {e}", file=sys.stderr)
            sys.exit(3)
    try:
        for off in range(0, size, 131072):
            os.write(fd, data[off:off + 131072])
        os.fsync(fd)
        os.close(fd)
    except OSError as e:
        print(f"{rel}: {e}", file=sys.stderr)
        sys.exit(3)
    log.write(rel + "\n")
    time.sleep(pause)
"""

SIZES = (0, 1, 100, 4096, 65537, 300_000, 1_100_000)


def writer_plan(rng: random.Random, it: int, known: dict[str, bytes]) -> list[tuple[str, int, str]]:
    """20 new files, and appends to 4 files known to be intact (some committed: copy-up)."""
    plan = [(f"it{it:02d}/d{j % 4}/f{j:03d}.bin", rng.choice(SIZES), "new") for j in range(20)]
    for rel in rng.sample(sorted(known), min(4, len(known))):
        plan.insert(rng.randrange(len(plan) + 1), (rel, rng.choice(SIZES[1:5]), "append"))
    return plan


@pytest.mark.slow
def test_sigkill_while_files_are_copied_into_staging(mount_factory, tmp_path):
    """SIGKILL the daemon at 14 random instants of a copy into staging: after a lazy unmount the
    store verifies clean, and after a remount every file the writer had closed is byte-exact in
    staging, every committed version is unchanged, no stray data file is left."""
    rng = random.Random(20240611)
    m = mount_factory().start()
    os.mkdir(m.path("a"))
    known: dict[str, bytes] = {}          # staging files known intact: path -> bytes
    committed: dict[int, bytes] = {}      # version -> root id, as committed
    expected: dict[int, dict[str, bytes]] = {}
    killed_mid_copy = appended = flagged = 0
    interrupted: list[str] = []
    for it in range(14):
        tag = f"it{it}"
        plan = writer_plan(rng, it, known)
        plan_path = tmp_path / f"plan{it}.json"
        plan_path.write_text(json.dumps(plan))
        log_path = tmp_path / f"closed{it}.log"
        writer = subprocess.Popen([PY, "-c", WRITER, m.path("a", "staging"), str(plan_path),
                                   str(log_path), tag], stderr=subprocess.PIPE)
        try:
            # kill once k files are closed, a random while into the next ones
            k = rng.randrange(len(plan))
            wait_for(lambda: len(lines(log_path)) >= k or writer.poll() is not None,
                     60, "the writer", poll=0.001)
            time.sleep(rng.uniform(0, 0.02))
            crash(m, writer)
        finally:
            reap(writer)
        closed = set(lines(log_path))
        killed_mid_copy += len(closed) < len(plan)
        for rel, size, how in plan:                    # what must be in staging now
            add = data_for(f"{tag}/{rel}", size)
            if rel not in closed:
                known.pop(rel, None)                   # partly written: no promise
            elif how == "append":
                known[rel] += add
                appended += 1
            else:
                known[rel] = add
        verify_cli(m.store)                            # before any remount
        m.start()
        staged = m.path("a", "staging")
        check = {rel for rel, _, _ in plan if rel in closed}
        check |= set(rng.sample(sorted(known), min(6, len(known))))
        for rel in sorted(check):
            assert read(os.path.join(staged, rel)) == known[rel], (it, rel)
        assert stray_data_files(m.store, "a") == set(), it
        assert versions(m.store, "a") == committed, it   # same digests (content ids), verified
        # flagged: files open when a daemon was killed (or closed just before: over-reported)
        before, interrupted = interrupted, cli_json(m.store, "status", "a")["interrupted"]
        assert set(interrupted) <= ({rel for rel, _, _ in plan} | set(before)) & set(files_under(staged)), it
        flagged += bool(set(interrupted) - set(before))
        if it % 3 == 2:                                  # commit what staging holds now
            snapshot = files_under(staged)
            label = m.cli("commit", "a", *(["--force"] if interrupted else [])).stdout.strip()
            interrupted = []
            expected[int(label.split(":v")[1])] = snapshot
            committed = versions(m.store, "a")
            assert set(committed) == set(expected)
            assert {rel: snapshot[rel] for rel in known} == known
    assert killed_mid_copy >= 7, "most kills should land while the writer was still copying"
    assert appended > 0 and flagged > 0
    m.stop()
    verify_cli(m.store)
    m.start()
    for number, snapshot in expected.items():          # every version byte-exact, cold cache
        assert files_under(m.path("a", f"v{number}")) == snapshot, number


def change_staging(rng: random.Random, staged: str, model: dict[str, bytes], it: int) -> None:
    """Make a big change in staging through the mount, mirrored in MODEL (path -> bytes)."""
    big = os.urandom(rng.randrange(24, 40) * MiB)
    put_file(os.path.join(staged, "big.bin"), big)
    model["big.bin"] = big
    os.makedirs(os.path.join(staged, "many"), exist_ok=True)
    for k in range(400):   # rewritten each time: small files the commit reads itself (the mount
        rel = f"many/{k}"  # stores only big ones ahead), so the daemon's part of it lasts
        model[rel] = f"{it}:{k}:".encode() * rng.randrange(100, 800)
        put_file(os.path.join(staged, rel), model[rel])
    for j in range(rng.randrange(3, 8)):
        rel = f"small/{it}-{j}.txt"
        os.makedirs(os.path.join(staged, "small"), exist_ok=True)
        model[rel] = f"{it}:{j}:".encode() * rng.randrange(1, 2000)
        put_file(os.path.join(staged, rel), model[rel])
    small = sorted(r for r in model if r.startswith("small/"))
    if len(small) > 6:
        gone = rng.choice(small)
        os.unlink(os.path.join(staged, gone))
        del model[gone]
        moved = rng.choice(sorted(set(small) - {gone}))
        os.rename(os.path.join(staged, moved), os.path.join(staged, moved + ".moved"))
        model[moved + ".moved"] = model.pop(moved)


@pytest.mark.slow
def test_sigkill_during_commits_at_random_instants(mount_factory):
    """SIGKILL the daemon at 12 random instants of an ``artfs commit`` of 24-40 MiB: the commit
    made the whole version or none of it; staging is intact when it did not; verify is clean.
    A kill before the command reaches the daemon interrupts nothing (the command then commits
    without it), and the mount stores the big file as soon as it is closed, so the daemon's part
    can be a small tail of the command: the instants are drawn after the command's start-up."""
    rng = random.Random(77)
    m = mount_factory().start()
    os.mkdir(m.path("a"))
    model: dict[str, bytes] = {}
    change_staging(rng, m.path("a", "staging"), model, -1)
    started = time.monotonic()                         # calibrate: a command's start-up
    subprocess.run([PY, "-m", "artfs", "--store", m.store, "ls"], check=True, capture_output=True)
    startup = time.monotonic() - started
    started = time.monotonic()                         # and one commit, not killed
    assert m.cli("commit", "a").stdout.strip() == "a:v0"
    duration = time.monotonic() - started
    committed = versions(m.store, "a")
    newest, outcomes = (0, dict(model)), []
    for it in range(12):
        change_staging(rng, m.path("a", "staging"), model, it)
        # --force: a kill right after staging was written may flag its last files as possibly
        # short (mount/writing.py); this test is about the commit's atomicity
        cmd = [PY, "-m", "artfs", "--store", m.store, "commit", "a", "--force"]
        committing = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(rng.uniform(0.8 * min(startup, duration), 1.3 * duration))
            crash(m)
            out, err = committing.communicate(timeout=60)
        finally:
            reap(committing)
        verify_cli(m.store)                            # nothing half-written, nothing leaked
        now = versions(m.store, "a")
        assert set(now) - set(committed) <= {max(committed) + 1}
        assert {n: now[n] for n in committed} == committed
        m.start()
        new = max(committed) + 1
        if new in now:                                 # the whole version, staging clean
            outcomes.append("made")
            assert files_under(m.path("a", f"v{new}")) == model
            newest = (new, dict(model))
            assert cli_json(m.store, "status", "a") == {"added": [], "modified": [], "deleted": [], "interrupted": []}
            assert committing.returncode in (0, 8), err   # 8: killed before it could answer
        else:                                          # none of it, staging intact
            outcomes.append("none")
            assert committing.returncode == 8, (out, err)
            assert not os.path.exists(m.path("a", f"v{new}"))
            assert os.readlink(m.path("a", "latest")) == f"v{new - 1}"
        assert files_under(m.path("a", "staging")) == model
        assert stray_data_files(m.store, "a") == set()
        assert ingest_sessions(m.store) == 0           # the mount released a killed commit's
        committed = now
    assert "none" in outcomes, f"no kill interrupted a commit ({duration:.2f} s each, start-up {startup:.2f} s): {outcomes}"
    # read back the newest version once more, from a new mount (the others: pinned by digests)
    m.stop()
    m.start()
    assert files_under(m.path("a", f"v{newest[0]}")) == newest[1]
    m.stop()
    verify_cli(m.store)


def test_a_returned_commit_survives_an_immediate_sigkill(mount_factory):
    """LMDB sync=True: a commit that returned is on disk; SIGKILL right after loses nothing."""
    m = mount_factory().start()
    os.mkdir(m.path("a"))
    for i in range(3):
        data = os.urandom(MiB + i)
        put_file(m.path("a", "staging", f"f{i}"), data)
        assert m.cli("commit", "a").stdout.strip() == f"a:v{i}"
        crash(m)
        verify_cli(m.store)
        m.start()
        assert os.readlink(m.path("a", "latest")) == f"v{i}"
        assert read(m.path("a", f"v{i}", f"f{i}")) == data
    m.stop()
    verify_cli(m.store)


# 3. concurrent readers while commits land ----------------------------------------------------
# File i as written by version w: 32-byte records "<w:i:j>" padded, of a size that depends on
# (w, i), so a read mixing two versions, or the wrong version, or a short read never matches.
NFILES, NCOMMITS = 8, 20

PATTERN = r"""
def content(w, i):
    size = 200_000 + w * 4099 + i * 517
    n = size // 32 + 1
    return b"".join(b"<%04d:%02d:%08d>" % (w, i, j) + b"." * 13 for j in range(n))[:size]
"""
exec(PATTERN)

READER = PATTERN + r"""
import json, os, random, sys, time
art, plan_path, stop, mode, seed = sys.argv[1:]
with open(plan_path) as f:
    state = json.load(f)               # state[k][i]: the version that wrote file i of version k
rng = random.Random(int(seed))
reads, errors = 0, []

def latest():
    return int(os.readlink(art + "/latest")[1:])

def read_all(path, slow=False):
    fd = os.open(path, os.O_RDONLY)
    try:
        parts = []
        while True:
            b = os.read(fd, rng.choice((4096, 65536, 131072, 1 << 20)) if not slow else 16384)
            if not b:
                return b"".join(parts)
            parts.append(b)
            if slow:
                time.sleep(0.004)
    finally:
        os.close(fd)

while not os.path.exists(stop):
    i = rng.randrange(len(state[0]))
    try:
        if mode == "pinned":           # a version by number: exactly its bytes
            k = rng.randrange(latest() + 1)
            if sorted(os.listdir(f"{art}/v{k}")) != [f"f{n}" for n in range(len(state[0]))]:
                errors.append(f"v{k}: listing {os.listdir(f'{art}/v{k}')}")
            allowed = {state[k][i]}
            data = read_all(f"{art}/v{k}/f{i}")
        else:                          # through latest: one version between the two readlinks
            before = latest()
            data = read_all(f"{art}/latest/f{i}", slow=mode == "slow")
            allowed = {state[k][i] for k in range(before, latest() + 1)}
        w = int(data[1:5]) if len(data) >= 5 and data[1:5].isdigit() else -1
        if w not in allowed or data != content(w, i):
            errors.append(f"{mode} f{i}: got {data[:16]!r} ({len(data)} bytes), allowed {allowed}")
        reads += 1
    except OSError as e:
        errors.append(f"{mode} f{i}: {e}")
print(json.dumps({"mode": mode, "reads": reads, "errors": errors[:10], "nerrors": len(errors)}))
"""


@pytest.mark.slow
def test_readers_see_whole_versions_while_commits_land(mounted, tmp_path):
    """8 reader processes stream files from latest/ and from pinned vN/ while 20 commits land:
    every read is exactly one version's bytes (one that latest showed during the read), no read
    fails, and each commit is in the listing and in latest as soon as ``artfs commit`` returns."""
    m, rng = mounted, random.Random(99)
    art, staged = m.path("a"), m.path("a", "staging")
    state = [[0] * NFILES]
    for _ in range(NCOMMITS):
        row = list(state[-1])
        for i in rng.sample(range(NFILES), 3):
            row[i] = len(state)
        state.append(row)
    plan = tmp_path / "state.json"
    plan.write_text(json.dumps(state))
    os.mkdir(art)
    for i in range(NFILES):
        put_file(os.path.join(staged, f"f{i}"), content(0, i))
    assert m.cli("commit", "a").stdout.strip() == "a:v0"
    stop = tmp_path / "stop"
    modes = ["latest"] * 3 + ["pinned"] * 3 + ["slow"] * 2
    readers = [subprocess.Popen([PY, "-c", READER, art, str(plan), str(stop), mode, str(n)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for n, mode in enumerate(modes)]
    try:
        time.sleep(0.5)
        for k in range(1, NCOMMITS + 1):
            changed = [i for i in range(NFILES) if state[k][i] == k]
            for i in changed:
                put_file(os.path.join(staged, f"f{i}"), content(k, i))
            assert m.cli("commit", "a").stdout.strip() == f"a:v{k}"
            assert f"v{k}" in os.listdir(art)                  # no stale listing
            assert os.readlink(os.path.join(art, "latest")) == f"v{k}"
            i = rng.choice(changed)
            assert read(os.path.join(art, "latest", f"f{i}")) == content(k, i)
            time.sleep(rng.uniform(0, 0.1))
        time.sleep(0.3)
    finally:
        stop.touch()
        results = []
        for r in readers:
            out, err = r.communicate(timeout=120)
            results.append((r.returncode, out, err))
    for code, out, err in results:
        assert code == 0, err
        report = json.loads(out)
        assert report["nerrors"] == 0, report
        assert report["reads"] > 0, report
    names = [f"v{k}" for k in range(NCOMMITS + 1)] + ["latest", "staging"]
    assert sorted(os.listdir(art)) == sorted(names)
    assert sum(json.loads(out)["reads"] for _, out, _ in results) >= 100


# 4. writers at once --------------------------------------------------------------------------
def test_writes_in_a_staging_subdirectory_while_commits_land(mounted, tmp_path):
    """Regression: a commit renumbers staging's inodes. A create in a staging subdirectory that
    waited for the commit, or that went through a directory entry the kernel still held (busy when
    the daemon invalidated staging/), got ENOENT. Now every write succeeds and lands in a version
    or in staging."""
    m = mounted
    os.makedirs(m.path("a", "staging", "sub", "deeper"))
    put_file(m.path("a", "staging", "sub", "deeper", "x"), b"x")
    m.cli("commit", "a")
    plan = [(f"sub/deeper/w{j:03d}", 1000 + j, "new") for j in range(150)]
    plan_path, log_path = tmp_path / "plan.json", tmp_path / "closed"
    plan_path.write_text(json.dumps(plan))
    writer = launch("-c", WRITER, m.path("a", "staging"), str(plan_path), str(log_path), "t", "0.01")
    commits = 0
    try:
        while writer.poll() is None:
            proc = m.cli("commit", "a", check=False)
            assert proc.returncode in (0, 5), proc.stderr       # 5: a file was open for writing
            commits += proc.returncode == 0
    finally:
        code, _, err = finish(writer)
    assert code == 0, err
    assert commits >= 3
    m.cli("commit", "a")
    latest = files_under(m.path("a", "latest"))
    for rel, size, _ in plan:
        assert latest[rel] == data_for(f"t/{rel}", size), rel


@pytest.mark.slow
def test_commit_puts_and_staging_writes_at_once(mounted, tmp_path):
    """Per round, at once and in a random order: ``artfs commit a`` (16 MiB of changes), ``artfs
    put a`` and ``artfs put b`` from other processes, and a writer creating files in a/staging and
    b/staging. All succeed (a commit refused because a staging file is open for writing - the
    documented exit 5 - is retried); version numbers stay consecutive; every put and commit made
    exactly its version; no file the writer closed is lost; verify is clean.

    The writer may see its directory a/staging/wR vanish: the commit took it into its version, and
    the put of a, landing after it, moved latest - which a staging without changes shows - to a
    tree without it (documented: the last writer wins). It then makes the directory again; an
    ENOENT in a round where the put landed before the commit fails the test."""
    m, rng = mounted, random.Random(4242)
    store = m.store
    os.mkdir(m.path("a"))
    put_file(m.path("a", "staging", "seed"), b"seed")
    m.cli("commit", "a")
    write(str(tmp_path / "b0" / "seed"), b"b seed")
    m.cli("put", "b", tmp_path / "b0")
    b_closed: dict[str, bytes] = {}     # writer files of b/staging: never committed in a round
    refused = 0
    for r in range(5):
        model = files_under(m.path("a", "staging"))
        model[f"big{r}"] = os.urandom(16 * MiB)
        model["round"] = b"%d" % r
        for rel in (f"big{r}", "round"):
            put_file(m.path("a", "staging", rel), model[rel])
        srcs = {}
        for name in ("a", "b"):
            d = srcs[name] = tmp_path / f"src-{name}{r}"
            write(str(d / "origin"), f"put {name} round {r}".encode())
            write(str(d / "sub" / "data.bin"), os.urandom(rng.randrange(2, 6) * MiB))
        plan = [(f"{name}/staging/w{r}/{j}.bin", rng.choice(SIZES[:6]), "new")
                for j in range(12) for name in ("a", "b")]
        plan_path, log_path = tmp_path / f"wplan{r}.json", tmp_path / f"wlog{r}"
        plan_path.write_text(json.dumps(plan))
        before = versions(store, "a")
        starts = {
            "commit": ("-m", "artfs", "--store", store, "commit", "a"),
            "put a": ("-m", "artfs", "--store", store, "put", "a", str(srcs["a"])),
            "put b": ("-m", "artfs", "--store", store, "put", "b", str(srcs["b"])),
            "writer": ("-c", WRITER, m.mnt, str(plan_path), str(log_path), f"r{r}", "0.01",
                       "vanish"),
        }
        order = rng.sample(sorted(starts), len(starts))
        procs = {}
        for what in order:
            procs[what] = launch(*starts[what])
            time.sleep(rng.uniform(0, 0.15))
        done = {what: finish(p) for what, p in procs.items()}
        while done["commit"][0] == 5 and "is open for writing" in done["commit"][2]:
            refused += 1                                # documented refusal: try again
            done["commit"] = finish(launch(*starts["commit"]))
        for what, (code, out, err) in done.items():
            assert code == 0, (r, what, err)
        # consecutive numbers, and exactly one new version each for the put and the commit
        now = versions(store, "a")
        assert sorted(now) == list(range(len(now)))
        assert {n: now[n] for n in before} == before
        made = {what: int(done[what][1].strip().split(":v")[1]) for what in ("commit", "put a")}
        if "ENOENT, again" in done["writer"][2]:           # only if wR can have vanished
            assert made["put a"] > made["commit"], (r, made, done["writer"][2])
        assert sorted(made.values()) == sorted(set(now) - set(before)), (made, sorted(now))
        assert files_under(m.path("a", f"v{made['put a']}")) == files_under(srcs["a"])
        vb = int(done["put b"][1].strip().split(":v")[1])
        assert files_under(m.path("b", f"v{vb}")) == files_under(srcs["b"])
        # the commit: the staging it started from, plus writer files closed before it ran
        closed = {rel: data_for(f"r{r}/{rel}", size) for rel, size, _ in plan
                  if rel in set(lines(log_path))}
        assert len(closed) == len(plan)
        got = files_under(m.path("a", f"v{made['commit']}"))
        assert {rel: got.get(rel) for rel in model} == model, r
        extra = {f"a/staging/{rel}": data for rel, data in got.items() if rel not in model}
        assert {rel: closed.get(rel) for rel in extra} == extra
        staging_now = files_under(m.path("a", "staging"))
        for rel, data in closed.items():                # none lost
            inside = rel.split("/", 2)[2]
            if rel.startswith("a/"):
                assert got.get(inside) == data or staging_now.get(inside) == data, (r, rel)
            else:
                b_closed[inside] = data
        assert {rel: files_under(m.path("b", "staging")).get(rel) for rel in b_closed} == b_closed
        verify_cli(store)
    vb = m.cli("commit", "b").stdout.strip()             # b's staging: all its writer files
    assert {rel: files_under(m.path("b", vb.split(":")[1])).get(rel) for rel in b_closed} == b_closed


# 5. deleting a version that is open ----------------------------------------------------------
HOLDER = r"""
import hashlib, os, sys, time
path, go = sys.argv[1:]
with open(path, "rb") as f:
    head = f.read(4096)
    print("open", flush=True)
    while not os.path.exists(go):
        time.sleep(0.01)
    print(hashlib.sha256(head + f.read()).hexdigest(), flush=True)
"""


def zombies(store) -> int:
    with Repo(str(store)) as repo, repo.db.read() as txn:
        return len(repo.objects.zombies(txn))


def hold(path, go) -> subprocess.Popen:
    """A process that opens PATH, reads 4 KiB, says so, and reads the rest once GO exists."""
    p = subprocess.Popen([PY, "-c", HOLDER, str(path), str(go)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "open\n", p.stderr.read()
    return p


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_rm_of_open_versions_frees_their_space_on_last_close(mounted, tmp_path):
    """``artfs rm`` of the latest version while other processes (and an mmap) have its files open,
    one of them through ``latest``: the version vanishes for new lookups at once, latest moves back,
    every open file reads to its end correctly, what is not open is freed at once, the rest on the
    last close (du: exactly the version's unique bytes), verify is clean."""
    m = mounted
    common, only0 = os.urandom(4 * MiB), os.urandom(3 * MiB)
    v1 = {"common.bin": common, "only1a.bin": os.urandom(5 * MiB), "only1b.bin": os.urandom(2 * MiB),
          "sub/deep.bin": os.urandom(MiB)}
    for rel, data in {"common.bin": common, "only0.bin": only0}.items():
        write(str(tmp_path / "v0" / rel), data)
    for rel, data in v1.items():
        write(str(tmp_path / "v1" / rel), data)
    m.cli("put", "a", tmp_path / "v0")
    m.cli("put", "a", tmp_path / "v1")
    du = cli_json(m.store, "du", "a")["artifacts"][0]["versions"]
    unique = {v["version"]: v["unique_bytes"] for v in du}
    assert unique["v1"] == 8 * MiB                      # only1a + only1b + deep: chunk bytes
    before = stored_bytes(m.store)
    go = tmp_path / "go"
    holders = {rel: hold(m.path("a", where, rel), go) for rel, where in
               (("only1a.bin", "latest"), ("sub/deep.bin", "v1"), ("common.bin", "v1"))}
    try:
        with open(m.path("a", "v1", "only1a.bin"), "rb") as f, \
                mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
            m.cli("rm", "a:v1")
            for gone in ("v1", "v1/only1b.bin", "v1/sub/deep.bin", "latest/only1a.bin"):
                assert oserror(os.stat, m.path("a", gone)) == errno.ENOENT, gone
            assert sorted(os.listdir(m.path("a"))) == ["latest", "staging", "v0"]
            assert os.readlink(m.path("a", "latest")) == "v0"
            assert before - stored_bytes(m.store) == 2 * MiB   # only1b: nobody had it open
            assert zombies(m.store) == 2                        # only1a, deep (common is in v0)
            assert mm[:] == v1["only1a.bin"]
            go.touch()
            for rel, p in holders.items():
                out, err = p.communicate(timeout=60)
                assert p.returncode == 0, err
                assert out.strip() == sha(v1[rel]), rel
            wait_for(lambda: zombies(m.store) == 1, 10, "deep.bin to be freed")  # only1a: mmap
        wait_for(lambda: zombies(m.store) == 0, 10, "the last close to free the zombies")
    finally:
        for p in holders.values():
            reap(p)
    assert before - stored_bytes(m.store) == unique["v1"]
    assert read(m.path("a", "v0", "only0.bin")) == only0
    verify_cli(m.store)


def test_open_deleted_version_survives_a_daemon_crash(mount_factory, tmp_path):
    """A deleted version's file open when the daemon is SIGKILLed: verify is clean (the zombie is
    accounted), and the next mount frees it (du shows the space back)."""
    m = mount_factory().start()
    write(str(tmp_path / "v0" / "keep"), os.urandom(MiB))
    write(str(tmp_path / "v1" / "gone"), os.urandom(3 * MiB))
    m.cli("put", "a", tmp_path / "v0")
    m.cli("put", "a", tmp_path / "v1")
    before = stored_bytes(m.store)
    holder = hold(m.path("a", "v1", "gone"), tmp_path / "never")
    try:
        m.cli("rm", "a:v1")
        assert zombies(m.store) == 1 and stored_bytes(m.store) == before
        crash(m, holder)
    finally:
        reap(holder)
    verify_cli(m.store)
    assert zombies(m.store) == 1
    m.start()
    assert zombies(m.store) == 0
    assert before - stored_bytes(m.store) == 3 * MiB
    assert read(m.path("a", "v0", "keep")) == read(tmp_path / "v0" / "keep")
    m.stop()
    verify_cli(m.store)


def test_opens_racing_rm_read_the_right_bytes_or_enoent(mounted, tmp_path):
    """Eight threads open and read the files of a version in a loop - by path, and through a
    directory fd opened before (whose entries the kernel keeps after ``rm``, so their opens reach
    the daemon after the delete) - while ``artfs rm`` deletes it, six rounds: every open either
    reads the version's bytes to the end or fails ENOENT/ESTALE (never EIO, never other bytes);
    the daemon logs no damage; every zombie is freed after the last close; verify is clean."""
    m = mounted
    write(str(tmp_path / "keep" / "k"), b"keep")
    m.cli("put", "a", tmp_path / "keep")                     # v0 stays: a keeps existing
    for r in range(1, 7):
        src = {f"f{i}": os.urandom(192 * 1024) for i in range(6)}   # unique bytes: rm frees them
        for name, data in src.items():
            write(str(tmp_path / f"r{r}" / name), data)
        m.cli("put", "a", tmp_path / f"r{r}")
        vdir = m.path("a", f"v{r}")
        dfd = os.open(vdir, os.O_RDONLY | os.O_DIRECTORY)
        stop, problems = threading.Event(), []
        counts = [{"read": 0, "refused": 0} for _ in range(8)]

        def reader(k: int) -> None:
            rng, mine = random.Random(r * 100 + k), counts[k]
            while not stop.is_set():
                name = rng.choice(sorted(src))
                try:
                    fd = (os.open(name, os.O_RDONLY, dir_fd=dfd) if k % 2
                          else os.open(os.path.join(vdir, name), os.O_RDONLY))
                except OSError as e:
                    if e.errno not in (errno.ENOENT, errno.ESTALE):
                        problems.append(f"open {name}: {e}")
                    mine["refused"] += 1
                    continue
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)   # reads reach the daemon
                    got = b"".join(iter(lambda: os.read(fd, 65536), b""))
                    if got != src[name]:
                        problems.append(f"{name}: {len(got)} bytes, not the version's")
                    mine["read"] += 1
                except OSError as e:
                    problems.append(f"read {name}: {e}")
                finally:
                    os.close(fd)

        def total(what: str) -> int:
            return sum(c[what] for c in counts)
        threads = [threading.Thread(target=reader, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: total("read") >= 40, 60, "reads before the rm")
            m.cli("rm", f"a:v{r}")
            wait_for(lambda: total("refused") >= 200 or problems, 60, "opens refused after the rm")
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
            os.close(dfd)
        assert not problems, (r, problems[:5])
    wait_for(lambda: zombies(m.store) == 0, 10, "the last close to free the zombies")
    log = m.log_text()
    assert "I/O error" not in log and "missing object" not in log and "Traceback" not in log, log
    verify_cli(m.store)


# 6. faults: a full disk, a corrupt chunk -----------------------------------------------------
@pytest.fixture
def small_store(tmp_path, mount_factory):
    """A Mount (not started) whose store is on a 48 MiB tmpfs; daemon stopped before the umount."""
    need_root("mounting a small tmpfs needs root")
    fs = tmp_path / "small"
    fs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(fs)], check=True)
    m = mount_factory(store=fs / "store")
    try:
        yield m
    finally:
        m.stop()
        if subprocess.run(["umount", str(fs)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(fs)], capture_output=True)
        assert not in_mount_table(fs)


def test_staging_copy_that_does_not_fit_is_enospc_and_recovers(small_store, tmp_path):
    """cp of 64 MiB into staging on a 48 MiB store fails with ENOSPC; the mount stays up, verify
    is clean, deleting the partial file frees the space and a commit works again."""
    m = small_store.start()
    os.mkdir(m.path("a"))
    keep = os.urandom(MiB)
    put_file(m.path("a", "staging", "keep"), keep)
    m.cli("commit", "a")
    write(str(tmp_path / "big"), os.urandom(64 * MiB))
    cp = subprocess.run(["cp", str(tmp_path / "big"), m.path("a", "staging", "big")],
                        capture_output=True, text=True)
    assert cp.returncode != 0 and "No space left on device" in cp.stderr, cp.stderr
    assert m.proc.poll() is None and os.path.ismount(m.mnt)          # the mount is still up
    assert read(m.path("a", "v0", "keep")) == keep
    assert sorted(os.listdir(m.path("a", "staging"))) == ["big", "keep"]
    for attempt in (lambda: os.mkdir(m.path("a", "staging", "d")),        # on the full disk:
                    lambda: put_file(m.path("a", "staging", "t"), b"t" * 65536)):  # ok or ENOSPC
        try:
            attempt()
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    verify_cli(m.store)
    os.unlink(m.path("a", "staging", "big"))                          # frees its data file
    # once the daemon's background store of the closed file (if running) stops and closes it
    wait_for(lambda: os.statvfs(m.store).f_bavail * os.statvfs(m.store).f_frsize > 30 * MiB,
             30, "the space of the unlinked file freed")
    small = os.urandom(4 * MiB)
    put_file(m.path("a", "staging", "small"), small)
    assert m.cli("commit", "a").stdout.strip() == "a:v1"
    assert {k: v for k, v in files_under(m.path("a", "v1")).items() if k != "t"} == \
        {"keep": keep, "small": small}
    m.stop()
    verify_cli(m.store)
    assert "Traceback" not in m.log_text()


def test_commit_that_does_not_fit_fails_cleanly(small_store):
    """A commit needing more than the store's disk has (files small enough to be stored by copy:
    repo/ingest.py ADOPT_MIN): exit 9 (NoSpace) with one clear line, no version, staging intact,
    verify clean, the mount still serving; it works once it fits. A file big enough to be
    adopted needs no second copy of its bytes: 26 MiB then commits on the 48 MiB disk."""
    m = small_store.start()
    os.mkdir(m.path("a"))
    files = {f"f{i}": os.urandom(3 * MiB) for i in range(9)}
    for name, content in files.items():
        put_file(m.path("a", "staging", name), content)
    proc = m.cli("commit", "a", check=False)
    assert proc.returncode == NoSpace.exit_code == 9, proc.stderr
    assert "no space left" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert m.proc.poll() is None
    assert versions(m.store, "a") == {}
    assert not any(n.startswith("v") for n in os.listdir(m.path("a")))
    assert sorted(cli_json(m.store, "status", "a")["added"]) == sorted(files)
    assert all(read(m.path("a", "staging", n)) == content for n, content in files.items())
    verify_cli(m.store)
    for name in list(files)[3:]:                                      # make it fit
        os.unlink(m.path("a", "staging", name))
        del files[name]
    assert m.cli("commit", "a").stdout.strip() == "a:v0"
    assert all(read(m.path("a", "v0", n)) == content for n, content in files.items())
    big = os.urandom(26 * MiB)
    put_file(m.path("a", "staging", "big"), big)
    assert m.cli("commit", "a").stdout.strip() == "a:v1"
    assert read(m.path("a", "v1", "big")) == big
    m.stop()
    verify_cli(m.store)
    assert "Traceback" not in m.log_text()


def test_corrupt_chunk_is_eio_in_every_view_and_verify_names_version_and_path(mount_factory, tmp_path):
    """One damaged chunk of a file shared by v0 and v1: reads of those bytes are EIO through vN,
    latest and staging (logged once), the file's other bytes and every other file still read,
    and verify exits 7 naming each affected version with the file's path."""
    m = mount_factory()
    f, g0, g1 = os.urandom(4 * MiB), os.urandom(MiB), os.urandom(MiB)
    write(str(tmp_path / "v0" / "sub" / "f"), f)
    write(str(tmp_path / "v0" / "g"), g0)
    write(str(tmp_path / "v1" / "sub" / "f"), f)
    write(str(tmp_path / "v1" / "g"), g1)
    m.cli("put", "a", tmp_path / "v0")
    m.cli("put", "a", tmp_path / "v1")
    with Repo(m.store) as repo:
        v = repo.resolve("a", "v0")
        sub = next(e for e in repo.tree(v.root).entries if e.name == b"sub")
        fobj = repo.file(repo.tree(sub.ref).entries[0].ref)
        bad, at, length = fobj.chunks[2], fobj.offsets[2], fobj.lengths[2]
    damage_blob(m.store, bad, "corrupt")
    m.start()
    # the kernel reads whole pages: bytes sharing a page with the damaged chunk fail with it
    before, after = at // 4096 * 4096, -(-(at + length) // 4096) * 4096
    for view in ("v0", "v1", "latest", "staging"):
        fd = os.open(m.path("a", view, "sub", "f"), os.O_RDONLY)
        try:
            assert os.pread(fd, before, 0) == f[:before], view          # the pages before it
            assert oserror(os.pread, fd, 4096, at + length // 2) == errno.EIO, view
            assert os.pread(fd, 8192, after) == f[after:after + 8192], view   # and after it
        finally:
            os.close(fd)
        assert read(m.path("a", view, "g")) == (g0 if view == "v0" else g1)
    assert m.log_text().count(bad.hex()) == 1                 # one log line, not one per read
    proc = run_cli(m.store, "verify")
    assert proc.returncode == 7, proc.stdout
    damaged = [line for line in proc.stdout.splitlines() if bad.hex() in line]
    assert sorted(line.split(": ")[0] for line in damaged) == ["a:v0 sub/f", "a:v1 sub/f"], proc.stdout
    assert "DAMAGED" in proc.stdout and "g" not in " ".join(line.split(": ")[0] for line in damaged)


@pytest.fixture
def slow_disk(tmp_path):
    """A directory on a disk whose every read waits 200 ms: scripts/passthrough.py --writable
    --delay-read 0.2 mounted over tmp_path/back (other requests are answered meanwhile)."""
    back, mnt = tmp_path / "back", tmp_path / "slow"
    back.mkdir()
    mnt.mkdir()
    log = open(tmp_path / "passthrough.log", "ab")
    proc = subprocess.Popen([PY, str(PASSTHROUGH), str(back), str(mnt), "--writable",
                             "--delay-read", "0.2"], stdout=log, stderr=log)
    try:
        wait_for(lambda: in_mount_table(mnt) or proc.poll() is not None, 30, "the slow disk")
        assert proc.poll() is None, (tmp_path / "passthrough.log").read_text()
        yield mnt
    finally:
        if in_mount_table(mnt) and subprocess.run(["fusermount3", "-u", str(mnt)]).returncode:
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)])
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            reap(proc)
        log.close()
        assert not in_mount_table(mnt)


def test_a_read_waiting_for_a_slow_disk_never_holds_up_ls(slow_disk, mount_factory, tmp_path):
    """The store on a slow disk (every read of it takes 200 ms): while a cold read of a file
    through the mount waits for the disk, ``ls`` of the artifact directory keeps being answered -
    several listings complete between the read's start and its end - and the read returns the
    file's bytes. (The read is served in a worker thread, the listings on the trio loop.)"""
    m = mount_factory(store=slow_disk / "store").start()
    data = os.urandom(128 * 1024)
    write(str(tmp_path / "src" / "f"), data)
    m.cli("put", "a", tmp_path / "src")
    for _ in range(3):                       # the daemon reads (and maps) what listings need
        os.listdir(m.path("a"))
        os.stat(m.path("a", "v0", "f"))
    drop_data_cache(slow_disk / "store")   # the chunks the put wrote: cold now
    events, stop = [], threading.Event()

    def lister() -> None:
        while not stop.is_set():
            os.listdir(m.path("a"))
            events.append("ls")
    t = threading.Thread(target=lister)
    t.start()
    try:
        wait_for(lambda: events.count("ls") >= 3, 30, "listings before the read")
        with open(m.path("a", "v0", "f"), "rb") as f:
            events.append("read")
            got = f.read()
            events.append("done")
    finally:
        stop.set()
        t.join(timeout=60)
    assert got == data
    during = events[events.index("read"):events.index("done")].count("ls")
    assert during >= 5, f"only {during} listings completed while the read waited"
    m.stop()
    m.verify()


# 7. scale ------------------------------------------------------------------------------------
def test_a_thousand_open_files_at_once(mounted, tmp_path):
    """500 version files, each open twice (through v0 and through latest): 1000 descriptors on the
    mount at once, all read correctly in a random interleaved order, then closed; verify clean."""
    m, rng = mounted, random.Random(500)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    src = {f"d{i % 7}/f{i:03d}": data_for(f"open{i}", rng.choice((1, 4096, 70_000, 300_000)))
           for i in range(500)}
    for rel, data in src.items():
        write(str(tmp_path / "src" / rel), data)
    m.cli("put", "a", tmp_path / "src")
    fds = {}
    try:
        for rel in src:
            for view in ("v0", "latest"):
                fds[view, rel] = os.open(m.path("a", view, rel), os.O_RDONLY)
        assert len(fds) == 1000
        order = list(fds)
        for _ in range(2):
            rng.shuffle(order)
            for key in order:
                data = src[key[1]]
                off = rng.randrange(len(data))
                assert os.pread(fds[key], 65536, off) == data[off:off + 65536], key
    finally:
        for fd in fds.values():
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.slow
def test_a_directory_of_100000_entries(mounted, tmp_path):
    """A version directory of 100,000 tiny files (put through the API): listdir on the mount
    returns exactly the 100,000 names, and a sample stats and reads right."""
    m, rng = mounted, random.Random(100_000)
    wide = tmp_path / "src" / "wide"
    wide.mkdir(parents=True)
    names = [f"e{i:06d}" for i in range(100_000)]
    for i, name in enumerate(names):
        with open(wide / name, "wb") as f:
            f.write(b"%d" % (i % 997))
    with artfs.Store(m.store) as store:
        store.put("a", str(tmp_path / "src"))
    listed = os.listdir(m.path("a", "v0", "wide"))
    assert len(listed) == 100_000 and sorted(listed) == names
    for i in rng.sample(range(100_000), 300):
        p = m.path("a", "latest", "wide", names[i])
        assert os.stat(p).st_size == len(b"%d" % (i % 997))
        assert read(p) == b"%d" % (i % 997)
    assert len(os.listdir(m.path("a", "staging", "wide"))) == 100_000   # staging's view too
    put_file(m.path("a", "staging", "wide", "new"), b"new")               # one entry changed
    assert m.cli("commit", "a").stdout.strip() == "a:v1"
    assert len(os.listdir(m.path("a", "v1", "wide"))) == 100_001


def test_a_tree_100_directories_deep(mounted, tmp_path):
    """Depth 100 written through staging, committed and read back through the mount; and a depth
    100 tree put through the API and read back through the mount."""
    m = mounted
    rel = os.path.join(*[f"d{i:02d}" for i in range(100)])
    os.makedirs(m.path("a", "staging", rel))
    expected = {}
    for depth in range(0, 101, 10):
        part = os.path.join(*[f"d{i:02d}" for i in range(depth)], f"at{depth}") if depth else "at0"
        expected[part] = data_for(part, 1000 + depth)
        put_file(m.path("a", "staging", part), expected[part])
    assert m.cli("commit", "a").stdout.strip() == "a:v0"
    assert files_under(m.path("a", "v0")) == expected
    assert os.path.isdir(m.path("a", "latest", rel))
    assert tree_snapshot(m.path("a", "v0")) == tree_snapshot(m.path("a", "staging"))
    for part, data in expected.items():
        write(str(tmp_path / "deep" / part), data)
    m.cli("put", "b", tmp_path / "deep")
    assert files_under(m.path("b", "v0")) == expected
    assert tree_snapshot(m.path("b", "v0")) == tree_snapshot(tmp_path / "deep")


def test_zero_byte_files_through_the_mount(mounted, tmp_path):
    """Empty files created, truncated and copied in staging commit as empty files; empty files
    put through the API read as empty; all stat with size 0."""
    m = mounted
    s = m.path("a", "staging")
    os.makedirs(os.path.join(s, "d"))
    put_file(os.path.join(s, "full"), b"x" * 100_000)
    put_file(os.path.join(s, "tobetruncated"), b"y" * 5000)
    m.cli("commit", "a")
    open(os.path.join(s, "created"), "wb").close()                       # create + close
    os.close(os.open(os.path.join(s, "d", "excl"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    os.truncate(os.path.join(s, "tobetruncated"), 0)                     # committed -> empty
    open(os.path.join(s, "full"), "wb").close()                          # O_TRUNC
    subprocess.run(["cp", "/dev/null", os.path.join(s, "copied")], check=True)
    empty = ["created", "d/excl", "tobetruncated", "full", "copied"]
    assert m.cli("commit", "a").stdout.strip() == "a:v1"
    for view in ("v1", "latest", "staging"):
        for rel in empty:
            p = m.path("a", view, rel)
            assert os.stat(p).st_size == 0 and read(p) == b"", (view, rel)
    assert os.stat(m.path("a", "v1", "d", "excl")).st_mode & 0o777 == 0o600
    for rel in ("e1", "sub/e2"):
        write(str(tmp_path / "empties" / rel), b"")
    m.cli("put", "b", tmp_path / "empties")
    assert files_under(m.path("b", "v0")) == {"e1": b"", "sub/e2": b""}
