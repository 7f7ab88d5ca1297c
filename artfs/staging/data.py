"""The data files of one artifact's staging: ``STORE/staging/NAME/<inode>``.

A modified or new staging file keeps its bytes in a real file (0600, in a 0700 directory) named by
its staging inode number, never by its path. Writes through it survive a daemon crash (they are in
the kernel's page cache of a real file) and a remount. A copy-up first fills
``<inode>.<pid>.<random>.tmp`` with no transaction open, then links it into place inside the
transaction that marks the file modified. Which files are live is decided by the staging index:
everything else here is a stray (a crash between a transaction and the deletion that follows it)
and is deleted by ``Staging.clean_data``, except copies whose process is still running.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from ..errors import CorruptData
from ..repo.export import write_file

_TMP = ".tmp"


class MissingDataFile(CorruptData):
    """A data file the staging index names is not there: corrupt, unless a commit, reset or unlink
    that removed it landed after the reading transaction began (Staging._read then reads again)."""


class DataFiles:
    def __init__(self, directory: str):
        self.dir = directory

    def path(self, ino: int) -> str:
        return os.path.join(self.dir, str(ino))

    def stat(self, ino: int) -> os.stat_result:
        try:
            return os.stat(self.path(ino))
        except FileNotFoundError:
            raise MissingDataFile(f"staging data file {self.path(ino)} is missing") from None

    def create(self, ino: int) -> None:
        """An empty data file (replacing a stray of the same number)."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        os.close(os.open(self.path(ino), flags, 0o600))

    def copy(self, repo, ino: int, fid: bytes, mtime_ns: int) -> str:
        """A temporary file holding a stored file's bytes and mtime; returns its path."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{ino}.{os.getpid()}.", suffix=_TMP, dir=self.dir)
        try:
            write_file(repo, fid, fd, lambda n: None)
            os.utime(fd, ns=(mtime_ns, mtime_ns))
        except BaseException:
            remove(tmp)
            raise
        finally:
            os.close(fd)
        return tmp

    def unshare(self, ino: int) -> None:
        """Give the data file of INO a file of its own (a copy of its bytes and times) if it
        has another name: the store's, when a commit took it in (store/segments.py "Adopted
        segments") and then failed, or was killed, before removing staging's name. Called
        before staging writes a data file in place, so it never changes bytes the store holds."""
        path = self.path(ino)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return
        if st.st_nlink < 2:
            return
        fd, tmp = tempfile.mkstemp(prefix=f"{ino}.{os.getpid()}.", suffix=_TMP, dir=self.dir)
        try:
            os.close(fd)
            shutil.copyfile(path, tmp)
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.replace(tmp, path)
        except BaseException:
            remove(tmp)
            raise

    def install(self, tmp: str, ino: int) -> None:
        """Put a copy in place. A link, not a rename: the calling transaction may be re-run (after
        the map grew), and the caller removes ``tmp`` afterwards."""
        remove(self.path(ino))
        os.link(tmp, self.path(ino))

    def strays(self, live: set[int]) -> list[str]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return [os.path.join(self.dir, n) for n in names if _stray(n, live)]


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _stray(name: str, live: set[int]) -> bool:
    if not name.endswith(_TMP):
        return not (name.isdigit() and int(name) in live)
    try:
        os.kill(int(name.split(".")[1]), 0)  # a copy-up in progress, unless its process died
    except PermissionError:
        return False
    except (ProcessLookupError, IndexError, ValueError):
        return True
    return False
