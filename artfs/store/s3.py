"""A thin client for one prefix of an S3-compatible bucket, over obstore (Rust object_store).

The only module that imports obstore. Every call maps the client's errors to artfs's: a missing key
is NotFound, a lost create-only or compare-and-swap write is Conflict (Exists for create-only), a
403 is NotPermitted naming the permission the call needed, and anything else (connection refused,
timeouts, 5xx) is RemoteError once the client's bounded retries with exponential backoff are spent.

Requests are path-style (``endpoint/bucket/key``), which every S3-compatible server accepts.
Credentials are found as the AWS CLI finds them, and never stored: a remote bound with a profile
(``remote add --profile P``) uses that profile of ``~/.aws/credentials`` and ``~/.aws/config``;
else the environment variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``); else the profile ``$AWS_PROFILE`` or ``default`` when the files have it;
else obstore's own chain (container and instance credentials). A profile's keys are read with
configparser (``AWS_SHARED_CREDENTIALS_FILE`` and ``AWS_CONFIG_FILE`` move the files); a profile
without keys (assume-role, SSO, credential_process) goes through boto3 when it is installed.
The region: the binding's, else ``$AWS_REGION`` / ``$AWS_DEFAULT_REGION``, else the profile's.

Every client counts its requests by S3 operation (GET, GET-range, HEAD, PUT, LIST, DELETE: a
LIST per page of 1,000 keys, a GET-range per coalesced range of a pack, as the server sees them)
and the bytes it sent and received, per client (``S3Store.stats``) and per process (``TOTALS``). With
``ARTFS_REMOTE_STATS=FILE`` each process appends its totals to FILE as one JSON line when it exits
(docs/SCALE.md is measured so).
"""

from __future__ import annotations

import atexit
import configparser
import contextlib
import datetime
import ipaddress
import json
import os
import sys
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from urllib.parse import urlparse

from ..errors import Conflict, Exists, InvalidInput, NotFound, NotPermitted, RemoteError, UsageError

try:
    import obstore
    from obstore.exceptions import (AlreadyExistsError, BaseError, NotFoundError, PermissionDeniedError,
                                    PreconditionError, UnauthenticatedError)
    from obstore.store import S3Store as _ObS3Store
except ImportError:   # the remote is optional: the local store works without obstore
    obstore = None

PERMISSION = {"get": "s3:GetObject", "list": "s3:ListBucket", "put": "s3:PutObject",
              "delete": "s3:DeleteObject"}
COALESCE = 64 << 10     # ranges closer than this are fetched as one request
LIST_PAGE = 1000        # keys per LIST response (S3's maximum)
STATS_ENV = "ARTFS_REMOTE_STATS"


class Stats:
    """Requests by S3 operation, and bytes sent and received; safe to add to from many threads."""

    def __init__(self):
        self.requests: Counter = Counter()
        self.bytes_sent = self.bytes_received = 0
        self._lock = threading.Lock()

    def add(self, op: str, n: int = 1, sent: int = 0, received: int = 0) -> None:
        with self._lock:
            self.requests[op] += n
            self.bytes_sent += sent
            self.bytes_received += received

    def snapshot(self) -> dict:
        """{"requests": {OP: n}, "bytes_sent": n, "bytes_received": n}: a copy."""
        with self._lock:
            return {"requests": dict(sorted(self.requests.items())), "bytes_sent": self.bytes_sent,
                    "bytes_received": self.bytes_received}

    @staticmethod
    def delta(before: dict, after: dict) -> dict:
        """What happened between two snapshots."""
        ops = set(before["requests"]) | set(after["requests"])
        req = {op: n for op in sorted(ops) if (n := after["requests"].get(op, 0) - before["requests"].get(op, 0))}
        return {"requests": req, "bytes_sent": after["bytes_sent"] - before["bytes_sent"],
                "bytes_received": after["bytes_received"] - before["bytes_received"]}


TOTALS = Stats()        # every client's, in this process
_stats_hooked = False


def _write_totals(path: str) -> None:
    line = json.dumps({"pid": os.getpid(), "argv": sys.argv[1:], **TOTALS.snapshot()})
    with contextlib.suppress(OSError), open(path, "a") as f:
        f.write(line + "\n")


def _hook_stats() -> None:
    global _stats_hooked
    path = os.environ.get(STATS_ENV)
    if path and not _stats_hooked:
        _stats_hooked = True
        atexit.register(_write_totals, os.path.abspath(path))


def coalesced(ranges: Sequence[tuple[int, int]], gap: int = COALESCE) -> int:
    """How many requests ranged reads of RANGES take once neighbours closer than GAP are merged."""
    n, end = 0, None
    for s, e in sorted(ranges):
        if end is None or s > end + gap:
            n += 1
            end = e
        else:
            end = max(end, e)
    return n


