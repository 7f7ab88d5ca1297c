#!/usr/bin/env python3
"""artfs benchmark: artfs vs a pyfuse3 passthrough vs native local disk.

One command builds its data under a temp dir, runs every workload on each
target in the same run (repeats interleaved, median reported) and prints a
table with the ratios artfs/native and artfs/passthrough.

    python scripts/bench.py                 # full run (~10 min on 2 cores)
    python scripts/bench.py --quick         # tiny sizes, seconds (CI smoke)
    python scripts/bench.py --only 1,2,stat --json out.json
    python scripts/bench.py --targets native,passthrough

Workloads are listed in WORKLOADS (see docs/benchmarks.md). No timing
assertions anywhere: an error in one (workload, target) cell is recorded in
the table and the run goes on (exit status 1 if any cell failed).
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import multiprocessing as mp
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import bench_crypto   # workload 9 (scripts/bench_crypto.py)

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.helpers import rchar   # noqa: E402 - the daemon's read count (row 5e)
PASSTHROUGH = REPO / "scripts" / "passthrough.py"
TARGETS = ("native", "passthrough", "artfs")
BUF = 1 << 20


class BenchError(Exception):
    """A failure worth one line in the table (not a traceback)."""


# --------------------------------------------------------------------------
# sizes

@dataclass
class Sizes:
    big: int = 1 * GiB              # workloads 1, 2, 5
    small_n: int = 10_000           # workloads 3, 6
    small_size: int = 16 * KiB
    small_dirs: int = 100
    tree_n: int = 100_000           # workload 4
    tree_dirs: int = 1_000
    readers: int = 8                # workload 6
    reads_per_reader: int = 1_250
    ver_files: int = 50             # workload 7
    ver_file_size: int = 4 * MiB
    versions: int = 10
    repeats: int = 3
    settle: float = 5.0             # wait after drop_caches before a cold read
    timeout: float = 600.0          # per (workload, target) cell

    @classmethod
    def make(cls, quick: bool, scale: float) -> "Sizes":
        s = cls()
        if quick:
            s = cls(big=8 * MiB, small_n=300, small_dirs=10, tree_n=2_000, tree_dirs=20,
                    reads_per_reader=50, ver_files=5, ver_file_size=256 * KiB, versions=3,
                    settle=0.2, timeout=120.0)
        if scale != 1.0:
            s.big = max(MiB, int(s.big * scale))
            s.small_n = max(s.small_dirs, int(s.small_n * scale))
            s.tree_n = max(s.tree_dirs, int(s.tree_n * scale))
            s.reads_per_reader = max(10, int(s.reads_per_reader * scale))
            s.ver_file_size = max(64 * KiB, int(s.ver_file_size * scale))
        return s


# --------------------------------------------------------------------------
# machine / kernel helpers

def run(cmd: list[str], timeout: float = 600, check: bool = True, **kw) -> subprocess.CompletedProcess:
    env = dict(kw.pop("env", os.environ))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, **kw)
    if check and p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        raise BenchError(f"`{' '.join(cmd[:6])}` exit {p.returncode}: {' | '.join(tail)}")
    return p


def meminfo(field: str) -> int:
    """A field of /proc/meminfo in bytes (0 if absent)."""
    with open("/proc/meminfo") as f:
        return next((int(l.split()[1]) << 10 for l in f if l.startswith(field + ":")), 0)


def machine_info() -> dict:
    fuse = subprocess.run(["fusermount3", "-V"], capture_output=True, text=True).stdout.strip()
    return {"cores": os.cpu_count(), "ram_gib": round(meminfo("MemTotal") / 2**30, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "fusermount3": fuse, "root": os.geteuid() == 0}


def drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def fadvise_dontneed(root: Path) -> None:
    """Best effort without root: evict clean pages of every file under root."""
    for dirpath, _, files in os.walk(root):
        for n in files:
            with contextlib.suppress(OSError):
                fd = os.open(os.path.join(dirpath, n), os.O_RDONLY)
                try:
                    os.fdatasync(fd)
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)


def bdi_path(path: Path) -> Path:
    dev = os.stat(path).st_dev
    return Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb")


def read_ahead(path: Path, set_kb: int | None = None) -> int | None:
    """Read (and optionally set) the read_ahead_kb of path's backing bdi."""
    try:
        p = bdi_path(path)
        if set_kb is not None:
            p.write_text(f"{set_kb}\n")
        return int(p.read_text())
    except OSError:
        return None


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    with contextlib.suppress(OSError):
        for line in open(f"/proc/{pid}/status"):
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS", "RssAnon"):
                out[k] = int(v.split()[0]) * KiB
    return out


def find_daemon_pid(mountpoint: Path, store: Path | None, popen_pid: int | None) -> int | None:
    """The FUSE daemon of mountpoint: STORE/daemon.json or .pid, our Popen, or a /proc scan."""
    alive = lambda pid: pid and os.path.exists(f"/proc/{pid}")  # noqa: E731
    if store is not None:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            pid = int(json.loads((store / "daemon.json").read_text())["pid"])
            if alive(pid):
                return pid
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((store / "daemon.pid").read_text().split()[0])
            if alive(pid):
                return pid
    if alive(popen_pid):
        return popen_pid
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            with contextlib.suppress(OSError):
                argv = (d / "cmdline").read_bytes().split(b"\0")
                if b"mount" in argv and os.fsencode(mountpoint) in argv:
                    return int(d.name)
    return None


# --------------------------------------------------------------------------
# FUSE mounts

