"""Progress bars on a terminal (a real pty), none otherwise: commit, through the daemon and without."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

import pytest

from tests.helpers import MiB, run_cli

SIZE = 24 * MiB


def in_pty(*args) -> tuple[int, str]:
    """Run ``python -m artfs ARGS`` with stdin, stdout and stderr on a new pty; (exit code, output)."""
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}
    proc = subprocess.Popen([sys.executable, "-m", "artfs", *map(str, args)], stdin=slave, stdout=slave,
                            stderr=slave, env=env)
    os.close(slave)
    out = bytearray()
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:   # EIO: every process holding the pty's other side has exited
            break
        if not data:
            break
        out += data
    os.close(master)
    return proc.wait(timeout=600), out.decode(errors="replace")


def stage(m, name: str) -> bytes:
    data = os.urandom(SIZE)
    with open(m.path("animals", "staging", name), "wb") as f:
        f.write(data)
    return data


@pytest.mark.fuse
def test_commit_shows_a_bar_on_a_terminal_only(mounted):
    os.mkdir(mounted.path("animals"))
    stage(mounted, "a.bin")
    # through the daemon: the bar's total is the staged bytes, its progress what the daemon read
    code, out = in_pty("--store", mounted.store, "commit", "animals")
    assert code == 0 and "animals:v0" in out, out
    assert "commit animals" in out and re.search(r"24\.0/24\.0 MiB", out), out

    stage(mounted, "b.bin")
    mounted.stop()
    # without a daemon: the commit reads the staging files itself
    code, out = in_pty("--store", mounted.store, "commit", "animals", "-m", "b")
    assert code == 0 and "animals:v1" in out, out
    assert "commit animals" in out and re.search(r"24\.0/24\.0 MiB", out), out

    mounted.start()
    stage(mounted, "c.bin")
    # not a terminal: no bar, nothing on stderr
    proc = run_cli(mounted.store, "commit", "animals")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "animals:v2\n", "")
    with open(mounted.path("animals", "v2", "c.bin"), "rb") as f:
        assert len(f.read()) == SIZE
