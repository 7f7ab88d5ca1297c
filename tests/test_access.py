"""Access control: each artifact's owner, group and mode, enforced by the kernel on a mount with
--allow-other and by the daemon on its control socket (docs/SEMANTICS.md "Access").

Other users are real: uid 65534 (nobody) through ``setpriv --reuid --regid --clear-groups`` (a
fresh process: the kernel sees nobody's credentials on every path and on the socket). The store
and mount point live in a directory every user can traverse (pytest's tmp_path is root's only).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

import artfs
from artfs.repo.facade import Repo
from tests.helpers import put_file, run_cli

NOBODY = 65534
ROOT = os.path.join(os.path.dirname(__file__), os.pardir)
as_root = pytest.mark.root("acting as uid 65534 (nobody) needs root")


def as_user(uid: int, *args: str, groups=()) -> subprocess.CompletedProcess:
    """ARGS run as UID (gid UID) with exactly the supplementary GROUPS."""
    member = [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", *member, *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def as_nobody(*args: str) -> subprocess.CompletedProcess:
    return as_user(NOBODY, *args)


def user_cli(uid: int, m, *args, groups=()) -> subprocess.CompletedProcess:
    return as_user(uid, sys.executable, "-m", "artfs", "--store", m.store, *map(str, args), groups=groups)


def nobody_cli(m, *args) -> subprocess.CompletedProcess:
    return user_cli(NOBODY, m, *args)


def user_does(uid: int, code: str, groups=()) -> str:
    """Run python CODE (an expression) as UID: 'ok <repr of its value>' or the errno's name."""
    script = ("import errno, os, sys\n"
              f"try: print('ok', repr({code}))\n"
              "except OSError as e: print(errno.errorcode[e.errno])\n")
    proc = as_user(uid, sys.executable, "-c", script, groups=groups)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def nobody_does(code: str) -> str:
    return user_does(NOBODY, code)


def refused(proc: subprocess.CompletedProcess, *words: str) -> None:
    """Exit 10 (NotPermitted) with one clear line on stderr naming WORDS."""
    assert proc.returncode == 10, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("artfs: error: "), proc.stderr
    assert all(w in lines[0] for w in words), (words, lines[0])


def _artifact(m, name: str) -> dict:
    with artfs.Store(m.store, create=False) as s:
        return s.artifact(name)


def events(m, name: str) -> list[tuple[str, int]]:
    log = json.loads(run_cli(m.store, "log", name, "--json", check=True).stdout)
    return [(e["action"], e["uid"]) for e in log]


@pytest.fixture
def shared_dir():
    """A directory every user may traverse (0711), removed at the end (after the mounts in it:
    request it before mount_factory)."""
    d = tempfile.mkdtemp(prefix="artfs-access-")
    os.chmod(d, 0o711)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def shared(shared_dir, mount_factory):
    """A mount with --allow-other of a store in SHARED_DIR, with artifacts ``secret`` and
    ``public`` (v0: f = b"data", mode 0644), both root's, 0755."""
    m = mount_factory(store=os.path.join(shared_dir, "store"), mnt=os.path.join(shared_dir, "mnt"),
                      allow_other=True).start()
    for name in ("secret", "public"):
        os.mkdir(m.path(name))
        put_file(m.path(name, "staging", "f"), b"data")
        m.cli("commit", name)
    yield m
    m.stop()
    m.verify()