class FuseMount:
    """A foreground FUSE daemon started by us; always unmounted and reaped."""

    def __init__(self, label: str, argv: list[str], mountpoint: Path, log: Path,
                 store: Path | None = None, timeout: float = 60.0, ra_kb: int | None = 1024):
        self.label, self.argv, self.mnt, self.log = label, argv, mountpoint, log
        self.ra_kb = ra_kb
        self.store, self.timeout = store, timeout
        self.proc: subprocess.Popen | None = None
        self.peak_rss = self.peak_anon = 0
        self.read_ahead: dict = {}
        self._stop_sampling = threading.Event()

    def __enter__(self) -> "FuseMount":
        self.mnt.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        logf = open(self.log, "ab")
        try:
            self.proc = subprocess.Popen(self.argv, stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        finally:
            logf.close()
        try:
            deadline = time.monotonic() + self.timeout
            while not os.path.ismount(self.mnt):
                if self.proc.poll() is not None:
                    raise BenchError(f"{self.label} mount exited {self.proc.returncode}: {self.log_tail()}")
                if time.monotonic() > deadline:
                    raise BenchError(f"{self.label} mount not ready after {self.timeout:.0f}s")
                time.sleep(0.05)
            while self.store and time.monotonic() < deadline and not any(
                    (self.store / f).exists() for f in ("daemon.json", "daemon.pid")):
                time.sleep(0.05)   # artfs: control socket up (commit goes to the daemon)
            before = read_ahead(self.mnt)
            self.read_ahead = {"default_kb": before, "kb": read_ahead(self.mnt, self.ra_kb)}
        except BaseException:
            self.stop()
            raise
        self._stop_sampling.clear()
        threading.Thread(target=self._sampler, daemon=True).start()
        return self

    def _sampler(self) -> None:
        while not self._stop_sampling.wait(0.2):
            with contextlib.suppress(Exception):
                self.sample_rss()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return find_daemon_pid(self.mnt, self.store, self.proc.pid if self.proc else None)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and os.path.ismount(self.mnt)

    def sample_rss(self) -> int:
        pid = self.pid
        st = proc_status(pid) if pid else {}
        self.peak_rss = max(self.peak_rss, st.get("VmHWM", 0), st.get("VmRSS", 0))
        self.peak_anon = max(self.peak_anon, st.get("RssAnon", 0))
        return self.peak_rss

    def log_tail(self, n: int = 3) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-n:])
        return ""

    def abort(self) -> None:
        """Watchdog: kill the daemon so blocked syscalls on the mount fail."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], capture_output=True)

    def stop(self) -> None:
        if self.proc is None:
            return
        self._stop_sampling.set()
        with contextlib.suppress(Exception):
            self.sample_rss()
        if os.path.ismount(self.mnt):
            if subprocess.run(["fusermount3", "-u", str(self.mnt)], capture_output=True).returncode:
                subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], capture_output=True)
        for action in (None, self.proc.terminate, self.proc.kill):
            if action:
                action()
            try:
                self.proc.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        self.proc = None


@contextlib.contextmanager
def watchdog(seconds: float, on_timeout: Callable[[], None] | None):
    fired = threading.Event()

    def fire():
        fired.set()
        if on_timeout:
            on_timeout()
    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    except Exception as e:
        if fired.is_set():
            raise BenchError(f"timed out after {seconds:.0f}s (mount aborted): {e}") from e
        raise
    finally:
        timer.cancel()
    if fired.is_set():
        raise BenchError(f"timed out after {seconds:.0f}s")


# --------------------------------------------------------------------------
# data sets (native, under WORK/data)

def write_random(path: Path, size: int, rng: random.Random) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 16 * MiB)
            f.write(rng.randbytes(n))
            left -= n


def build_big(root: Path, sz: Sizes) -> None:
    write_random(root / "data.bin", sz.big, random.Random(1))


def small_paths(sz: Sizes) -> list[str]:
    return [f"d{i % sz.small_dirs:03d}/f{i:05d}.bin" for i in range(sz.small_n)]


def build_small(root: Path, sz: Sizes) -> None:
    rng = random.Random(2)
    for d in range(sz.small_dirs):
        (root / f"d{d:03d}").mkdir(parents=True, exist_ok=True)
    for rel in small_paths(sz):
        (root / rel).write_bytes(rng.randbytes(sz.small_size))


def tree_count(sz: Sizes) -> int:
    return sz.tree_n // sz.tree_dirs * sz.tree_dirs


def build_tree(root: Path, sz: Sizes) -> None:
    per_dir = sz.tree_n // sz.tree_dirs
    for d in range(sz.tree_dirs):
        sub = root / f"a{d // 10:03d}" / f"b{d % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        for i in range(per_dir):
            (sub / f"f{i:04d}").write_bytes(b"%d/%d\n" % (d, i))


DATASETS = {"big": build_big, "small": build_small, "tree": build_tree}


# --------------------------------------------------------------------------
# targets

class Target:
    """Where a workload's data sets live; FUSE targets mount lazily."""
    name = "?"
    needs_mount = False

    def __init__(self, ctx: "Bench"):
        self.ctx = ctx
        self.error: str | None = None   # set when setup failed: every cell shows it
        self.mount: FuseMount | None = None
        self.peak_rss = self.peak_anon = 0
        self.read_ahead: dict = {}
        self.ra_kb = 1024   # read_ahead_kb for new mounts

    def set_read_ahead(self, kb: int) -> None:
        self.ra_kb = kb
        if self.mount:
            read_ahead(self.mount.mnt, kb)

    def setup(self, datasets: set[str]) -> None: ...
    def root(self, dataset: str) -> Path: raise NotImplementedError
    def evict(self) -> None:
        """Without root: drop the backing files' clean pages (fadvise)."""

    def new_mount(self) -> FuseMount: raise NotImplementedError

    def remount(self) -> None:
        self.teardown()
        m = self.new_mount()
        m.ra_kb = self.ra_kb
        self.mount = m.__enter__()
        if self.ra_kb == 1024 or not self.read_ahead:
            self.read_ahead = self.mount.read_ahead

    def teardown(self) -> None:
        if self.mount:
            self.mount.stop()
            self.peak_rss = max(self.peak_rss, self.mount.peak_rss)
            self.peak_anon = max(self.peak_anon, self.mount.peak_anon)
            self.mount = None

    def abort(self) -> None:
        if self.mount:
            self.mount.abort()

    def check(self) -> None:
        if self.error:
            raise BenchError(self.error)
        if self.needs_mount and not (self.mount and self.mount.alive()):
            self.remount()


class Native(Target):
    name = "native"

    def root(self, dataset: str) -> Path:
        return self.ctx.data / dataset

    def evict(self) -> None:
        fadvise_dontneed(self.ctx.data)


