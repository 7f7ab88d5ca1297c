"""Mounting at boot and as a service, for real: an fstab line through mount(8) and mount.fuse3,
and the systemd user unit's commands run as systemd runs them. No systemd runs here, so the unit
is checked by systemd-analyze and the fstab line by systemd-fstab-generator where installed."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import in_mount_table, pid_alive
from tests.helpers import run_cli, write

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNIT = os.path.join(ROOT, "scripts", "systemd", "artfs@.service")
ARTFS = os.path.join(os.path.dirname(sys.executable), "artfs")
GENERATOR = "/lib/systemd/system-generators/systemd-fstab-generator"


def daemon_pid(store) -> int | None:
    try:
        with open(os.path.join(store, "daemon.json")) as f:
            return int(re.search(r'"pid": (\d+)', f.read()).group(1))
    except (OSError, AttributeError):
        return None


def leave_nothing(store, mnt) -> None:
    """Whatever a failed test left: the mount (lazily) and the daemon it started (by its PID)."""
    pid = daemon_pid(store)
    if in_mount_table(mnt):
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
    if pid is not None and pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def store(tmp_path):
    write(tmp_path / "data" / "labels.csv", b"name,label\ncat,1\n")
    s = tmp_path / "store"
    run_cli(s, "put", "animals", tmp_path / "data", check=True)
    return s


# fstab -------------------------------------------------------------------------------------------
# Runs in a private mount namespace, where /usr/local/sbin (on the PATH /bin/sh uses when mount(8)
# passes none) holds `artfs`: what `ln -s .../artfs /usr/local/bin/artfs` does on a real machine,
# seen by nothing else on this one. Each mount is read through, unmounted with umount(8), and the
# daemon waited for (it holds STORE/daemon.lock until it exits).
FSTAB_SCRIPT = r"""
set -eu
store=$1 mnt=$2 fstab=$3 unit=$4 artfs=$5
trap 'umount -l "$mnt" 2>/dev/null || true' EXIT
mount -t tmpfs tmpfs /usr/local/sbin
ln -s "$artfs" /usr/local/sbin/artfs
check() {   # $1: what mounted it
    echo "$1: $(grep " $mnt fuse.artfs " /proc/self/mounts | cut -d' ' -f1,3,4)"
    echo "$1: $(cat "$mnt/animals/v0/labels.csv" | tr '\n' '|')"
    umount "$mnt"
    until flock -n "$store/daemon.lock" true; do sleep 0.05; done
    echo "$1: unmounted $(grep -c " $mnt " /proc/self/mounts || true)"
}
mount -T "$fstab" "$mnt"
check fstab
mount -t fuse.artfs "$store" "$mnt" -o allow_other
check mount-t
if [ -n "$unit" ]; then   # what systemd runs for the mount unit it generated from the fstab line
    what=$(sed -n 's/^What=//p' "$unit") where=$(sed -n 's/^Where=//p' "$unit")
    type=$(sed -n 's/^Type=//p' "$unit") options=$(sed -n 's/^Options=//p' "$unit")
    mount "$what" "$where" -t "$type" -o "$options"
    check systemd
