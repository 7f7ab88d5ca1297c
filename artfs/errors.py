"""One exception hierarchy for every domain error.

Each class carries the errno the FUSE adapter answers with and the exit code the CLI ends with, so
both front ends map errors in exactly one place.
"""

from __future__ import annotations

import errno as _errno


class ArtfsError(Exception):
    """Base of all artfs errors: a one-line, user-facing message."""

    errno: int = _errno.EIO
    exit_code: int = 1


class UsageError(ArtfsError):
    errno = _errno.EINVAL
    exit_code = 2


class NotFound(ArtfsError):
    errno = _errno.ENOENT
    exit_code = 3


class InvalidInput(ArtfsError):
    """Bad names, unreadable input paths, malformed metadata."""

    errno = _errno.EINVAL
    exit_code = 4


class NameTooLong(InvalidInput):
    errno = _errno.ENAMETOOLONG


class Conflict(ArtfsError):
    """The request contradicts the current state (alias in use, name exists, files open)."""

    errno = _errno.EBUSY
    exit_code = 5


class Exists(Conflict):
    errno = _errno.EEXIST


class NotEmpty(Conflict):
    errno = _errno.ENOTEMPTY


class IsADirectory(Conflict):
    errno = _errno.EISDIR


class NotADirectory(Conflict):
    errno = _errno.ENOTDIR


class StoreError(ArtfsError):
    """The store directory is not an artfs store, or has a format this version cannot read."""

    errno = _errno.EIO
    exit_code = 6


class CorruptData(ArtfsError):
    """Stored bytes fail their hash, or a referenced object is missing."""

    errno = _errno.EIO
    exit_code = 7


class MountError(ArtfsError):
    """Mounting, unmounting or talking to the daemon failed."""

    errno = _errno.EIO
    exit_code = 8


class NoSpace(ArtfsError):
    errno = _errno.ENOSPC
    exit_code = 9


class ReadOnly(ArtfsError):
    errno = _errno.EROFS
    exit_code = 10


class CrossDevice(ArtfsError):
    errno = _errno.EXDEV
    exit_code = 10


class NotPermitted(ArtfsError):
    errno = _errno.EPERM
    exit_code = 10


class RemoteError(ArtfsError):
    """The remote (an S3-compatible bucket) could not be reached or kept failing (5xx) after the
    bounded retries."""

    errno = _errno.EIO
    exit_code = 11


class BadKey(ArtfsError):
    """An encrypted store was given a wrong passphrase or key file, or none."""

    errno = _errno.EACCES
    exit_code = 12
