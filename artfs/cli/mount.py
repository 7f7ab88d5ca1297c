"""CLI commands of the mount: mount, unmount, commit, status, reset.

commit, status and reset are artfs.Store's: they go through the store's daemon when one is running
(it refreshes the mount and refuses a commit while staging files are open for writing), else they
work on the store directly, exactly like the other commands.
"""

from __future__ import annotations

import json
import os
import sys

from ..errors import MountError, UsageError
from .output import add_version_options, emit_json, json_object, print_version
from .progress import progress_bar

_STATUS_MARKS = (("A", "added"), ("M", "modified"), ("D", "deleted"), ("!", "interrupted"))


def _daemon():
    """artfs.mount.daemon: pyfuse3 and trio are imported only by the commands that need them, and
    are the optional ``mount`` extra (pyfuse3 builds from source)."""
    try:
        from ..mount import daemon
    except ModuleNotFoundError as e:
        if e.name not in ("pyfuse3", "trio"):
            raise
        raise MountError(f"the mount needs {e.name}: pip install 'artfs[mount]' "
                         "(needs libfuse3-dev, pkg-config, gcc)") from None
    return daemon


def _no_store(path: str) -> bool:
    """Whether PATH holds no store yet: absent or an empty directory."""
    return not os.path.exists(path) or (os.path.isdir(path) and not os.listdir(path))


def _lazy(daemon, args):
    """The remote side of a mount (docs/REMOTE.md "Lazy mount"): with ``--remote URL`` a store
    without remotes is bound to it as origin; with ``--remote`` its metadata is pulled before the
    mount answers; with any remote bound, new versions are pulled every ``--refresh`` seconds."""
    from ..api.store import Store
    from ..catalog.db import default_store_path
    from ..remote.sync import Remote, pull
    from ..store.cache import parse_size
    try:
        cache_size = parse_size(args.cache_size) if args.cache_size else None
    except ValueError:
        raise UsageError(f"--cache-size {args.cache_size!r} is not a size (512M, 20G, 1T, bytes)") from None
    if args.refresh <= 0:
        raise UsageError("--refresh needs a positive number of seconds")
    name = args.remote or "origin"
    url = args.remote if args.remote and args.remote.startswith("s3://") else None
    if url and _no_store(args.store or default_store_path()):
        # a clone: an encrypted remote makes an encrypted store with its key (remote/keys.py)
        with Store.clone(url, args.store, endpoint=args.endpoint, region=args.region,
                         allow_http=args.allow_http, ca_bundle=args.ca_bundle) as store:
            name, bound = "origin", store.remotes()
    else:
        with Store(args.store) as store:
            if url:
                name = "origin"
                if name not in store.remotes():
                    store.remote_add(name, url, endpoint=args.endpoint, region=args.region,
                                     allow_http=args.allow_http, ca_bundle=args.ca_bundle)
            bound = store.remotes()
            if args.remote and name not in bound:
                raise UsageError(f"no remote named {name!r}: artfs remote add it, or give --remote s3://...")
            if args.remote:
                store.pull(remote=name)
    if name not in bound:
        name = next(iter(sorted(bound)), None)
    if name is None:
        return daemon.Lazy(cache_size)
    opened = {}

    def refresh(repo) -> list[str]:   # a daemon worker thread
        """Pull the artifacts whose remote version numbers this store lacks: one LIST of the
        remote's version records, and their records only when something is new."""
        if "remote" not in opened:
            opened["remote"] = Remote.bound(repo, name)
        remote = opened["remote"]
        numbers = remote.catalog.all_numbers()                 # one LIST of versions/
        local = set(repo.artifacts())
        changed = [n for n, theirs in sorted(numbers.items())
                   if n not in local or theirs - {v.number for v in repo.versions(n)}]
        return [n for n in changed if pull(repo, remote, n)["versions"]]
    return daemon.Lazy(cache_size, refresh, args.refresh)


def cmd_mount(args) -> int:
    daemon = _daemon()
    return daemon.mount(args.store, args.mountpoint, foreground=args.foreground,
                        allow_other=args.allow_other, record_use=args.record_use,
                        nonempty=args.nonempty, lazy=_lazy(daemon, args))


def cmd_unmount(args) -> int:
    if _daemon().unmount(args.store, args.mountpoint):
        print(f"{args.mountpoint} was a dead mount (its daemon died): unmounted it")
    return 0


def cmd_commit(store, args) -> int:
    with progress_bar(f"commit {args.name}", store.staged_bytes(args.name) if sys.stderr.isatty() else None) as p:
        v, created = store.commit_ex(args.name, aliases=args.alias, message=args.message,
                                     metadata=json_object(args.metadata), type=args.type, ttl=args.ttl,
                                     progress=p, force=args.force)
    if v is None:
        print(f"artfs: nothing to commit: {args.name} has no versions and an empty staging",
              file=sys.stderr)
        if args.json:
            emit_json({"name": args.name, "version": None, "created": False, "aliases": []})
        return 0
    if not created:
        moved = "".join(f"; alias {a} now points at {v.version}" for a in args.alias)
        print(f"artfs: no changes: staging equals {v.name}:{v.version}; no version made{moved}",
              file=sys.stderr)
    print_version(v, created, args.json)
    return 0


