"""POSIX behaviour of ``staging/`` and the security model, on real mounts (no mocks).

Where ext4 defines the answer, the same operation runs on a local directory (tmp_path, ext4) and in
staging, by the same user in a forked child, and everything observable is compared: the outcome
(errno), kind, mode, owner, size, bytes, symlink targets and which timestamps changed
(``Differential``). Other users are the real uid/gid 65534 ('nobody'): a forked child enters the
directory as root, then drops to nobody, so the path leading to the mount (tmp_path is 0700)
plays no part in what the kernel and the daemon decide.

Documented exceptions (docs/SEMANTICS.md, docs/RELIABILITY.md): atimes are not kept (st_atime is
the mtime), RENAME_EXCHANGE is EINVAL, fallocate(2) is EOPNOTSUPP, ownership is not versioned.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import mmap
import os
import pickle
import random
import re
import socket
import stat
import time
import traceback

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition, rule,
                                 run_state_machine_as_test)

import artfs
import artfs.cli
from artfs.mount import control
from artfs.errors import InvalidInput, NotFound
from tests.helpers import cli_json, oserror, put_file, read, run_cli

pytestmark = pytest.mark.fuse
as_root = pytest.mark.root("becoming uid 65534 (nobody) needs root")

NOBODY = 65534
KiB, MiB = 1 << 10, 1 << 20
T1 = 1_500_000_000_123_456_789    # explicit timestamps set by tests (shown exactly when present)
T2 = 1_600_000_000_000_000_001
SEMANTICS = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "SEMANTICS.md")
_libc = ctypes.CDLL(None, use_errno=True)


# helpers ---------------------------------------------------------------------------------------
def committed(m, name: str) -> str:
    return m.cli("commit", name).stdout.strip()


def artifact_v0(m, name: str, files: dict[str, bytes]) -> str:
    """MNT/NAME with FILES put into staging and committed as v0; returns the staging path."""
    os.mkdir(m.path(name))
    s = m.path(name, "staging")
    for fname, data in files.items():
        put_file(os.path.join(s, fname), data)
    assert committed(m, name) == f"{name}:v0"
    return s


def renameat2(old, new, flags: int) -> None:
    """renameat2(2), which Python does not wrap (1: RENAME_NOREPLACE, 2: RENAME_EXCHANGE)."""
    if _libc.renameat2(-100, os.fsencode(old), -100, os.fsencode(new), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), old)


def OK(value=None):
    return ("ok", value)


def ERR(name: str):
    return ("err", name)


def in_child(fn, cwd, uid: int = 0, umask: int = 0o022):
    """Run ``fn()`` in a forked child that enters ``cwd`` as root, sets ``umask`` and becomes
    ``uid`` (gid = uid, no supplementary groups); returns OK(value) or ERR(errno name)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(r)
            os.chdir(cwd)
            os.umask(umask)
            if uid:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            try:
                out = OK(fn())
            except OSError as e:
                out = ERR(errno.errorcode.get(e.errno, str(e.errno)))
            os.write(w, pickle.dumps(out))
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0 and data, "the child failed (traceback on stderr)"
    return pickle.loads(data)


def snapshot(root) -> dict:
    """relative path -> ((kind, mode bits, uid, gid, bytes or symlink target), mtime, ctime, ino)."""
    out = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(top, name)
            st_ = os.lstat(path)
            what = (stat.S_IFMT(st_.st_mode), stat.S_IMODE(st_.st_mode), st_.st_uid, st_.st_gid)
            if stat.S_ISREG(st_.st_mode):
                what += (read(path),)
            elif stat.S_ISLNK(st_.st_mode):
                what += (os.readlink(path),)
            elif not stat.S_ISDIR(st_.st_mode):
                what += (st_.st_rdev,)
            out[os.path.relpath(path, root)] = (what, st_.st_mtime_ns, st_.st_ctime_ns, st_.st_ino)
    return out


def _changes(before: dict, after: dict) -> dict:
    """Per path: what it is, which of mtime (m) / ctime (c) changed (or whether the path is new or
    names another inode now), and an explicitly set mtime."""
    out = {}
    for path in sorted(before.keys() | after.keys()):
        if path not in after:
            out[path] = "removed"
            continue
        what, mtime, ctime, ino = after[path]
        if path not in before:
            flags = "new"
        elif ino != before[path][3]:
            flags = "replaced"
        else:
            flags = ("m" if mtime != before[path][1] else "") + ("c" if ctime != before[path][2] else "")
        out[path] = (what, flags, mtime if mtime in (T1, T2) else None)
    return out


def link_groups(root) -> list[tuple[int, list[str]]]:
    """Which paths below ROOT are one inode (and its st_nlink), for every inode with more than
    one name; and the st_nlink of every other non-directory. Inode numbers themselves differ."""
    names: dict[int, list[str]] = {}
    nlinks = {}
    for path in snapshot(root):
        st_ = os.lstat(os.path.join(root, path))
        if not stat.S_ISDIR(st_.st_mode):
            names.setdefault(st_.st_ino, []).append(path)
            nlinks[st_.st_ino] = st_.st_nlink
    return sorted((nlinks[ino], sorted(paths)) for ino, paths in names.items())


class Differential:
    """One operation, by one user, in an ext4 directory and in staging: everything observable
    must be the same (also which names are one inode, and link counts); returns the outcome so
    the test can also state what it expects."""

    def __init__(self, ext4, staging):
        self.roots = (str(ext4), str(staging))

    def same(self, label: str, op, uid: int = 0, umask: int = 0o022):
        seen = []
        for root in self.roots:
            before = snapshot(root)
            outcome = in_child(op, root, uid, umask)
            seen.append((outcome, _changes(before, snapshot(root)), link_groups(root)))
        assert seen[0] == seen[1], f"{label}:\n" + _difference(*seen)
        return seen[0][0]


def _difference(ext4, artfs) -> str:
    """What differs between two Differential observations (outcome, changes, link groups)."""
    lines = [f"  outcome: ext4 {ext4[0]}, artfs {artfs[0]}"]
    for path in sorted(ext4[1].keys() | artfs[1].keys()):
        if ext4[1].get(path) != artfs[1].get(path):
            lines.append(f"  {path}: ext4 {ext4[1].get(path)}, artfs {artfs[1].get(path)}")
    if ext4[2] != artfs[2]:
        lines.append(f"  link groups: ext4 {[g for g in ext4[2] if g not in artfs[2]]}, "
                     f"artfs {[g for g in artfs[2] if g not in ext4[2]]}")
    return "\n".join(lines)


def staging_files(m, name: str) -> list[str]:
    """The data files of NAME's staging in the store."""
    try:
        return sorted(os.listdir(os.path.join(m.store, "staging", name)))
    except FileNotFoundError:
        return []


def documented_errno(operation: str) -> str:
    """The errno docs/SEMANTICS.md gives for OPERATION in staging (its table's last column)."""
    with open(SEMANTICS) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 3 and cells[0].startswith(operation):
                found = re.match(r"E[A-Z]+", cells[2])
                assert found, f"no errno for {operation!r} in: {line}"
                return found.group()
    raise AssertionError(f"docs/SEMANTICS.md has no row for {operation!r}")


