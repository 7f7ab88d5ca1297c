"""Real S3-compatible servers for tests: a throwaway Ceph cluster with radosgw, and moto_server.

Each server lives in a temp dir of its own, listens on 127.0.0.1 on free ports, and runs every
daemon in a process group (a session) that this module created, stopped by its PID: SIGTERM, then
SIGKILL after a bounded wait. ``start()`` stops what it started when it fails or is interrupted, and
``stop()`` always works. An owner that dies without stopping its server (pytest SIGKILLed) leaves
its temp dir behind with the lock it held while alive and the (pid, start time) of each daemon:
the next ``start()`` anywhere on the machine finds the lock free, kills exactly those processes
and removes the dir (``reap_orphans``).

Ceph's mon listens on the fixed port 3300, so at most one ``RgwServer`` runs per machine: it holds
an flock on ``RGW_LOCK`` and a second one waits for it (``lock_wait`` seconds), then fails saying
who holds it. Both servers have two users: ``full`` (owner of the buckets ``make_bucket`` makes)
and ``readonly`` (may get and list every bucket, nothing else). Startup failures raise
``ServerError``: one line with the tail of the daemon logs.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import fcntl
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from importlib.util import find_spec

DIR_PREFIX = "artfs-s3-"              # live (or orphaned) servers' dirs in the temp dir
NEW_DIR_PREFIX = "artfs-s3.new-"      # not yet locked by its owner: never reaped
MON_PORT = 3300
RGW_LOCK = "/tmp/artfs-ceph-mon-3300.lock"
CEPH_BINARIES = ("ceph-authtool", "monmaptool", "ceph-mon", "ceph", "ceph-osd", "radosgw", "radosgw-admin")
NEWS = re.compile(r"error|fail|assert|abort|denied|refused|in use|cannot|unable", re.I)


class ServerError(RuntimeError):
    """A server did not start: one line, with the tail of the logs that say why."""


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str


def unquoted_etag(etag: str) -> str:
    """The ETag as ``If-Match`` must carry it: RGW compares it without the quotes it returns
    (and answers 412 to the quoted form); moto and AWS accept it too."""
    return etag.strip('"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_time(pid: int) -> str | None:
    """When a live process started (clock ticks since boot); None once it has exited.
    With the pid it names one process: a reused pid has another start time."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in "ZX" else fields[19]


def log_tail(path: str, lines: int = 4) -> str:
    """A log's last lines, after the last two earlier ones that say what went wrong (a crash's
    backtrace ends the log; the failed assertion above it is the news)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    all_lines = [line.strip() for line in text.splitlines() if line.strip()]
    tail = all_lines[-lines:]
    news = [line for line in all_lines[:-lines] if NEWS.search(line)][-2:]
    return " | ".join(news + (["..."] if news else []) + tail)


def reap_orphans() -> None:
    """Kill the daemons of servers whose owner died without stopping them; remove their dirs."""
    for name in os.listdir(tempfile.gettempdir()):
        if not name.startswith(DIR_PREFIX):
            continue
        path = os.path.join(tempfile.gettempdir(), name)
        try:
            fd = os.open(os.path.join(path, "owner.lock"), os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)                  # its owner is alive
            continue
        try:
            kill_recorded(os.path.join(path, "pids"))
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(fd)


def kill_recorded(pids_file: str) -> None:
    """SIGKILL the process groups listed as 'pid start-time' lines, if those very processes live."""
    try:
        with open(pids_file) as f:
            recorded = [line.split() for line in f if line.strip()]
    except OSError:
        return
    alive = [(int(pid), started) for pid, started in recorded if start_time(int(pid)) == started]
    for pid, _ in alive:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)    # each daemon leads a session of its own
    deadline = time.monotonic() + 10
    while any(start_time(pid) == started for pid, started in alive) and time.monotonic() < deadline:
        time.sleep(0.02)


def terminate(procs: list[subprocess.Popen], grace: float) -> None:
    """SIGTERM each process group, SIGKILL those left after ``grace`` seconds, reap them all."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        for p in procs:
            if p.poll() is None:          # not reaped, so its pid is still its own
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, sig)
        deadline = time.monotonic() + wait
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
        if all(p.returncode is not None for p in procs):
            return


