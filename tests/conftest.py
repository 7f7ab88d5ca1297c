"""Fixtures for tests on a real FUSE mount: a foreground daemon in a subprocess, always torn down.

Teardown never trusts the daemon: ``fusermount3 -u`` (then ``-u -z`` if busy or dead), then wait,
terminate, kill - by the PID this fixture started - so a failed or crashed test leaves no mount
and no process behind. Tests marked ``fuse`` (or ``root``) are skipped with the reason when the
machine cannot mount FUSE (or this is not root), and fail under CI=true.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from artfs.repo.export import remove_tree
from artfs.repo.facade import Repo
from artfs.repo.verify import verify
from tests.helpers import DEEP, need_fuse, need_root, run_cli, write

pytest_plugins = ["tests.conftest_s3"]


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    """pytest then removes old tmp dirs with shutil.rmtree, which recurses once per directory
    level: a tree 2000 deep left by an earlier (crashed) session needs more than the default
    limit. Set after every test has run, so no test sees it."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 12_000))


def pytest_configure(config):
    config.addinivalue_line("markers", "fuse: needs /dev/fuse and fusermount3 (a real mount)")
    config.addinivalue_line("markers", "root(reason): needs root")


def pytest_runtest_setup(item):
    """Tests marked ``fuse`` need a FUSE mount, ``root(reason)`` root: skipped without, failed
    under CI=true (tests/helpers.py missing)."""
    if item.get_closest_marker("fuse"):
        need_fuse()
    root = item.get_closest_marker("root")
    if root is not None:
        need_root(*root.args)


def in_mount_table(path) -> bool:
    """Listed in /proc/mounts, even when dead (os.path.ismount is False for ENOTCONN)."""
    path = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1].replace("\\040", " ") == path for line in f)


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except FileNotFoundError:
        return False


class Mount:
    """One store served at one mount point by ``python -m artfs mount --foreground``."""

    def __init__(self, store, mnt, log, allow_other: bool = False):
        self.store, self.mnt, self.log = str(store), str(mnt), str(log)
        self.allow_other = allow_other              # --allow-other: other users get in
        self.proc: subprocess.Popen | None = None   # a foreground daemon we started
        self.daemon: int | None = None               # the PID of a daemonized one we started
        os.makedirs(self.mnt, exist_ok=True)

    def path(self, *parts) -> str:
        return os.path.join(self.mnt, *parts)

    def cli(self, *args, check: bool = True):
        return run_cli(self.store, *args, check=check)

    def start(self, timeout: float = 30.0) -> "Mount":
        cmd = [sys.executable, "-m", "artfs", "--store", self.store, "mount", self.mnt, "--foreground"]
        if self.allow_other:
            cmd.append("--allow-other")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not (os.path.ismount(self.mnt) and self._info_pid() == self.proc.pid):
            if self.proc.poll() is not None:
                raise AssertionError(f"the daemon exited with {self.proc.returncode}: {self.log_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"mount not ready after {timeout} s: {self.log_text()}")
            time.sleep(0.02)
        return self

    def start_daemonized(self) -> subprocess.CompletedProcess:
        """``artfs mount`` without --foreground: returns once the forked daemon is ready."""
        proc = run_cli(self.store, "mount", self.mnt)
        if proc.returncode == 0:
            self.daemon = self._info_pid()
        return proc

    def log_text(self) -> str:
        with open(self.log, errors="replace") as f:
            return f.read()

    def _info_pid(self) -> int | None:
        """The PID in STORE/daemon.json: written once the mount is ready (may be stale)."""
        try:
            with open(os.path.join(self.store, "daemon.json")) as f:
                return json.load(f)["pid"]
        except (OSError, ValueError, KeyError):
            return None

    def stop(self) -> None:
        """Leave no mount and no daemon, whatever state they are in."""
        if in_mount_table(self.mnt):
            if subprocess.run(["fusermount3", "-u", self.mnt], capture_output=True).returncode:
                subprocess.run(["fusermount3", "-u", "-z", self.mnt], capture_output=True)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        if self.daemon is not None:   # daemonized: not our child, so wait for it by PID
            for sig in (None, signal.SIGTERM, signal.SIGKILL):
                if sig is not None and pid_alive(self.daemon):
                    os.kill(self.daemon, sig)
                deadline = time.monotonic() + 10
                while pid_alive(self.daemon) and time.monotonic() < deadline:
                    time.sleep(0.02)
                if not pid_alive(self.daemon):
                    break
            self.daemon = None

    def verify(self) -> None:
        with Repo(self.store) as repo:
            report = verify(repo)
        assert report.ok, report.problems


@pytest.fixture
def mount_factory(tmp_path):
    """Make Mount objects (not started); every one is stopped at teardown."""
    made: list[Mount] = []

    def make(store=None, mnt=None, allow_other: bool = False) -> Mount:
        n = len(made)
        m = Mount(store or tmp_path / "store", mnt or tmp_path / f"mnt{n}", tmp_path / f"daemon{n}.log",
                  allow_other)
        made.append(m)
        return m
    yield make
    for m in made:
        m.stop()
    for m in made:
        assert not in_mount_table(m.mnt), f"{m.mnt} is still mounted"


def _started(mount_factory, **options):
    m = mount_factory(**options).start()
    yield m
    m.stop()
    m.verify()


@pytest.fixture
def mounted(mount_factory):
    """A started mount of an empty store in tmp_path; the store must verify clean at the end."""
    yield from _started(mount_factory)


@pytest.fixture
def mounted_allow_other(mount_factory):
    """``mounted`` with ``--allow-other``: other users get in and the kernel checks the modes."""
    yield from _started(mount_factory, allow_other=True)


class DeepTree:
    """SRC holds d/d/.../d/f, DEEP directories deep (paths over 4000 bytes)."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.src = str(tmp_path / "deep")
        self.made = [self.src]
        path = self.src
        os.mkdir(path)
        for _ in range(DEEP):   # os.makedirs recurses once per level
            path = os.path.join(path, "d")
            os.mkdir(path)
        write(os.path.join(path, "f"), b"bottom")

    def leaf(self, root: str | None = None) -> str:
        """The deepest directory under ROOT (default SRC)."""
        return os.path.join(root or self.src, *(["d"] * DEEP))

    def out(self, name: str) -> str:
        """A path in tmp_path for a copy, removed with SRC at teardown."""
        self.made.append(str(self.tmp / name))
        return self.made[-1]


@pytest.fixture
def deep(tmp_path):
    """A DeepTree in tmp_path. Everything it made is removed at teardown without recursion:
    pytest removes old tmp dirs with shutil.rmtree, which recurses once per level."""
    tree = DeepTree(tmp_path)
    yield tree
    for path in tree.made:
        if os.path.lexists(path):
            remove_tree(path)
