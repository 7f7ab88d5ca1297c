"""Progress of work a running mount daemon does for us (a commit), seen from the caller's side.

The control socket answers once, at the end, so the caller estimates instead: it polls the bytes
the daemon process has read (``rchar`` in /proc/PID/io, all its threads) and reports the growth,
up to a limit, to a ``progress(n)`` callback. A commit reads each staging data file once, so that
growth is its progress; other traffic through the mount at the same time makes the estimate run
ahead (never past the limit), which changes nothing but the bar. Files the mount stored ahead of
the commit (staging/precommit.py) are not read again: what the reads did not cover is reported
when the block ends without an error.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

POLL_SECONDS = 0.1


def _bytes_read(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


@contextmanager
def daemon_reads(pid: int, limit: int, progress):
    """While the block runs (and once more after it), call ``progress(n)`` with the growth of the
    bytes process PID has read, in all at most ``limit``. Nothing when /proc/PID/io cannot be read."""
    start = _bytes_read(pid)
    if start is None:
        yield
        return
    done = threading.Event()

    reported = 0

    def poll():
        nonlocal reported
        last = start
        while True:
            finished = done.wait(POLL_SECONDS)
            now = _bytes_read(pid)
            if now is None:
                return
            step = min(now - last, limit - reported)
            if step > 0:
                progress(step)
                reported += step
            last = now
            if finished:
                return

    poller = threading.Thread(target=poll, name="artfs-progress", daemon=True)
    poller.start()
    try:
        yield
    finally:
        done.set()
        poller.join()
    if limit > reported:
        progress(limit - reported)
