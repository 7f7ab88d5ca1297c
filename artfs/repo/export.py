"""Writing a version's tree to a local directory (``get`` / ``download``), all or nothing.

The tree is written into a hidden sibling of DEST and renamed into place at the end, so DEST
either holds the complete version or is untouched. Files are written through directory file
descriptors (no PATH_MAX limit); modes and mtimes are applied after contents, directories last.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from ..catalog.objects import DIR, FILE, LINK
from ..errors import Exists, InvalidInput


def export_tree(repo, root: bytes, dest: str, progress=None) -> str:
    dest = os.path.abspath(dest)
    if os.path.lexists(dest) and not (os.path.isdir(dest) and not os.listdir(dest)):
        raise Exists(f"{dest} already exists and is not an empty directory")
    parent = os.path.dirname(dest)
    try:
        tmp = tempfile.mkdtemp(prefix=".artfs-get-", dir=parent)
    except OSError as e:
        raise InvalidInput(f"cannot write into {parent}: {e.strerror}") from None
    try:
        fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
        try:
            _write_tree(repo, root, fd, progress or (lambda n: None))
        finally:
            os.close(fd)
        if os.path.isdir(dest):
            os.rmdir(dest)
        os.chmod(tmp, 0o755)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _write_tree(repo, tid: bytes, dir_fd: int, progress) -> None:
    for e in repo.tree(tid).entries:
        if e.kind == DIR:
            os.mkdir(e.name, 0o700, dir_fd=dir_fd)
            sub = os.open(e.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
            try:
                _write_tree(repo, e.ref, sub, progress)
            finally:
                os.close(sub)
        elif e.kind == FILE:
            fd = os.open(e.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
            try:
                write_file(repo, e.ref, fd, progress)
            finally:
                os.close(fd)
        else:
            os.symlink(e.ref, e.name, dir_fd=dir_fd)
        if e.kind != LINK:
            os.chmod(e.name, e.mode, dir_fd=dir_fd)
        os.utime(e.name, ns=(e.mtime_ns, e.mtime_ns), dir_fd=dir_fd, follow_symlinks=False)


def write_file(repo, fid: bytes, fd: int, progress, block: int = 8 << 20) -> None:
    fobj = repo.file(fid)
    size, offset = fobj.size, 0
    while offset < size:
        data = repo.read(fobj, offset, min(block, size - offset))
        os.write(fd, data)
        offset += len(data)
        progress(len(data))
