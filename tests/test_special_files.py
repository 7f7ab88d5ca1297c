"""FIFOs, unix sockets and device nodes in ``put`` and ``get`` (no mount: real stores, real files).

They are tree entries (kind, mode, device number, mtime) without an object: ``put`` stores them,
``get`` recreates them with mknod(2), device nodes only with CAP_MKNOD (else one warning each and
exit 0, as tar does). The mount's side is in tests/test_posix.py.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys

import pytest

from artfs.catalog.objects import BLOCK, CHAR, FIFO, SOCKET
from artfs.repo.facade import Repo
from artfs.repo.verify import verify
from tests.helpers import cli_json, need_root, run_cli, write

T1 = 1_500_000_000_123_456_789
NULL, LOOP0 = os.makedev(1, 3), os.makedev(7, 0)


def special_tree(d) -> None:
    """D: a file, a FIFO, a unix socket, a character and a block device, each with its own mode
    and mtime, one of them in a subdirectory."""
    write(d / "f", b"x")
    os.mkfifo(d / "fifo", 0o640)
    os.makedirs(d / "sub")
    os.mkfifo(d / "sub" / "fifo2", 0o600)        # equal to ./fifo but for mode: two entries
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(d / "sock"))
    os.mknod(d / "null", stat.S_IFCHR | 0o666, NULL)
    os.mknod(d / "loop", stat.S_IFBLK | 0o660, LOOP0)
    for name, mode in (("fifo", 0o640), ("sub/fifo2", 0o600), ("sock", 0o755), ("null", 0o666),
                       ("loop", 0o660)):
        os.chmod(d / name, mode)        # whatever the umask
        os.utime(d / name, ns=(T1, T1))


def specials(root) -> dict[str, tuple]:
    """relative path -> (file type, mode bits, rdev, mtime) of everything but regular files and
    directories below ROOT."""
    out = {}
    for top, dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(top, name)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                out[os.path.relpath(path, root)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode),
                                                    st.st_rdev, st.st_mtime_ns)
    return out


def test_put_stores_special_files_and_get_recreates_them(tmp_path):
    need_root("making device nodes needs root (CAP_MKNOD)")
    src, store = tmp_path / "src", tmp_path / "store"
    special_tree(src)
    put = run_cli(store, "put", "sp", src, check=True)
    assert "warning" not in put.stderr
    with Repo(str(store)) as repo:
        v0 = repo.resolve("sp", "v0")
        entries = {e.name: e for e in repo.tree(v0.root).entries}
        assert verify(repo).ok
    assert {name: (e.kind, e.mode, e.rdev, e.size, e.mtime_ns) for name, e in entries.items()
            if name not in (b"f", b"sub")} == {
        b"fifo": (FIFO, 0o640, 0, 0, T1), b"sock": (SOCKET, 0o755, 0, 0, T1),
        b"null": (CHAR, 0o666, NULL, 0, T1), b"loop": (BLOCK, 0o660, LOOP0, 0, T1)}
    assert (v0.files, v0.bytes) == (1, 1)            # special files are not files of a version
    expected = specials(src)
    assert len(expected) == 5

    dest = tmp_path / "got"
    got = run_cli(store, "get", "sp:v0", dest, check=True)
    assert "warning" not in got.stderr
    assert specials(dest) == expected
    run_cli(store, "get", "sp:v0/null", tmp_path / "one", check=True)      # one entry
    assert specials(tmp_path)["one"] == expected["null"]
    again = run_cli(store, "put", "sp", src, check=True)                  # unchanged: no new version
    assert run_cli(store, "log", "sp").stdout.count("sp:v1") == 0, again.stdout


def test_get_without_cap_mknod_leaves_devices_out_with_one_warning_each(tmp_path):
    need_root("making device nodes needs root (CAP_MKNOD), dropping it needs root too")
    src, store = tmp_path / "src", tmp_path / "store"
    special_tree(src)
    run_cli(store, "put", "sp", src, check=True)
    dest = tmp_path / "got"
    proc = _without_mknod(store, "get", "sp:v0", dest)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 2 and all("device node" in w for w in warnings), proc.stderr
    assert {w.split("warning: ")[1].split(":")[0] for w in warnings} == {"null", "loop"}
    expected = specials(src)
    del expected["null"], expected["loop"]
    assert specials(dest) == expected
    assert (dest / "f").read_bytes() == b"x"


def _without_mknod(store, *args):
    """``artfs`` as root without CAP_MKNOD (setpriv drops it from the bounding set)."""
    cmd = ["setpriv", "--bounding-set", "-mknod", "--inh-caps", "-mknod",
           sys.executable, "-m", "artfs", "--store", str(store), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("kind", ["fifo", "socket"])
def test_fifos_and_sockets_need_no_root(tmp_path, kind):
    """Also as any user: a FIFO or socket is put and got back (mknod of them needs no privilege)."""
    src, store = tmp_path / "src", tmp_path / "store"
    write(src / "f", b"x")
    if kind == "fifo":
        os.mkfifo(src / "p", 0o604)
    else:
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(src / "p"))
    run_cli(store, "put", "sp", src, check=True)
    proc = _without_mknod(store, "get", "sp:v0", tmp_path / "got") if os.geteuid() == 0 else \
        run_cli(store, "get", "sp:v0", tmp_path / "got")
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr
    assert specials(tmp_path / "got") == specials(src)


def test_listings_name_every_kind(tmp_path):
    """``artfs ls NAME:vN`` and artfs:// describe special files as what they are."""
    import fsspec
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "pipe")
    (src / "f").write_bytes(b"x")
    store = tmp_path / "store"
    run_cli(store, "put", "sp", src, check=True)
    rows = {r["path"]: r for r in cli_json(store, "ls", "sp:v0")}
    assert rows["pipe"]["kind"] == "fifo" and rows["pipe"]["digest"] is None
    assert rows["f"]["kind"] == "file" and rows["f"]["digest"]
    fs = fsspec.filesystem("artfs", store=str(store))
    info = fs.info("sp:v0/pipe")
    assert info["type"] == "other" and "islink" not in info
