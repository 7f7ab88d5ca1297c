"""The mount daemon: check, lock, daemonize, mount, serve FUSE and the control socket, unmount.

``mount`` forks like sshfs: the parent waits on a pipe until the child says the mount answers (or
why it could not mount) and exits with the child's verdict; ``foreground`` stays attached. The
LMDB environment is opened only in the serving process, after the fork.

Lifetime of a mount:
  1. the store is opened and STORE/daemon.lock taken (flock: one daemon per store)
  2. zombies a killed daemon left are freed; pyfuse3 mounts (fsname=artfs, subtype=artfs)
  3. the first stat of the mount proves it answers; read_ahead_kb is raised; the control socket
     listens (open to every user with --allow-other: mount/control.py authorizes each request);
     STORE/daemon.json is written (atomically, 0600; 0644 with --allow-other); the parent is released
  4. SIGTERM/SIGINT, ``artfs unmount`` or ``fusermount3 -u`` end the loop: clean unmount, the
     socket and daemon.json are removed.
A crash after step 3 leaves the mount in place (dead: ENOTCONN) rather than unmounting silently,
so a reader such as ``rsync --delete`` fails instead of seeing an empty tree.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import gc
import inspect
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

import pyfuse3
import trio

from . import control
from ..catalog.access import acting_as
from ..catalog.db import default_store_path, flock_held
from ..errors import ArtfsError, Conflict, MountError, UsageError
from .actions import Actions
from .model import Filesystem
from .ops import Operations, invalidate
from ..repo.facade import Repo

log = logging.getLogger("artfs.daemon")
LOCK = "daemon.lock"
LOG = "daemon.log"
READ_AHEAD_KB = 1024
MAX_REQUEST = 1 << 20
REQUEST_SECONDS = float(os.environ.get("ARTFS_REQUEST_TIMEOUT", "30"))   # to send one request line
ACTIONS = ("commit", "reset", "status", "alias", "unalias", "delete_version", "delete_artifact",
           "changed", "compact", "gc", "access", "version")


def check_mountpoint(path: str, nonempty: bool = False) -> None:
    if _is_dead_mount(path):
        raise MountError(f"{path} is a dead mount (its daemon died): run 'artfs unmount {path}' first")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MountError(f"mount point {path} does not exist") from None
    except OSError as e:
        raise MountError(f"cannot use {path} as a mount point: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise MountError(f"mount point {path} is not a directory")
    if os.path.ismount(path):
        raise MountError(f"{path} is already a mount point")
    if not nonempty and os.listdir(path):
        raise MountError(f"mount point {path} is not empty: the mount would hide its files "
                         "(--nonempty mounts over them)")


def _is_dead_mount(path: str) -> bool:
    """A FUSE mount whose daemon died: the kernel answers ENOTCONN for it (statfs: stat may be
    answered from the kernel's attribute cache)."""
    try:
        os.statvfs(path)
    except OSError as e:
        return e.errno == errno.ENOTCONN
    return False


def _fusermount_u(mountpoint: str, *flags: str) -> None:
    """``fusermount3 -u``: a busy mount is a Conflict (exit 5), any other failure a MountError."""
    proc = subprocess.run(["fusermount3", "-u", *flags, mountpoint], capture_output=True, text=True)
    if proc.returncode != 0:
        cls = Conflict if "busy" in proc.stderr else MountError
        raise cls(f"cannot unmount {mountpoint}: {proc.stderr.strip()}")


GC_THRESHOLDS = (50_000, 20, 10)   # gen-0 allocations, gen-1 and gen-2 collections (default 700, 10, 10)
MALLOC_ARENAS = 2


def _tune_memory() -> None:
    """The daemon's process-wide memory settings (a library must not change them in its users'
    processes, so they are set here, before serving):
    - the cyclic collector's thresholds: the daemon keeps a node, an entry and a key per name it
      served, for long, and with Python's defaults the collector walked that heap so often that it
      took about a quarter of a cold `ls -lR` (py-spy, docs/benchmarks.md); objects are still freed
      by reference counting, only cycles wait longer;
    - glibc's malloc arenas (M_ARENA_MAX): a lazy store's chunks are allocated by its fetcher
      threads and freed by its keeper; with an arena per thread the freed memory stayed resident,
      scattered over many arenas (a cold read's peak anonymous RSS ~55 MiB higher, same speed and
      CPU). No-op off glibc."""
    gc.set_threshold(*GC_THRESHOLDS)
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(-8, MALLOC_ARENAS)     # M_ARENA_MAX


def mount(store: str | None, mountpoint: str, *, foreground: bool, allow_other: bool,
          record_use: bool = False, nonempty: bool = False, lazy: Lazy | None = None) -> int:
    store = os.path.abspath(store or default_store_path())
    mountpoint = os.path.abspath(mountpoint)
    check_mountpoint(mountpoint, nonempty)
    daemon = Daemon(store, mountpoint, allow_other, record_use, lazy or Lazy())
    if foreground:
        _log_to(sys.stderr)
        return daemon.run(lambda: log.info("serving %s at %s", store, mountpoint))
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        return _wait_ready(r, pid)
    os.close(r)
    os.setsid()
    os.chdir("/")
    _child(daemon, store, w)


def _child(daemon: "Daemon", store: str, pipe: int) -> None:
    """The forked daemon: serve, and report a failure before readiness through the pipe."""
    waiting = [pipe]

    def ready():
        _detach(store, pipe)
        waiting.clear()
    code = 1
    try:
        code = daemon.run(ready)
    except BaseException as e:  # never return into the CLI's code in the child
        code = e.exit_code if isinstance(e, ArtfsError) else 1
        if waiting:
            message = str(e) if isinstance(e, ArtfsError) else f"daemon failed: {type(e).__name__}: {e}"
            os.write(pipe, f"{code} {message}".encode())
    finally:
        os._exit(code)


def unmount(store: str | None, mountpoint: str, timeout: float = 60.0) -> bool:
    """Unmount MOUNTPOINT (through its daemon when it serves STORE) and wait for the daemon to end.
    A dead mount (its daemon was killed) is unmounted, lazily if busy; returns whether it was one."""
    store = os.path.abspath(store or default_store_path())
    mountpoint = os.path.abspath(mountpoint)
    if _is_dead_mount(mountpoint):   # before realpath, which would need the dead mount to answer
        try:
            _fusermount_u(mountpoint)
        except Conflict:
            _fusermount_u(mountpoint, "-z")
        return True
    mountpoint = os.path.realpath(mountpoint)
    info = control.daemon_info(store)
    if info is not None and os.path.realpath(info["mountpoint"]) == mountpoint:
        control.request(store, "unmount")
    else:
        if not os.path.ismount(mountpoint):
            raise MountError(f"{mountpoint} is not mounted")
        _fusermount_u(mountpoint)
        store = None   # not our store's daemon: wait only for the mount to go
    deadline = time.monotonic() + timeout
    while os.path.ismount(mountpoint) or (store is not None and flock_held(os.path.join(store, LOCK))):
        if time.monotonic() > deadline:
            raise MountError(f"the daemon serving {mountpoint} did not exit within {timeout:.0f} s")
        time.sleep(0.05)
    return False


def _detach(store: str, pipe: int) -> None:
    """Ready: log to STORE/daemon.log, let go of the terminal, release the waiting parent."""
    fd = os.open(os.path.join(store, LOG), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    _log_to(open(fd, "a", buffering=1))
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    os.write(pipe, b"0")
    os.close(pipe)


def _wait_ready(pipe: int, pid: int) -> int:
    with os.fdopen(pipe, "rb") as f:
        answer = f.read().decode(errors="replace")
    code, _, message = answer.partition(" ")
    if code == "0":
        return 0
    if not code:
        _, status = os.waitpid(pid, 0)
        message, code = f"the mount daemon died during startup (status {status})", "8"
    err = MountError(message)
    err.exit_code = int(code) if code.isdigit() else MountError.exit_code
    raise err


def _log_to(stream) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s artfs[%(process)d] %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


class Lazy(NamedTuple):
    """A mount of a store bound to a remote (docs/REMOTE.md "Lazy mount"): the chunk cache's
    limit (None: kept, else a fraction of free disk) and ``refresh(repo)`` -> names of the
    artifacts it recorded new versions of (cli/mount.py: a pull of metadata), run every
    ``interval`` seconds; None when no remote is bound."""
    cache_size: int | None = None
    refresh: Callable | None = None
    interval: float = 5.0


class Daemon:
    def __init__(self, store: str, mountpoint: str, allow_other: bool, record_use: bool = False,
                 lazy: Lazy = Lazy()):
        self.store, self.mountpoint, self.allow_other = store, mountpoint, allow_other
        self.lazy = lazy
        self.record_use = record_use   # consumers of versions: mount/uses.py
        self.socket = os.path.join(store, control.SOCKET)
        self.info = control.info_path(store)
        self.ready = False
        self.store_mode: int | None = None   # the store directory's, while opened to others

    def run(self, on_ready) -> int:
        repo = Repo(self.store)
        try:
            lock = self._lock()
            try:
                return self._serve(repo, on_ready)
            finally:
                os.close(lock)
        finally:
            repo.close()

    def _lock(self) -> int:
        fd = os.open(os.path.join(self.store, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            where = control.mountpoint_of(self.store)
            raise MountError(f"store {self.store} is already mounted"
                             + (f" at {where}" if where else "")) from None
        return fd

    def _serve(self, repo: Repo, on_ready) -> int:
        repo.recover()
        fs = Filesystem(repo, record_use=self.record_use)
        repo.db.objects.cache_limit = self.lazy.cache_size
        if self.lazy.refresh is not None:   # the chunks of open files stay in the cache
            repo.db.objects.set_pinned(lambda: {c for fid in fs.files.open_ids() for c in repo.file(fid).chunks})
        self.actions = Actions(fs)
        options = {"fsname=artfs", "subtype=artfs"}
        if self.allow_other:
            options |= {"allow_other", "default_permissions"}
        try:
            pyfuse3.init(Operations(fs), self.mountpoint, options)
        except RuntimeError as e:
            raise MountError(f"cannot mount {self.mountpoint}: {e}") from None
        _tune_memory()
        try:
            trio.run(self._main, on_ready)
        except BaseException:
            if self.ready:
                log.exception("the daemon crashed; leaving %s mounted but dead (run "
                              "'fusermount3 -u %s')", self.mountpoint, self.mountpoint)
                pyfuse3.close(unmount=False)
            else:
                pyfuse3.close(unmount=True)
            raise
        finally:
            self._cleanup()
            if fs.uses is not None:
                fs.uses.flush()
            fs.marks.close()
        pyfuse3.close(unmount=True)
        log.info("unmounted %s", self.mountpoint)
        return 0

    async def _main(self, on_ready) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._startup, nursery, on_ready)
            nursery.start_soon(self._signals)
            nursery.start_soon(self.actions.fs.marks.run)
            if self.actions.fs.uses is not None:
                nursery.start_soon(self.actions.fs.uses.run)
            if self.lazy.refresh is not None:
                nursery.start_soon(self._refresh)
            await pyfuse3.main()
            self.actions.fs.repo.db.objects.abandon()   # no thread waits for the remote any more
            nursery.cancel_scope.cancel()

    async def _startup(self, nursery, on_ready) -> None:
        st = await trio.to_thread.run_sync(os.stat, self.mountpoint)   # the mount answers
        self._read_ahead(st.st_dev)
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        if os.path.lexists(self.socket):
            os.unlink(self.socket)   # a killed daemon's: we hold the store lock
        old = os.umask(0o077)
        try:
            await sock.bind(self.socket)
        finally:
            os.umask(old)
        if self.allow_other:   # every local user may ask; each request is authorized (control.py)
            os.chmod(self.socket, 0o666)
            self.store_mode = stat.S_IMODE(os.stat(self.store).st_mode)
            os.chmod(self.store, self.store_mode | 0o011)
        sock.listen(16)
        nursery.start_soon(trio.serve_listeners, self._client, [trio.SocketListener(sock)])
        tmp = self.info + ".tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            os.fchmod(f.fileno(), 0o644 if self.allow_other else 0o600)
            json.dump({"pid": os.getpid(), "mountpoint": self.mountpoint, "socket": self.socket}, f)
        os.replace(tmp, self.info)
        self.ready = True
        on_ready()

    def _read_ahead(self, dev: int) -> None:
        path = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb"
        try:
            with open(path, "w") as f:
                f.write(str(READ_AHEAD_KB))
        except OSError as e:
            log.info("read-ahead left at the default (%s: %s)", path, e.strerror)

    async def _refresh(self) -> None:
        """Record the versions other hosts pushed, every ``interval`` seconds; `latest` moves in
        the pull's transaction, and the kernel's entries of the artifacts changed are dropped.
        A failure is logged once (and its end), never fatal: cached data keeps being served."""
        repo, failing = self.actions.fs.repo, None
        limiter = trio.CapacityLimiter(1)
        while True:
            await trio.sleep(self.lazy.interval)
            try:
                names = await trio.to_thread.run_sync(self.lazy.refresh, repo, limiter=limiter)
            except ArtfsError as e:
                if str(e) != failing:
                    log.warning("refreshing from the remote failed (retrying every %.0f s): %s",
                                self.lazy.interval, e)
                failing = str(e)
                continue
            if failing is not None:
                log.info("refreshing from the remote works again")
                failing = None
            for name in names:
                _, entries = await self.actions.changed(name)
                await invalidate(entries)

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("%s: unmounting", signal.Signals(signum).name)
                pyfuse3.terminate()
                return

    def _cleanup(self) -> None:
        for path in (self.info, self.socket):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        if self.store_mode is not None:
            os.chmod(self.store, self.store_mode)

    # control socket ----------------------------------------------------------------------------
    async def _client(self, stream) -> None:
        try:
            async with stream:
                buf = b""
                # a silent client (with --allow-other: any local user) holds a task no longer
                with trio.move_on_after(REQUEST_SECONDS) as waiting:
                    while not buf.endswith(b"\n") and len(buf) < MAX_REQUEST:
                        data = await stream.receive_some(65536)
                        if not data:
                            return
                        buf += data
                if waiting.cancelled_caught:
                    log.info("control client sent no complete request in %g s", REQUEST_SECONDS)
                    return
                try:
                    request = json.loads(buf)
                    op, args = request["op"], request.get("args") or {}
                except (ValueError, KeyError, TypeError, AttributeError):
                    op, args = None, {}
                # an unmount ends the loop (cancelling this task) just before its answer is sent
                with trio.CancelScope(shield=op == "unmount"):
                    answer = await self._answer(op, args, stream.socket)
                    await stream.send_all(json.dumps(answer).encode() + b"\n")
        except (trio.BrokenResourceError, OSError) as e:
            log.info("control client went away: %s", e)

    async def _answer(self, op: str, args: dict, sock) -> dict:
        try:
            caller = control.peer(sock, self.actions.repo.catalog.default_owner[0])
            if op == "unmount":
                control.authorize(self.actions.repo, caller, op, args)
                return {"ok": True, "result": await self._unmount()}
            if op == "cache":   # the chunk cache this daemon fills and evicts (store/cache.py)
                result = await trio.to_thread.run_sync(self.actions.fs.repo.cache_op, bool(args.get("clear")))
                return {"ok": True, "result": result}
            if op not in ACTIONS or not isinstance(args, dict):
                raise UsageError(f"malformed daemon request (operation {op!r})")
            action = getattr(self.actions, op)
            try:
                inspect.signature(action).bind(**args)
            except TypeError as e:
                raise UsageError(f"bad arguments for {op}: {e}") from None
            args = control.authorize(self.actions.repo, caller, op, args)
            with acting_as(caller):   # the audit log and the version name the caller
                result, entries = await action(**args)
            await invalidate(entries)
            return {"ok": True, "result": result}
        except Exception as e:
            if not isinstance(e, ArtfsError):
                log.exception("control request %s failed", op)
            return control.encode_error(e)

    async def _unmount(self) -> None:
        """Unmount like ``fusermount3 -u`` (refused while busy); the FUSE loop then ends."""
        await trio.to_thread.run_sync(_fusermount_u, self.mountpoint)
