"""Writing a version's tree to a local directory (``get`` / ``download``), all or nothing.

The tree is written into a hidden sibling of DEST and renamed into place at the end, so DEST
either holds the complete version or is untouched (the sibling is removed on failure). Files are
written through directory file descriptors (no PATH_MAX limit), one open at a time, with an
explicit stack (any depth); modes and mtimes are applied after contents, directories last.
One file (``get NAME:REF/path``) is written to a hidden sibling too and linked into place, so an
existing DEST is never replaced. The names of a link group are written once and hard-linked.
FIFOs and sockets are recreated with mknod(2), device nodes
too when the process may (root): otherwise each is left out with one warning, as tar does.
``holds`` tells whether a path still holds a version (or a file)
as written (``Version.download``'s default location is reused when it does).
"""

from __future__ import annotations

import os
import stat
import tempfile

from ..catalog.objects import DIR, FILE, FORMAT, LINK, SPECIAL
from ..errors import Exists, InvalidInput
from .facade import stderr_warn

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def export_tree(repo, root: bytes, dest: str, progress=None, warn=stderr_warn) -> str:
    dest = os.path.abspath(dest)
    if os.path.lexists(dest) and not (os.path.isdir(dest) and not os.listdir(dest)):
        raise Exists(f"{dest} already exists and is not an empty directory")
    parent = os.path.dirname(dest)
    try:
        tmp = tempfile.mkdtemp(prefix=".artfs-get-", dir=parent)
    except OSError as e:
        raise InvalidInput(f"cannot write into {parent}: {e.strerror}") from None
    try:
        _write_tree(repo, root, tmp, progress or (lambda n: None), warn)
        if os.path.isdir(dest):
            os.rmdir(dest)
        os.chmod(tmp, 0o755)
        os.rename(tmp, dest)
    except BaseException:
        try:
            remove_tree(tmp)
        except OSError:
            pass  # the original error matters more
        raise
    return dest


def _write_tree(repo, root: bytes, top: str, progress, warn) -> None:
    """Depth first with one directory descriptor open at a time: a directory is entered from its
    parent's descriptor and left through "..", so no limit on recursion or descriptors binds the
    depth. A directory gets its mode and mtime once its contents are written."""
    fd = os.open(top, _DIR)
    stack = [(None, iter(repo.tree(root).entries), b"")]   # (directory's entry, entries left, path)
    linked: dict[bytes, bytes] = {}   # link group -> where its first name was written
    try:
        while stack:
            e = next(stack[-1][1], None)
            if e is None:
                finished, _, _ = stack.pop()
                if finished is not None:
                    fd = _enter(fd, "..")
                    _set_attributes(finished, fd)
            elif e.kind == DIR:
                os.mkdir(e.name, 0o700, dir_fd=fd)
                fd = _enter(fd, e.name)
                stack.append((e, iter(repo.tree(e.ref).entries), os.path.join(stack[-1][2], e.name)))
            elif e.group in linked:
                os.link(linked[e.group], e.name, dst_dir_fd=fd, follow_symlinks=False)
            else:
                path = os.path.join(stack[-1][2], e.name)
                if _write_entry(repo, e, fd, path, progress, warn) and e.group:
                    linked[e.group] = os.path.join(os.fsencode(top), path)
    finally:
        os.close(fd)


