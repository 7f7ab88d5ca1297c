"""The one choke point that turns exceptions into errnos for the kernel, tested without a mount.

``fuse_error`` directly, and the real pyfuse3 handlers of fs/ops.py called in-process against a
real store in tmp_path: only FUSEError may leave a handler.
"""

from __future__ import annotations

import errno
import os
import logging
import types

import pyfuse3
import pytest

from artfs import errors
from artfs.errors import ArtfsError, CorruptData
from artfs.mount.model import Filesystem
from artfs.mount.ops import Operations, fuse_error
from artfs.repo.facade import Repo
from tests.helpers import write

CTX = types.SimpleNamespace(uid=os.getuid(), gid=os.getgid(), pid=os.getpid(), umask=0o022)
ERROR_CLASSES = [c for c in vars(errors).values()
                 if isinstance(c, type) and issubclass(c, ArtfsError)]


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_artfs_error_becomes_its_errno(cls):
    assert fuse_error(cls("boom")).errno == cls.errno


def test_the_mapping_of_the_errors_the_mount_answers():
    assert {c.__name__: fuse_error(c("x")).errno for c in ERROR_CLASSES if c.__name__ in (
        "NotFound", "ReadOnly", "CrossDevice", "NotPermitted", "Exists", "NotEmpty",
        "IsADirectory", "NotADirectory", "NameTooLong", "NoSpace", "CorruptData")} == {
        "NotFound": errno.ENOENT, "ReadOnly": errno.EROFS, "CrossDevice": errno.EXDEV,
        "NotPermitted": errno.EPERM, "Exists": errno.EEXIST, "NotEmpty": errno.ENOTEMPTY,
        "IsADirectory": errno.EISDIR, "NotADirectory": errno.ENOTDIR,
        "NameTooLong": errno.ENAMETOOLONG, "NoSpace": errno.ENOSPC, "CorruptData": errno.EIO}


def test_os_errors_keep_their_errno_and_fuse_errors_pass_through():
    assert fuse_error(OSError(errno.ENOSPC, "full")).errno == errno.ENOSPC
    original = pyfuse3.FUSEError(errno.EAGAIN)
    assert fuse_error(original) is original


def test_unexpected_exceptions_are_eio_and_logged(caplog):
    with caplog.at_level(logging.ERROR, logger="artfs.mount"):
        assert fuse_error(ZeroDivisionError("bug")).errno == errno.EIO
    assert "internal error" in caplog.text and "ZeroDivisionError" in caplog.text


def test_corruption_is_eio_and_logged_once(caplog):
    with caplog.at_level(logging.ERROR, logger="artfs.mount"):
        for _ in range(3):
            assert fuse_error(CorruptData("object abc fails its hash check")).errno == errno.EIO
    assert caplog.text.count("fails its hash check") == 1


@pytest.fixture
def ops(tmp_path):
    src = tmp_path / "src"
    write(str(src / "a.txt"), b"hello")
    with Repo(str(tmp_path / "store")) as repo:
        repo.put("animals", str(src))
        yield Operations(Filesystem(repo))


async def _path(ops, *names):
    ino = pyfuse3.ROOT_INODE
    for name in names:
        ino = (await ops.lookup(ino, name, None)).st_ino
    return ino


def _errno_of(excinfo) -> int:
    assert type(excinfo.value) is pyfuse3.FUSEError
    return excinfo.value.errno


async def test_handlers_raise_only_fuse_errors(ops):
    with pytest.raises(pyfuse3.FUSEError) as e:
        await ops.lookup(pyfuse3.ROOT_INODE, b"missing", None)
    assert _errno_of(e) == errno.ENOENT
    v0 = await _path(ops, b"animals", b"v0")
    with pytest.raises(pyfuse3.FUSEError) as e:
        await ops.mkdir(v0, b"new", 0o755, CTX)
    assert _errno_of(e) == errno.EROFS
    a = await _path(ops, b"animals", b"v0", b"a.txt")
    with pytest.raises(pyfuse3.FUSEError) as e:
        await ops.open(a, os.O_WRONLY, CTX)
    assert _errno_of(e) == errno.EROFS
    with pytest.raises(pyfuse3.FUSEError) as e:
        await ops.getattr(10 ** 9, None)
    assert _errno_of(e) == errno.ENOENT


async def test_a_bug_in_the_model_is_eio_not_a_crash(ops, caplog, monkeypatch):
    def broken(*args):
        raise KeyError("bug")
    monkeypatch.setattr(ops.fs, "lookup", broken)
    with caplog.at_level(logging.ERROR, logger="artfs.mount"), pytest.raises(pyfuse3.FUSEError) as e:
        await ops.lookup(pyfuse3.ROOT_INODE, b"animals", None)
    assert _errno_of(e) == errno.EIO
    assert "KeyError" in caplog.text