def parse_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of ``s3://bucket[/prefix]``."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise UsageError(f"not a remote URL: {url!r} (expected s3://BUCKET[/PREFIX])")
    return parsed.netloc, parsed.path.strip("/")


def check_endpoint(endpoint: str | None, allow_http: bool) -> bool:
    """Whether plain http may be used for ENDPOINT: https always; http only to a loopback host
    or with ``allow_http`` (credentials and data would cross the network in the clear)."""
    if endpoint is None:
        return allow_http
    parsed = urlparse(endpoint)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UsageError(f"not an endpoint URL: {endpoint!r} (expected https://HOST[:PORT])")
    if parsed.scheme == "https":
        return allow_http
    host = parsed.hostname
    loopback = host == "localhost"
    with contextlib.suppress(ValueError):
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    if not (loopback or allow_http):
        raise UsageError(f"refusing plain http to {host}: credentials and data would cross the network "
                         "unencrypted; use an https endpoint (with --ca-bundle for a private CA) or --allow-http")
    return True


def _read_ca(path: str) -> str:
    try:
        with open(path) as f:
            pem = f.read()
    except OSError as e:
        raise InvalidInput(f"cannot read CA bundle {path}: {e.strerror}") from None
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise InvalidInput(f"CA bundle {path} holds no PEM certificate")
    return pem


def _aws_file(env: str, name: str) -> str:
    return os.path.expanduser(os.environ.get(env) or os.path.join("~", ".aws", name))


