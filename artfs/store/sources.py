"""Where a reference's bytes live (repo/references.py): a local file or directory (``file://``), a
prefix or object of an S3-compatible bucket (``s3://``, through store/s3.py S3Store, the one S3
client) or one file on a web server (``https://``; plain ``http://`` only to a loopback host or
with ``allow_http``, the remote's rule).

Each source lists what a URL names (``list``: one object, or every object under a directory or
prefix, with what the source reports: size, ETag, version id, mtime), streams an object whole and
reads a range of one. Reads take the object as put saw it (``Found``) and refuse, with ``Changed``,
bytes the source says are of another content (another size, ETag, version or mtime), so a
reference put without a checksum never reads bytes of a later write. A missing object is
NotFound; an unreachable source RemoteError.
"""

from __future__ import annotations

import os
import ssl
import stat
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from functools import partial
from urllib.parse import quote, unquote, urlparse

from ..errors import Conflict, InvalidInput, NotFound, RemoteError, UsageError
from .s3 import S3Store, check_endpoint

STREAM_BLOCK = 1 << 20
HEADS = 16   # HEAD requests at once when a listing holds empty objects
HTTP_TIMEOUT = float(os.environ.get("ARTFS_REFERENCE_TIMEOUT", 60))


class Changed(Exception):
    """The source holds other bytes than put saw (its size, ETag, version or mtime differ)."""


@dataclass(frozen=True)
class Location:
    """How to reach a source; recorded in each reference (credentials never are: they come from
    the environment, as for the remote)."""

    scheme: str
    endpoint: str | None = None
    region: str | None = None
    ca_bundle: str | None = None
    allow_http: bool = False

    def record(self) -> dict:
        return {k: v for k, v in (("endpoint", self.endpoint), ("region", self.region),
                                  ("ca_bundle", self.ca_bundle), ("allow_http", self.allow_http)) if v}

    @classmethod
    def of(cls, url: str, record: dict) -> "Location":
        return cls(urlparse(url).scheme, record.get("endpoint"), record.get("region"),
                   record.get("ca_bundle"), record.get("allow_http", False))


@dataclass(frozen=True)
class Found:
    """One object of a source as it was seen: its path under the URL put was given ('' when the
    URL names the object itself), its own URL and what the source reported about it."""

    name: str
    url: str
    size: int
    etag: str | None = None
    version: str | None = None
    mtime_ns: int | None = None
    mode: int = 0o644

    def validators(self) -> dict:
        return {k: v for k, v in (("etag", self.etag), ("version", self.version), ("mtime_ns", self.mtime_ns))
                if v is not None}

    def differs(self, expect: "Found") -> bool:
        """Whether this is another content than EXPECT: another size, or another value of a
        validator EXPECT has."""
        mine = self.validators()
        return self.size != expect.size or any(mine.get(k) != v for k, v in expect.validators().items())


def source(location: Location):
    """The reader for LOCATION's scheme."""
    maker = {"file": FileSource, "s3": S3Source, "http": HttpSource, "https": HttpSource}.get(location.scheme)
    if maker is None:
        raise UsageError(f"cannot reference {location.scheme}:// URLs (file://, s3:// or https://)")
    return maker(location)


def expected(url: str, size: int, validators: dict) -> Found:
    return Found("", url, size, validators.get("etag"), validators.get("version"), validators.get("mtime_ns"))


# file:// -----------------------------------------------------------------------------------------
def file_path(url: str) -> str:
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise UsageError(f"file URL {url!r} names a host: use file:///ABSOLUTE/PATH")
    return unquote(parsed.path)