fi
mount -t fuse.artfs "$store" "$mnt" -o allow_other,ro || echo "ro: exit $?"
"""


@pytest.mark.fuse
@pytest.mark.root("mount(8), a mount namespace and /usr/local/sbin need root")
def test_an_fstab_line_mounts_through_mount_fuse3(store, tmp_path):
    if not os.path.isdir("/usr/local/sbin") or shutil.which("unshare") is None:
        pytest.fail("needs /usr/local/sbin and unshare (util-linux)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(f"# a test fstab\n{store} {mnt} fuse.artfs defaults,_netdev,allow_other 0 0\n")
    unit = ""
    if os.access(GENERATOR, os.X_OK):   # what systemd makes of the line at boot
        out = tmp_path / "generated"
        out.mkdir()
        gen = subprocess.run([GENERATOR, out, out, out], capture_output=True, text=True,
                             env={**os.environ, "SYSTEMD_FSTAB": str(fstab), "SYSTEMD_PROC_CMDLINE": ""})
        assert gen.returncode == 0, gen.stderr
        name = subprocess.run(["systemd-escape", "--path", "--suffix=mount", str(mnt)], capture_output=True,
                              text=True, check=True).stdout.strip()
        unit = str(out / name)
        parsed = configparser.ConfigParser(interpolation=None)
        parsed.optionxform = str
        parsed.read(unit)
        assert dict(parsed["Mount"]) == {"What": str(store), "Where": str(mnt), "Type": "fuse.artfs",
                                         "Options": "defaults,_netdev,allow_other"}
        assert os.path.exists(out / "remote-fs.target.requires" / name)   # _netdev: after the network
    try:
        proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", FSTAB_SCRIPT,
                               "fstab", store, mnt, fstab, unit, ARTFS], capture_output=True, text=True,
                              timeout=300)
    finally:
        leave_nothing(store, mnt)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    for how in ["fstab", "mount-t"] + (["systemd"] if unit else []):
        assert f"{how}: artfs fuse.artfs " in lines[0] and "allow_other" in lines[0], lines
        assert lines[1] == f"{how}: name,label|cat,1|" and lines[2] == f"{how}: unmounted 0", lines
        lines = lines[3:]
    assert lines == ["ro: exit 2"]
    assert "mount option 'ro' is not supported by artfs" in proc.stderr
    assert not in_mount_table(mnt) and daemon_pid(store) is None


def test_the_mount_helper_argv_becomes_artfs_mount():
    from artfs.cli.fstab import helper_argv
    from artfs.cli.main import build_parser
    p = build_parser()
    assert helper_argv(["/s", "/m", "-o", "rw,allow_other,dev,suid"], p) == \
        ["--store", "/s", "mount", "/m", "--allow-other"]
    assert helper_argv(["/m", "-o", "rw,noatime,x-systemd.automount,_netdev"], p) == ["mount", "/m"]
    for ordinary in (["ls", "-o", "x"], ["--store", "/s", "ls"], ["/s", "/m"], ["a", "b", "c", "-o", "rw"],
                     ["/s", "/m", "-o", "rw", "--force"], []):
        assert helper_argv(ordinary, p) is None, ordinary


# systemd -----------------------------------------------------------------------------------------
def unit_file() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str
    unit.read(UNIT)
    return unit


def instance_of(mnt) -> str:
    return subprocess.run(["systemd-escape", "--path", str(mnt)], capture_output=True, text=True,
                          check=True).stdout.strip()


def expand(command: str, home, instance: str) -> list[str]:
    """A unit's command line as systemd runs it: specifiers %h (home), %i (instance) and %f
    (the unescaped instance as a path, by systemd-escape itself), then split into words."""
    path = subprocess.run(["systemd-escape", "--unescape", "--path", instance], capture_output=True,
                          text=True, check=True).stdout.strip()
    words = shlex.split(command.replace("%h", str(home)).replace("%i", instance).replace("%f", path))
    assert "%" not in " ".join(words), words
    return words


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_systemd_unit_verifies(tmp_path):
    home, runtime = tmp_path / "home", tmp_path / "runtime"
    (home / ".local" / "bin").mkdir(parents=True)
    os.symlink(ARTFS, home / ".local" / "bin" / "artfs")
    runtime.mkdir(mode=0o700)
    shutil.copy(UNIT, tmp_path / "artfs@.service")
    name = f"artfs@{instance_of(tmp_path / 'mnt')}.service"
    proc = subprocess.run(["systemd-analyze", "--user", "verify", str(tmp_path / name)], capture_output=True,
                          text=True, env={**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)})
    assert proc.returncode == 0 and "artfs@" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    # the check has teeth: a missing program fails it
    os.unlink(home / ".local" / "bin" / "artfs")
    proc = subprocess.run(["systemd-analyze", "--user", "verify", str(tmp_path / name)], capture_output=True,
                          text=True, env={**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)})
    assert proc.returncode != 0 and "is not executable" in proc.stderr


@pytest.mark.fuse
def test_the_systemd_unit_starts_and_stops_a_mount(store, tmp_path):
    """ExecStartPre, ExecStart and ExecStop with systemd's environment (HOME, a plain PATH,
    ARTFS_STORE from a drop-in, stdin /dev/null): ExecStart returns once the mount answers and
    leaves one daemon (the main PID systemd guesses for Type=forking); ExecStop ends both."""
    unit = unit_file()
    service = unit["Service"]
    assert service["Type"] == "forking" and unit["Install"]["WantedBy"] == "default.target"
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    os.symlink(ARTFS, home / ".local" / "bin" / "artfs")
    mnt = tmp_path / "mnt" / "artifacts"          # ExecStartPre makes it
    instance = instance_of(mnt)
    env = {"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin", "ARTFS_STORE": str(store),
           "LANG": "C.UTF-8"}

    def run(key):
        return subprocess.run(expand(service[key], home, instance), env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=120)
    try:
        assert run("ExecStartPre").returncode == 0 and mnt.is_dir()
        start = run("ExecStart")
        assert start.returncode == 0, start.stderr
        assert os.path.ismount(mnt)
        with open(mnt / "animals" / "v0" / "labels.csv", "rb") as f:
            assert f.read() == b"name,label\ncat,1\n"
        pid = daemon_pid(store)
        assert pid is not None and pid_alive(pid)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert b"mount" in f.read()
        stop = run("ExecStop")
        assert stop.returncode == 0, stop.stderr
        assert not in_mount_table(mnt) and not pid_alive(pid)
    finally:
        leave_nothing(store, mnt)