def _ini(path: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    try:
        parser.read(path)
    except configparser.Error as e:
        raise InvalidInput(f"cannot parse {path}: {_first_line(str(e))}") from None
    return parser


def read_profile(name: str) -> dict[str, str] | None:
    """The settings of AWS profile NAME as the AWS CLI reads them: ``[profile NAME]`` (``[default]``)
    of the config file, then ``[NAME]`` of the credentials file, which wins for the same key.
    None when neither file has it."""
    config = _ini(_aws_file("AWS_CONFIG_FILE", "config"))
    creds = _ini(_aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials"))
    section = name if name == "default" else f"profile {name}"
    if not (config.has_section(section) or creds.has_section(name)):
        return None
    out = dict(config.items(section)) if config.has_section(section) else {}
    if creds.has_section(name):
        out.update(creds.items(name))
    return out


def resolve_profile(profile: str | None) -> tuple[str | None, dict[str, str] | None]:
    """Which profile a client uses and its settings: PROFILE (bound; InvalidInput when the files
    lack it), else none when the environment has keys, else ``$AWS_PROFILE`` (InvalidInput when
    missing, as the AWS CLI) or ``default`` when present."""
    if profile is None:
        if os.environ.get("AWS_ACCESS_KEY_ID"):
            return None, None
        profile = os.environ.get("AWS_PROFILE")
        if profile is None:
            return ("default", found) if (found := read_profile("default")) is not None else (None, None)
    found = read_profile(profile)
    if found is None:
        raise InvalidInput(f"AWS profile {profile!r} is not in {_aws_file('AWS_CONFIG_FILE', 'config')} "
                           f"nor in {_aws_file('AWS_SHARED_CREDENTIALS_FILE', 'credentials')}")
    return profile, found


def _profile_credentials(profile: str, settings: dict[str, str]):
    """obstore's credential provider for a profile: its static keys, else boto3's session."""
    if settings.get("aws_access_key_id") and settings.get("aws_secret_access_key"):
        static = {"access_key_id": settings["aws_access_key_id"],
                  "secret_access_key": settings["aws_secret_access_key"],
                  "token": settings.get("aws_session_token") or None, "expires_at": None}
        return lambda: static
    try:
        import boto3
        from obstore.auth.boto3 import Boto3CredentialProvider
    except ImportError:
        raise InvalidInput(f"AWS profile {profile!r} has no aws_access_key_id and aws_secret_access_key; "
                           "profiles that assume a role, use SSO or a credential_process need boto3 "
                           "(pip install boto3)") from None
    return Boto3CredentialProvider(boto3.Session(profile_name=profile))


def _seconds(name: str, default: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=float(os.environ.get(name, default)))


class S3Store:
    """Keys under ``s3://bucket/prefix``; each call is one request (or a few, in parallel)."""

    @classmethod
    def of(cls, binding: dict) -> "S3Store":
        """The client of a bound remote (remote/bindings.py: url, endpoint, region, allow_http,
        ca_bundle): one place, so no caller drops an option."""
        return cls(binding["url"], endpoint=binding.get("endpoint"), region=binding.get("region"),
                   allow_http=binding.get("allow_http", False), ca_bundle=binding.get("ca_bundle"),
                   profile=binding.get("profile"))

    def __init__(self, url: str, *, endpoint: str | None = None, region: str | None = None,
                 allow_http: bool = False, ca_bundle: str | None = None,
                 credentials: tuple[str, str] | None = None, profile: str | None = None):
        if obstore is None:
            raise UsageError("remotes need the obstore package (pip install 'obstore>=0.12,<0.13')")
        allow_http = check_endpoint(endpoint, allow_http)
        self.url = url
        self.bucket, self.prefix = parse_url(url)
        self.endpoint = endpoint
        self.stats = Stats()
        _hook_stats()
        provider = None
        self.profile, settings = resolve_profile(profile) if not credentials else (None, None)
        if settings is not None:
            provider = _profile_credentials(self.profile, settings)
        config: dict = {"virtual_hosted_style_request": False,
                        "region": region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
                        or (settings or {}).get("region") or "us-east-1"}
        if endpoint:
            config["endpoint"] = endpoint
        if credentials:
            config["access_key_id"], config["secret_access_key"] = credentials
        retries = int(os.environ.get("ARTFS_REMOTE_RETRIES", 4))
        client = {"allow_http": allow_http, "connect_timeout": _seconds("ARTFS_REMOTE_CONNECT_TIMEOUT", 5),
                  "timeout": _seconds("ARTFS_REMOTE_TIMEOUT", 120)}
        if ca_bundle:
            client["root_certificate"] = _read_ca(ca_bundle)
        self._store = _ObS3Store(
            self.bucket, prefix=self.prefix or None, config=config, client_options=client,
            credential_provider=provider,
            retry_config={"max_retries": retries, "retry_timeout": _seconds("ARTFS_REMOTE_RETRY_TIMEOUT", 30),
                          "backoff": {"init_backoff": datetime.timedelta(milliseconds=100),
                                      "max_backoff": datetime.timedelta(seconds=5), "base": 2}})

    def __repr__(self) -> str:
        return f"<S3Store {self.url}{' at ' + self.endpoint if self.endpoint else ''}>"

    @property
    def bytes_sent(self) -> int:
        return self.stats.bytes_sent

    def _count(self, op: str, n: int = 1, sent: int = 0, received: int = 0) -> None:
        self.stats.add(op, n, sent, received)
        TOTALS.add(op, n, sent, received)

    @contextlib.contextmanager
    def _errors(self, op: str, key: str):
        """Map obstore's errors for ``op`` (get, list, put, delete) on ``key`` to artfs errors."""
        where = f"{self.url.rstrip('/')}/{key}" if key else self.url
        try:
            yield
        except (NotFoundError, FileNotFoundError):
            raise NotFound(f"remote has no {where}") from None
        except AlreadyExistsError:
            raise Exists(f"remote object {where} already exists") from None
        except PreconditionError:
            raise Conflict(f"remote object {where} changed meanwhile") from None
        except (PermissionDeniedError, UnauthenticatedError) as e:
            raise NotPermitted(self._denied(op, where, e)) from None
        except BaseError as e:
            text = str(e)
            if "AccessDenied" in text or "403 Forbidden" in text:
                raise NotPermitted(self._denied(op, where, e)) from None
            raise RemoteError(f"remote {self.url}{' at ' + self.endpoint if self.endpoint else ''} "
                              f"failed ({op} {key or '/'}) after retries: {_first_line(text)}") from None

    def _denied(self, op: str, where: str, e: Exception) -> str:
        why = "credentials rejected" if isinstance(e, UnauthenticatedError) else "access denied"
        return f"{why}: {op} {where} needs {PERMISSION[op]} on bucket {self.bucket}"

    # reading -----------------------------------------------------------------------------------
    def get(self, key: str) -> bytes:
        with self._errors("get", key):
            self._count("GET")
            data = obstore.get(self._store, key).bytes().to_bytes()
        self._count("GET", 0, received=len(data))
        return data

    def get_tagged(self, key: str) -> tuple[bytes, str]:
        """The bytes and the ETag (unquoted: what ``put(if_match=...)`` takes)."""
        with self._errors("get", key):
            self._count("GET")
            result = obstore.get(self._store, key)
            data = result.bytes().to_bytes()
        self._count("GET", 0, received=len(data))
        return data, _unquoted(result.meta["e_tag"])

    def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[memoryview]:
        """Bytes [start, end) of each range, in order, as read-only views of the responses (not
        copied: a copy of every fetched byte, holding the GIL, was the largest cost of a lazy
        fetch after the hashes; the ranges of one coalesced response keep all of it alive until
        the last is dropped, and callers drop a batch's together); neighbours are coalesced into
        one request and the requests run in parallel (without the GIL)."""
        if not ranges:
            return []
        with self._errors("get", key):
            self._count("GET-range", coalesced(ranges))
            got = [memoryview(b) for b in obstore.get_ranges(self._store, key, starts=[s for s, _ in ranges],
                                                             ends=[e for _, e in ranges], coalesce=COALESCE)]
        self._count("GET-range", 0, received=sum(map(len, got)))
        return got

    def list(self, prefix: str = "") -> list[tuple[str, int]]:
        """(key, size) of every key under ``prefix``, sorted."""
        return [(key, size) for key, size, _ in self.listing(prefix)]

    def listing(self, prefix: str = "") -> list[tuple[str, int, float]]:
        """(key, size, last modified by the server's clock, in epoch seconds) under ``prefix``."""
        return [(key, size, t) for key, size, t, _ in self.tagged_listing(prefix)]

    def tagged_listing(self, prefix: str = "") -> list[tuple[str, int, float, str]]:
        """(key, size, last modified, ETag unquoted) under ``prefix``: an object rewritten since a
        listing has another ETag, so readers can cache what they fetched by (key, ETag)."""
        return [(m["path"], m["size"], m["last_modified"].timestamp(), _unquoted(m["e_tag"] or ""))
                for m in self.metas(prefix)]

    def head(self, key: str) -> dict:
        """What the server reports about ``key``: path, size, e_tag, version, last_modified."""
        with self._errors("get", key):
            self._count("HEAD")
            return obstore.head(self._store, key)

    def metas(self, prefix: str = "") -> list[dict]:
        """``head`` of every key under ``prefix`` (one listing: a LIST per 1,000 keys), sorted by key."""
        with self._errors("list", prefix):
            found = sorted((m for batch in obstore.list(self._store, prefix=prefix or None) for m in batch),
                           key=lambda m: m["path"])
            self._count("LIST", max(1, -(-len(found) // LIST_PAGE)))
        return found

    def stream(self, key: str, *, if_match: str | None = None, version: str | None = None) -> Iterator[bytes]:
        """The bytes of ``key`` in pieces; only of ETag ``if_match`` (else Conflict) or of ``version``."""
        with self._errors("get", key):
            self._count("GET")
            for piece in obstore.get(self._store, key, options=_conditions(if_match, version)).stream():
                self._count("GET", 0, received=len(piece))
                yield bytes(piece)

    def read_range(self, key: str, start: int, end: int, *, if_match: str | None = None,
                   version: str | None = None) -> bytes:
        """Bytes [start, end) of ``key``, with ``stream``'s conditions."""
        with self._errors("get", key):
            self._count("GET-range")
            options = {**_conditions(if_match, version), "range": (start, end)}
            data = obstore.get(self._store, key, options=options).bytes().to_bytes()
        self._count("GET-range", 0, received=len(data))
        return data

    # writing -----------------------------------------------------------------------------------
    def put(self, key: str, data: bytes, *, create: bool = False, if_match: str | None = None) -> str:
        """Write ``key``: overwrite, create-only (Exists when present) or compare-and-swap against
        an unquoted ETag (Conflict when it changed). Returns the new ETag, unquoted."""
        if create and if_match is not None:
            raise ValueError("create-only and compare-and-swap exclude each other")
        mode = "create" if create else {"e_tag": if_match} if if_match is not None else "overwrite"
        with self._errors("put", key):
            self._count("PUT")
            result = obstore.put(self._store, key, data, mode=mode)
        self._count("PUT", 0, sent=len(data))
        return _unquoted(result["e_tag"] or "")

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""
        with self._errors("delete", key):
            self._count("DELETE")
            obstore.delete(self._store, key)

    def delete_many(self, keys: Sequence[str]) -> None:
        """Remove these keys with S3's bulk DeleteObjects (one request per 1,000 keys); missing
        keys are not an error."""
        keys = list(keys)
        if not keys:
            return
        with self._errors("delete", keys[0]):
            self._count("DELETE", -(-len(keys) // LIST_PAGE))
            obstore.delete(self._store, keys)


def _conditions(if_match: str | None, version: str | None) -> dict:
    return {k: v for k, v in (("if_match", if_match), ("version", version)) if v is not None}


def _unquoted(etag: str) -> str:
    """ETags as If-Match must carry them: RGW 16.2 compares without the quotes it returns."""
    return etag.strip('"')


def _first_line(text: str) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), text)
    return line[:300]
