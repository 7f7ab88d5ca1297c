"""A thin client for one prefix of an S3-compatible bucket, over obstore (Rust object_store).

The only module that imports obstore. Every call maps the client's errors to artfs's: a missing key
is NotFound, a lost create-only or compare-and-swap write is Conflict (Exists for create-only), a
403 is NotPermitted naming the permission the call needed, and anything else (connection refused,
timeouts, 5xx) is RemoteError once the client's bounded retries with exponential backoff are spent.

Requests are path-style (``endpoint/bucket/key``), which every S3-compatible server accepts.
Credentials come from the usual AWS environment variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``) unless given explicitly; artfs never stores them.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
from collections.abc import Sequence
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


def _seconds(name: str, default: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=float(os.environ.get(name, default)))


class S3Store:
    """Keys under ``s3://bucket/prefix``; each call is one request (or a few, in parallel)."""

    @classmethod
    def of(cls, binding: dict) -> "S3Store":
        """The client of a bound remote (remote/bindings.py: url, endpoint, region, allow_http,
        ca_bundle): one place, so no caller drops an option."""
        return cls(binding["url"], endpoint=binding.get("endpoint"), region=binding.get("region"),
                   allow_http=binding.get("allow_http", False), ca_bundle=binding.get("ca_bundle"))

    def __init__(self, url: str, *, endpoint: str | None = None, region: str | None = None,
                 allow_http: bool = False, ca_bundle: str | None = None,
                 credentials: tuple[str, str] | None = None):
        if obstore is None:
            raise UsageError("remotes need the obstore package (pip install 'obstore>=0.12,<0.13')")
        allow_http = check_endpoint(endpoint, allow_http)
        self.url = url
        self.bucket, self.prefix = parse_url(url)
        self.endpoint = endpoint
        self.bytes_sent = 0
        self.requests = 0
        config: dict = {"virtual_hosted_style_request": False,
                        "region": region or os.environ.get("AWS_REGION")
                        or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
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
            retry_config={"max_retries": retries, "retry_timeout": _seconds("ARTFS_REMOTE_RETRY_TIMEOUT", 30),
                          "backoff": {"init_backoff": datetime.timedelta(milliseconds=100),
                                      "max_backoff": datetime.timedelta(seconds=5), "base": 2}})

    def __repr__(self) -> str:
        return f"<S3Store {self.url}{' at ' + self.endpoint if self.endpoint else ''}>"

    @contextlib.contextmanager
    def _errors(self, op: str, key: str):
        """Map obstore's errors for ``op`` (get, list, put, delete) on ``key`` to artfs errors."""
        self.requests += 1
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
            return obstore.get(self._store, key).bytes().to_bytes()

    def get_tagged(self, key: str) -> tuple[bytes, str]:
        """The bytes and the ETag (unquoted: what ``put(if_match=...)`` takes)."""
        with self._errors("get", key):
            result = obstore.get(self._store, key)
            return result.bytes().to_bytes(), _unquoted(result.meta["e_tag"])

    def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Bytes [start, end) of each range, in order; neighbours are coalesced into one request
        and the requests run in parallel (without the GIL). Copied: a view of one range would keep
        the whole coalesced response alive."""
        if not ranges:
            return []
        with self._errors("get", key):
            got = obstore.get_ranges(self._store, key, starts=[s for s, _ in ranges],
                                     ends=[e for _, e in ranges], coalesce=COALESCE)
            return [b.to_bytes() for b in got]

    def list(self, prefix: str = "") -> list[tuple[str, int]]:
        """(key, size) of every key under ``prefix``, sorted."""
        with self._errors("list", prefix):
            return sorted((m["path"], m["size"]) for batch in obstore.list(self._store, prefix=prefix or None)
                          for m in batch)

    def listing(self, prefix: str = "") -> list[tuple[str, int, float]]:
        """(key, size, last modified by the server's clock, in epoch seconds) under ``prefix``."""
        with self._errors("list", prefix):
            return sorted((m["path"], m["size"], m["last_modified"].timestamp())
                          for batch in obstore.list(self._store, prefix=prefix or None) for m in batch)

    # writing -----------------------------------------------------------------------------------
    def put(self, key: str, data: bytes, *, create: bool = False, if_match: str | None = None) -> str:
        """Write ``key``: overwrite, create-only (Exists when present) or compare-and-swap against
        an unquoted ETag (Conflict when it changed). Returns the new ETag, unquoted."""
        if create and if_match is not None:
            raise ValueError("create-only and compare-and-swap exclude each other")
        mode = "create" if create else {"e_tag": if_match} if if_match is not None else "overwrite"
        with self._errors("put", key):
            result = obstore.put(self._store, key, data, mode=mode)
        self.bytes_sent += len(data)
        return _unquoted(result["e_tag"] or "")

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""
        with self._errors("delete", key):
            obstore.delete(self._store, key)


def _unquoted(etag: str) -> str:
    """ETags as If-Match must carry them: RGW 16.2 compares without the quotes it returns."""
    return etag.strip('"')


def _first_line(text: str) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), text)
    return line[:300]
