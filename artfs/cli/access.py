"""``artfs chmod MODE NAME`` and ``artfs chown [USER][:GROUP] NAME``: who may use an artifact
(catalog/access.py; the mount's kernel enforces it with --allow-other, the daemon on its socket)."""

from __future__ import annotations

import stat

from ..errors import InvalidInput
from .output import emit_json


def _show(name: str, row: dict, json: bool) -> int:
    if json:
        emit_json({"name": name, **row})
    else:
        print(f"{name}: {row['user']}:{row['group_name']} "
              f"{stat.filemode(stat.S_IFDIR | int(row['mode'], 8))} ({row['mode']})")
    return 0


def cmd_chmod(store, args) -> int:
    return _show(args.name, store.chmod(args.name, args.mode), args.json)


def cmd_chown(store, args) -> int:
    user, sep, group = args.owner.partition(":")
    if not user and not group:
        raise InvalidInput(f"{args.owner!r}: give USER, USER:GROUP or :GROUP")
    return _show(args.name, store.chown(args.name, user or None, group or None), args.json)


def register(sub) -> None:
    c = sub.add_parser("chmod", help="set who may read (r) and write (w) an artifact: its mode",
                       description="Set artifact NAME's mode (octal, e.g. 750): r lets a user list "
                       "and read its versions (with x, through the mount), w commit, reset and set "
                       "aliases; only its owner or root may rm it, chmod it or change protected "
                       "aliases. Its owner or root may chmod. Audited (artfs log: artifact.chmod).")
    c.add_argument("mode", metavar="MODE", help="octal permission bits, 0 to 777")
    c.add_argument("name", metavar="NAME", help="the artifact")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.set_defaults(func=cmd_chmod)

    c = sub.add_parser("chown", help="give an artifact another owner and/or group",
                       description="Give artifact NAME the owner USER (root only) and/or the group "
                       "GROUP (its owner may choose a group it is in); names or numbers. Audited "
                       "(artfs log: artifact.chown).")
    c.add_argument("owner", metavar="[USER][:GROUP]", help="USER, USER:GROUP or :GROUP")
    c.add_argument("name", metavar="NAME", help="the artifact")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.set_defaults(func=cmd_chown)
