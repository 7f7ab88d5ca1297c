"""Who may do what to an artifact: its owner, group and mode, and the caller asking.

An artifact record (catalog/versions.py) holds ``owner`` (uid), ``group`` (gid) and ``mode``
(permission bits, 0o777 at most). A record without them (a store made before artfs had access
control) belongs to the owner and group of the store directory, mode 0755.

The rules (docs/SEMANTICS.md "Access"), for a caller that is neither root nor the owner of the
store directory (who holds the store's files: both may do everything):
  read     r on the artifact (by its owner bits, group bits when the caller is in its group,
           else its other bits): the mount's kernel checks r and x on MNT/NAME itself
  write    w: commit, reset, set or move an unprotected alias
  owner    the owner: rm, chmod, chgrp (to a group the owner is in), protect or unprotect an
           alias, move or delete a protected one
  chown    root only (as chown(2)): a new owner

The *caller* is this process, or, in the mount daemon, the process that asked: ``acting_as``
sets it for one request (a context variable, so trio tasks and their worker threads each see
their own), and the audit log and version records name it (catalog/versions.py whoami).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import grp
import os
import pwd
import stat
from dataclasses import dataclass

from ..errors import InvalidInput, NotPermitted

R, W, X = 4, 2, 1
DEFAULT_MODE = 0o755   # less the creator's umask; records without access fields: this, unmasked


@dataclass(frozen=True)
class Caller:
    uid: int
    gid: int
    groups: frozenset[int] = frozenset()
    umask: int = 0o022
    admin: bool = False   # the store's owner: holds the store's files, so nothing is refused

    @classmethod
    def this_process(cls) -> "Caller":
        return cls(os.getuid(), os.getgid(), frozenset(os.getgroups()), _own_umask())

    @classmethod
    def of_pid(cls, pid: int, uid: int, gid: int, umask: int | None = None) -> "Caller":
        """Another process, by the uid and gid the kernel gave for it; its supplementary groups
        from /proc/PID/status (none if it is gone or unreadable)."""
        groups = frozenset()
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("Groups:"):
                        groups = frozenset(int(g) for g in line.split()[1:])
                        break
        except (OSError, ValueError):
            pass
        return cls(uid, gid, groups, 0o022 if umask is None else umask)

    @property
    def root(self) -> bool:
        """Root or the store's owner: may do everything."""
        return self.uid == 0 or self.admin

    def member(self, gid: int) -> bool:
        return gid == self.gid or gid in self.groups

    @property
    def user(self) -> str:
        return user_name(self.uid)


def _own_umask() -> int:
    """This process's umask, read without changing it (os.umask would, for every thread)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


_acting: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("artfs_caller", default=None)


def acting() -> Caller:
    """Who the current request is for: set by ``acting_as``, else this process."""
    return _acting.get() or Caller.this_process()


def acting_in(store_uid: int) -> Caller:
    """``acting()``, an admin when it is the owner of the store (uid STORE_UID)."""
    caller = acting()
    return dataclasses.replace(caller, admin=True) if caller.uid == store_uid else caller


def delegated() -> bool:
    """Whether the current request is another process's (in the mount daemon)."""
    return _acting.get() is not None


@contextlib.contextmanager
def acting_as(caller: Caller):
    token = _acting.set(caller)
    try:
        yield caller
    finally:
        _acting.reset(token)


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


@dataclass(frozen=True)
class Access:
    uid: int
    gid: int
    mode: int

    @classmethod
    def of(cls, rec: dict, default_owner: tuple[int, int]) -> "Access":
        """The access fields of an artifact record; a record without them has DEFAULT_OWNER's."""
        if "owner" not in rec:
            return cls(*default_owner, DEFAULT_MODE)
        return cls(rec["owner"], rec["group"], rec["mode"])

    @classmethod
    def for_creator(cls, caller: Caller) -> "Access":
        return cls(caller.uid, caller.gid, DEFAULT_MODE & ~caller.umask)

    def fields(self) -> dict:
        return {"owner": self.uid, "group": self.gid, "mode": self.mode}

    def bits(self, caller: Caller) -> int:
        """The rwx bits that apply to CALLER (owner, else group, else other; root: all)."""
        if caller.root:
            return R | W | X
        if caller.uid == self.uid:
            return (self.mode >> 6) & 7
        if caller.member(self.gid):
            return (self.mode >> 3) & 7
        return self.mode & 7

    def describe(self) -> str:
        return f"{user_name(self.uid)}:{group_name(self.gid)} {stat.filemode(stat.S_IFDIR | self.mode)}"