class Passthrough(Target):
    name = "passthrough"
    needs_mount = True

    def new_mount(self):
        mnt = self.ctx.work / "mnt" / "passthrough"
        argv = [sys.executable, str(PASSTHROUGH), str(self.ctx.data), str(mnt)]
        return FuseMount("passthrough", argv, mnt, self.ctx.work / "logs" / "passthrough.log")

    def root(self, dataset):
        return self.mount.mnt / dataset

    def evict(self):
        fadvise_dontneed(self.ctx.data)


def artfs_cmd(store: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "artfs", "--store", str(store), *args]


FILES_CACHE_GRACE = 2.1   # s: artfs's files cache reads again a file changed later than 2 s before
# a put (repo/files_cache.py GRACE_NS); a put meant to find a tree unchanged waits this long first


def artfs_put(store: Path, name: str, path: Path, msg: str = "bench") -> str:
    out = run(artfs_cmd(store, "put", name, str(path), "-m", msg), timeout=1800).stdout.strip()
    return out.splitlines()[-1].split(":")[-1] if out else "v0"


def artfs_mount(store: Path, mnt: Path, log: Path) -> FuseMount:
    argv = artfs_cmd(store, "mount", str(mnt), "--foreground")
    return FuseMount("artfs", argv, mnt, log, store=store)


class Artfs(Target):
    name = "artfs"
    needs_mount = True

    def __init__(self, ctx):
        super().__init__(ctx)
        self.store = ctx.work / "store"
        self.versions: dict[str, str] = {}

    def setup(self, datasets):
        try:
            run([sys.executable, "-m", "artfs", "--help"], timeout=60)
        except (BenchError, subprocess.TimeoutExpired) as e:
            self.error = f"artfs CLI unusable: {e}"
            return
        for ds in sorted(datasets):
            t = time.perf_counter()
            try:
                self.versions[ds] = artfs_put(self.store, ds, self.ctx.data / ds)
            except (BenchError, subprocess.TimeoutExpired) as e:
                self.error = f"artfs put {ds}: {e}"
                return
            self.ctx.setup_times[f"artfs put {ds}"] = round(time.perf_counter() - t, 2)

    def new_mount(self):
        return artfs_mount(self.store, self.ctx.work / "mnt" / "artfs", self.ctx.work / "logs" / "artfs.log")

    def root(self, dataset):
        vdir = self.mount.mnt / dataset / self.versions[dataset]
        probe = {"big": "data.bin", "small": "d000", "tree": "a000"}[dataset]
        for cand in (vdir, vdir / dataset):
            if (cand / probe).exists():
                return cand
        raise BenchError(f"{vdir} does not contain {probe}")

    def evict(self):
        fadvise_dontneed(self.store)


# --------------------------------------------------------------------------
# results + harness

@dataclass
class Row:
    id: str
    title: str
    unit: str
    higher_better: bool = True
    samples: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def median(self, t: str) -> float | None:
        s = self.samples.get(t)
        return statistics.median(s) if s else None

    def ratio(self, a: str, b: str) -> float | None:
        x, y = self.median(a), self.median(b)
        return x / y if x is not None and y else None

    def to_json(self) -> dict:
        return {"id": self.id, "title": self.title, "unit": self.unit,
                "higher_is_better": self.higher_better,
                "median": {t: self.median(t) for t in self.samples},
                "samples": self.samples, "errors": self.errors,
                "ratio": {"artfs/native": self.ratio("artfs", "native"),
                          "artfs/passthrough": self.ratio("artfs", "passthrough"),
                          "passthrough/native": self.ratio("passthrough", "native")}}


class Bench:
    def __init__(self, args, sizes: Sizes, work: Path):
        self.args, self.sz, self.work = args, sizes, work
        self.data = work / "data"
        (work / "logs").mkdir(parents=True, exist_ok=True)
        self.rows: dict[str, Row] = {}
        self.extra: dict = {}
        self.setup_times: dict[str, float] = {}
        self.can_drop = not args.no_drop_caches and drop_caches()
        self.targets: dict[str, Target] = {}

    def row(self, rid: str, title: str, unit: str, higher_better: bool = True) -> Row:
        if rid not in self.rows:
            self.rows[rid] = Row(rid, title, unit, higher_better)
        return self.rows[rid]

    def cold(self, target: Target) -> None:
        """Empty caches before a cold measurement on target.

        FUSE targets get a fresh daemon too: drop_caches cannot evict pages a
        process has mapped (artfs maps its LMDB store), and a new mount also
        starts with an empty page cache for its inodes (the no-root method)."""
        if target.needs_mount:
            target.teardown()
        if self.can_drop:
            drop_caches()
        else:
            target.evict()
        if target.needs_mount:
            target.remount()
        if self.can_drop:
            time.sleep(self.sz.settle)

    def measure(self, rows: dict[str, Row], targets: list[str],
                fn: Callable[[Target], dict[str, float]], cold: bool = False,
                warmup: bool = False, repeats: int | None = None) -> None:
        """Run fn on every target, repeats interleaved; fn returns {row id: value}."""
        active = [self.targets[t] for t in targets if t in self.targets]
        for t in active:
            if warmup:
                self._cell(rows, t, fn, record=False)
        for _ in range(repeats or self.sz.repeats):
            for t in active:
                if any(t.name in r.errors for r in rows.values()):
                    continue
                if cold:
                    with contextlib.suppress(Exception):
                        self.cold(t)
                self._cell(rows, t, fn)

    def _cell(self, rows, t: Target, fn, record: bool = True) -> None:
        try:
            t.check()
            with watchdog(self.sz.timeout, t.abort):
                values = fn(t)
            if record:
                for rid, v in values.items():
                    rows[rid].samples.setdefault(t.name, []).append(v)
        except (Exception, subprocess.TimeoutExpired) as e:
            msg = str(e) if isinstance(e, BenchError) else f"{type(e).__name__}: {e}"
            for r in rows.values():
                r.errors.setdefault(t.name, msg[:300])


# --------------------------------------------------------------------------
# workloads