class FileSource:
    def __init__(self, location: Location):
        self.location = location

    def list(self, url: str) -> list[Found]:
        top = file_path(url)
        try:
            st = os.stat(top)
        except OSError as e:
            raise NotFound(f"cannot read {url}: {e.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            return [self._found("", url, st)]
        out = []
        for where, dirs, files in os.walk(top, onerror=_raise):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(where, name)
                st = os.lstat(path)
                if stat.S_ISREG(st.st_mode):
                    out.append(self._found(os.path.relpath(path, top), "file://" + quote(path), st))
        return out

    @staticmethod
    def _found(name: str, url: str, st) -> Found:
        return Found(name, url, st.st_size, mtime_ns=st.st_mtime_ns, mode=stat.S_IMODE(st.st_mode))

    def _open(self, url: str, expect: Found | None) -> int:
        try:
            fd = os.open(file_path(url), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"{url} is gone") from None
        except OSError as e:
            raise RemoteError(f"cannot read {url}: {e.strerror}") from None
        if expect is not None:
            try:
                self._check(fd, url, expect)
            except Changed:
                os.close(fd)
                raise
        return fd

    def _check(self, fd: int, url: str, expect: Found) -> None:
        if self._found("", url, os.fstat(fd)).differs(expect):
            raise Changed(url)

    def stream(self, url: str, expect: Found | None = None) -> Iterator[bytes]:
        fd = self._open(url, expect)
        try:
            while block := os.read(fd, STREAM_BLOCK):
                yield block
            if expect is not None:
                self._check(fd, url, expect)
        finally:
            os.close(fd)

    def read(self, url: str, start: int, end: int, expect: Found | None = None) -> bytes:
        fd = self._open(url, expect)
        try:
            data = os.pread(fd, end - start, start)
            if expect is not None:   # written meanwhile: the mtime moved
                self._check(fd, url, expect)
            return data
        finally:
            os.close(fd)


def _raise(e: OSError):
    raise InvalidInput(f"cannot read {e.filename}: {e.strerror}")


# s3:// -------------------------------------------------------------------------------------------
class S3Source:
    """Objects of any S3-compatible endpoint; one S3Store per bucket (keys are full keys)."""

    def __init__(self, location: Location):
        self.location = location
        self._clients: dict[str, S3Store] = {}
        self._lock = threading.Lock()

    def _client(self, bucket: str) -> S3Store:
        with self._lock:
            client = self._clients.get(bucket)
            if client is None:
                loc = self.location
                client = self._clients[bucket] = S3Store(f"s3://{bucket}", endpoint=loc.endpoint, region=loc.region,
                                                         allow_http=loc.allow_http, ca_bundle=loc.ca_bundle)
            return client

    @staticmethod
    def _split(url: str) -> tuple[str, str]:
        parsed = urlparse(url)
        if not parsed.netloc:
            raise UsageError(f"not an S3 URL: {url!r} (expected s3://BUCKET/KEY-OR-PREFIX)")
        return parsed.netloc, parsed.path.lstrip("/")

    @staticmethod
    def _found(name: str, url: str, meta: dict) -> Found:
        etag = meta.get("e_tag")
        return Found(name, url, meta["size"], etag.strip('"') if etag else None, meta.get("version"),
                     int(meta["last_modified"].timestamp() * 1e9) if meta.get("last_modified") else None)

    def list(self, url: str) -> list[Found]:
        bucket, key = self._split(url)
        client = self._client(bucket)
        if key and not key.endswith("/"):
            try:
                return [self._found("", url, client.head(key))]
            except NotFound:
                pass
        prefix = key.rstrip("/")
        metas = client.metas(prefix)
        parents = {p[:i] for p in (m["path"] for m in metas) for i, c in enumerate(p) if c == "/"}
        for m in metas:
            if m["path"] in parents and m["size"]:
                raise InvalidInput(f"s3://{bucket}/{m['path']} is both an object and the directory of "
                                   "others: reference a prefix or key that holds only one of them")
        # The listing shows a folder marker KEY/ as KEY, zero bytes: only a HEAD of KEY tells it from
        # an empty object KEY. Those HEADs go out together, as a prefix may hold many empty files.
        empty = [m["path"] for m in metas if m["size"] == 0 and m["path"] not in parents]
        with ThreadPoolExecutor(min(HEADS, len(empty)) or 1) as pool:
            files = {p for p, there in zip(empty, pool.map(partial(self._exists, client), empty)) if there}
        found = []
        for m in metas:
            path = m["path"]
            if path in parents or (m["size"] == 0 and path not in files):
                continue   # a folder marker: its keys are the directory
            found.append(self._found(path[len(prefix):].lstrip("/"), f"s3://{bucket}/{path}", m))
        if not found:
            raise NotFound(f"nothing at {url}")
        return found

    @staticmethod
    def _exists(client: S3Store, key: str) -> bool:
        try:
            client.head(key)
            return True
        except NotFound:
            return False

    def _expect(self, expect: Found | None) -> dict:
        if expect is None:
            return {}
        return {"version": expect.version} if expect.version else {"if_match": expect.etag} if expect.etag else {}

    def stream(self, url: str, expect: Found | None = None) -> Iterator[bytes]:
        bucket, key = self._split(url)
        with _checked(url):
            yield from self._client(bucket).stream(key, **self._expect(expect))

    def read(self, url: str, start: int, end: int, expect: Found | None = None) -> bytes:
        bucket, key = self._split(url)
        with _checked(url):
            return self._client(bucket).read_range(key, start, end, **self._expect(expect))


@contextmanager
def _checked(url: str):
    """An S3 read of URL: a failed If-Match is Changed, a missing key (or version) NotFound."""
    try:
        yield
    except Conflict:   # If-Match failed: another content under the key
        raise Changed(url) from None
    except NotFound:
        raise NotFound(f"{url} is gone") from None


# https:// ----------------------------------------------------------------------------------------
class HttpSource:
    """One file of a web server. Ranged reads send a Range header; a server that ignores it
    (200 with the whole body) is read from the start, skipping to the range."""

    def __init__(self, location: Location):
        self.location = location
        self._context = None

    def _open(self, url: str, method: str = "GET", span: tuple[int, int] | None = None,
              expect: Found | None = None):
        check_endpoint(url, self.location.allow_http)
        headers = {"Accept-Encoding": "identity"}
        if span is not None:
            headers["Range"] = f"bytes={span[0]}-{span[1] - 1}"
        if expect is not None and expect.etag:
            headers["If-Match"] = f'"{expect.etag}"'
        request = urllib.request.Request(url, method=method, headers=headers)
        if self._context is None and urlparse(url).scheme == "https":
            self._context = ssl.create_default_context(cafile=self.location.ca_bundle)
        try:
            response = urllib.request.urlopen(request, timeout=HTTP_TIMEOUT, context=self._context)
        except urllib.error.HTTPError as e:
            if e.code in (404, 410):
                raise NotFound(f"{url} is gone") from None
            if e.code == 412:
                raise Changed(url) from None
            raise RemoteError(f"{url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            raise RemoteError(f"cannot reach {url}: {getattr(e, 'reason', e)}") from None
        if expect is not None and self._found(url, response).differs(expect):
            response.close()
            raise Changed(url)
        return response

    @staticmethod
    def _found(url: str, response) -> Found:
        h = response.headers
        size = h.get("Content-Length")
        if response.status == 206:   # Content-Range: bytes START-END/TOTAL
            size = (h.get("Content-Range") or "").rpartition("/")[2]
        if size is None or not str(size).isdigit():
            raise RemoteError(f"{url}: the server does not say how big the file is")
        modified = h.get("Last-Modified")
        mtime = int(parsedate_to_datetime(modified).timestamp()) * 10**9 if modified else None
        etag = h.get("ETag")
        if etag and etag.startswith("W/"):   # a weak ETag says nothing about the bytes
            etag = None
        return Found("", url, int(size), etag.strip('"') if etag else None, None, mtime)

    def list(self, url: str) -> list[Found]:
        with self._open(url, "HEAD") as response:
            return [self._found(url, response)]

    def stream(self, url: str, expect: Found | None = None) -> Iterator[bytes]:
        with self._open(url, expect=expect) as response:
            while block := response.read(STREAM_BLOCK):
                yield block

    def read(self, url: str, start: int, end: int, expect: Found | None = None) -> bytes:
        with self._open(url, span=(start, end), expect=expect) as response:
            if response.status != 206:   # the whole body: read up to the range
                skip = start
                while skip:
                    got = response.read(min(skip, STREAM_BLOCK))
                    if not got:
                        break
                    skip -= len(got)
            elif not (response.headers.get("Content-Range") or "").startswith(f"bytes {start}-"):
                raise RemoteError(f"{url}: the server answered another range than bytes {start}-")
            return _read_exactly(response, end - start)


def _read_exactly(response, n: int) -> bytes:
    parts = []
    while n > 0:
        got = response.read(min(n, STREAM_BLOCK))
        if not got:
            break
        parts.append(got)
        n -= len(got)
    return b"".join(parts)