def cmd_status(store, args) -> int:
    status = store.status(args.name)
    if args.json:
        json.dump(status, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for mark, key in _STATUS_MARKS:
        for path in status[key]:
            print(f"{mark} {path}")
    if not any(status[key] for _, key in _STATUS_MARKS):
        print(f"artfs: no changes in the staging of {args.name}", file=sys.stderr)
    if status["interrupted"]:
        print("artfs: ! files were open for writing when their mount died and may be incomplete: "
              "check them, then commit --force, or reset", file=sys.stderr)
    return 0


def cmd_reset(store, args) -> int:
    store.reset(args.name)
    print(f"reset the staging of {args.name} to its latest version")
    return 0


def register(sub) -> None:
    c = sub.add_parser("mount", help="serve the store as a filesystem at MOUNTPOINT (daemonizes)",
                       description="Serve the store as a FUSE filesystem at MOUNTPOINT: NAME/vN/ "
                       "read-only versions, NAME/latest and aliases as symlinks, NAME/staging/ "
                       "writable. Returns once the mount answers; the daemon logs to "
                       "STORE/daemon.log. Needs the mount extra: pip install 'artfs[mount]'.")
    c.add_argument("mountpoint", metavar="MOUNTPOINT", help="an existing, empty directory")
    c.add_argument("--nonempty", action="store_true",
                   help="mount over a directory that holds files (hidden while mounted)")
    c.add_argument("-f", "--foreground", action="store_true",
                   help="stay attached and log to stderr (tests, systemd)")
    c.add_argument("--allow-other", action="store_true",
                   help="let other users in; the kernel then checks permissions (default_permissions)")
    c.add_argument("--record-use", action="store_true",
                   help="record the first open of each version by each process as a consumer "
                   "(pid, argv, uid; see artfs lineage)")
    c.add_argument("--remote", metavar="NAME|URL", help="pull the metadata of remote NAME (bound) "
                   "before mounting; an s3:// URL is bound as origin first. File data is fetched on "
                   "first read either way (docs/REMOTE.md, Lazy mount)")
    c.add_argument("--endpoint", help="with --remote URL: S3 endpoint URL")
    c.add_argument("--region", help="with --remote URL: bucket region")
    c.add_argument("--ca-bundle", metavar="FILE", help="with --remote URL: PEM file of the CA to trust "
                   "for an https endpoint (a private CA); kept by path")
    c.add_argument("--allow-http", action="store_true", help="with --remote URL: allow a plain-http endpoint")
    c.add_argument("--cache-size", metavar="SIZE", help="bound of the chunk cache of remote data "
                   "(512M, 20G, 1T; default: kept from the last mount, else 20%% of the free disk)")
    c.add_argument("--refresh", type=float, default=5.0, metavar="SECONDS",
                   help="pull new versions of the remote this often (default 5)")
    c.set_defaults(func=cmd_mount, no_store=True)

    c = sub.add_parser("unmount", help="unmount MOUNTPOINT and wait for its daemon to exit",
                       description="Unmount MOUNTPOINT cleanly (refused while busy) and wait until "
                       "its daemon has exited; fusermount3 -u works too. A dead mount (its daemon was "
                       "killed) is cleaned up, lazily if busy. A busy mount exits 5.")
    c.add_argument("mountpoint", metavar="MOUNTPOINT", help="where the store is mounted")
    c.set_defaults(func=cmd_unmount, no_store=True)

    c = sub.add_parser("commit", help="turn the staging of NAME into its next version",
                       description="Turn what MOUNT/NAME/staging/ holds into the next version of "
                       "NAME and print NAME:vN (through the daemon when mounted, which refuses "
                       "while staging files are open for writing). A staging equal to latest "
                       "makes no version.")
    c.add_argument("name", metavar="NAME", help="the artifact whose staging to commit")
    c.add_argument("-t", "--type", help="the artifact's type: must match it, except for an artifact "
                   "that never had a version (made by mkdir), which takes it")
    add_version_options(c)
    c.add_argument("--force", action="store_true", help="commit files that were open for writing "
                   "when their mount died (artfs status marks them '!'; they may be incomplete)")
    c.set_defaults(func=cmd_commit, creates_store=True)

    c = sub.add_parser("status", help="what the staging of NAME added, modified and deleted",
                       description="The paths the staging of NAME added (A), modified (M) and "
                       "deleted (D) against the version it started from, and (!) files that were "
                       "open for writing when their mount died: they may be incomplete, and "
                       "commit refuses them without --force.")
    c.add_argument("name", metavar="NAME", help="the artifact")
    c.add_argument("--json", action="store_true", help="print the result as JSON, for scripts")
    c.set_defaults(func=cmd_status)

    c = sub.add_parser("reset", help="discard every change in the staging of NAME",
                       description="Discard every change in the staging of NAME: it shows the "
                       "latest version again.")
    c.add_argument("name", metavar="NAME", help="the artifact")
    c.set_defaults(func=cmd_reset)