def _write_entry(repo, e, dir_fd: int, path: bytes, progress, warn) -> bool:
    """Write a file, symlink or special entry into DIR_FD with its attributes; False when it is
    left out: a device node the process may not make (EPERM without CAP_MKNOD), with one warning."""
    if e.kind == FILE:
        out = os.open(e.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
        try:
            write_file(repo, e.ref, out, progress)
        finally:
            os.close(out)
    elif e.kind == LINK:
        os.symlink(e.ref, e.name, dir_fd=dir_fd)
    else:
        try:
            os.mknod(e.name, FORMAT[e.kind] | 0o600, e.rdev, dir_fd=dir_fd)
        except PermissionError:
            warn(f"{os.fsdecode(path)}: cannot create device node without root (CAP_MKNOD); left out")
            return False
    _set_attributes(e, dir_fd)
    return True


def export_entry(repo, e, dest: str, progress=None) -> str:
    """Write one file, symlink or special entry to DEST, or into DEST when it is a directory (as
    ``cp``); an existing target is never replaced (Exists)."""
    dest = os.path.abspath(dest)
    if os.path.isdir(dest):
        dest = os.path.join(dest, os.fsdecode(e.name))
    if os.path.lexists(dest):
        raise Exists(f"{dest} already exists")
    try:
        if e.kind == LINK:
            os.symlink(e.ref, dest)
            os.utime(dest, ns=(e.mtime_ns, e.mtime_ns), follow_symlinks=False)
            return dest
        if e.kind in SPECIAL:
            os.mknod(dest, FORMAT[e.kind] | 0o600, e.rdev)
            os.chmod(dest, e.mode)
            os.utime(dest, ns=(e.mtime_ns, e.mtime_ns))
            return dest
        fd, tmp = tempfile.mkstemp(prefix=".artfs-get-", dir=os.path.dirname(dest))
    except FileExistsError:
        raise Exists(f"{dest} already exists") from None
    except OSError as err:
        raise InvalidInput(f"cannot write {dest}: {err.strerror}") from None
    try:
        try:
            write_file(repo, e.ref, fd, progress or (lambda n: None))
            os.fchmod(fd, e.mode)
            os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
        finally:
            os.close(fd)
        os.link(tmp, dest)
    except FileExistsError:
        raise Exists(f"{dest} already exists") from None
    finally:
        os.unlink(tmp)
    return dest


def holds(repo, e, dest: str) -> bool:
    """Whether DEST holds entry E (a directory, a file or a symlink) exactly as export writes it:
    the same names and kinds, modes, file sizes and mtimes, symlink targets (rsync's quick check:
    bytes are not re-read)."""
    if e.kind == DIR:
        return _holds_tree(repo, e.ref, dest)
    try:
        st = os.lstat(dest)
        return _same_entry(e, st, os.readlink(os.fsencode(dest)) if stat.S_ISLNK(st.st_mode) else None)
    except OSError:
        return False


def _holds_tree(repo, root: bytes, dest: str) -> bool:
    """``holds`` for a tree, walked like the export: one directory descriptor at a time."""
    try:
        fd = os.open(dest, _DIR)
    except OSError:
        return False
    try:
        tree = repo.tree(root)
        if _names(fd) != [e.name for e in tree.entries]:
            return False
        stack = [iter(tree.entries)]
        while stack:
            e = next(stack[-1], None)
            if e is None:
                stack.pop()
                if stack:
                    fd = _enter(fd, "..")
                continue
            st = os.stat(e.name, dir_fd=fd, follow_symlinks=False)
            target = os.readlink(e.name, dir_fd=fd) if stat.S_ISLNK(st.st_mode) else None
            if not _same_entry(e, st, target):
                return False
            if e.kind == DIR:
                fd = _enter(fd, e.name)
                tree = repo.tree(e.ref)
                if _names(fd) != [x.name for x in tree.entries]:
                    return False
                stack.append(iter(tree.entries))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _names(dir_fd: int) -> list[bytes]:
    """The names in a directory, sorted as a tree's entries are (by bytes)."""
    return sorted(os.fsencode(n) for n in os.listdir(dir_fd))


def _same_entry(e, st: os.stat_result, target: bytes | None) -> bool:
    if e.kind == LINK:
        return target == e.ref
    if stat.S_IMODE(st.st_mode) != e.mode:
        return False
    if e.kind == DIR:
        return stat.S_ISDIR(st.st_mode)
    if e.kind in SPECIAL:
        return stat.S_IFMT(st.st_mode) == FORMAT[e.kind] and st.st_rdev == e.rdev
    return stat.S_ISREG(st.st_mode) and (st.st_size, st.st_mtime_ns) == (e.size, e.mtime_ns)


def _set_attributes(e, dir_fd: int) -> None:
    if e.kind != LINK:
        os.chmod(e.name, e.mode, dir_fd=dir_fd)
    os.utime(e.name, ns=(e.mtime_ns, e.mtime_ns), dir_fd=dir_fd, follow_symlinks=False)


def _enter(dir_fd: int, name) -> int:
    """The descriptor of directory NAME in DIR_FD (or its parent, ".."); DIR_FD is closed."""
    fd = os.open(name, _DIR, dir_fd=dir_fd)
    os.close(dir_fd)
    return fd


def remove_tree(top: str) -> None:
    """``rm -r TOP`` with one directory descriptor open at a time (shutil.rmtree recurses once
    per level); directories are made writable before they are emptied."""
    fd, names = os.open(top, _DIR), []   # names: the path from TOP to the directory of fd
    try:
        while True:
            sub = None
            for entry in list(os.scandir(fd)):
                if entry.is_dir(follow_symlinks=False):
                    sub = entry.name
                else:
                    os.unlink(entry.name, dir_fd=fd)
            if sub is not None:
                os.chmod(sub, 0o700, dir_fd=fd)
                fd = _enter(fd, sub)
                names.append(sub)
            elif names:
                fd = _enter(fd, "..")
                os.rmdir(names.pop(), dir_fd=fd)
            else:
                break
    finally:
        os.close(fd)
    os.rmdir(top)


def write_file(repo, fid: bytes, fd: int, progress, block: int = 8 << 20) -> None:
    fobj = repo.file(fid)
    size, offset = fobj.size, 0
    while offset < size:
        data = repo.read(fobj, offset, min(block, size - offset))
        os.write(fd, data)
        offset += len(data)
        progress(len(data))
