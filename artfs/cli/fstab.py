"""``artfs STORE MOUNTPOINT -o OPTIONS``: how mount(8) starts a ``fuse.artfs`` filesystem.

For the type ``fuse.artfs`` (an fstab line, ``mount -t fuse.artfs``, or the mount unit systemd
makes of an fstab line at boot), mount(8) finds no ``mount.fuse.artfs`` and runs mount.fuse3,
which runs ``/bin/sh -c "'artfs' 'STORE' 'MOUNTPOINT' '-o' 'OPTIONS'"``: the program named by
the type, found on /bin/sh's default PATH (mount(8) passes no PATH; /usr/local/bin is on it), with
the options mount(8) and mount.fuse3 added (``rw``, ``dev``, ``suid``; ``_netdev``, ``nofail``,
``auto``, ``user`` and ``setuid=`` are taken out by mount.fuse3). ``main`` turns that argv into
``artfs --store STORE mount MOUNTPOINT [--allow-other]``: the command returns once the mount
answers, leaving the daemon running, as mount(8) expects.
"""

from __future__ import annotations

import argparse

from ..errors import UsageError

# Generic mount options with no meaning for artfs (always nodev, nosuid; atimes are not kept).
IGNORED = {"defaults", "rw", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime", "noatime",
           "relatime", "strictatime", "nodiratime", "diratime", "lazytime", "async", "auto", "noauto",
           "user", "nouser", "users", "nofail", "_netdev"}
FLAGS = {"allow_other": "--allow-other"}


def helper_argv(argv: list[str], parser: argparse.ArgumentParser) -> list[str] | None:
    """The ``artfs`` argv for mount(8)'s ``[STORE] MOUNTPOINT -o OPTIONS`` form, or None when ARGV
    is an ordinary command line (its first word is a command or an option, or it has no -o)."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    if not argv or argv[0].startswith("-") or argv[0] in commands or "-o" not in argv:
        return None
    places, options, words = [], [], iter(argv)
    for word in words:
        if word == "-o":
            options += next(words, "").split(",")
        elif word == "-v":
            continue
        elif word.startswith("-"):
            return None
        else:
            places.append(word)
    if len(places) not in (1, 2):
        return None
    flags = []
    for option in filter(None, options):
        if option in FLAGS:
            flags.append(FLAGS[option])
        elif option not in IGNORED and not option.startswith(("x-", "comment=")):
            raise UsageError(f"mount option {option!r} is not supported by artfs "
                             f"(supported: {', '.join(sorted(FLAGS))})")
    store = ["--store", places[0]] if len(places) == 2 else []
    return [*store, "mount", places[-1], *flags]