def store_owner(path: str) -> tuple[int, int]:
    """The owner and group of the store directory: those of artifacts made before access control."""
    st = os.stat(path)
    return st.st_uid, st.st_gid


def _refuse(caller: Caller, name: str, what: str, needs: str, access: Access) -> NotPermitted:
    return NotPermitted(f"{caller.user} (uid {caller.uid}) may not {what} artifact {name}: "
                        f"{needs} (it is {access.describe()})")


def require(access: Access, caller: Caller, want: int, name: str, what: str) -> None:
    """NotPermitted unless CALLER has the WANT bits (R, W) on the artifact."""
    if access.bits(caller) & want != want:
        needs = "needs " + "".join(c for bit, c in ((R, "read"), (W, "write")) if want & bit) + " permission"
        raise _refuse(caller, name, what, needs, access)


def require_owner(access: Access, caller: Caller, name: str, what: str) -> None:
    if not (caller.root or caller.uid == access.uid):
        raise _refuse(caller, name, what, "only its owner or root may", access)


def parse_mode(text: str) -> int:
    """An octal mode (750, 0750; at most 0777: setuid, setgid and sticky mean nothing here)."""
    try:
        mode = int(text, 8)
    except (TypeError, ValueError):
        mode = -1
    if not 0 <= mode <= 0o777:
        raise InvalidInput(f"invalid mode {text!r}: give octal permission bits, 0 to 777 (e.g. 750)")
    return mode


def changed(access: Access, caller: Caller, name: str, *, mode: int | None = None,
            uid: int | None = None, gid: int | None = None) -> Access:
    """ACCESS with MODE, owner UID and group GID changed (None: kept), as CALLER may (chmod(2),
    chown(2) rules): the owner or root chmods and chgrps (the owner only to a group it is in);
    only root gives an artifact another owner."""
    if mode is not None and not 0 <= mode <= 0o777:
        raise InvalidInput(f"invalid mode {mode:o}: give permission bits, 0 to 777")
    for value, what in ((uid, "uid"), (gid, "gid")):
        if value is not None and not 0 <= value < 2**32 - 1:
            raise InvalidInput(f"invalid {what} {value}")
    if uid is not None and uid != access.uid and not caller.root:
        raise _refuse(caller, name, "chown", "only root gives an artifact another owner", access)
    if mode is not None or (gid is not None and gid != access.gid) or uid is not None:
        require_owner(access, caller, name, "chmod" if mode is not None else "chgrp")
    if gid is not None and gid != access.gid and not (caller.root or caller.member(gid)):
        raise _refuse(caller, name, f"chgrp to {group_name(gid)}",
                      "the owner may give it only a group it is in", access)
    return Access(access.uid if uid is None else uid, access.gid if gid is None else gid,
                  access.mode if mode is None else mode)


def uid_of(user: int | str) -> int:
    """A uid from a uid or a user name (InvalidInput if there is no such user)."""
    return _id_of(user, lambda n: pwd.getpwnam(n).pw_uid, "user")


def gid_of(group: int | str) -> int:
    """A gid from a gid or a group name (InvalidInput if there is no such group)."""
    return _id_of(group, lambda n: grp.getgrnam(n).gr_gid, "group")


def _id_of(value: int | str, by_name, what: str) -> int:
    if isinstance(value, int) or value.isdigit():
        return int(value)
    try:
        return by_name(value)
    except KeyError:
        raise InvalidInput(f"no {what} named {value!r}") from None