# 1. names and paths ----------------------------------------------------------------------------
def test_names_of_255_bytes_and_paths_of_4095_bytes(mounted, tmp_path):
    m = mounted
    os.mkdir(m.path("lim"))
    s = m.path("lim", "staging")
    names = {b"n" * 255: b"ascii", "é".encode() * 127 + b"x": b"utf-8", b"\xff" * 255: b"not utf-8"}
    for name, data in names.items():
        put_file(os.path.join(os.fsencode(s), name), data)
        assert os.stat(os.path.join(os.fsencode(s), name)).st_size == len(data)
    too_long = os.path.join(s, "y" * 256)
    assert oserror(open, too_long, "wb") == errno.ENAMETOOLONG
    assert oserror(os.mkdir, too_long) == errno.ENAMETOOLONG
    assert oserror(os.symlink, "target", too_long) == errno.ENAMETOOLONG
    assert oserror(os.rename, os.path.join(s, "n" * 255), too_long) == errno.ENAMETOOLONG

    # a 4095-byte path (PATH_MAX less the NUL) relative to staging: 15 * 254-byte directories,
    # a 14-byte one and a 255-byte file name
    parts = [b"%02d" % i + b"d" * 252 for i in range(15)] + [b"d" * 14]
    rel = b"/".join(parts) + b"/" + b"f" * 255
    assert len(rel) == 4095
    sfd = os.open(s, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(len(parts)):
            os.mkdir(b"/".join(parts[:i + 1]), dir_fd=sfd)
        put_file(rel, b"deep", dir_fd=sfd)
        assert os.stat(rel, dir_fd=sfd).st_size == 4 and read(rel, dir_fd=sfd) == b"deep"
        assert oserror(os.open, rel + b"x", os.O_RDONLY, dir_fd=sfd) == errno.ENAMETOOLONG
    finally:
        os.close(sfd)
    assert committed(m, "lim") == "lim:v0"

    v0 = os.fsencode(m.path("lim", "v0"))
    for name, data in names.items():
        assert read(os.path.join(v0, name)) == data
    dest = tmp_path / "got"
    m.cli("get", "lim:v0", dest)
    for root in (v0, os.fsencode(dest)):
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert read(rel, dir_fd=fd) == b"deep"
        finally:
            os.close(fd)
        assert set(os.listdir(root)) == set(names) | {parts[0]}


def test_non_utf8_names_round_trip_byte_exactly(mounted, tmp_path):
    m = mounted
    os.mkdir(m.path("raw"))
    s = os.fsencode(m.path("raw", "staging"))
    files = {b"\xff\xfe": b"1", b"caf\xe9": b"2", b"\x80lead": b"3", b"tab\tnew\nline": b"4",
             b"\xed\xa0\x80surrogate": b"5", "naïve-日本".encode(): b"6"}
    os.mkdir(os.path.join(s, b"dir\xc3\x28"))
    for name, data in files.items():
        put_file(os.path.join(s, b"dir\xc3\x28", name), data)
    os.symlink(b"dir\xc3\x28/\xff\xfe", os.path.join(s, b"link\xa0"))
    expected_top = {b"dir\xc3\x28", b"link\xa0"}
    assert set(os.listdir(s)) == expected_top
    assert set(os.listdir(os.path.join(s, b"dir\xc3\x28"))) == set(files)
    assert read(os.path.join(s, b"link\xa0")) == b"1"
    assert len(cli_json(m.store, "status", "raw")["added"]) == len(files) + 2
    assert committed(m, "raw") == "raw:v0"
    dest = os.fsencode(tmp_path / "got")
    m.cli("get", "raw:v0", os.fsdecode(dest))
    for root in (os.fsencode(m.path("raw", "v0")), s, dest):
        assert set(os.listdir(root)) == expected_top
        assert set(os.listdir(os.path.join(root, b"dir\xc3\x28"))) == set(files)
        for name, data in files.items():
            assert read(os.path.join(root, b"dir\xc3\x28", name)) == data
        assert os.readlink(os.path.join(root, b"link\xa0")) == b"dir\xc3\x28/\xff\xfe"


# 2. ownership, modes, attributes ---------------------------------------------------------------
@as_root
def test_new_entries_belong_to_their_creator_and_honour_the_umask(mounted_allow_other):
    m = mounted_allow_other
    os.mkdir(m.path("own"))
    s = m.path("own", "staging")
    os.chmod(s, 0o777)

    def make():
        os.close(os.open("file", os.O_WRONLY | os.O_CREAT, 0o666))
        os.mkdir("dir", 0o777)
        os.symlink("file", "link")
    assert in_child(make, s, NOBODY, umask=0o027) == OK()
    assert in_child(lambda: os.mkdir("open", 0o777), s, NOBODY, umask=0) == OK()
    assert in_child(lambda: os.close(os.open("private", os.O_CREAT | os.O_WRONLY, 0o666)),
                    s, 0, umask=0o077) == OK()
    got = {n: os.lstat(os.path.join(s, n)) for n in ("file", "dir", "link", "open", "private")}
    assert {n: (stat.S_IMODE(v.st_mode), v.st_uid, v.st_gid) for n, v in got.items()} == {
        "file": (0o640, NOBODY, NOBODY), "dir": (0o750, NOBODY, NOBODY),
        "link": (0o777, NOBODY, NOBODY), "open": (0o777, NOBODY, NOBODY),
        "private": (0o600, 0, 0)}
    assert in_child(lambda: open("file", "ab").write(b"mine"), s, NOBODY) == OK(4)

    # ownership is not versioned: committed entries belong to the mounting user, modes are kept
    assert committed(m, "own") == "own:v0"
    v0 = os.stat(m.path("own", "v0", "file"))
    assert (stat.S_IMODE(v0.st_mode), v0.st_uid, v0.st_gid) == (0o640, os.getuid(), os.getgid())
    assert stat.S_IMODE(os.stat(m.path("own", "v0", "dir")).st_mode) == 0o750


def _create(path, mode=0o666):
    return lambda: os.close(os.open(path, os.O_WRONLY | os.O_CREAT, mode))


def _utimensat(path, atime, mtime):
    """utimensat(2) with UTIME_OMIT (None) for either time, which os.utime cannot express."""
    omit = (1 << 30) - 2

    class Timespec(ctypes.Structure):
        _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]

    def ts(t):
        return Timespec(0, omit) if t is None else Timespec(t // 10**9, t % 10**9)

    def op():
        times = (Timespec * 2)(ts(atime), ts(mtime))
        if _libc.utimensat(-100, os.fsencode(path), times, 0) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
    return op


@as_root
def test_attribute_changes_match_ext4(mounted_allow_other, tmp_path):
    m = mounted_allow_other
    os.mkdir(m.path("attr"))
    ext4, stg = tmp_path / "ext4", m.path("attr", "staging")
    os.mkdir(ext4)
    for root in (str(ext4), stg):
        os.chmod(root, 0o777)
        put_file(os.path.join(root, "f"), b"hello world")
        put_file(os.path.join(root, "w"), b"writable")
        os.chmod(os.path.join(root, "w"), 0o666)
        put_file(os.path.join(root, "mine"), b"mine")
        os.makedirs(os.path.join(root, "d", "x"))
        os.mkdir(os.path.join(root, "sg"))
        os.symlink("f", os.path.join(root, "l"))
    put_file(os.path.join(stg, "cu"), b"cu")
    assert committed(m, "attr") == "attr:v0"   # what follows changes committed, unmodified entries
    os.chmod(stg, 0o777)                          # staging/ itself is 0755 again after a commit
    # documented exception: opening a committed, unmodified file for writing copies it into a
    # data file and sets its ctime even if nothing is written (bytes and mtime are kept)
    before = os.stat(os.path.join(stg, "cu"))
    os.close(os.open(os.path.join(stg, "cu"), os.O_WRONLY))
    time.sleep(1.1)                               # the kernel's cached attributes expire (1 s)
    after = os.stat(os.path.join(stg, "cu"))
    assert (after.st_mtime_ns, read(os.path.join(stg, "cu"))) == (before.st_mtime_ns, b"cu")
    assert after.st_ctime_ns > before.st_ctime_ns
    os.unlink(os.path.join(stg, "cu"))
    diff = Differential(ext4, stg)
    same = diff.same

    # creation: owner, group and the creator's umask
    assert same("nobody chowns nothing yet", lambda: os.chown("mine", 0, 0), NOBODY) == ERR("EPERM")
    assert same("root gives 'mine' to nobody", lambda: os.chown("mine", NOBODY, NOBODY)) == OK()
    assert same("create, umask 022", _create("u022"), NOBODY) == OK()
    assert same("create, umask 077", _create("u077"), NOBODY, umask=0o077) == OK()
    assert same("create 0600, umask 0", _create("u0", 0o600), NOBODY, umask=0) == OK()
    assert same("mkdir, umask 027", lambda: os.mkdir("dir027", 0o777), NOBODY, umask=0o027) == OK()
    assert same("mkdir as root, umask 0", lambda: os.mkdir("dir0", 0o1777), 0, umask=0) == OK()
    assert same("symlink", lambda: os.symlink("/abs", "sym"), NOBODY) == OK()
    assert same("create over existing, read-only", _create("f"), NOBODY) == ERR("EACCES")
    assert same("O_EXCL over existing",
                lambda: os.open("f", os.O_CREAT | os.O_EXCL | os.O_WRONLY), NOBODY) == ERR("EEXIST")
    assert same("nobody in a root-owned 0755 dir", _create("d/new"), NOBODY) == ERR("EACCES")
    assert same("setgid directory of group 1234",
                lambda: (os.chown("sg", 0, 1234), os.chmod("sg", 0o2777))) == OK((None, None))
    assert same("creating in it takes its group; subdirs inherit setgid",
                lambda: (_create("sg/file")(), os.mkdir("sg/sub", 0o777), os.symlink("x", "sg/ln")),
                NOBODY) == OK((None, None, None))

    # chmod
    for mode in (0o600, 0o4755, 0o2755, 0o1777, 0o7777, 0o000, 0o644):
        assert same(f"chmod {mode:o}", lambda mode=mode: os.chmod("f", mode)) == OK()
    assert same("chmod a directory 3775", lambda: os.chmod("d", 0o3775)) == OK()
    assert same("chmod through a symlink", lambda: os.chmod("l", 0o640)) == OK()
    assert same("fchmod", lambda: os.fchmod(os.open("f", os.O_RDONLY), 0o604)) == OK()
    assert same("nobody chmods root's file", lambda: os.chmod("f", 0o777), NOBODY) == ERR("EPERM")
    assert same("nobody chmods its own", lambda: os.chmod("mine", 0o600), NOBODY) == OK()
    assert same("non-member sets setgid: dropped", lambda: os.chown("mine", -1, 5)) == OK()
    assert same("... by nobody", lambda: os.chmod("mine", 0o2755), NOBODY) == OK()

    # chown
    assert same("chmod 6755 then chown clears setuid/setgid",
                lambda: (os.chmod("f", 0o6755), os.chown("f", 1234, 5678))) == OK((None, None))
    assert same("chown gid only", lambda: os.chown("f", -1, 42)) == OK()
    assert same("chown uid only", lambda: os.chown("f", 0, -1)) == OK()
    assert same("chown keeps a directory's setgid", lambda: os.chown("d", 5, 6)) == OK()
    assert same("lchown a symlink", lambda: os.lchown("l", 77, 88)) == OK()
    assert same("nobody gives its file away", lambda: os.chown("mine", 0, -1), NOBODY) == ERR("EPERM")
    assert same("nobody to a foreign group", lambda: os.chown("mine", -1, 0), NOBODY) == ERR("EPERM")
    assert same("nobody to its own group", lambda: os.chown("mine", -1, NOBODY), NOBODY) == OK()

    # utimens
    assert same("explicit times", lambda: os.utime("w", ns=(T2, T1))) == OK()
    assert same("now", lambda: os.utime("w", None)) == OK()
    assert same("mtime only (atime omitted)", _utimensat("w", None, T2)) == OK()
    assert same("a symlink's own times",
                lambda: os.utime("l", ns=(T1, T1), follow_symlinks=False)) == OK()
    assert same("a directory", lambda: os.utime("d", ns=(T1, T2))) == OK()
    assert same("futimens", lambda: os.utime(os.open("w", os.O_RDONLY), ns=(T1, T1))) == OK()
    assert same("nobody, now, on 0666", lambda: os.utime("w", None), NOBODY) == OK()
    assert same("nobody, explicit, on 0666",
                lambda: os.utime("w", ns=(T1, T1)), NOBODY) == ERR("EPERM")
    assert same("nobody, now, on a file it cannot write",
                lambda: os.utime("f", None), NOBODY) == ERR("EACCES")
    assert same("nobody, explicit, on its own", lambda: os.utime("mine", ns=(T2, T2)), NOBODY) == OK()
    # documented exception: atimes are not kept (st_atime is st_mtime), so an atime-only change
    # changes nothing, not even ctime (ext4 changes the atime and ctime)
    before = os.stat(os.path.join(stg, "w"))
    assert in_child(_utimensat("w", T1, None), stg) == OK()
    after = os.stat(os.path.join(stg, "w"))
    assert (after.st_atime_ns, after.st_mtime_ns, after.st_ctime_ns) == (
        before.st_mtime_ns, before.st_mtime_ns, before.st_ctime_ns)

    # truncate
    for size in (5, 100, 100, 0, 3 * MiB, 7):
        assert same(f"truncate to {size}", lambda size=size: os.truncate("w", size)) == OK()
    assert same("ftruncate", lambda: os.ftruncate(os.open("w", os.O_RDWR), 2)) == OK()
    assert same("O_TRUNC", lambda: os.close(os.open("f", os.O_WRONLY | os.O_TRUNC))) == OK()
    assert same("truncate a directory", lambda: os.truncate("d", 0)) == ERR("EISDIR")
    assert same("negative size", lambda: os.truncate("w", -1)) == ERR("EINVAL")
    assert same("nobody, 0644 of root", lambda: os.truncate("f", 1), NOBODY) == ERR("EACCES")
    assert same("setuid+setgid file, group-exec",
                lambda: (os.chown("w", 0, 0), os.chmod("w", 0o6777))) == OK((None, None))
    assert same("nobody truncates it: both bits go",
                lambda: os.truncate("w", 1), NOBODY) == OK()
    assert same("chmod 4777 again", lambda: os.chmod("w", 0o4777)) == OK()
    assert same("nobody writes it: setuid goes",
                lambda: open("w", "ab").write(b"!"), NOBODY) == OK(1)
    assert same("nobody opens it with O_CREAT", _create("w"), NOBODY) == OK()

    # and it all commits: the version has the modes (owners are not versioned)
    assert committed(m, "attr") == "attr:v1"
    modes = {p: (w[0], w[1], w[4:]) for p, (w, *_) in snapshot(ext4).items()}
    assert {p: (w[0], w[1], w[4:]) for p, (w, *_) in snapshot(m.path("attr", "v1")).items()} == modes


def test_renames_follow_rename2_like_ext4(mounted, tmp_path):
    m = mounted
    os.mkdir(m.path("mv"))
    ext4, stg = str(tmp_path / "ext4"), m.path("mv", "staging")
    os.mkdir(ext4)
    for root in (ext4, stg):
        for name, data in (("f", b"F"), ("g", b"G"), ("d/sub/deep", b"D"), ("h", b"H")):
            os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
            put_file(os.path.join(root, name), data)
        for name in ("e", "empty", "d2"):
            os.mkdir(os.path.join(root, name))
        os.symlink("f", os.path.join(root, "l"))
    assert committed(m, "mv") == "mv:v0"   # renames of committed entries first
    same = Differential(ext4, stg).same

    def replace_and_read_old(src, dst):
        """rename SRC over DST on both sides; an fd open on the old DST still reads its bytes."""
        fds = [os.open(os.path.join(root, dst), os.O_RDONLY) for root in (ext4, stg)]
        try:
            old = [os.pread(fd, 100, 0) for fd in fds]
            assert same(f"{src} over {dst}", lambda: os.rename(src, dst)) == OK()
            assert [os.pread(fd, 100, 0) for fd in fds] == old
            assert [os.fstat(fd).st_size for fd in fds] == [len(b) for b in old]
        finally:
            for fd in fds:
                os.close(fd)

    replace_and_read_old("f", "g")                      # committed file over committed file
    assert same("file over dir", lambda: os.rename("g", "e")) == ERR("EISDIR")
    assert same("dir over file", lambda: os.rename("e", "g")) == ERR("ENOTDIR")
    assert same("dir over non-empty dir", lambda: os.rename("e", "d")) == ERR("ENOTEMPTY")
    assert same("dir over empty dir", lambda: os.rename("e", "empty")) == OK()
    assert same("dir into itself", lambda: os.rename("d", "d/sub/x")) == ERR("EINVAL")
    assert same("dir over its ancestor", lambda: os.rename("d/sub", "d")) == ERR("ENOTEMPTY")
    assert same("file over its parent", lambda: os.rename("d/sub/deep", "d/sub")) == ERR("ENOTEMPTY")
    assert same("to itself", lambda: os.rename("g", "g")) == OK()
    assert same("missing source", lambda: os.rename("nope", "x")) == ERR("ENOENT")
    assert same("into a missing dir", lambda: os.rename("g", "nodir/x")) == ERR("ENOENT")
    assert same("through a file", lambda: os.rename("g", "h/x")) == ERR("ENOTDIR")
    assert same("rename '.'", lambda: os.rename("d2", ".")) == ERR("EBUSY")
    assert same("NOREPLACE onto existing", lambda: renameat2("g", "h", 1)) == ERR("EEXIST")
    assert same("NOREPLACE onto new", lambda: renameat2("g", "g2", 1)) == OK()
    assert same("a subtree across dirs", lambda: os.rename("d/sub", "d2/moved")) == OK()
    assert same("a symlink", lambda: os.rename("l", "d/l2")) == OK()
    assert same("file over symlink", lambda: os.rename("h", "d/l2")) == OK()
    assert same("back and forth", lambda: (os.rename("d2/moved", "d/sub"),
                                           os.rename("d/sub", "d2/moved"))) == OK((None, None))
    put_file(os.path.join(stg, "new"), b"staged data")     # a staging data file as the old target
    put_file(os.path.join(ext4, "new"), b"staged data")
    replace_and_read_old("g2", "new")
    replace_and_read_old("new", "d2/moved/deep")
    # RENAME_EXCHANGE: ext4 swaps, staging refuses (docs/SEMANTICS.md)
    put_file(os.path.join(ext4, "x"), b"x")
    put_file(os.path.join(stg, "x"), b"x")
    assert in_child(lambda: renameat2("x", "d2/moved/deep", 2), stg) == ERR("EINVAL")
    assert committed(m, "mv") == "mv:v1"
    v1 = {p: (w[0], w[1], w[4:]) for p, (w, *_) in snapshot(m.path("mv", "v1")).items()}
    assert v1 == {p: (w[0], w[1], w[4:]) for p, (w, *_) in snapshot(ext4).items()}


def test_unlinked_open_file_stays_readable_and_writable_until_closed(mounted):
    m = mounted
    s = artifact_v0(m, "ul", {"base": b"0123456789", "ro": b"read only"})
    ro = os.open(os.path.join(s, "ro"), os.O_RDONLY)         # unmodified: reads the version
    rw = os.open(os.path.join(s, "base"), os.O_RDWR)         # copied up into a data file
    new = os.open(os.path.join(s, "new"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(new, b"new file")
        for name in ("ro", "base", "new"):
            os.unlink(os.path.join(s, name))
        assert os.listdir(s) == []
        assert os.pread(ro, 100, 0) == b"read only"
        assert os.pwrite(rw, b"XY", 2) == 2
        assert os.pread(rw, 100, 0) == b"01XY456789"
        os.ftruncate(rw, 4)
        assert os.pread(rw, 100, 0) == b"01XY" and os.fstat(rw).st_size == 4
        os.pwrite(rw, b"!", 10)                               # a hole, then one byte
        assert os.pread(rw, 100, 0) == b"01XY" + bytes(6) + b"!"
        os.fchmod(rw, 0o600)
        os.utime(rw, ns=(T1, T1))
        st_ = os.fstat(rw)
        assert (stat.S_IMODE(st_.st_mode), st_.st_mtime_ns, st_.st_size) == (0o600, T1, 11)
        with open(f"/proc/self/fd/{new}", "r+b") as again:     # reopened while unlinked
            assert again.read() == b"new file"
            again.write(b"!")
        assert os.pread(new, 100, 0) == b"new file!"
        assert staging_files(m, "ul") == []                   # nothing left behind in the store
    finally:
        for fd in (ro, rw, new):
            os.close(fd)
    assert os.listdir(s) == []
    assert cli_json(m.store, "status", "ul") == {"added": [], "modified": [], "deleted": ["base", "ro"], "interrupted": []}
    assert committed(m, "ul") == "ul:v1"
    assert os.listdir(m.path("ul", "v1")) == []

    # replaced and committed while open: the fd keeps its own file, the path names the new one
    put_file(os.path.join(s, "old"), b"old")
    put_file(os.path.join(s, "new"), b"new")
    assert committed(m, "ul") == "ul:v2"
    with open(os.path.join(s, "old"), "rb") as f:
        os.rename(os.path.join(s, "new"), os.path.join(s, "old"))
        assert committed(m, "ul") == "ul:v3"               # a reader does not hold a commit back
        os.fchmod(f.fileno(), 0o600)
        assert f.read() == b"old" and stat.S_IMODE(os.fstat(f.fileno()).st_mode) == 0o600
    assert read(os.path.join(s, "old")) == b"new"
    assert stat.S_IMODE(os.stat(os.path.join(s, "old")).st_mode) == 0o644


def test_symlinks_are_stored_as_given_and_never_followed(mounted, tmp_path):
    m = mounted
    os.mkdir(m.path("sym"))
    s = m.path("sym", "staging")
    targets = {"abs": "/etc/passwd", "dangling": "no/such/file", "up": "..",
               "escape": "../../../../../../../../etc", "dot": ".", "self": "self",
               "long": "x/" * 2046 + "end", "trailing": "dir/"}
    assert len(targets["long"]) == 4095
    for name, target in targets.items():
        os.symlink(target, os.path.join(s, name))
    assert oserror(os.symlink, "x" * 4096, os.path.join(s, "toolong")) == errno.ENAMETOOLONG
    assert oserror(os.stat, os.path.join(s, "self")) == errno.ELOOP
    assert staging_files(m, "sym") == []                    # symlinks have no data files
    assert committed(m, "sym") == "sym:v0"
    dest = tmp_path / "got"
    m.cli("get", "sym:v0", dest)
    for root in (s, m.path("sym", "v0"), str(dest)):
        for name, target in targets.items():
            assert os.readlink(os.path.join(root, name)) == target
            assert os.lstat(os.path.join(root, name)).st_size == len(target)
    assert sorted(os.listdir(dest)) == sorted(targets)      # nothing followed out of dest


def _shared_roots(m, name: str, tmp_path) -> tuple[str, str]:
    """An ext4 directory and the staging of a new artifact NAME, both 0777 (everyone creates)."""
    os.mkdir(m.path(name))
    ext4, stg = str(tmp_path / "ext4"), m.path(name, "staging")
    os.mkdir(ext4)
    for root in (ext4, stg):
        os.chmod(root, 0o777)
    return ext4, stg


def _link_counts(root) -> dict[str, int]:
    """relative path -> st_nlink of everything below ROOT (ROOT itself as '.')."""
    return {p: os.lstat(os.path.join(root, p)).st_nlink for p in [".", *snapshot(root)]}


def test_link_counts_match_ext4(mounted, tmp_path):
    """A directory's st_nlink is 2 + its subdirectories, in staging (unmodified, recorded, made in
    staging) and in versions; a file unlinked while open reports 0."""
    m = mounted
    os.mkdir(m.path("nl"))
    ext4, stg = str(tmp_path / "ext4"), m.path("nl", "staging")
    os.mkdir(ext4)

    def both(fn):
        for root in (ext4, stg):
            fn(root)
        assert _link_counts(stg) == _link_counts(ext4)

    def tree(root):
        for d in ("a/b", "a/c/d", "a/c/e", "z"):
            os.makedirs(os.path.join(root, d))
        put_file(os.path.join(root, "a", "f"), b"f")
        os.symlink("f", os.path.join(root, "a", "l"))
    both(tree)
    assert committed(m, "nl") == "nl:v0"
    assert _link_counts(m.path("nl", "v0")) == _link_counts(ext4)
    assert _link_counts(stg) == _link_counts(ext4)           # unmodified, from the base tree
    both(lambda r: os.rmdir(os.path.join(r, "a", "b")))
    both(lambda r: os.rename(os.path.join(r, "a", "c"), os.path.join(r, "z", "c")))
    both(lambda r: os.mkdir(os.path.join(r, "z", "c", "new")))
    both(lambda r: os.rename(os.path.join(r, "z", "c", "d"), os.path.join(r, "z", "c", "e")))
    both(lambda r: os.rename(os.path.join(r, "a", "f"), os.path.join(r, "z", "f")))
    assert committed(m, "nl") == "nl:v1"
    assert _link_counts(m.path("nl", "v1")) == _link_counts(ext4)

    for root in (ext4, stg):                               # unlinked while open: 0 links
        put_file(os.path.join(root, "new"), b"new")
        fds = [os.open(os.path.join(root, name), os.O_RDONLY) for name in ("new", "z/f")]
        try:
            assert [os.fstat(fd).st_nlink for fd in fds] == [1, 1]
            os.unlink(os.path.join(root, "new"))
            os.unlink(os.path.join(root, "z", "f"))
            time.sleep(1.1)                                # cached attributes expire (1 s)
            assert [os.fstat(fd).st_nlink for fd in fds] == [0, 0], root
        finally:
            for fd in fds:
                os.close(fd)


@as_root
def test_hard_links_match_ext4(mounted_allow_other, tmp_path):
    """link(2) in staging as on ext4 - one inode, shared bytes and attributes, st_nlink, unlink of
    one name keeps the others, rename over a link, an open file keeps working, EPERM/EEXIST and
    the kernel's protected_hardlinks rule for another user - for new and committed files, symlinks
    and FIFOs; a commit keeps the groups in vN/ (one inode, nlink) and ``get`` recreates them;
    links across the staging boundary are EXDEV."""
    m = mounted_allow_other
    ext4, stg = _shared_roots(m, "hl", tmp_path)
    for root in (ext4, stg):
        put_file(os.path.join(root, "c"), b"committed")
        os.mkdir(os.path.join(root, "d"))
        os.chmod(os.path.join(root, "d"), 0o777)
        os.symlink("c", os.path.join(root, "sym"))
        os.mkfifo(os.path.join(root, "fifo"))
    assert committed(m, "hl") == "hl:v0"
    os.chmod(stg, 0o777)
    same = Differential(ext4, stg).same

    def append(path, data):
        return lambda: open(path, "ab").write(data)

    assert same("link a committed file", lambda: os.link("c", "d/c2")) == OK()
    assert same("write through one name", append("d/c2", b"+")) == OK(1)
    assert same("chmod through the other", lambda: os.chmod("c", 0o640)) == OK()
    assert same("a third name", lambda: os.link("d/c2", "c3")) == OK()
    assert same("create and link", lambda: (put_file("n", b"new"), os.link("n", "d/n2"))) == OK((None, None))
    assert same("truncate through one", lambda: os.truncate("d/n2", 1)) == OK()
    assert same("link a symlink itself", lambda: os.link("sym", "sym2", follow_symlinks=False)) == OK()
    assert same("link through a symlink", lambda: os.link("sym", "c4", follow_symlinks=True)) == OK()
    assert same("link a FIFO", lambda: os.link("fifo", "d/fifo2")) == OK()
    assert same("link a directory", lambda: os.link("d", "d2")) == ERR("EPERM")
    assert same("link onto an existing name", lambda: os.link("c", "n")) == ERR("EEXIST")
    assert same("link a missing file", lambda: os.link("nope", "x")) == ERR("ENOENT")
    assert same("nobody links root's 0640 file", lambda: os.link("c", "d/mine"), NOBODY) == ERR("EPERM")
    assert same("nobody links its own", lambda: (put_file("d/own", b"o"), os.link("d/own", "d/own2")),
                NOBODY) == OK((None, None))
    assert same("unlink one name", lambda: os.unlink("c3")) == OK()
    assert same("rename a file over a link", lambda: os.rename("n", "c4")) == OK()
    assert same("rename a link onto its other name", lambda: os.rename("d/c2", "c")) == OK()
    assert same("rename a link away", lambda: os.rename("d/n2", "d/moved")) == OK()

    fds = [os.open(os.path.join(root, "c"), os.O_RDWR) for root in (ext4, stg)]
    try:   # an open name unlinked: the file lives on under its other name
        assert same("unlink an open name", lambda: os.unlink("c")) == OK()
        for fd in fds:
            os.pwrite(fd, b"!", 0)
            assert os.fstat(fd).st_nlink == 1
        assert read(os.path.join(stg, "d", "c2")) == read(os.path.join(ext4, "d", "c2")) == b"!ommitted+"
    finally:
        for fd in fds:
            os.close(fd)

    assert oserror(os.link, m.path("hl", "v0", "c"), os.path.join(stg, "x")) == errno.EXDEV
    os.mkdir(m.path("other"))
    assert oserror(os.link, os.path.join(stg, "d", "c2"), m.path("other", "staging", "x")) == errno.EXDEV
    assert oserror(os.link, os.path.join(stg, "d", "c2"), m.path("hl", "v0", "x")) == errno.EROFS

    assert committed(m, "hl") == "hl:v1"
    want = link_groups(ext4)
    assert link_groups(m.path("hl", "v1")) == want
    assert link_groups(stg) == want                       # committed groups: one inode each
    os.chown(os.path.join(ext4, "d", "own"), 0, 0)        # owners are not versioned
    assert same("write a committed group", append("c4", b"?")) == OK(1)
    assert same("unlink a committed name", lambda: os.unlink("sym")) == OK()
    dest = tmp_path / "got"
    m.cli("get", "hl:v1", dest)
    assert link_groups(dest) == want
    assert committed(m, "hl") == "hl:v2"
    assert link_groups(m.path("hl", "v2")) == link_groups(ext4)


KINDS = ("file", "dir", "symlink", "fifo", "socket", "char", "block")


def _make_kind(path: str, kind: str) -> None:
    """An entry of KIND at PATH (a symlink points at the top-level regular file ``target``)."""
    if kind == "file":
        put_file(path, b"data")
    elif kind == "dir":
        os.mkdir(path)
    elif kind == "symlink":
        os.symlink("../target", path)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        fmt = {"socket": stat.S_IFSOCK, "char": stat.S_IFCHR, "block": stat.S_IFBLK}[kind]
        os.mknod(path, fmt | 0o644, {"char": NULL, "block": LOOP0}.get(kind, 0))


# per operation: what it does to the entry named n (cwd: the sticky directory)
OPERATIONS = {
    "chmod": lambda n: os.chmod(n, 0o640),
    "chown": lambda n: os.chown(n, NOBODY, NOBODY),
    "lchown": lambda n: os.chown(n, -1, NOBODY, follow_symlinks=False),
    "link": lambda n: os.link(n, n + ".link", follow_symlinks=False),
    "mkdir over": lambda n: os.mkdir(n),
    "mkfifo over": lambda n: os.mkfifo(n),
    "mknod over": lambda n: os.mknod(n, stat.S_IFSOCK | 0o600),
    "symlink over": lambda n: os.symlink("x", n),
    "open": lambda n: os.close(os.open(n, os.O_RDONLY | os.O_NONBLOCK)),
    "open for writing": lambda n: os.close(os.open(n, os.O_WRONLY | os.O_NONBLOCK)),
    "rename": lambda n: os.rename(n, n + ".moved"),
    "rename a file over it": lambda n: (put_file(n + ".new", b"new"), os.rename(n + ".new", n)),
    "rename a dir over it": lambda n: (os.mkdir(n + ".d"), os.rename(n + ".d", n)),
    "rmdir": lambda n: os.rmdir(n),
    "truncate": lambda n: os.truncate(n, 1),
    "unlink": lambda n: os.unlink(n),
    "utimensat": lambda n: os.utime(n, ns=(T1, T2), follow_symlinks=False),
    "utimensat now": lambda n: os.utime(n, None),
}


@pytest.mark.slow
@as_root
def test_every_operation_on_every_file_type_matches_ext4(mounted_allow_other, tmp_path):
    """The differential over the whole matrix: every file type (committed and unmodified, owned by
    root or by nobody) x every operation above x root and nobody, in a sticky 1777 directory as
    /tmp is (so nobody may remove or replace only its own entries). The outcome and everything
    observable must match ext4, but for what docs/SEMANTICS.md lists: device nodes cannot be
    opened (the mount is nodev), and owners are not versioned (set again after the commit)."""
    m = mounted_allow_other
    os.mkdir(m.path("mx"))
    ext4, stg = str(tmp_path / "ext4"), m.path("mx", "staging")
    os.mkdir(ext4)
    names = []
    for root in (ext4, stg):
        os.chmod(root, 0o755)
        put_file(os.path.join(root, "target"), b"target")
        os.chmod(os.path.join(root, "target"), 0o666)
        os.mkdir(os.path.join(root, "t"))
        os.chmod(os.path.join(root, "t"), 0o1777)
        for user in (0, NOBODY):
            for op in OPERATIONS:
                for owner in (0, NOBODY):
                    for kind in KINDS:
                        name = f"{op.replace(' ', '_')}.{user}.{owner}.{kind}"
                        _make_kind(os.path.join(root, "t", name), kind)
                        if root == ext4:
                            names.append((op, user, owner, kind, name))
    assert committed(m, "mx") == "mx:v0"
    os.chmod(stg, 0o755)
    for root in (ext4, stg):                                  # owners are not versioned
        for _, _, owner, _, name in names:
            os.chown(os.path.join(root, "t", name), owner, owner, follow_symlinks=False)
    # documented: opening a committed file for writing copies it (ctime); done here beforehand
    for path in [os.path.join(stg, "target")] + [os.path.join(stg, "t", n[4]) for n in names
                                                  if n[3] == "file"]:
        os.close(os.open(path, os.O_WRONLY))
    time.sleep(1.1)                                         # cached attributes expire (1 s)
    same = Differential(os.path.join(ext4, "t"), os.path.join(stg, "t")).same
    outcomes = {}
    for op, user, owner, kind, name in names:
        if op.startswith("open") and kind in ("char", "block"):
            continue   # documented: nodev, checked below
        outcomes[op, user, owner, kind] = same(f"{op} of {kind} owned by {owner}, as {user}",
                                               lambda fn=OPERATIONS[op], name=name: fn(name), user)
    # the sticky bit: nobody removes or replaces only its own entries, of every type
    for kind in KINDS:
        for op in ("unlink", "rename", "rename a file over it"):
            if kind == "dir" and op != "rename":
                continue   # EISDIR
            assert outcomes[op, NOBODY, 0, kind] == ERR("EPERM"), (op, kind)
            assert outcomes[op, NOBODY, NOBODY, kind][0] == "ok", (op, kind)
    assert outcomes["link", 0, 0, "dir"] == ERR("EPERM")
    dev = os.path.join(stg, "t", "open.0.0.char")
    assert oserror(os.open, dev, os.O_RDONLY) == errno.EACCES
    assert committed(m, "mx") == "mx:v1"
    kinds = [{p: w[:2] + w[4:] for p, (w, *_) in snapshot(root).items()}
             for root in (os.path.join(ext4, "t"), m.path("mx", "v1", "t"))]
    assert kinds[0] == kinds[1]
    # hard links are one inode in v1 (equal files are too: one inode per content in versions)
    linked = [[g for g in link_groups(root) if g[0] > 1]
              for root in (os.path.join(ext4, "t"), m.path("mx", "v1", "t"))]
    assert linked[0] == linked[1] and len(linked[0]) == 18   # root: 6 kinds x 2 owners; nobody: its own


# 3. unsupported operations ---------------------------------------------------------------------
def test_unsupported_operations_fail_with_the_documented_errno(mounted):
    m = mounted
    s = artifact_v0(m, "un", {"f": b"f", "g": b"g"})
    before = snapshot(s)
    xattr_errno = getattr(errno, documented_errno("`setxattr`"))
    fallocate_errno = getattr(errno, documented_errno("`fallocate(2)`"))
    assert (xattr_errno, fallocate_errno) == (errno.EOPNOTSUPP, errno.EOPNOTSUPP)

    assert oserror(os.setxattr, os.path.join(s, "f"), "user.k", b"v") == xattr_errno
    assert oserror(os.getxattr, os.path.join(s, "f"), "user.k") == errno.EOPNOTSUPP
    assert oserror(os.listxattr, os.path.join(s, "f")) == errno.EOPNOTSUPP
    assert oserror(os.removexattr, os.path.join(s, "f"), "user.k") == errno.EOPNOTSUPP
    assert oserror(os.open, s, os.O_TMPFILE | os.O_RDWR, 0o600) == errno.EOPNOTSUPP
    assert oserror(renameat2, os.path.join(s, "f"), os.path.join(s, "g"), 2) == errno.EINVAL
    assert snapshot(s) == before and staging_files(m, "un") == []
    assert cli_json(m.store, "status", "un") == {"added": [], "modified": [], "deleted": [], "interrupted": []}
    fallocate = _libc.fallocate
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    with open(os.path.join(s, "f"), "r+b") as f:
        assert fallocate(f.fileno(), 0, 0, 4096) == -1 and ctypes.get_errno() == fallocate_errno
        assert os.fstat(f.fileno()).st_size == 1
        os.posix_fallocate(f.fileno(), 0, 4096)                  # glibc writes the range instead
        assert os.fstat(f.fileno()).st_size == 4096
    v0 = m.path("un", "v0")                                   # and in a version: read-only
    assert oserror(os.link, os.path.join(v0, "f"), os.path.join(v0, "hard")) == errno.EROFS
    assert oserror(os.mknod, os.path.join(v0, "node"), stat.S_IFIFO | 0o600) == errno.EROFS
    assert oserror(os.setxattr, os.path.join(v0, "f"), "user.k", b"v") == errno.EROFS
    assert oserror(os.getxattr, os.path.join(v0, "f"), "user.k") == errno.EOPNOTSUPP
    assert oserror(os.listxattr, os.path.join(v0, "f")) == errno.EOPNOTSUPP
    assert oserror(os.open, v0, os.O_TMPFILE | os.O_RDWR, 0o600) == errno.EOPNOTSUPP


NULL, LOOP0 = os.makedev(1, 3), os.makedev(7, 0)


def _bind(path):
    def op():
        with socket.socket(socket.AF_UNIX) as sock:           # bind(2) makes a socket inode
            sock.bind(path)
    return op


def _fifo_passes(path) -> bytes:
    """Bytes written into the FIFO at PATH come out of it (a reader and a writer at once)."""
    r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        w = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(w, b"through the pipe")
        finally:
            os.close(w)
        return os.read(r, 100)
    finally:
        os.close(r)


@as_root
def test_special_files_in_staging_and_versions(mounted_allow_other, tmp_path):
    """mkfifo, mknod (character, block, FIFO, socket, S_IFREG) and binding a unix socket in
    staging make what they make on ext4; they work as what they are (a FIFO passes bytes, a
    socket accepts connections), a device node never reaches its device (the mount is nodev),
    and they commit, show in vN/ and come back with ``get``."""
    m = mounted_allow_other
    ext4, stg = _shared_roots(m, "sp", tmp_path)
    same = Differential(ext4, stg).same
    assert same("mkfifo", lambda: os.mkfifo("fifo", 0o640)) == OK()
    assert same("mkfifo, umask 077", lambda: os.mkfifo("fifo2", 0o666), umask=0o077) == OK()
    assert same("mknod a char device", lambda: os.mknod("null", stat.S_IFCHR | 0o666, NULL)) == OK()
    assert same("mknod a block device", lambda: os.mknod("loop", stat.S_IFBLK | 0o660, LOOP0)) == OK()
    assert same("mknod a FIFO", lambda: os.mknod("p", stat.S_IFIFO | 0o600)) == OK()
    assert same("mknod a socket", lambda: os.mknod("s", stat.S_IFSOCK | 0o600)) == OK()
    assert same("mknod a regular file", lambda: os.mknod("reg", stat.S_IFREG | 0o644)) == OK()
    assert same("bind a unix socket", _bind("sock")) == OK()
    assert same("mknod over an existing name", lambda: os.mkfifo("null")) == ERR("EEXIST")
    assert same("nobody makes a device", lambda: os.mknod("d", stat.S_IFCHR, NULL), NOBODY) == ERR("EPERM")
    assert same("nobody makes a FIFO", lambda: os.mkfifo("nf", 0o600), NOBODY) == OK()
    assert same("chmod a FIFO", lambda: os.chmod("fifo", 0o604)) == OK()
    assert same("truncate a FIFO", lambda: os.truncate("fifo", 0)) == ERR("EINVAL")

    assert _fifo_passes(os.path.join(stg, "fifo")) == b"through the pipe"
    with socket.socket(socket.AF_UNIX) as server:             # a socket bound in staging serves
        server.bind(os.path.join(stg, "served"))
        server.listen(1)
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(os.path.join(stg, "served"))
            conn, _ = server.accept()
            with conn:
                client.sendall(b"hi")
                assert conn.recv(2) == b"hi"
    os.unlink(os.path.join(stg, "served"))
    options = next(line.split()[3] for line in open("/proc/mounts") if line.split()[1] == m.mnt)
    assert "nodev" in options.split(",")
    assert oserror(os.open, os.path.join(stg, "null"), os.O_RDONLY) == errno.EACCES
    assert len(staging_files(m, "sp")) == 1                   # the data file of "reg" only

    assert sorted(cli_json(m.store, "status", "sp")["added"]) == sorted(
        ["fifo", "fifo2", "null", "loop", "p", "s", "reg", "sock", "nf"])
    assert committed(m, "sp") == "sp:v0"
    v0 = m.path("sp", "v0")
    kinds = [{p: w[:2] + w[4:] for p, (w, *_) in snapshot(root).items()} for root in (ext4, stg, v0)]
    assert kinds[1] == kinds[2] == kinds[0]                   # kind, mode, bytes / rdev
    mtimes = [{p: mt for p, (_, mt, *_) in snapshot(root).items()} for root in (stg, v0)]
    assert mtimes[0] == mtimes[1]
    assert os.lstat(os.path.join(v0, "fifo")).st_ino != os.lstat(os.path.join(v0, "fifo2")).st_ino
    assert os.lstat(os.path.join(v0, "p")).st_ino != os.lstat(os.path.join(v0, "s")).st_ino
    assert _fifo_passes(os.path.join(v0, "fifo")) == b"through the pipe"
    assert oserror(os.open, os.path.join(v0, "null"), os.O_RDONLY) == errno.EACCES
    assert oserror(os.readlink, os.path.join(v0, "fifo")) == errno.EINVAL

    # committed and unmodified in staging: rename, unlink, chmod them like ext4 (owners are not
    # versioned: committed entries belong to the mounting user)
    os.chown(os.path.join(ext4, "nf"), 0, 0)
    assert same("rename a committed FIFO", lambda: os.rename("fifo", "fifo3")) == OK()
    assert same("device over a FIFO", lambda: os.rename("null", "fifo3")) == OK()
    assert same("unlink a committed socket", lambda: os.unlink("sock")) == OK()
    assert same("chmod a committed device", lambda: os.chmod("loop", 0o600)) == OK()
    assert committed(m, "sp") == "sp:v1"
    dest = tmp_path / "got"
    m.cli("get", "sp:v1", dest)
    assert {p: (w[:2] + w[4:]) for p, (w, *_) in snapshot(dest).items()} == \
        {p: (w[:2] + w[4:]) for p, (w, *_) in snapshot(ext4).items()}


# 4. randomized data integrity ------------------------------------------------------------------
@pytest.mark.slow
def test_random_io_matches_a_bytearray_model(mounted, tmp_path):
    """~300 seeded pwrites, reads, truncates, sparse extends and mmap writes on three staging files
    (one copied up from a version, two new) and reopens, each file checked against a bytearray
    after every step: read from the page cache, then again after dropping it (posix_fadvise
    DONTNEED, per file: /proc/sys/vm/drop_caches would disturb everything else running on the
    machine), which must reach the daemon. Then commit: the version equals the model."""
    m, rng = mounted, random.Random(0x5EED)
    first = rng.randbytes(700 * KiB)
    s = artifact_v0(m, "io", {"base": first})
    model = {"base": bytearray(first), "new": bytearray(), "sparse": bytearray()}
    paths = {name: os.path.join(s, name) for name in model}
    fds = {name: os.open(path, os.O_RDWR | os.O_CREAT, 0o644) for name, path in paths.items()}
    cap = 2 * MiB
    counts: dict[str, int] = {}

    def daemon_read() -> int:
        """Bytes the daemon has read from files (its staging data files): /proc/PID/io rchar."""
        with open(f"/proc/{m.proc.pid}/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))

    def pwrite(name, data, offset):
        os.pwrite(fds[name], data, offset)
        buf = model[name]
        if offset > len(buf):
            buf.extend(bytes(offset - len(buf)))
        buf[offset:offset + len(data)] = data

    def resize(name, size):
        if rng.random() < 0.5:
            os.ftruncate(fds[name], size)
        else:
            os.truncate(paths[name], size)
        buf = model[name]
        del buf[size:]
        buf.extend(bytes(size - len(buf)))

    try:
        for step in range(300):
            name = rng.choice(sorted(model))
            buf = model[name]
            op = rng.choices(["pwrite", "read", "shrink", "extend", "sparse", "mmap", "reopen"],
                             [30, 10, 8, 6, 8, 12, 6])[0]
            if len(buf) > cap and op in ("pwrite", "extend", "sparse"):
                op = "shrink"
            counts[op] = counts.get(op, 0) + 1
            if op == "pwrite":
                at = rng.randrange(len(buf) + 1)
                pwrite(name, rng.randbytes(rng.choice([1, 7, 4096, rng.randrange(1, 200 * KiB)])), at)
            elif op == "read":
                at = rng.randrange(len(buf) + 10)
                size = rng.randrange(1, 300 * KiB)
                assert os.pread(fds[name], size, at) == bytes(buf[at:at + size]), step
            elif op == "shrink":
                resize(name, rng.randrange(len(buf) + 1))
            elif op == "extend":
                resize(name, len(buf) + rng.randrange(1, 300 * KiB))
            elif op == "sparse":
                pwrite(name, rng.randbytes(rng.randrange(1, 10 * KiB)),
                       len(buf) + rng.randrange(1, 600 * KiB))
            elif op == "mmap" and buf:
                fd = os.open(paths[name], os.O_RDWR)
                try:
                    with mmap.mmap(fd, len(buf)) as mm:
                        at = rng.randrange(len(buf))
                        data = rng.randbytes(min(len(buf) - at, rng.randrange(1, 64 * KiB)))
                        mm[at:at + len(data)] = data
                        buf[at:at + len(data)] = data
                        assert mm[:] == buf, step
                        mm.flush()
                finally:
                    os.close(fd)
            elif op == "reopen":
                os.close(fds[name])
                fds[name] = os.open(paths[name], os.O_RDWR)
            assert os.fstat(fds[name]).st_size == len(buf), (step, op)
            assert os.pread(fds[name], len(buf) + 1, 0) == buf, (step, op)   # the page cache
            os.posix_fadvise(fds[name], 0, 0, os.POSIX_FADV_DONTNEED)
            before = daemon_read()
            assert os.pread(fds[name], len(buf) + 1, 0) == buf, (step, op)   # the daemon
            assert daemon_read() - before >= len(buf), (step, op)              # it really was
    finally:
        for fd in fds.values():
            os.close(fd)
    assert all(counts.get(op, 0) >= 10 for op in ("pwrite", "shrink", "sparse", "mmap", "reopen")), counts
    for name, buf in model.items():
        assert read(paths[name]) == buf, name
    assert committed(m, "io") == "io:v1"
    dest = tmp_path / "got"
    m.cli("get", "io:v1", dest)
    for name, buf in model.items():
        assert read(m.path("io", "v1", name)) == buf, name
        assert read(dest / name) == buf, name


# 5. model-based: the mount against a dict model ------------------------------------------------
NAMES = st.sampled_from(["a", "b", "c\udcff"])      # c\xff: a non-UTF-8 name (surrogateescape)
CONTENT = st.binary(max_size=200)
ALIASES = st.sampled_from(["best", "prod"])
DIR = "dir"


class MountMachine(RuleBasedStateMachine):
    """Staging changes, commits and resets, aliases and version deletes through the mount and
    the CLI, against per-staging and per-version dicts path -> bytes (or DIR). One mount serves
    every example; each example has its own artifact."""

    counter = itertools.count()

    def __init__(self, m):
        super().__init__()
        self.m = m
        self.name = f"sm{next(self.counter)}"
        os.mkdir(m.path(self.name))
        self.root = m.path(self.name, "staging")
        self.staging: dict[str, object] = {}
        self.versions: dict[int, dict[str, object]] = {}
        self.aliases: dict[str, int] = {}
        self.next = 0
        self.base: int | None = None      # staging's base version once it has changes
        self.dirty = False

    def teardown(self):
        assert run_cli(self.m.store, "verify").returncode == 0
        self.m.cli("rm", self.name, "--force")   # keep the shared store small

    # the model ---------------------------------------------------------------------------------
    def latest(self) -> int | None:
        return max(self.versions) if self.versions else None

    def shown(self) -> dict:
        """What a staging without changes shows: the latest version."""
        return dict(self.versions.get(self.latest(), {}))

    def changed(self) -> None:
        if not self.dirty:
            self.base, self.dirty = self.latest(), True

    def clean(self) -> None:
        self.dirty, self.base = False, None
        self.staging = self.shown()

    def dirs(self) -> list[str]:
        return [""] + sorted(p for p, v in self.staging.items() if v == DIR)

    def files(self) -> list[str]:
        return sorted(p for p, v in self.staging.items() if v != DIR)

    def below(self, path: str) -> list[str]:
        return [p for p in self.staging if p.startswith(path + "/")]

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    @staticmethod
    def join(parent: str, name: str) -> str:
        return f"{parent}/{name}" if parent else name

    # staging -----------------------------------------------------------------------------------
    @initialize(files=st.dictionaries(st.sampled_from(["a", "b", "d/a", "d/c\udcff"]), CONTENT,
                                      max_size=3))
    def start(self, files):
        """Most examples start from a version (an empty dict: from an empty artifact)."""
        for path, content in files.items():
            if "/" in path and "d" not in self.staging:
                os.mkdir(self.path("d"))
                self.staging["d"] = DIR
            put_file(self.path(path), content)
            self.staging[path] = content
        if files:
            self.changed()
            self.commit()

    @rule(data=st.data(), name=NAMES, content=CONTENT)
    def write(self, data, name, content):
        path = self.join(data.draw(st.sampled_from(self.dirs())), name)
        if self.staging.get(path) == DIR:
            assert oserror(put_file, self.path(path), content) == errno.EISDIR
            return
        put_file(self.path(path), content)
        self.staging[path] = content
        self.changed()

    @precondition(lambda self: self.files())
    @rule(data=st.data())
    def unlink(self, data):
        path = data.draw(st.sampled_from(self.files()))
        os.unlink(self.path(path))
        del self.staging[path]
        self.changed()

    @rule(data=st.data(), name=NAMES)
    def mkdir(self, data, name):
        parent = data.draw(st.sampled_from(self.dirs()))
        path = self.join(parent, name)
        if path in self.staging:
            assert oserror(os.mkdir, self.path(path)) == errno.EEXIST
            return
        if parent.count("/") < 2:
            os.mkdir(self.path(path))
            self.staging[path] = DIR
            self.changed()

    @precondition(lambda self: len(self.dirs()) > 1)
    @rule(data=st.data())
    def rmdir(self, data):
        path = data.draw(st.sampled_from(self.dirs()[1:]))
        if self.below(path):
            assert oserror(os.rmdir, self.path(path)) == errno.ENOTEMPTY
            return
        os.rmdir(self.path(path))
        del self.staging[path]
        self.changed()

    @precondition(lambda self: self.staging)
    @rule(data=st.data(), name=NAMES)
    def rename(self, data, name):
        src = data.draw(st.sampled_from(sorted(self.staging)))
        dst = self.join(data.draw(st.sampled_from(self.dirs())), name)
        outcome = self.rename_outcome(src, dst)
        if outcome is not None:
            assert oserror(os.rename, self.path(src), self.path(dst)) == outcome, (src, dst)
            return
        os.rename(self.path(src), self.path(dst))
        if src == dst:
            return                        # the kernel does nothing at all
        for p in [dst, *self.below(dst)]:
            self.staging.pop(p, None)
        for p in [src, *self.below(src)]:
            self.staging[dst + p[len(src):]] = self.staging.pop(p)
        self.changed()

    def rename_outcome(self, src: str, dst: str) -> int | None:
        """rename(2) on Linux, in the order the kernel checks."""
        if src == dst:
            return None
        if src.startswith(dst + "/"):
            return errno.ENOTEMPTY        # the target is an ancestor of the source
        if dst.startswith(src + "/"):
            return errno.EINVAL           # a directory into itself
        if dst not in self.staging:
            return None
        src_dir, dst_dir = self.staging[src] == DIR, self.staging[dst] == DIR
        if src_dir and not dst_dir:
            return errno.ENOTDIR
        if dst_dir and not src_dir:
            return errno.EISDIR
        if dst_dir and self.below(dst):
            return errno.ENOTEMPTY
        return None

    # the CLI -----------------------------------------------------------------------------------
    @precondition(lambda self: self.dirty)     # (committing a clean staging: see reset)
    @rule()
    def commit(self):
        out = self.m.cli("commit", self.name).stdout.strip()
        latest = self.latest()
        if latest is not None and self.staging == self.versions[latest]:
            assert out == f"{self.name}:v{latest}"            # no changes: no version
        elif latest is None and not self.staging:
            assert out == ""                                   # nothing to commit
        else:
            assert out == f"{self.name}:v{self.next}"
            self.versions[self.next] = dict(self.staging)
            self.next += 1
        self.clean()

    @rule()
    def reset(self):
        if not self.dirty:      # a clean staging: a commit makes nothing, a reset changes nothing
            out = self.m.cli("commit", self.name).stdout.strip()
            assert out == (f"{self.name}:v{self.latest()}" if self.versions else "")
        self.m.cli("reset", self.name)
        self.clean()

    @precondition(lambda self: self.versions)
    @rule(data=st.data(), alias=ALIASES)
    def alias(self, data, alias):
        number = data.draw(st.sampled_from(sorted(self.versions)))
        self.m.cli("alias", f"{self.name}:v{number}", alias)
        self.aliases[alias] = number

    @precondition(lambda self: self.aliases)
    @rule(data=st.data())
    def unalias(self, data):
        alias = data.draw(st.sampled_from(sorted(self.aliases)))
        self.m.cli("alias", "--delete", self.name, alias)
        del self.aliases[alias]

    @precondition(lambda self: self.versions)
    @rule(data=st.data())
    def delete_version(self, data):
        number = data.draw(st.sampled_from(sorted(self.versions)))
        proc = run_cli(self.m.store, "rm", f"{self.name}:v{number}", "--force")
        if self.dirty and number == self.base:
            assert proc.returncode == 5 and "uncommitted changes" in proc.stderr
            return
        assert proc.returncode == 0, proc.stderr
        del self.versions[number]
        self.aliases = {a: n for a, n in self.aliases.items() if n != number}
        if not self.dirty:
            self.staging = self.shown()   # a staging without changes follows latest

    # what the mount shows ----------------------------------------------------------------------
    @invariant()
    def staging_shows_the_model(self):
        assert tree_of(self.root) == self.staging

    @invariant()
    def versions_and_aliases_show_the_model(self):
        links = dict(self.aliases)
        if self.versions:
            links["latest"] = self.latest()
        art = self.m.path(self.name)
        assert sorted(os.listdir(art)) == sorted(
            ["staging", *links, *(f"v{n}" for n in self.versions)])
        for alias, number in links.items():
            assert os.readlink(os.path.join(art, alias)) == f"v{number}"
        for number, content in self.versions.items():
            assert tree_of(os.path.join(art, f"v{number}")) == content
        for gone in set(range(self.next)) - set(self.versions):
            assert not os.path.exists(os.path.join(art, f"v{gone}"))


def tree_of(root: str) -> dict[str, object]:
    out = {}
    for top, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.relpath(os.path.join(top, d), root)] = DIR
        for f in files:
            out[os.path.relpath(os.path.join(top, f), root)] = read(os.path.join(top, f))
    return out


@pytest.mark.slow
def test_mount_state_machine(mounted):
    # Every example runs on this one mount (starting a daemon per example would cost more than
    # the example): the function-scoped fixture is shared on purpose, and each example works
    # in a fresh artifact, verified and deleted at its teardown.
    run_state_machine_as_test(
        lambda: MountMachine(mounted),
        settings=settings(max_examples=25, stateful_step_count=15, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                 HealthCheck.too_slow]))


# 6. security -----------------------------------------------------------------------------------
@as_root
def test_other_users_cannot_enter_without_allow_other(mounted):
    m = mounted
    os.mkdir(m.path("sec"))
    put_file(m.path("sec", "staging", "public"), b"public")
    assert committed(m, "sec") == "sec:v0"
    os.chmod(m.path("sec", "staging"), 0o777)                # the modes would let nobody in
    for cwd in (m.mnt, m.path("sec", "staging"), m.path("sec", "v0")):  # entered as root first
        assert in_child(lambda: os.listdir("."), cwd, NOBODY) == ERR("EACCES")
        assert in_child(lambda: os.stat("."), cwd, NOBODY) == ERR("EACCES")
    assert in_child(lambda: read("public"), m.path("sec", "v0"), NOBODY) == ERR("EACCES")
    assert in_child(_create("mine"), m.path("sec", "staging"), NOBODY) == ERR("EACCES")
    assert in_child(lambda: os.mkdir("art"), m.mnt, NOBODY) == ERR("EACCES")
    assert in_child(lambda: os.listdir("."), m.mnt, 0) == OK(["sec"])   # the owner: yes
    assert os.listdir(m.path("sec", "staging")) == ["public"]


@as_root
def test_allow_other_checks_the_stored_modes(mounted_allow_other):
    m = mounted_allow_other
    os.mkdir(m.path("sec"))
    s = m.path("sec", "staging")
    put_file(os.path.join(s, "public"), b"public")
    put_file(os.path.join(s, "secret"), b"secret")
    os.chmod(os.path.join(s, "secret"), 0o600)
    os.makedirs(os.path.join(s, "private", "inner"))
    put_file(os.path.join(s, "private", "file"), b"hidden")
    os.chmod(os.path.join(s, "private"), 0o700)
    os.mkdir(os.path.join(s, "open"), 0o777)
    os.chmod(os.path.join(s, "open"), 0o777)
    assert committed(m, "sec") == "sec:v0"
    for root in (m.path("sec", "v0"), m.path("sec", "latest"), s):
        assert in_child(lambda: read("public"), root, NOBODY) == OK(b"public")
        assert in_child(lambda: read("secret"), root, NOBODY) == ERR("EACCES")
        assert in_child(lambda: os.listdir("private"), root, NOBODY) == ERR("EACCES")
        assert in_child(lambda: os.stat("private/file"), root, NOBODY) == ERR("EACCES")
        assert in_child(lambda: read("private/file"), root, NOBODY) == ERR("EACCES")
        assert in_child(lambda: sorted(os.listdir(".")), root, NOBODY) == OK(
            ["open", "private", "public", "secret"])
    assert in_child(lambda: os.listdir("."), m.mnt, NOBODY) == OK(["sec"])
    # staging: writable only where the modes say so (staging/ itself is 0755, owned by root)
    assert in_child(_create("new"), s, NOBODY) == ERR("EACCES")
    assert in_child(lambda: os.mkdir("newdir"), s, NOBODY) == ERR("EACCES")
    assert in_child(lambda: open("public", "ab").write(b"x"), s, NOBODY) == ERR("EACCES")
    assert in_child(lambda: os.unlink("public"), s, NOBODY) == ERR("EACCES")
    assert in_child(lambda: os.rename("public", "open/p"), s, NOBODY) == ERR("EACCES")
    assert in_child(lambda: os.mkdir("art"), m.mnt, NOBODY) == ERR("EACCES")
    assert in_child(lambda: (_create("open/mine")(), read("open/mine")), s, NOBODY) == OK((None, b""))
    # versions: the kernel refuses by mode before the daemon says EROFS
    assert in_child(lambda: open("public", "ab"), m.path("sec", "v0"), NOBODY) == ERR("EACCES")
    assert in_child(_create("x"), m.path("sec", "v0", "open"), NOBODY) == ERR("EROFS")
    assert cli_json(m.store, "status", "sec") == {"added": ["open/mine"], "modified": [], "deleted": [], "interrupted": []}


@as_root
def test_store_files_are_private(mount_factory, tmp_path):
    m = mount_factory()
    proc = m.start_daemonized()          # a daemonized mount also writes STORE/daemon.log
    assert proc.returncode == 0, proc.stderr
    os.mkdir(m.path("p"))
    s = m.path("p", "staging")
    put_file(os.path.join(s, "f"), b"f")
    os.chmod(os.path.join(s, "f"), 0o666)
    assert committed(m, "p") == "p:v0"
    assert in_child(lambda: os.close(os.open("open", os.O_CREAT | os.O_WRONLY, 0o777)), s, 0,
                    umask=0) == OK()
    with open(os.path.join(s, "f"), "ab") as f:           # copy-up of a 0666 committed file
        f.write(b"more")
    os.mkdir(os.path.join(s, "d"), 0o777)
    kinds = {}
    for top, dirs, files in os.walk(m.store):
        for name in [top] + [os.path.join(top, n) for n in files]:
            st_ = os.lstat(name)
            rel = os.path.relpath(name, m.store)
            kinds[rel] = stat.S_IFMT(st_.st_mode)
            if stat.S_ISDIR(st_.st_mode):
                assert stat.S_IMODE(st_.st_mode) == 0o700, rel
            elif stat.S_ISREG(st_.st_mode):
                assert stat.S_IMODE(st_.st_mode) == 0o600, rel
            else:
                assert stat.S_ISSOCK(st_.st_mode) and st_.st_mode & 0o077 == 0, rel
            assert st_.st_uid == os.getuid(), rel
    for rel in ("daemon.json", "daemon.sock", "daemon.log", "daemon.lock", "data.0/objects/data.mdb", "staging/p"):
        assert rel in kinds, sorted(kinds)
    assert len(staging_files(m, "p")) == 2               # the data files of f and open
    assert in_child(lambda: os.listdir("."), m.store, NOBODY) == ERR("EACCES")
    m.stop()
    m.verify()


def test_writes_through_symlinks_are_the_kernels_never_the_daemons(mounted, tmp_path):
    m = mounted
    os.mkdir(m.path("ln"))
    s = m.path("ln", "staging")
    outside = tmp_path / "outside"
    outside.mkdir()
    up = os.path.relpath(outside, s)                      # ../../.. out of the mount
    assert up.startswith("..")
    os.symlink(str(outside / "abs"), os.path.join(s, "abs"))
    os.symlink(os.path.join(up, "rel"), os.path.join(s, "rel"))
    os.symlink(str(outside), os.path.join(s, "dir"))
    store_before = sorted(os.listdir(os.path.join(m.store, "staging")))
    put_file(os.path.join(s, "abs"), b"via an absolute link")     # open(O_CREAT) follows the link
    put_file(os.path.join(s, "rel"), b"via a relative link")
    os.mkdir(os.path.join(s, "dir", "sub"))
    with open(os.path.join(s, "abs"), "ab") as f:
        f.write(b"!")
    assert read(outside / "abs") == b"via an absolute link!"
    assert read(outside / "rel") == b"via a relative link"
    assert sorted(os.listdir(outside)) == ["abs", "rel", "sub"]
    assert staging_files(m, "ln") == []                   # the daemon wrote no data file
    assert sorted(os.listdir(os.path.join(m.store, "staging"))) == store_before
    assert cli_json(m.store, "status", "ln")["added"] == ["abs", "dir", "rel"]
    assert committed(m, "ln") == "ln:v0"
    for name in ("abs", "rel", "dir"):
        assert os.path.islink(m.path("ln", "v0", name))
    # the data files are named by inode number, never by a user's name
    os.mkdir(os.path.join(s, "..."))
    put_file(os.path.join(s, "...", "-rf ..\\x"), b"x")
    assert all(n.isdigit() for n in staging_files(m, "ln")), staging_files(m, "ln")


BAD_NAMES = ["a/b", "..", ".", "../escape", "/abs", "a b", "x" * 129, "caf\udce9", "a\nb", "a:b:c"]


def test_bad_names_are_rejected_everywhere(mounted, tmp_path, capsys):
    m = mounted
    src = tmp_path / "src"
    src.mkdir()
    put_file(src / "f", b"f")
    m.cli("put", "good", src)
    before = sorted(os.listdir(m.store)), sorted(os.listdir(os.path.join(m.store, "staging")))
    dest = str(tmp_path / "dest")

    def cli(*args) -> int:                               # in-process: 150 runs in a second
        code = artfs.cli.main(["--store", m.store, *map(str, args)])
        out, err = capsys.readouterr()
        assert code != 4 or (len(err.splitlines()) == 1 and not out), (args, out, err)
        return code
    for bad in BAD_NAMES:
        for args in (("put", bad, src), ("commit", bad), ("status", bad), ("reset", bad),
                     ("rm", bad), ("get", f"{bad}:v0", dest), ("verify", bad), ("ls", bad),
                     ("log", bad), ("diff", f"{bad}:v0", "good:v0"), ("alias", f"{bad}:v0", "x"),
                     ("alias", "good:v0", bad), ("alias", "--delete", "good", bad)):
            assert cli(*args) == 4, args
    for reserved in ("v0", "v12", "latest", "staging"):
        assert cli("alias", "good:v0", reserved) == 4
    for args in (("commit", "../x"), ("alias", "good:v0", "a/b"), ("put", "..", src)):
        proc = run_cli(m.store, *args)                    # and the real command, once each
        assert proc.returncode == 4 and proc.stderr.startswith("artfs: error: invalid"), proc
    with artfs.Store(m.store) as store:                     # NUL cannot pass through argv
        for call in (lambda: store.put("a\0b", str(src)), lambda: store.alias("good:v0", "a\0b"),
                     lambda: store.get("a\0b"), lambda: store.delete("good:a\0b")):
            with pytest.raises(InvalidInput):
                call()
    for op, args in (("commit", {"name": "a\0b"}), ("reset", {"name": "../x"}),
                     ("status", {"name": "a/b"}), ("alias", {"name": "good", "ref": "v0", "alias": ".."}),
                     ("delete_version", {"name": "good", "ref": "../v0"})):
        with pytest.raises((InvalidInput, NotFound)):     # the daemon checks on its own too
            control.request(m.store, op, **args)
    # the mount: artifact names are checked by the daemon, file names by the kernel first
    for bad in (b"a b", b"caf\xe9", b"x" * 129, b"-?"):
        assert oserror(os.mkdir, os.path.join(os.fsencode(m.mnt), bad)) == errno.EINVAL, bad
    s = m.path("good", "staging")
    assert oserror(os.mkdir, os.path.join(s, "..")) == errno.EEXIST
    assert oserror(open, os.path.join(s, ".."), "wb") == errno.EISDIR
    assert oserror(os.symlink, "x", os.path.join(s, ".")) == errno.EEXIST
    assert oserror(os.rename, os.path.join(s, "f"), os.path.join(s, "..")) == errno.EBUSY
    with pytest.raises(ValueError):
        open(os.path.join(s, "a\0b"), "wb")
    assert sorted(os.listdir(m.mnt)) == ["good"]
    assert cli_json(m.store, "status", "good") == {"added": [], "modified": [], "deleted": [], "interrupted": []}
    assert (sorted(os.listdir(m.store)), sorted(os.listdir(os.path.join(m.store, "staging")))) == before
    assert not os.path.exists(tmp_path / "dest")