def make_tls(directory: str) -> tuple[str, str, str]:
    """A CA and a server certificate it signs for 127.0.0.1 and localhost: (ca, cert, key) files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject, key, issuer, issuer_key, ca: bool):
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=not ca, key_cert_sign=ca, crl_sign=ca,
                                                content_commitment=False, key_encipherment=False,
                                                data_encipherment=False, key_agreement=False,
                                                encipher_only=False, decipher_only=False), critical=True))
        if not ca:
            builder = (builder
                       .add_extension(x509.SubjectAlternativeName([
                           x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                           critical=False)
                       .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    files = [os.path.join(directory, n) for n in ("ca.pem", "server.pem", "server.key")]
    pems = [cert("artfs test CA", ca_key, "artfs test CA", ca_key, True).public_bytes(serialization.Encoding.PEM),
            cert("127.0.0.1", key, "artfs test CA", ca_key, False).public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())]
    for path, pem in zip(files, pems):
        with open(path, "wb") as f:
            f.write(pem)
    return files[0], files[1], files[2]


def random_key(n: int, alphabet: str = string.ascii_uppercase + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


_live: set["S3Server"] = set()
atexit.register(lambda: [s.stop() for s in list(_live)])


class S3Server:
    """One S3 endpoint with a ``full`` and a ``readonly`` user. Use as a context manager, or
    ``start()`` then ``stop()``; ``start_seconds`` is how long the start took."""

    kind = ""
    region = "us-east-1"
    stop_grace = 3.0                      # seconds between SIGTERM and SIGKILL

    def __init__(self, tls: bool = False, timeout: float = 60.0):
        self.tls, self.timeout = tls, timeout
        self.dir: str | None = None
        self.endpoint: str | None = None        # what clients use by default
        self.tls_endpoint: str | None = None    # https, with ca_file, when tls
        self.ca_file: str | None = None
        self.users: dict[str, Credentials] = {}
        self.start_seconds: float | None = None
        self.timeline: list[tuple[str, float]] = []   # (step, seconds since start began) of start()
        self._t0 = 0.0
        self.pids: list[int] = []               # every process started, for the tests of stop()
        self._procs: list[subprocess.Popen] = []
        self._daemons: dict[str, subprocess.Popen] = {}
        self._owner_fd: int | None = None

    @classmethod
    def missing(cls) -> str | None:
        """Why this server cannot run here (what to install), or None."""
        raise NotImplementedError

    def __enter__(self) -> "S3Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.endpoint}>"

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> "S3Server":
        t0 = self._t0 = time.monotonic()
        _live.add(self)
        try:
            reap_orphans()
            self._make_dir()
            self._start(t0 + self.timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Stop every process this server started and remove its dir; safe to call at any time."""
        terminate(self._procs, self.stop_grace)
        self._procs.clear()
        self._daemons.clear()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        if self._owner_fd is not None:
            os.close(self._owner_fd)
            self._owner_fd = None
        _live.discard(self)

    def _make_dir(self) -> None:
        """A temp dir that reap_orphans leaves alone while this process holds its owner.lock."""
        new = tempfile.mkdtemp(prefix=f"{NEW_DIR_PREFIX}{self.kind}-")
        self._owner_fd = os.open(os.path.join(new, "owner.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._owner_fd, fcntl.LOCK_EX)
        self.dir = new.replace(NEW_DIR_PREFIX, DIR_PREFIX)
        os.rename(new, self.dir)

    def _start(self, deadline: float) -> None:
        raise NotImplementedError

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        """Start a process in a new session, output to NAME.out, recorded for reap_orphans."""
        with open(self.path(f"{name}.out"), "ab") as out:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True, cwd=self.dir)
        self._procs.append(p)
        self.pids.append(p.pid)
        with open(self.path("pids"), "a") as f:
            f.write(f"{p.pid} {start_time(p.pid)}\n")
        return p

    def _daemon(self, name: str, argv: list[str]) -> None:
        self._daemons[name] = self._spawn(name, argv)

    def _check(self, deadline: float, waiting_for: str) -> None:
        """Raise ServerError if a daemon died or the deadline passed."""
        for name, p in self._daemons.items():
            if p.poll() is not None:
                raise ServerError(f"{self.kind}: {name} exited with status {p.returncode} while waiting for "
                                  f"{waiting_for}: {self._tails(name)}")
        if time.monotonic() > deadline:
            raise ServerError(f"{self.kind}: no {waiting_for} after {self.timeout:g} s: "
                              f"{self._tails(*self._daemons)}")

    def _tails(self, *names: str) -> str:
        """The last lines of the named daemons' logs (their own log file and their output)."""
        parts = []
        for name in names:
            for log in (f"{name}.log", f"{name}.out"):
                tail = log_tail(self.path(log))
                if tail:
                    parts.append(f"[{log}] {tail}")
        return " ".join(parts) or "(no log output)"

    def _mark(self, step: str) -> None:
        self.timeline.append((step, time.monotonic() - self._t0))

    def _run(self, name: str, argv: list[str], deadline: float) -> str:
        """Run a set-up command to completion, watching the daemons; returns its output.
        (If it fails or hangs, start() stops it with the daemons.)"""
        p = self._spawn(name, argv)
        while p.poll() is None:
            self._check(deadline, f"`{' '.join(argv[:3])}` to finish")
            time.sleep(0.01)
        self._procs.remove(p)
        self._mark(name)
        with open(self.path(f"{name}.out"), errors="replace") as f:
            out = f.read()
        if p.returncode:
            raise ServerError(f"{self.kind}: `{' '.join(argv)}` exited with status {p.returncode}: "
                              f"{log_tail(self.path(f'{name}.out'))}")
        return out

    def _wait_http(self, url: str, deadline: float) -> None:
        """Until ``GET url`` answers 200 (the server is up)."""
        context = ssl.create_default_context(cafile=self.ca_file) if url.startswith("https:") else None
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1, context=context) as r:
                    if r.status == 200:
                        self._mark(f"HTTP {url.split(':')[0]}")
                        return
            except (urllib.error.URLError, OSError):
                pass
            self._check(deadline, f"HTTP 200 from {url}")
            time.sleep(0.01)

    # -- clients ---------------------------------------------------------------------------------

    def boto3_client(self, user: str = "full", service: str = "s3"):
        import boto3
        from botocore.config import Config

        creds = self.users[user]
        return boto3.client(service, endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key,
                            verify=self.ca_file if self.endpoint.startswith("https:") else None,
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}))

    def make_bucket(self, name: str) -> str:
        """Create bucket ``name`` owned by the full user (readable by the readonly one)."""
        self.boto3_client().create_bucket(Bucket=name)
        return name

    def obstore_options(self, user: str = "full", tls: bool = False, trust_ca: bool = True) -> dict:
        """Keyword arguments for ``obstore.store.S3Store(bucket, **options)``: path-style requests
        to the plain endpoint, or to the TLS one (trusting the server's CA unless not trust_ca)."""
        creds = self.users[user]
        endpoint = self.tls_endpoint if tls else self.endpoint
        if endpoint is None:
            raise ValueError(f"{self!r} has no TLS endpoint: start it with tls=True")
        client: dict = {"allow_http": True}
        if endpoint.startswith("https:") and trust_ca:
            with open(self.ca_file) as f:
                client["root_certificate"] = f.read()
        return {"config": {"endpoint": endpoint, "region": self.region, "access_key_id": creds.access_key,
                           "secret_access_key": creds.secret_key, "virtual_hosted_style_request": False},
                "client_options": client,
                "retry_config": {"max_retries": 2, "retry_timeout": datetime.timedelta(seconds=10)}}