def free_memory(work: Path, nbytes: int) -> None:
    """Leave NBYTES of just-freed page cache before a timed write (untimed): a file in WORK written
    and deleted at once, at most half of the memory available. On a VM that hands free memory back
    to its host (virtio-balloon free page reporting, as the development VM does), a write into a
    new file ran 400-660 MB/s, and 3,400-4,500 MB/s right after a file of that filesystem was
    deleted (memory freed from /dev/shm did not help: 790-840), so a cell that writes more than the
    cell before it freed measures the host. Each ingest cell starts like this (docs/benchmarks.md,
    "Writes and the VM's free memory")."""
    block = bytes(BUF)
    with tempfile.NamedTemporaryFile(dir=work) as f:
        for _ in range(min(nbytes, meminfo("MemAvailable") // 2) // BUF):
            f.write(block)
        f.flush()


def read_file(path: Path | str, buf: bytearray | None = None, uncached: bool = False) -> int:
    """Read a whole file; UNCACHED: drop the kernel's cached pages of it first (fadvise), so on
    a FUSE mount the reads reach the daemon while what is behind it stays in memory."""
    buf = buf or bytearray(BUF)
    n = 0
    with open(path, "rb", buffering=0) as f:
        if uncached:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        while (k := f.readinto(buf)):
            n += k
    return n


def timed_read(path: Path, expect: int) -> float:
    t = time.perf_counter()
    n = read_file(path)
    dt = time.perf_counter() - t
    if n != expect:
        raise BenchError(f"read {n} bytes from {path.name}, expected {expect}")
    return n / 1e6 / dt


def w_seq(b: Bench) -> None:
    sz = b.sz
    r1 = b.row("1", f"cold sequential read {human(sz.big)} (ra 1024 KiB)", "MB/s")
    r1b = b.row("1b", "  same, FUSE mounts at the kernel's default read_ahead_kb 128", "MB/s")
    r2 = b.row("2", f"warm re-read {human(sz.big)} (page cache)", "MB/s")
    seq = lambda t: {"x": timed_read(t.root("big") / "data.bin", sz.big)}  # noqa: E731
    b.measure({"x": r1}, list(TARGETS), seq, cold=True)
    fuse = [t for t in ("passthrough", "artfs") if t in b.targets and b.targets[t].read_ahead]
    for name in fuse:
        b.targets[name].set_read_ahead(128)
    try:
        b.measure({"x": r1b}, fuse, seq, cold=True)
    finally:
        for name in fuse:
            b.targets[name].set_read_ahead(1024)
    b.measure({"x": r2}, list(TARGETS), seq, warmup=True)


def walk_read(root: Path, expect_files: int, uncached: bool = False) -> dict[str, float]:
    buf = bytearray(BUF)
    t = time.perf_counter()
    files = 0
    for dirpath, _, names in os.walk(root):
        for n in names:
            read_file(os.path.join(dirpath, n), buf, uncached)
            files += 1
    dt = time.perf_counter() - t
    if files != expect_files:
        raise BenchError(f"walked {files} files, expected {expect_files}")
    return {"x": files / dt}


def w_small(b: Bench) -> None:
    sz = b.sz
    desc = f"{sz.small_n:,} x {human(sz.small_size)} in {sz.small_dirs} dirs: walk+read"
    fn = lambda t: walk_read(t.root("small"), sz.small_n)  # noqa: E731
    b.measure({"x": b.row("3a", desc + ", cold", "files/s")}, list(TARGETS), fn, cold=True)
    b.measure({"x": b.row("3b", desc + ", warm", "files/s")}, list(TARGETS), fn, warmup=True)
    in_memory = lambda t: walk_read(t.root("small"), sz.small_n, uncached=True)  # noqa: E731
    b.measure({"x": b.row("3c", desc + ", daemon behind a dropped page cache, its data in memory",
                          "files/s")}, list(TARGETS), in_memory, warmup=True)


def walk_stat(root: Path, expect: int) -> dict[str, float]:
    t = time.perf_counter()
    n = 0
    for dirpath, dirs, names in os.walk(root):
        for e in dirs + names:
            os.lstat(os.path.join(dirpath, e))
            n += 1
    dt = time.perf_counter() - t
    if n < expect:
        raise BenchError(f"stat'ed {n} entries, expected >= {expect}")
    return {"x": n / dt}


def w_stat(b: Bench) -> None:
    sz = b.sz
    fn = lambda t: walk_stat(t.root("tree"), tree_count(sz))  # noqa: E731
    row = b.row("4", f"walk+lstat tree of {tree_count(sz):,} files, warm", "entries/s")
    b.measure({"x": row}, list(TARGETS), fn, warmup=True)
    b.measure({"x": b.row("4b", "  same, cold (ls -lR)", "entries/s")}, list(TARGETS), fn, cold=True)


def _reader(root: str, rels: list[str], barrier, out) -> None:
    buf = bytearray(BUF)
    barrier.wait()
    try:
        out.put(sum(read_file(os.path.join(root, r), buf) for r in rels))
    except Exception as e:
        out.put(f"{type(e).__name__}: {e}")


def parallel_read(root: Path, sz: Sizes) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    paths = small_paths(sz)
    barrier, out = ctx.Barrier(sz.readers + 1), ctx.Queue()
    procs = [ctx.Process(target=_reader, daemon=True,
                         args=(str(root), random.Random(100 + i).choices(paths, k=sz.reads_per_reader),
                               barrier, out)) for i in range(sz.readers)]
    for p in procs:
        p.start()
    try:
        barrier.wait(timeout=120)
        t = time.perf_counter()
        got = [out.get(timeout=sz.timeout) for _ in procs]
        dt = time.perf_counter() - t
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
    if errs := [g for g in got if isinstance(g, str)]:
        raise BenchError(f"reader failed: {errs[0]}")
    total = sum(got)
    n = sz.readers * sz.reads_per_reader
    if total != n * sz.small_size:
        raise BenchError(f"readers got {total} bytes, expected {n * sz.small_size}")
    return {"x": n / dt}


def w_readers(b: Bench) -> None:
    sz = b.sz
    desc = f"{sz.readers} reader procs, random files of the {sz.small_n:,}-file tree"
    fn = lambda t: parallel_read(t.root("small"), sz)  # noqa: E731
    b.measure({"x": b.row("6a", desc + ", cold", "files/s")}, list(TARGETS), fn, cold=True)
    b.measure({"x": b.row("6b", desc + ", warm", "files/s")}, list(TARGETS), fn, warmup=True)


def timed_cmd(cmd: list[str], timeout: float) -> float:
    t = time.perf_counter()
    run(cmd, timeout=timeout)
    return time.perf_counter() - t


def w_ingest(b: Bench) -> None:
    sz, src = b.sz, b.data / "big" / "data.bin"
    mb = sz.big / 1e6
    rows = {"cp": b.row("5a", f"ingest: cp {human(sz.big)} into staging (native: to a local dir)", "MB/s"),
            "commit": b.row("5b", "ingest: artfs commit of it (native: sync)", "MB/s"),
            "total": b.row("5c", "ingest: cp + commit (native: cp + sync)", "MB/s"),
            "put": b.row("5d", f"ingest: artfs put of {human(sz.big)} (native: cp)", "MB/s"),
            "settled": b.row("5e", "ingest: artfs commit once the mount read the file ahead (native: sync)",
                             "MB/s")}
    ing = b.work / "ingest"
    freed = 2 * sz.big   # memory freed before each cell: a commit writes the file twice (staging, store)

    def native(t: Target) -> dict[str, float]:
        dst = ing / "native"
        shutil.rmtree(dst, ignore_errors=True)
        dst.mkdir(parents=True)
        read_file(src)   # the source is read from page cache in every cell
        free_memory(b.work, freed)
        cp = timed_cmd(["cp", str(src), str(dst / "data.bin")], sz.timeout)
        sync = timed_cmd(["sync", str(dst / "data.bin")], sz.timeout)
        shutil.rmtree(dst)
        return {"cp": mb / cp, "commit": mb / sync, "total": mb / (cp + sync), "put": mb / cp,
                "settled": mb / sync}

    def committed(settle: bool) -> tuple[float, float]:
        """cp into a fresh store's staging, then commit (after the mount read the file ahead in
        the background, if SETTLE: staging/precommit.py, which stores it, or for a file the
        commit adopts only chunks and hashes it); the two times."""
        store, mnt = ing / "store-commit", ing / "mnt"
        shutil.rmtree(store, ignore_errors=True)
        with artfs_mount(store, mnt, b.work / "logs" / "artfs-ingest.log") as m:
            (mnt / "ing").mkdir()
            read_file(src)
            free_memory(b.work, freed)
            before = rchar(m.proc.pid)
            cp = timed_cmd(["cp", str(src), str(mnt / "ing" / "staging" / "data.bin")], sz.timeout)
            deadline = time.monotonic() + sz.timeout
            while settle and not staging_read(m.proc.pid, before, sz.big, store) and time.monotonic() < deadline:
                time.sleep(0.2)
            commit = timed_cmd(artfs_cmd(store, "commit", "ing", "-m", "bench"), sz.timeout)
        old = b.extra.get("ingest_rss", (0, 0))
        b.extra["ingest_rss"] = (max(old[0], m.peak_rss), max(old[1], m.peak_anon))
        shutil.rmtree(store, ignore_errors=True)
        return cp, commit

    def artfs(t: Target) -> dict[str, float]:
        cp, commit = committed(settle=False)
        _, settled = committed(settle=True)
        store = ing / "store-put"
        shutil.rmtree(store, ignore_errors=True)
        read_file(src)
        free_memory(b.work, freed)
        t0 = time.perf_counter()
        artfs_put(store, "ing", src.parent)
        put = time.perf_counter() - t0
        shutil.rmtree(store, ignore_errors=True)
        return {"cp": mb / cp, "commit": mb / commit, "total": mb / (cp + commit), "put": mb / put,
                "settled": mb / settled}

    b.measure(rows, ["native", "artfs"], lambda t: native(t) if t.name == "native" else artfs(t))


def staging_read(pid: int, before: int, size: int, store: Path) -> bool:
    """Whether the daemon PID is done with a staging file of SIZE bytes written since its read
    count was BEFORE: it read the bytes twice (the WRITE requests, then the data file) and has no
    staging data file open any more."""
    if rchar(pid) - before < 2 * size:
        return False
    staging = str(store / "staging")
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(staging):
                return False
        except OSError:
            continue
    return True


def mutate(path: Path, rng: random.Random, insert: int = 100) -> None:
    data = path.read_bytes()
    mid = len(data) // 2
    path.write_bytes(data[:mid] + rng.randbytes(insert) + data[mid:])


def w_versions(b: Bench) -> None:
    """10 versions of a dataset; artfs stored bytes vs logical and file-level dedup."""
    sz = b.sz
    src, rng = b.work / "versions" / "src", random.Random(7)
    for i in range(sz.ver_files):
        write_random(src / f"part{i:03d}.bin", sz.ver_file_size, rng)
    store = b.work / "versions" / "store"
    art = "artfs" in b.targets
    borg = Borg(b.work / "versions" / "borg") if shutil.which("borg") else None
    logical, distinct, per_version = 0, {}, []
    err = None
    for v in range(sz.versions):
        if v:
            files = sorted(src.iterdir())
            for k in range(2):
                mutate(files[(2 * v + k) % len(files)], rng)
            write_random(src / f"new{v:03d}.bin", sz.ver_file_size, rng)
        for p in src.iterdir():
            data = p.read_bytes()
            logical += len(data)
            distinct.setdefault(hashlib.blake2b(data, digest_size=16).digest(), len(data))
        rec = {"version": v, "logical_bytes": logical, "file_dedup_bytes": sum(distinct.values())}
        t = time.perf_counter()
        dst = b.work / "versions" / "native" / f"v{v}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        run(["cp", "-r", str(src), str(dst)])
        rec["native_cp_s"] = time.perf_counter() - t
        shutil.rmtree(dst)
        if borg is not None:
            rec["borg_create_s"] = borg.create(src, f"v{v}")
        if art and err is None:
            try:
                t = time.perf_counter()
                artfs_put(store, "ds", src, f"version {v}")
                rec["artfs_put_s"] = time.perf_counter() - t
                du = json.loads(run(artfs_cmd(store, "du", "--json"), timeout=300).stdout)
                rec["artfs_stored_bytes"] = int(du["store"]["stored_bytes"])
                rec["artfs_file_bytes"] = du["store"].get("file_bytes")
            except (BenchError, subprocess.TimeoutExpired, ValueError, KeyError, TypeError) as e:
                err = f"{type(e).__name__}: {e}"[:300]
        per_version.append(rec)
    last = per_version[-1]
    r_t = b.row("7a", f"versions: put time per version ({sz.versions} x ~{human(sz.ver_files * sz.ver_file_size)}; native: cp -r)", "s", higher_better=False)
    r_s = b.row("7b", f"versions: stored after {sz.versions} versions (native: full copies)", "MiB", higher_better=False)
    r_f = b.row("7c", "versions: file-level dedup of the same versions", "MiB", higher_better=False)
    r_n = b.row("7d", "versions: next-version put, v1.. (native column: borg create, the peer)", "s",
                higher_better=False)
    r_t.samples["native"] = [r["native_cp_s"] for r in per_version]
    if borg is not None:   # else the cell stays empty: scripts/setup.sh installs borg
        r_n.samples["native"] = [r["borg_create_s"] for r in per_version[1:]]
    r_s.samples["native"] = [last["logical_bytes"] / MiB]
    r_f.samples["native"] = [last["file_dedup_bytes"] / MiB]
    if art:
        if err:
            for r in (r_t, r_s):
                r.errors["artfs"] = err
        else:
            r_t.samples["artfs"] = [r["artfs_put_s"] for r in per_version]
            r_n.samples["artfs"] = [r["artfs_put_s"] for r in per_version[1:]]
            r_s.samples["artfs"] = [last["artfs_stored_bytes"] / MiB]
    b.extra["versions"] = per_version
    shutil.rmtree(b.work / "versions", ignore_errors=True)


class Borg:
    """borg create of each version into one repository (unencrypted, borg's default compression
    and files cache): the peer of artfs put for versioned data."""

    def __init__(self, root: Path):
        self.repo = root / "repo"
        self.env = {**os.environ, "BORG_BASE_DIR": str(root / "home"),
                    "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
                    "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"}
        root.mkdir(parents=True, exist_ok=True)
        run(["borg", "init", "--encryption=none", str(self.repo)], env=self.env)

    def create(self, src: Path, name: str) -> float:
        t = time.perf_counter()
        run(["borg", "create", f"{self.repo}::{name}", "."], env=self.env, cwd=src)
        return time.perf_counter() - t


def w_rss(b: Bench) -> None:
    row = b.row("8a", "daemon peak RSS, read workloads (VmHWM, incl. mmap'd store pages)", "MiB", False)
    anon = b.row("8b", "  same, peak anonymous RSS (RssAnon, sampled every 0.2 s)", "MiB", False)
    for name in ("passthrough", "artfs"):
        t = b.targets.get(name)
        if t is None:
            continue
        if t.error:
            row.errors[name] = anon.errors[name] = t.error[:300]
            continue
        if t.mount:
            t.mount.sample_rss()
        peak = max(t.peak_rss, t.mount.peak_rss if t.mount else 0)
        peak_anon = max(t.peak_anon, t.mount.peak_anon if t.mount else 0)
        if peak:
            row.samples[name] = [peak / MiB]
            anon.samples[name] = [peak_anon / MiB]
    if "ingest_rss" in b.extra:
        rss, anon_b = b.extra["ingest_rss"]
        b.row("8c", "daemon peak RSS during ingest (5): VmHWM", "MiB", False).samples["artfs"] = [rss / MiB]
        b.row("8d", "  same, RssAnon", "MiB", False).samples["artfs"] = [anon_b / MiB]


def w_bigdir(b: Bench) -> None:
    """Rows 11a-11c: a 1-file edit in one directory of tree_n files. artfs: the edit written into
    staging through the mount, then ``commit`` timed; and ``put`` of the source with the same
    edit. native: cp of the edited file over a copy of the directory + sync, and cp -r of it.
    11c: ``put`` of the same directory again with nothing changed (files cache warm), against
    ``borg create`` of it again (its files cache warm) in the native column, as row 7d."""
    n, work = b.sz.tree_n, b.work / "bigdir"
    src = work / "src" / "d"
    src.mkdir(parents=True)
    for i in range(n):
        (src / f"f{i:06d}").write_bytes(b"%d" % i)
    rows = {"commit": b.row("11a", f"1-file edit in a {n:,}-file directory: commit (native: cp + sync)",
                            "s", higher_better=False),
            "put": b.row("11b", "  the same edit: put (native: cp -r of the directory)", "s",
                         higher_better=False),
            "again": b.row("11c", "  put of it again, unchanged (native column: borg create, the peer)",
                           "s", higher_better=False)}
    store, rng = work / "store", random.Random(11)
    borg = Borg(work / "borg") if shutil.which("borg") else None
    archives = iter(range(10**6))

    def settled() -> None:
        """Files changed in the last FILES_CACHE_GRACE s are read again by a files cache."""
        time.sleep(FILES_CACHE_GRACE)
    if "artfs" in b.targets:
        settled()   # else 11b's first put reads again the files written just now
        artfs_put(store, "big", src.parent)

    def native(t: Target) -> dict[str, float]:
        dst = work / "native"
        shutil.rmtree(dst, ignore_errors=True)
        t0 = time.perf_counter()
        run(["cp", "-r", str(src), str(dst)])
        copy = time.perf_counter() - t0
        edit, name = work / "edit", f"f{rng.randrange(n):06d}"   # a file of the directory
        edit.write_bytes(rng.randbytes(64))
        t0 = time.perf_counter()
        run(["cp", str(edit), str(dst / name)])
        run(["sync", str(dst / name)])
        out = {"commit": time.perf_counter() - t0, "put": copy}
        if borg is not None:   # else the cell stays empty: scripts/setup.sh installs borg
            borg.create(src.parent, f"a{next(archives)}")   # catches up with artfs's edits
            settled()
            out["again"] = borg.create(src.parent, f"a{next(archives)}")
        return out

    def artfs(t: Target) -> dict[str, float]:
        name = f"f{rng.randrange(n):06d}"
        with artfs_mount(store, work / "mnt", b.work / "logs" / "artfs-bigdir.log"):
            (work / "mnt" / "big" / "staging" / "d" / name).write_bytes(rng.randbytes(64))
            commit = timed_cmd(artfs_cmd(store, "commit", "big", "-m", "bench"), b.sz.timeout)
        (src / name).write_bytes(rng.randbytes(64))
        t0 = time.perf_counter()
        artfs_put(store, "big", src.parent)
        put = time.perf_counter() - t0
        settled()
        t0 = time.perf_counter()
        artfs_put(store, "big", src.parent)
        return {"commit": commit, "put": put, "again": time.perf_counter() - t0}

    b.measure(rows, ["native", "artfs"], lambda t: native(t) if t.name == "native" else artfs(t))
    shutil.rmtree(work, ignore_errors=True)


# id, name, function, data sets it reads
def w_lazy(b: Bench) -> None:
    """Rows 10a-10g: the lazy mount of a remote vs its peers (scripts/bench_lazy.py)."""
    sys.path.insert(0, str(REPO / "scripts"))
    import bench_lazy
    bench_lazy.workload(b, sys.modules[__name__])


def w_remote(b: Bench) -> None:
    """Rows 12a-12k: pushing to a remote vs rclone copy, and requests per command (scripts/bench_remote.py)."""
    sys.path.insert(0, str(REPO / "scripts"))
    import bench_remote
    bench_remote.workload(b, sys.modules[__name__])


WORKLOADS = [
    ("1", "seq", w_seq, {"big"}),          # 1 cold + 2 warm sequential read
    ("3", "small", w_small, {"small"}),
    ("4", "stat", w_stat, {"tree"}),
    ("6", "readers", w_readers, {"small"}),
    ("5", "ingest", w_ingest, {"big"}),
    ("7", "versions", w_versions, set()),
    ("8", "rss", w_rss, set()),
    ("9", "crypto", lambda b: bench_crypto.run(b, sys.modules[__name__]), {"big"}),
    ("10", "lazy", w_lazy, set()),          # the lazy mount of a remote
    ("11", "bigdir", w_bigdir, set()),      # a 1-file edit in a huge directory: commit, put
    ("12", "remote", w_remote, set()),      # pushes to a remote; requests per command
]
ALIASES = {"2": "1", "warm": "1", "cold": "1"}


# --------------------------------------------------------------------------
# report

def human(n: int) -> str:
    for unit, k in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= k:
            return f"{n / k:g} {unit}"
    return f"{n} B"


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def row_key(r: Row) -> tuple[int, str]:
    digits = "".join(c for c in r.id if c.isdigit())
    return int(digits or 0), r.id


def render(b: Bench) -> str:
    cols = [t for t in TARGETS if t in b.targets]
    lines = []
    info = b.extra["machine"]
    lines.append(f"machine: {info['cores']} cores, {info['ram_gib']} GiB RAM, kernel {info['kernel']}, "
                 f"python {info['python']}, {info['fusermount3']}")
    lines.append(f"cold reads: {'drop_caches + ' + str(b.sz.settle) + ' s settle' if b.can_drop else 'fresh mount + fadvise(DONTNEED) (no root)'}; "
                 f"repeats: {b.sz.repeats} (median shown)")
    ra = {n: b.targets[n].read_ahead for n in ("passthrough", "artfs")
          if n in b.targets and b.targets[n].read_ahead}
    lines.append(f"read_ahead_kb: native disk {b.extra.get('native_read_ahead_kb')}; FUSE mounts "
                 + ", ".join(f"{n} {d.get('default_kb')} -> {d.get('kb')}" for n, d in ra.items()))
    head = ["#", "workload", "unit", *cols]
    ratios = [("artfs/native", "artfs", "native"), ("artfs/pt", "artfs", "passthrough"),
              ("pt/native", "passthrough", "native")]
    ratios = [r for r in ratios if r[1] in cols and r[2] in cols]
    head += [r[0] for r in ratios]
    table = [head]
    notes: dict[str, int] = {}
    for r in sorted(b.rows.values(), key=row_key):
        cells = []
        for t in cols:
            if t in r.errors and t not in r.samples:
                k = notes.setdefault(f"{t}: {r.errors[t]}", len(notes) + 1)
                cells.append(f"ERR[{k}]")
            else:
                cells.append(fmt(r.median(t)))
        rat = [(f"{v:.2f}" if (v := r.ratio(a, c)) is not None else "-") for _, a, c in ratios]
        table.append([r.id, r.title, r.unit, *cells, *rat])
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for k, row in enumerate(table):
        lines.append("  ".join(c.ljust(widths[i]) if i < 3 else c.rjust(widths[i]) for i, c in enumerate(row)))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    for n, i in notes.items():
        lines.append(f"ERR[{i}] {n}")
    if b.extra.get("versions"):
        lines.append("\nversions: v  logical MiB  file-dedup MiB  artfs stored MiB  (store file MiB)"
                     "  artfs put s  native cp s")
        nan = float("nan")
        for rec in b.extra["versions"]:
            st, fb = rec.get("artfs_stored_bytes"), rec.get("artfs_file_bytes")
            lines.append(f"          {rec['version']:<2} {rec['logical_bytes'] / MiB:11.1f}  {rec['file_dedup_bytes'] / MiB:14.1f}"
                         f"  {(st / MiB if st is not None else nan):16.1f}  {(fb / MiB if fb else nan):16.1f}"
                         f"  {rec.get('artfs_put_s', nan):11.2f}  {rec['native_cp_s']:11.2f}")
    if b.extra.get("remote_requests"):
        lines.append("\nremote requests by operation (12):")
        for what, ops in b.extra["remote_requests"].items():
            lines.append(f"  {what}: " + ", ".join(f"{op} {n}" for op, n in ops.items()))
    if b.setup_times:
        lines.append("setup: " + ", ".join(f"{k} {v} s" for k, v in b.setup_times.items()))
    return "\n".join(lines)


# --------------------------------------------------------------------------
# main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds); for CI")
    p.add_argument("--size-scale", type=float, default=1.0, help="multiply data sizes by this")
    p.add_argument("--only", default="", help="comma list of workload ids or names "
                   + ", ".join(f"{i}={n}" for i, n, _, _ in WORKLOADS))
    p.add_argument("--targets", default=",".join(TARGETS), help="comma list of " + ",".join(TARGETS))
    p.add_argument("--repeats", type=int, help="repeats per measurement (default 3)")
    p.add_argument("--settle", type=float, help="seconds to wait after drop_caches (default 5)")
    p.add_argument("--no-drop-caches", action="store_true",
                   help="cold reads without root: fresh FUSE mounts + fadvise(DONTNEED)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--workdir", default="/var/tmp", help="parent of the temp dir (default /var/tmp)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    return p.parse_args(argv)


def select(args) -> list:
    if not args.only:
        return WORKLOADS
    want = {ALIASES.get(w.strip(), w.strip()) for w in args.only.split(",") if w.strip()}
    chosen = [w for w in WORKLOADS if w[0] in want or w[1] in want]
    unknown = want - {w[0] for w in chosen} - {w[1] for w in chosen}
    if unknown:
        sys.exit(f"unknown workload(s): {', '.join(sorted(unknown))}")
    return chosen


def _interrupt(*_):
    raise KeyboardInterrupt


def fuse_mounts_under(root: Path) -> list[Path]:
    """FUSE mount points under ``root`` (this process's view), deepest first."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4]))   # \040: a space
            if fields[fields.index("-") + 1].startswith("fuse") and root in point.parents:
                found.append(point)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def reap_killed_runs(parent: Path) -> None:
    """Unmount and remove the work dirs of runs killed with SIGKILL (no cleanup ran): a dir whose
    run's lock is free, with FUSE mounts whose daemon is gone (ENOTCONN) and none alive."""
    for work in parent.glob("artfs-bench-*"):
        fd = os.open(work, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            mounts = fuse_mounts_under(work)
            alive = []
            for m in mounts:
                try:
                    os.stat(m)
                    alive.append(m)
                except OSError:
                    pass
            if mounts and not alive:
                for m in mounts:
                    subprocess.run(["fusermount3", "-u", "-z", str(m)], capture_output=True)
                shutil.rmtree(work, ignore_errors=True)
                print(f"removed {work}: a killed run's {len(mounts)} dead mount(s)", flush=True)
        except BlockingIOError:   # a live run
            pass
        finally:
            os.close(fd)


def main(argv=None) -> int:
    args = parse_args(argv)
    sizes = Sizes.make(args.quick, args.size_scale)
    if args.repeats:
        sizes.repeats = args.repeats
    if args.settle is not None:
        sizes.settle = args.settle
    workloads = select(args)
    names = [t.strip() for t in args.targets.split(",") if t.strip()]
    if set(names) - set(TARGETS) or "native" not in names:
        sys.exit(f"--targets must include native and be among {TARGETS}")
    signal.signal(signal.SIGTERM, _interrupt)

    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    reap_killed_runs(Path(args.workdir))
    work = Path(tempfile.mkdtemp(prefix="artfs-bench-", dir=args.workdir))
    held = os.open(work, os.O_RDONLY)   # this run's lock (reap_killed_runs), dropped at exit
    fcntl.flock(held, fcntl.LOCK_EX)
    b = Bench(args, sizes, work)
    b.extra["machine"] = machine_info() | {"drop_caches": b.can_drop, "workdir": str(work)}
    print(f"workdir {work}; drop_caches {'works' if b.can_drop else 'unavailable'}", flush=True)
    t_all = time.perf_counter()
    interrupted = False
    try:
        datasets = set().union(*(w[3] for w in workloads))
        for ds in sorted(datasets):
            t = time.perf_counter()
            DATASETS[ds](b.data / ds, sizes)
            b.setup_times[f"build {ds}"] = round(time.perf_counter() - t, 2)
        b.extra["native_read_ahead_kb"] = read_ahead(b.data) if b.data.exists() else read_ahead(work)
        reads = {ds for w in workloads if w[0] in "1346" for ds in w[3]}
        for name, cls in (("native", Native), ("passthrough", Passthrough), ("artfs", Artfs)):
            if name in names:
                b.targets[name] = tgt = cls(b)
                tgt.setup(reads)
                if tgt.error:
                    print(f"{name}: {tgt.error}", flush=True)
        for wid, wname, fn, _ in workloads:
            t = time.perf_counter()
            print(f"[{time.perf_counter() - t_all:6.1f}s] workload {wid} ({wname}) ...", flush=True)
            try:
                fn(b)
            except (Exception, subprocess.TimeoutExpired) as e:   # keep going: record and report
                b.row(wid + "!", f"{wname}: failed", "-").errors["native"] = f"{type(e).__name__}: {e}"[:300]
            b.setup_times[f"workload {wid}"] = round(time.perf_counter() - t, 1)
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: cleaning up, partial results follow", flush=True)
    finally:
        for t in b.targets.values():
            with contextlib.suppress(Exception):
                t.teardown()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    b.extra["total_s"] = round(time.perf_counter() - t_all, 1)
    print()
    print(render(b))
    failed = sum(len(r.errors) for r in b.rows.values())
    print(f"total {b.extra['total_s']} s" + (f"; {failed} failed cell(s)" if failed else ""))
    if args.json:
        doc = {"machine": b.extra["machine"], "sizes": sizes.__dict__, "read_ahead_kb": {
                   "native": b.extra.get("native_read_ahead_kb"),
                   **{n: t.read_ahead for n, t in b.targets.items() if t.read_ahead}},
               "rows": [r.to_json() for r in b.rows.values()],
               "versions": b.extra.get("versions"), "setup_s": b.setup_times, "total_s": b.extra["total_s"]}
        Path(args.json).write_text(json.dumps(doc, indent=2))
    return 130 if interrupted else 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
