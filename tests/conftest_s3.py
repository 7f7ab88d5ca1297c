"""pytest fixtures for real S3 servers (tests/s3servers.py), loaded by tests/conftest.py's
``pytest_plugins``.

Session-scoped, started on first use: ``rgw`` (Ceph radosgw with a TLS endpoint too), ``moto``,
``moto_tls`` (moto serving https only); ``moto_installed`` for tests that start their own. ``s3`` runs a test once against each of rgw and moto;
``s3_tls`` once against each TLS endpoint; ``s3_bucket`` is a fresh bucket on the ``s3`` server.
Under CI=true a server that is not installed or does not start fails the test; elsewhere a server
that is not installed skips it with what to install. The start times end the terminal summary.
"""

from __future__ import annotations

import itertools
import re

import pytest

from tests.helpers import missing
from tests.s3servers import MotoServer, RgwServer, S3Server, ServerError

_started: list[S3Server] = []
_bucket_numbers = itertools.count()


def require(server_class: type[S3Server]) -> None:
    """Skip the test when the server is not installed here; fail it under CI=true."""
    reason = server_class.missing()
    if reason:
        missing(f"{server_class.kind}: {reason}")


def _serve(server: S3Server):
    require(type(server))
    try:
        server.start()
    except ServerError as e:
        pytest.fail(str(e), pytrace=False)
    _started.append(server)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def rgw():
    yield from _serve(RgwServer(tls=True))


@pytest.fixture(scope="session")
def moto():
    yield from _serve(MotoServer())


@pytest.fixture(scope="session")
def moto_tls():
    yield from _serve(MotoServer(tls=True))


@pytest.fixture
def moto_installed() -> None:
    """For tests that start and stop MotoServers of their own."""
    require(MotoServer)


@pytest.fixture(params=["rgw", "moto"])
def s3(request) -> S3Server:
    """Each S3 server in turn: the same test runs against Ceph RGW and moto."""
    return request.getfixturevalue(request.param)


@pytest.fixture(params=["rgw", "moto_tls"])
def s3_tls(request) -> S3Server:
    """Each server with a TLS endpoint (``tls_endpoint``, ``ca_file``) in turn."""
    return request.getfixturevalue(request.param)


@pytest.fixture
def s3_bucket(s3, request) -> str:
    """A new, empty bucket on the ``s3`` server, named after the test."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    return s3.make_bucket(f"t{next(_bucket_numbers)}-{name}"[:63].rstrip("-"))


S3_FIXTURES = {"rgw", "moto", "moto_tls", "moto_installed", "s3", "s3_tls", "s3_bucket"}


def pytest_configure(config):
    config.addinivalue_line("markers", "s3: uses a real S3 server (tests/s3servers.py); set by fixture")


def pytest_collection_modifyitems(items):
    for item in items:
        if S3_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.s3)


def pytest_terminal_summary(terminalreporter):
    for server in _started:
        steps = ", ".join(f"{step} {t:.2f}" for step, t in server.timeline)
        terminalreporter.write_line(f"S3 server {server.kind}{' (TLS)' if server.tls else ''}: "
                                    f"started in {server.start_seconds:.2f} s ({steps})")