class MotoServer(S3Server):
    """moto_server in memory, with IAM enforced once its two users exist: ``full`` may do
    anything in S3, ``readonly`` only s3:Get*/s3:List*. With tls=True it serves https only."""

    kind = "moto"

    def __init__(self, tls: bool = False, timeout: float = 60.0, port: int | None = None):
        super().__init__(tls, timeout)
        self.port = port

    @classmethod
    def missing(cls) -> str | None:
        if find_spec("moto") is None or find_spec("flask") is None:
            return "needs moto[server] in this Python (scripts/setup-s3.sh installs it)"
        return None

    def _start(self, deadline: float) -> None:
        port = self.port or free_port()
        argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        scheme = "http"
        if self.tls:
            self.ca_file, cert, key = make_tls(self.dir)
            argv += ["-c", cert, "-k", key]
            scheme = "https"
        self.endpoint = f"{scheme}://127.0.0.1:{port}"
        self.tls_endpoint = self.endpoint if self.tls else None
        self._daemon("moto_server", argv)
        self._wait_http(f"{self.endpoint}/moto-api/", deadline)
        try:
            self._make_users()
        except Exception as e:
            self._check(deadline, "its users")   # a dead moto_server explains it best
            raise ServerError(f"moto: creating its users failed: {str(e).splitlines()[0]}: "
                              f"{self._tails('moto_server')}") from e

    def _make_users(self) -> None:
        """Before IAM is enforced anyone may create users; then enforce it for every request."""
        self.users["setup"] = Credentials("setup", "setup")
        iam = self.boto3_client("setup", "iam")
        policies = {"full": ["s3:*"], "readonly": ["s3:Get*", "s3:List*"]}
        for user, actions in policies.items():
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName=f"{user}-s3", PolicyDocument=json.dumps({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}))
            key = iam.create_access_key(UserName=user)["AccessKey"]
            self.users[user] = Credentials(key["AccessKeyId"], key["SecretAccessKey"])
        del self.users["setup"]
        context = ssl.create_default_context(cafile=self.ca_file) if self.tls else None
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                                         headers={"Content-Type": "text/plain"})   # not a form
        with urllib.request.urlopen(request, timeout=10, context=context) as r:
            r.read()
        self._mark("users")


