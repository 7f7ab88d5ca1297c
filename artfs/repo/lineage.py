"""Lineage without an SDK: what made each version (its producer) and who used it (consumers).

A producer is captured in the process that asks for the version - the CLI or API caller, also when
a running daemon does the commit (the caller's record travels in the control request) - *before*
any transaction: user, uid, host, ``sys.argv``, the working directory, its git commit
(``git -C CWD rev-parse HEAD``, 2 s at most; absent without git or outside a repository) and a run
id from ``ARTFS_RUN_ID`` or else ``WANDB_RUN_ID``.

A consumer is recorded by ``Store.use`` (this process) or, with ``artfs mount --record-use``, by
the daemon for the first open of a version's file by a process (mount/uses.py; its argv and run id
read from ``/proc/PID``). Consumers live in the catalog's ``uses`` database (catalog/uses.py) and
each record is also an audit event ``version.use``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import time

from ..catalog.versions import whoami
from ..names import check_artifact

GIT_TIMEOUT = 2.0
RUN_ID_VARIABLES = ("ARTFS_RUN_ID", "WANDB_RUN_ID")


def run_id(environ) -> str | None:
    for var in RUN_ID_VARIABLES:
        if environ.get(var):
            return environ[var]
    return None


def git_commit(cwd: str) -> str | None:
    """HEAD of the git repository CWD is in, or None (no git, not a repository, too slow)."""
    git = shutil.which("git")
    if git is None:
        return None
    try:
        proc = subprocess.run([git, "-C", cwd, "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    head = proc.stdout.strip()
    return head if proc.returncode == 0 and head else None


def producer() -> dict:
    """What this process is: the producer of a version it puts or commits."""
    user, uid = whoami()
    try:
        cwd = os.getcwd()
    except OSError:   # the working directory was removed
        cwd = None
    return {"user": user, "uid": uid, "host": socket.gethostname(), "pid": os.getpid(),
            "argv": list(sys.argv), "cwd": cwd, "git_commit": git_commit(cwd) if cwd else None,
            "run_id": run_id(os.environ)}


def consumer(via: str) -> dict:
    """This process, using a version now (``Store.use``)."""
    user, uid = whoami()
    return {"time": time.time(), "user": user, "uid": uid, "host": socket.gethostname(),
            "pid": os.getpid(), "argv": list(sys.argv), "run_id": run_id(os.environ), "via": via}


def process_consumer(pid: int, uid: int) -> dict:
    """Another process (by its pid as this process sees it; 0 when it is in a PID namespace we
    cannot see) that opened a version's file in the mount: its argv from /proc/PID/cmdline and run
    id from /proc/PID/environ when readable, else None."""
    argv = environ = None
    if pid > 0:
        argv = _proc_strings(pid, "cmdline")
        pairs = _proc_strings(pid, "environ")
        if pairs is not None:
            environ = dict(p.partition("=")[::2] for p in pairs)
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    return {"time": time.time(), "user": user, "uid": uid, "host": socket.gethostname(),
            "pid": pid, "argv": argv, "run_id": run_id(environ) if environ else None, "via": "mount"}


def _proc_strings(pid: int, what: str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/{what}", "rb") as f:
            raw = f.read()
    except OSError:   # gone, or not ours to read
        return None
    return [os.fsdecode(part) for part in raw.split(b"\0")[:-1]] if raw else None


def record_uses(repo, uses: list[tuple[str, int, dict]]) -> int:
    """Record consumers (name, version number, record) in one transaction, each with an audit
    event; versions deleted meanwhile are skipped. Returns how many were recorded."""
    def action(txn):
        done = 0
        for name, number, rec in uses:
            if repo.catalog.version(txn, name, number) is None:
                continue
            repo.catalog.uses.add(txn, name, number, rec)
            repo.catalog.event(txn, "version.use", name, version=f"v{number}", via=rec["via"],
                               consumer=rec["user"], pid=rec["pid"], run_id=rec["run_id"])
            done += 1
        return done
    return repo.db.write(action) if uses else 0


def lineage(repo, name: str, ref: str) -> dict:
    """A version's producer and consumers (oldest first)."""
    with repo.db.read() as txn:
        v = repo.catalog.resolve(txn, check_artifact(name), ref)
        consumers = repo.catalog.uses.of(txn, name, v.number)
    return {"artifact": name, "version": v.label, "digest": v.digest, "created": v.created,
            "producer": v.producer, "consumers": consumers}