# without a mount ------------------------------------------------------------------------------
def test_artifacts_have_an_owner_group_and_mode_changed_by_chmod_and_chown(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    put_file(src / "f", b"f")
    store = tmp_path / "store"
    old = os.umask(0o027)
    try:
        with artfs.Store(str(store)) as s:
            s.put("a", str(src))
            info = s.artifact("a")
    finally:
        os.umask(old)
    assert (info["owner"], info["group"], info["mode"]) == (os.getuid(), os.getgid(), "0750")
    proc = run_cli(store, "chmod", "700", "a", "--json", check=True)
    assert json.loads(proc.stdout)["mode"] == "0700"
    owner = f"{pwd.getpwuid(os.getuid()).pw_name}:{grp.getgrgid(os.getgid()).gr_name}"
    assert run_cli(store, "chmod", "700", "a").stdout == f"a: {owner} drwx------ (0700)\n"
    for bad in ("1755", "9", "rwx", "-1"):
        proc = run_cli(store, "chmod", bad, "a")
        assert proc.returncode == 4 and len(proc.stderr.splitlines()) == 1, proc.stderr
    proc = run_cli(store, "chown", "no-such-user-here", "a")
    assert proc.returncode == 4 and "no user named" in proc.stderr
    assert run_cli(store, "chmod", "700", "missing").returncode == 3
    run_cli(store, "chown", f":{os.getgid()}", "a", check=True)
    log = json.loads(run_cli(store, "log", "a", "--json", check=True).stdout)
    assert [e["action"] for e in log] == ["artifact.create", "version.create", "artifact.chmod"]
    assert log[0]["mode"] == "0750" and log[2]["mode"] == "0700" and log[2]["previous"] == "0750"
    last = run_cli(store, "log", "a", check=True).stdout.splitlines()[-1]
    assert "artifact.chmod" in last and last.endswith(" a  mode=0700 previous=0750"), last


def test_artifacts_recorded_before_access_control_belong_to_the_store_owner(tmp_path):
    from artfs.catalog.access import Access
    src = tmp_path / "src"
    src.mkdir()
    put_file(src / "f", b"f")
    store = str(tmp_path / "store")
    with Repo(store) as repo:
        repo.put("old", str(src))
        for key in ("owner", "group", "mode"):   # a record as artfs wrote it before
            repo.db.write(lambda txn: repo.catalog.set_artifact_field(txn, "old", key, None))
        st = os.stat(store)
        assert repo.access("old") == Access(st.st_uid, st.st_gid, 0o755)


# the mount, as another user -------------------------------------------------------------------
@as_root
@pytest.mark.fuse
def test_users_without_r_and_x_cannot_list_or_read_any_version(shared):
    m = shared
    m.cli("alias", "secret:v0", "best")
    readable = [m.path("public", "v0", "f"), m.path("public", "latest", "f")]
    hidden = [m.path("secret", p, "f") for p in ("v0", "latest", "best", "staging")]
    assert nobody_does(f"open({readable[0]!r}, 'rb').read()") == "ok b'data'"
    assert nobody_does(f"open({hidden[0]!r}, 'rb').read()") == "ok b'data'"   # 0755 by default
    run_cli(m.store, "chmod", "700", "secret", check=True)     # through the daemon: effective at once
    assert stat.S_IMODE(os.stat(m.path("secret")).st_mode) == 0o700
    for path in hidden:
        assert nobody_does(f"open({path!r}, 'rb').read()") == "EACCES", path
        assert nobody_does(f"os.stat({path!r})") == "EACCES", path
    for d in ("secret", "secret/v0", "secret/staging"):
        assert nobody_does(f"os.listdir({m.path(d)!r})") == "EACCES", d
    assert nobody_does(f"os.readlink({m.path('secret', 'latest')!r})") == "EACCES"
    for path in readable:
        assert nobody_does(f"open({path!r}, 'rb').read()") == "ok b'data'"
    assert nobody_does(f"sorted(os.listdir({m.mnt!r}))") == "ok ['public', 'secret']"
    os.chmod(m.path("secret"), 0o750)                            # through the mount, by its owner
    assert nobody_does(f"open({hidden[0]!r}, 'rb').read()") == "EACCES"   # nobody is "other"
    os.chmod(m.path("secret"), 0o755)
    assert nobody_does(f"open({hidden[0]!r}, 'rb').read()") == "ok b'data'"
    assert _artifact(m, "secret")["mode"] == "0755"
    assert events(m, "secret")[-4:] == [("alias.set", 0), ("artifact.chmod", 0), ("artifact.chmod", 0),
                                        ("artifact.chmod", 0)]


@as_root
@pytest.mark.fuse
def test_only_the_owner_or_root_changes_access_through_the_mount(shared):
    m = shared
    art = m.path("public")
    assert nobody_does(f"os.chmod({art!r}, 0o777)") == "EPERM"
    assert nobody_does(f"os.chown({art!r}, {NOBODY}, {NOBODY})") == "EPERM"
    os.chown(art, NOBODY, NOBODY)                                # root gives it away
    assert (os.stat(art).st_uid, os.stat(art).st_gid) == (NOBODY, NOBODY)
    assert nobody_does(f"os.chmod({art!r}, 0o700)") == "ok None"
    assert nobody_does(f"os.chown({art!r}, 0, -1)") == "EPERM"   # only root gives it to another
    assert nobody_does(f"os.chown({art!r}, -1, 0)") == "EPERM"   # nor to a group it is not in
    assert nobody_does(f"os.utime({art!r})") == "EROFS"
    info = _artifact(m, "public")
    assert (info["owner"], info["group"], info["mode"], info["user"]) == (NOBODY, NOBODY, "0700", "nobody")
    assert events(m, "public")[-2:] == [("artifact.chown", 0), ("artifact.chmod", NOBODY)]
    assert os.listdir(m.path("public", "v0")) == ["f"]          # root still reads it
    # a new artifact belongs to its creator, its mode the mkdir mode (umask applied) within 0755
    old = os.umask(0o077)
    try:
        os.mkdir(m.path("mine"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(m.path("mine")).st_mode) == 0o700
    assert _artifact(m, "mine")["mode"] == "0700"


@as_root
@pytest.mark.fuse
def test_the_control_socket_authorizes_each_request_by_the_callers_uid(shared):
    m = shared
    assert stat.S_IMODE(os.stat(m.store).st_mode) == 0o711       # traversable, not listable
    assert stat.S_IMODE(os.stat(os.path.join(m.store, "daemon.sock")).st_mode) == 0o666
    put_file(m.path("secret", "staging", "g"), b"new")
    # 0755: nobody reads but may not write, delete, chmod, nor run store-wide operations
    refused(nobody_cli(m, "commit", "secret"), "nobody", "commit", "secret", "write permission")
    refused(nobody_cli(m, "reset", "secret"), "write permission")
    refused(nobody_cli(m, "alias", "secret:v0", "best"), "write permission")
    refused(nobody_cli(m, "rm", "secret:v0", "--force"), "only its owner or root")
    refused(nobody_cli(m, "rm", "secret", "--force"), "only its owner or root")
    refused(nobody_cli(m, "chmod", "777", "secret"), "only its owner or root")
    refused(nobody_cli(m, "chown", "nobody", "secret"), "only root")
    refused(nobody_cli(m, "gc"), "only root and the store's owner")
    refused(nobody_cli(m, "compact"), "private to its owner")     # needs the store's files
    refused(nobody_cli(m, "ls"), "private to its owner", m.mnt)
    assert nobody_cli(m, "status", "secret").stdout == "A g\n"
    run_cli(m.store, "chmod", "700", "secret", check=True)
    refused(nobody_cli(m, "status", "secret"), "read permission")
    # writers (here: others may write) commit, reset and set plain aliases - as themselves
    run_cli(m.store, "chmod", "777", "secret", check=True)
    run_cli(m.store, "alias", "--protect", "secret:v0", "prod", check=True)
    proc = nobody_cli(m, "commit", "secret", "-m", "by nobody")
    assert proc.returncode == 0 and proc.stdout == "secret:v1\n", proc.stderr
    assert nobody_cli(m, "alias", "secret:v1", "best").stdout == "secret:best -> v1\n"
    refused(nobody_cli(m, "alias", "--force", "secret:v1", "prod"), "protected alias prod")
    refused(nobody_cli(m, "alias", "--delete", "secret", "prod"), "protected alias prod")
    refused(nobody_cli(m, "rm", "secret:v0", "--force"), "only its owner or root")
    with artfs.Store(m.store, create=False) as s:
        v1 = s.get("secret:v1")
        assert (v1._info.author, v1._info.uid, v1.producer["uid"]) == ("nobody", NOBODY, NOBODY)
        assert s.get("secret:prod").version == "v0"
    # the owner may delete and chmod
    run_cli(m.store, "chown", "nobody", "secret", check=True)
    assert nobody_cli(m, "rm", "secret:v0", "--force").stdout == "deleted secret:v0\n"
    assert nobody_cli(m, "chmod", "700", "secret").returncode == 0
    assert [e for e in events(m, "secret") if e[1] == NOBODY] == [
        ("version.create", NOBODY), ("alias.set", NOBODY), ("version.delete", NOBODY),
        ("artifact.chmod", NOBODY)]
    m.stop()
    assert stat.S_IMODE(os.stat(m.store).st_mode) == 0o700       # private again once unmounted


@as_root
@pytest.mark.fuse
def test_group_members_get_the_group_bits_and_a_third_user_owns(shared):
    m = shared
    owner, group = 4242, 4343           # a third uid and a group: no passwd entries needed
    run_cli(m.store, "chown", f"{owner}:{group}", "secret", check=True)
    run_cli(m.store, "chmod", "770", "secret", check=True)
    put_file(m.path("secret", "staging", "g"), b"new")
    f = m.path("secret", "v0", "f")
    in_group = dict(groups=(group,))
    assert nobody_does(f"open({f!r}, 'rb').read()") == "EACCES"
    assert user_does(NOBODY, f"open({f!r}, 'rb').read()", **in_group) == "ok b'data'"
    refused(nobody_cli(m, "commit", "secret"), "write permission", "4242:4343 drwxrwx---")
    assert user_cli(NOBODY, m, "commit", "secret", **in_group).stdout == "secret:v1\n"   # w by group
    refused(user_cli(NOBODY, m, "rm", "secret:v0", **in_group), "only its owner or root")
    refused(user_cli(NOBODY, m, "chmod", "777", "secret", **in_group), "only its owner or root")
    assert user_does(owner, f"os.chmod({m.path('secret')!r}, 0o750)") == "ok None"   # the owner
    refused(user_cli(owner, m, "chown", f":{NOBODY}", "secret"), "a group it is in")
    refused(user_cli(NOBODY, m, "reset", "secret", **in_group), "write permission")   # r-x now
    assert user_does(NOBODY, f"open({f!r}, 'rb').read()", **in_group) == "ok b'data'"
    assert user_cli(owner, m, "rm", "secret", "--force").stdout == "deleted secret\n"
    assert sorted(os.listdir(m.mnt)) == ["public"]
    log = json.loads(run_cli(m.store, "log", "--json", check=True).stdout)
    assert [(e["action"], e["uid"], e["user"]) for e in log if e["artifact"] == "secret"][-4:] == [
        ("artifact.chmod", 0, "root"), ("version.create", NOBODY, "nobody"),
        ("artifact.chmod", owner, str(owner)), ("artifact.delete", owner, str(owner))]


@as_root
@pytest.mark.fuse
def test_staging_belongs_to_the_artifact_so_its_writers_create_at_its_top(shared):
    """staging/ shows the artifact's owner, group and mode (the kernel checks them for a create
    at its top), and chmod/chown of staging/ change the artifact's, as on MOUNT/NAME."""
    m = shared
    owner, group = 4242, 4343
    run_cli(m.store, "chown", f"{owner}:{group}", "secret", check=True)
    run_cli(m.store, "chmod", "770", "secret", check=True)
    staging = m.path("secret", "staging")
    st = os.stat(staging)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (owner, group, 0o770)
    new = os.path.join(staging, "by-member")
    assert user_does(NOBODY, f"open({new!r}, 'wb').write(b'x')", groups=(group,)) == "ok 1"
    assert nobody_does(f"open({new + '2'!r}, 'wb').write(b'x')") == "EACCES"
    assert user_cli(NOBODY, m, "commit", "secret", groups=(group,)).stdout == "secret:v1\n"
    assert user_does(owner, f"os.chmod({staging!r}, 0o750)") == "ok None"
    assert _artifact(m, "secret")["mode"] == "0750"
    assert user_does(NOBODY, f"open({new + '3'!r}, 'wb').write(b'x')", groups=(group,)) == "EACCES"
    assert user_does(NOBODY, f"os.chmod({staging!r}, 0o777)", groups=(group,)) == "EPERM"
    run_cli(m.store, "chmod", "770", "secret", check=True)      # the CLI: staging/ follows at once
    assert stat.S_IMODE(os.stat(staging).st_mode) == 0o770
    assert user_does(NOBODY, f"open({new + '3'!r}, 'wb').write(b'x')", groups=(group,)) == "ok 1"


@as_root
@pytest.mark.fuse
def test_without_allow_other_the_socket_stays_private(shared_dir, mount_factory):
    m = mount_factory(store=os.path.join(shared_dir, "store"), mnt=os.path.join(shared_dir, "mnt")).start()
    os.mkdir(m.path("a"))
    assert stat.S_IMODE(os.stat(m.store).st_mode) == 0o700
    assert os.stat(os.path.join(m.store, "daemon.sock")).st_mode & 0o077 == 0
    proc = nobody_cli(m, "commit", "a")
    assert proc.returncode == 6 and "Permission denied" in proc.stderr, proc.stderr
    script = ("import socket\ns = socket.socket(socket.AF_UNIX)\n"
              f"s.connect({os.path.join(m.store, 'daemon.sock')!r})")
    assert "PermissionError" in as_nobody(sys.executable, "-c", script).stderr


@pytest.mark.fuse
def test_a_silent_control_client_is_dropped(mounted_allow_other, monkeypatch):
    """With --allow-other any local user can connect to the control socket: one that never
    finishes its request is disconnected after ARTFS_REQUEST_TIMEOUT, and others are served."""
    import socket
    m = mounted_allow_other
    m.stop()
    monkeypatch.setenv("ARTFS_REQUEST_TIMEOUT", "1")
    m.start()
    os.mkdir(m.path("a"))
    silent = socket.socket(socket.AF_UNIX)
    silent.settimeout(60)
    try:
        silent.connect(os.path.join(m.store, "daemon.sock"))
        silent.sendall(b'{"op": "status"')                 # no newline: never a whole request
        assert run_cli(m.store, "status", "a", check=True).stdout == ""   # served meanwhile
        assert silent.recv(100) == b""                     # then dropped, without an answer
    finally:
        silent.close()
    with open(m.log) as f:
        assert "sent no complete request" in f.read()
