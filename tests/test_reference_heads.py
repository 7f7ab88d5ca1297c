"""The HEADs an S3 reference's put sends to tell empty objects from folder markers
(store/sources.py ``S3Source.list``) go out together: through an HTTP proxy started here, in
front of the session's RGW and moto, that counts those HEADs in flight. No timing is asserted:
the proxy holds each of them until another is in flight too (or, on sequential code, until
``HOLD`` seconds pass once, then lets the rest through), and the test asserts the most in flight."""

from __future__ import annotations

import http.client
import http.server
import threading
from urllib.parse import urlparse

import pytest

from artfs.store.sources import Location, S3Source
from tests.test_references import aws_env, serving

HOLD = 10.0
EMPTIES = 6


class _Counting(http.server.BaseHTTPRequestHandler):
    """Relays each request to the server's upstream; a HEAD whose path holds ``server.held`` is
    counted while in flight, and held until the most in flight is 2 (or the server gave up)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _relay(self) -> None:
        server = self.server
        held = self.command == "HEAD" and server.held in self.path
        if held:
            with server.cond:
                server.in_flight += 1
                server.most = max(server.most, server.in_flight)
                server.cond.notify_all()
                if not server.cond.wait_for(lambda: server.most > 1 or server.gave_up, HOLD):
                    server.gave_up = True          # sequential: the rest go through at once
        try:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            upstream = http.client.HTTPConnection(*server.upstream, timeout=60)
            try:
                upstream.request(self.command, self.path, body or None, dict(self.headers.items()))
                response = upstream.getresponse()
                data = response.read()
            finally:
                upstream.close()
        finally:
            if held:
                with server.cond:
                    server.in_flight -= 1
        self.send_response_only(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(key, value)
        length = response.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
        self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _relay


@pytest.fixture
def counting_proxy(s3):
    """An HTTP proxy to the ``s3`` server's endpoint (plain HTTP), counting the HEADs in flight."""
    target = urlparse(s3.endpoint)
    assert target.scheme == "http"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    server.daemon_threads = True
    server.upstream = (target.hostname, target.port)
    server.cond, server.in_flight, server.most, server.gave_up, server.held = threading.Condition(), 0, 0, False, ""
    with serving(server):
        yield server


def test_s3_reference_heads_of_empty_objects_are_in_flight_together(s3, s3_bucket, counting_proxy, monkeypatch):
    """Listing a prefix with several empty objects HEADs each (a listing shows a folder marker
    KEY/ as an empty KEY): more than one of those HEADs is in flight at once, and the listing
    finds every empty file and the other file."""
    pytest.importorskip("obstore")
    for key, value in aws_env(s3).items():
        monkeypatch.setenv(key, value)
    client = s3.boto3_client()
    for i in range(EMPTIES):
        client.put_object(Bucket=s3_bucket, Key=f"m/empty-{i}", Body=b"")
    client.put_object(Bucket=s3_bucket, Key="m/full", Body=b"bytes")
    counting_proxy.held = f"/{s3_bucket}/m/empty-"
    proxy = f"http://127.0.0.1:{counting_proxy.server_address[1]}"
    found = S3Source(Location("s3", endpoint=proxy, allow_http=True)).list(f"s3://{s3_bucket}/m/")
    assert sorted((f.name, f.size) for f in found) == sorted([*((f"empty-{i}", 0) for i in range(EMPTIES)),
                                                             ("full", 5)])
    assert counting_proxy.most > 1 and not counting_proxy.gave_up