class RgwServer(S3Server):
    """A one-mon, one-memstore-OSD Ceph cluster and radosgw (beast), all on 127.0.0.1.

    ``full`` is an RGW user; ``readonly`` is its subuser with read access (RGW applies a subuser's
    permission mask to every request its S3 key signs). With tls=True beast also serves https on
    ``tls_endpoint``. One per machine: see RGW_LOCK."""

    kind = "rgw"
    stop_grace = 1.0    # radosgw and the OSD take 5 s to obey SIGTERM; the cluster is thrown away

    def __init__(self, tls: bool = False, timeout: float = 60.0, lock_wait: float | None = None,
                 memstore_bytes: int = 4 << 30):
        super().__init__(tls, timeout)
        self.lock_wait = float(os.environ.get("ARTFS_RGW_LOCK_WAIT", 900)) if lock_wait is None else lock_wait
        self.memstore_bytes = memstore_bytes
        self._lock_fd: int | None = None

    @classmethod
    def missing(cls) -> str | None:
        absent = [b for b in CEPH_BINARIES if shutil.which(b) is None]
        if absent:
            return f"needs Ceph ({', '.join(absent)} not found): scripts/setup-s3.sh installs it"
        return None

    def start(self) -> "RgwServer":
        self._lock_machine()
        try:
            return super().start()
        except BaseException:
            self._unlock_machine()
            raise

    def stop(self) -> None:
        super().stop()
        self._unlock_machine()

    def _lock_machine(self) -> None:
        """Take RGW_LOCK (mon port 3300 is one per machine), waiting up to lock_wait seconds."""
        fd = os.open(RGW_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        deadline, said = time.monotonic() + self.lock_wait, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise ServerError(f"rgw: {RGW_LOCK} still held after {self.lock_wait:g} s by {holder}: "
                                      "one Ceph test cluster per machine (mon port 3300); "
                                      "set ARTFS_RGW_LOCK_WAIT to wait longer") from None
                if not said:
                    print(f"s3servers: waiting up to {self.lock_wait:g} s for {RGW_LOCK} ({holder})",
                          file=sys.stderr)
                    said = True
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {' '.join(sys.argv)[:150]}\n".encode(), 0)
        self._lock_fd = fd

    def _unlock_machine(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _start(self, deadline: float) -> None:
        with socket.socket() as s:   # start() reaped orphans under the lock: none holds it now
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", MON_PORT))
            except OSError:
                raise ServerError(f"rgw: port {MON_PORT} is taken by a process that is not an artfs test "
                                  f"cluster (`ss -ltnp sport = :{MON_PORT}` names it)") from None
        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        frontend = f"beast endpoint=127.0.0.1:{port} tcp_nodelay=1"
        if self.tls:
            self.ca_file, cert, key = make_tls(self.dir)
            tls_port = free_port()
            self.tls_endpoint = f"https://127.0.0.1:{tls_port}"
            frontend += f" ssl_endpoint=127.0.0.1:{tls_port} ssl_certificate={cert} ssl_private_key={key}"
        fsid = str(uuid.uuid4())
        conf = self._write_conf(fsid, frontend)
        os.makedirs(self.path("rgw"))
        c = ["-c", conf]
        self._run("mkkeyring", ["ceph-authtool", "--create-keyring", self.path("keyring"), "--gen-key",
                                "-n", "mon.", "--cap", "mon", "allow *"], deadline)
        self._run("monmap", ["monmaptool", "--create", "--fsid", fsid, "--addv", "a",
                             f"[v2:127.0.0.1:{MON_PORT}]", self.path("monmap")], deadline)
        self._run("mkfs-mon", ["ceph-mon", *c, "--mkfs", "-i", "a", "--monmap", self.path("monmap"),
                               "--keyring", self.path("keyring")], deadline)
        self._daemon("mon.a", ["ceph-mon", *c, "-f", "-i", "a"])
        osd_uuid = str(uuid.uuid4())
        osd_id = self._run("osd-new", ["ceph", *c, "osd", "new", osd_uuid], deadline).strip()
        os.makedirs(self.path(f"osd.{osd_id}"))
        self._run("mkfs-osd", ["ceph-osd", *c, "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid], deadline)
        self._daemon(f"osd.{osd_id}", ["ceph-osd", *c, "-f", "-i", osd_id])
        self._daemon("client.rgw.a", ["radosgw", *c, "-f", "-n", "client.rgw.a"])
        full = Credentials(random_key(20), random_key(40, string.ascii_letters + string.digits))
        readonly = Credentials(random_key(20), random_key(40, string.ascii_letters + string.digits))
        self._run("user-full", ["radosgw-admin", *c, "user", "create", "--uid=full", "--display-name=full",
                                f"--access-key={full.access_key}", f"--secret-key={full.secret_key}"], deadline)
        self._run("user-readonly", ["radosgw-admin", *c, "subuser", "create", "--uid=full",
                                    "--subuser=full:readonly", "--access=read", "--key-type=s3",
                                    f"--access-key={readonly.access_key}",
                                    f"--secret-key={readonly.secret_key}"], deadline)
        self.users = {"full": full, "readonly": readonly}
        self._wait_http(self.endpoint, deadline)
        if self.tls_endpoint:
            self._wait_http(self.tls_endpoint, deadline)

    def _write_conf(self, fsid: str, frontend: str) -> str:
        d = self.dir
        conf = f"""[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{MON_PORT}
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
run dir = {d}
admin socket = {d}/$name.asok
log file = {d}/$name.log
pid file = {d}/$name.pid
crash dir = {d}/crash
keyring = {d}/keyring
mon cluster log file = {d}/cluster.log
mon data avail crit = 0
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000

[mon.a]
mon data = {d}/mon.a
paxos propose interval = 0.05
paxos min wait = 0.01

[osd]
osd data = {d}/$name
osd objectstore = memstore
memstore device bytes = {self.memstore_bytes}

[client]
ms mon client mode = crc secure
objecter tick interval = 0.2

[client.rgw.a]
rgw data = {d}/rgw
rgw frontends = {frontend}
"""
        path = self.path("ceph.conf")
        with open(path, "w") as f:
            f.write(conf)
        return path
