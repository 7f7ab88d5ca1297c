"""The ``artfs`` command: argument parsing, output, progress and exit codes.

Every failure is one line on stderr (``artfs: error: ...``) and the exit code of its error class
(see errors.py); results go to stdout, with ``--json`` for scripts.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import access as cli_access
from . import cache as cli_cache, completion, fstab
from . import files as cli_files
from . import key as cli_key
from . import lineage as cli_lineage
from . import metadata as cli_metadata
from . import mount as cli_mount
from . import remote as cli_remote
from . import retention as cli_retention
from .. import __version__
from ..api.store import Store
from ..errors import ArtfsError, Conflict, InvalidInput, NotFound, UsageError
from ..names import parse_ref
from .output import (add_version_options, emit_json as _emit_json, human as _human, json_object,
                     print_version, table as _table, when as _when)
from .progress import input_bytes, progress_bar


def _version_row(v, protected=()) -> dict:
    return {"version": v.version, "aliases": v.aliases, "digest": v.digest, "type": v.type,
            "message": v.message, "metadata": v.metadata, "created": v.created,
            "files": v.file_count, "bytes": v.size, "expires": v.expires,
            "protected": [a for a in v.aliases if a in protected]}


def _aliases_cell(row: dict) -> str:
    return ",".join(a + ("(protected)" if a in row["protected"] else "") for a in row["aliases"]) or "-"


# commands --------------------------------------------------------------------------------------
def cmd_put(store: Store, args) -> int:
    metadata = json_object(args.metadata)
    path, reference = cli_files.put_source(args)
    total = input_bytes(path) if sys.stderr.isatty() and not reference else None
    with progress_bar(f"put {args.name}", total) as p:
        v, created = store.put_ex(args.name, path, type=args.type, aliases=args.alias,
                                  message=args.message, metadata=metadata, ttl=args.ttl, progress=p,
                                  **reference)
    if not created:
        print(f"artfs: no changes: content equals {v.name}:{v.version}; no version made", file=sys.stderr)
    print_version(v, created, args.json)
    return 0


def cmd_init(store: Store, args) -> int:
    print(store.path)
    return 0


def cmd_ls(store: Store, args) -> int:
    if args.name is not None and (args.path is not None or ":" in args.name):
        if args.where or args.remote:
            raise UsageError("--where and --remote list versions (artfs ls NAME ...), not files")
        return cli_files.cmd_ls_files(store, args)
    if args.remote and args.where:
        raise UsageError("--where filters the versions of this store, not of a remote")
    remote = store.remote_versions(args.remote, args.name) if args.remote else None
    if args.name is None:
        if args.where:
            raise UsageError("--where needs an artifact: artfs ls NAME --where KEY=VALUE")
        rows = []
        for name in remote if remote is not None else store.artifacts():
            versions = remote[name] if remote is not None else store.versions(name)
            rows.append({"name": name, "type": versions[-1].type if remote is not None else store.artifact_type(name),
                         "versions": len(versions),
                         "latest": next((v.version for v in versions if "latest" in v.aliases), None),
                         "retain": store.artifact(name)["retain"] if remote is None else None})
        if args.json:
            _emit_json(rows)
        elif rows:
            _table([["NAME", "TYPE", "VERSIONS", "LATEST", "RETAIN"]] +
                   [[r["name"], r["type"], str(r["versions"]), r["latest"] or "-",
                     cli_retention.describe_policy(r["retain"])] for r in rows])
        return 0
    if remote is not None:
        rows = [_version_row(v) for v in remote[args.name]]
    else:
        protected = store.artifact(args.name)["protected"]
        rows = [_version_row(v, protected) for v in store.versions(args.name, where=args.where)]
    if args.json:
        _emit_json(rows)
    elif rows:
        expiring = any(r["expires"] is not None for r in rows)   # a column only when it says something
        _table([["VERSION", "ALIASES", "FILES", "BYTES", "CREATED"] + ["EXPIRES"] * expiring + ["TYPE", "MESSAGE"]] +
               [[r["version"], _aliases_cell(r), str(r["files"]), _human(r["bytes"]), _when(r["created"])]
                + [_when(r["expires"]) if r["expires"] is not None else "-"] * expiring
                + [r["type"], r["message"]] for r in rows])
    return 0


def _describe(ev: dict) -> str:
    skip = {"seq", "time", "user", "uid", "action", "artifact"}
    return " ".join(f"{k}={v}" for k, v in ev.items() if k not in skip and v not in ("", [], None))


def cmd_log(store: Store, args) -> int:
    events = store.log(args.name)
    if args.json:
        _emit_json(events)
    else:
        for ev in events:
            print(f"{_when(ev['time'])}  {ev['user']}({ev['uid']})  {ev['action']:<16} "
                  f"{ev['artifact']}  {_describe(ev)}".rstrip())
    return 0


def cmd_diff(store: Store, args) -> int:
    d = store.diff(args.a, args.b)
    if args.json:
        _emit_json(d)
    else:
        for mark, key in (("+", "added"), ("-", "removed"), ("M", "modified")):
            for path in d[key]:
                print(f"{mark} {path}")
    return 0


def cmd_alias(store: Store, args) -> int:
    if args.alias is None:
        raise InvalidInput("usage: artfs alias NAME:REF ALIAS")
    if args.delete:
        name, _ = parse_ref(args.target, default=None)
        store.unalias(name, args.alias, force=args.force)
        print(f"removed alias {args.alias} of {name}")
    elif args.unprotect:
        name, _ = parse_ref(args.target, default=None)
        store.alias(f"{name}:{args.alias}", args.alias, protect=False)
        print(f"{name}:{args.alias} is no longer protected")
    else:
        v = store.alias(args.target, args.alias, force=args.force, protect=True if args.protect else None)
        print(f"{v.name}:{args.alias} -> {v.version}" + (" (protected)" if args.protect else ""))
    return 0


def _what_goes(store: Store, name: str, ref: str | None) -> str | None:
    """What ``rm`` would delete, when that needs --force or a confirmation: a whole artifact, or a
    version a user alias points at; None otherwise. Not here but on the bound remote: an artifact
    still needs --force, a version does not (its aliases are the remote's)."""
    try:
        return _what_goes_here(store, name, ref)
    except NotFound:
        return f"artifact {name}" if ref is None else None


def _what_goes_here(store: Store, name: str, ref: str | None) -> str | None:
    if ref is None:
        versions = store.versions(name)
        aliases = sorted({a for v in versions for a in v.aliases if a != "latest"})
        return (f"artifact {name} with {len(versions)} versions"
                + (f" ({versions[0].version}-{versions[-1].version})" if versions else "")
                + (f", aliases {', '.join(aliases)}" if aliases else "")
                + f" and {_human(sum(v.size for v in versions))} of files")
    v = store.get(f"{name}:{ref}")
    aliases = [a for a in v.aliases if a != "latest"]
    if not aliases:
        return None
    return f"{name}:{v.version} ({_human(v.size)} of files) with aliases {', '.join(aliases)}"


def cmd_rm(store: Store, args) -> int:
    name, ref = parse_ref(args.target, default=None)
    force = args.force
    what = None if force else _what_goes(store, name, ref)
    if what is not None:
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            raise Conflict(f"rm would delete {what}: add --force to delete")
        print(f"artfs: delete {what}? [y/N] ", end="", file=sys.stderr, flush=True)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            print("artfs: nothing deleted", file=sys.stderr)
            return 5
        force = True
    print(f"deleted {store.delete(args.target, force=force)}")
    return 0


def cmd_du(store: Store, args) -> int:
    report = store.du(args.name)
    if args.json:
        _emit_json(report)
        return 0
    s = report["store"]
    print(f"store: {_human(s['stored_bytes'])} in {s['chunks']} chunks for "
          f"{_human(s['logical_bytes'])} of versions; database files {_human(s['file_bytes'])} on disk"
          + (" (artfs compact gives the difference back)" if s["file_bytes"] > 2 * s["stored_bytes"] + (64 << 20) else ""))
    split = any("remote_bytes" in v for a in report["artifacts"] for v in a["versions"])
    rows = [["ARTIFACT", "VERSION", "ALIASES", "FILES", "LOGICAL", "UNIQUE"]
            + (["LOCAL", "CACHED", "REMOTE"] if split else [])]
    for a in report["artifacts"]:
        for v in a["versions"]:
            rows.append([a["name"], v["version"], ",".join(v["aliases"]) or "-", str(v["files"]),
                         _human(v["logical_bytes"]), _human(v["unique_bytes"])]
                        + ([_human(v[k]) for k in ("local_bytes", "cached_bytes", "remote_bytes")] if split else []))
    if len(rows) > 1:
        _table(rows)
    return 0


def cmd_compact(store: Store, args) -> int:
    before, after = store.compact()
    if args.json:
        _emit_json({"before_bytes": before, "after_bytes": after})
    else:
        print(f"compacted: database files {_human(before)} -> {_human(after)} "
              f"({_human(max(before - after, 0))} given back)")
    return 0


def cmd_verify(store: Store, args) -> int:
    if args.remote:
        return cli_remote.verify(store, args)
    with progress_bar("verify", None) as p:
        report = store.verify(args.target, progress=p)
    if args.json:
        _emit_json({"ok": report.ok, "objects": report.objects, "bytes": report.bytes,
                    "problems": report.problems, "notes": report.notes})
    else:
        for line in report.problems + report.notes:
            print(line)
        print(f"{'ok' if report.ok else 'DAMAGED'}: checked {report.objects} objects, "
              f"{_human(report.bytes)}; {len(report.problems)} problems")
    return 0 if report.ok else 7


# parser ----------------------------------------------------------------------------------------
JSON_HELP = "print the result as JSON, for scripts"
REF_HELP = "an artifact and a version (vN) or alias; latest when :REF is left out"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="artfs", description="Versioned datasets and models as a filesystem.")
    p.add_argument("--store", metavar="PATH", help="store directory (default: $ARTFS_STORE, "
                   "else ~/.local/share/artfs)")
    cli_key.add_global_options(p)
    p.add_argument("--version", action="version", version=f"artfs {__version__}",
                   help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           help="artfs COMMAND --help tells more")

    c = sub.add_parser("put", help="log a directory or file as the next version of an artifact",
                       description="Log directory (or single file) PATH as the next version of "
                       "artifact NAME, created on first use, and print NAME:vN. Content equal to "
                       "the latest version makes no new version. Symlinks are stored as symlinks; "
                       "FIFOs, sockets and device nodes as entries; hard links as link groups. With "
                       "--reference URL the files at URL are recorded (URL, size, ETag / version id / "
                       "mtime, SHA-256) and read from there, not stored.")
    c.add_argument("name", metavar="NAME", help="the artifact (1-128 characters of A-Z a-z 0-9 . _ -)")
    c.add_argument("path", metavar="PATH", nargs="?", help="the directory or file to store")
    c.add_argument("-t", "--type", help="artifact type (default: dataset; fixed at creation)")
    add_version_options(c)
    cli_files.add_reference_options(c)
    c.set_defaults(func=cmd_put, creates_store=True)

    c = sub.add_parser("init", help="create an empty store (at --store PATH, or the default)",
                       description="Create an empty artfs store at the --store path ($ARTFS_STORE, "
                       "else ~/.local/share/artfs) and print its path; an existing store is left as "
                       "it is. Only init, put, commit, mount and clone create a store: every other "
                       "command on a path without one exits 6.")
    cli_key.add_init_options(c)
    c.set_defaults(func=cmd_init, creates_store=True)

    c = sub.add_parser("get", help="write a version's files (or one file or directory of it) into DEST",
                       description="Write the files of a version, or PATH in it, into DEST, "
                       "byte-identical with modes and mtimes. DEST must not exist or be empty (a "
                       "file may go into an existing directory); it appears complete or not at all. "
                       "Prints DEST.")
    c.add_argument("ref", metavar="NAME[:REF[/PATH]]",
                   help="the version (REF: vN or an alias; default latest), or PATH in it: NAME ends "
                   "at the first ':', REF at the next '/'")
    c.add_argument("dest", metavar="DEST",
                   help="must not exist or be an empty directory; a file goes into an existing directory")
    c.set_defaults(func=cli_files.cmd_get)

    c = sub.add_parser("ls", help="list artifacts, the versions of one, or the files of a version",
                       description="Without NAME: every artifact with its type, number of versions, "
                       "latest version and retention. With NAME: its versions with aliases, files, "
                       "bytes, creation time, expiry, type and message. With NAME:REF: the files of "
                       "that version.")
    c.add_argument("name", nargs="?", metavar="NAME[:REF[/PATH]]",
                   help="an artifact (its versions), or NAME:REF (the files of that version)")
    c.add_argument("path", nargs="?", metavar="PATH", help="only the files under PATH in the version")
    c.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="only versions whose metadata KEY is the scalar VALUE (JSON text: 0.9, true, "
                   "null; strings as they are); repeat for AND")
    c.add_argument("--remote", metavar="REMOTE", help="list what the remote has instead")
    c.add_argument("--json", action="store_true", help=JSON_HELP)
    c.set_defaults(func=cmd_ls)

    c = sub.add_parser("log", help="the audit history of an artifact (or all), oldest first",
                       description="The audit log, oldest first: versions created and deleted, "
                       "aliases set, moved and removed, artifacts created and deleted, each with "
                       "user, uid and time.")
    c.add_argument("name", nargs="?", metavar="NAME", help="only this artifact's events")
    c.add_argument("--json", action="store_true", help=JSON_HELP)
    c.set_defaults(func=cmd_log)

    c = sub.add_parser("diff", help="added, removed and modified paths between two versions",
                       description="The paths added (+), removed (-) and modified (M) from the "
                       "first version to the second; an mtime alone is not a change.")
    c.add_argument("a", metavar="NAME:REF", help="the old version")
    c.add_argument("b", metavar="NAME:REF", help="the new version")
    c.add_argument("--json", action="store_true", help=JSON_HELP)
    c.set_defaults(func=cmd_diff)

    c = sub.add_parser("alias", help="point ALIAS at NAME:REF, or --delete NAME ALIAS",
                       description="Set or move the user alias ALIAS to the version NAME:REF, or "
                       "with --delete remove alias ALIAS of artifact NAME. An alias cannot look "
                       "like a version (v3), nor be staging or latest. A protected alias moves or "
                       "goes only with --force.")
    how = c.add_mutually_exclusive_group()
    how.add_argument("--delete", action="store_true", help="remove ALIAS instead of setting it")
    how.add_argument("--protect", action="store_true",
                     help="also protect ALIAS: moving or deleting it, or its version, then needs --force")
    how.add_argument("--unprotect", action="store_true", help="remove ALIAS's protection (NAME ALIAS)")
    c.add_argument("--force", action="store_true", help="move or delete a protected alias")
    c.add_argument("target", metavar="NAME:REF", help="the version (with --delete: the artifact)")
    c.add_argument("alias", nargs="?", metavar="ALIAS", help="the alias to set, move or remove")
    c.set_defaults(func=cmd_alias)

    c = sub.add_parser("rm", help="delete a version (NAME:vN) or a whole artifact (NAME)",
                       description="Delete one version, or a whole artifact with its versions, "
                       "aliases and staging. Storage no other version uses is freed at once. Deleting an "
                       "artifact, or a version a user alias points at, asks on a terminal and "
                       "otherwise needs --force (exit 5 names what would go). Prints NAME:vN deleted.")
    c.add_argument("target", metavar="NAME[:REF]", help="a version, or an artifact without :REF")
    c.add_argument("--force", action="store_true", help="delete without asking: needed for a whole "
                   "artifact or a version user aliases point at, unless confirmed on a terminal")
    c.set_defaults(func=cmd_rm)

    c = sub.add_parser("du", help="logical and unique bytes per version; bytes stored",
                       description="Per version: files, logical bytes and unique bytes (what "
                       "deleting that version alone frees) and, on a store bound to a remote, its "
                       "distinct chunk bytes local, in the chunk cache and only on the remote; for "
                       "the store: bytes stored and the size of its database files.")
    c.add_argument("name", nargs="?", metavar="NAME", help="only this artifact's versions")
    c.add_argument("--json", action="store_true", help=JSON_HELP)
    c.set_defaults(func=cmd_du)

    c = sub.add_parser("compact", help="give the space of deleted versions back to the filesystem "
                       "(works while mounted; needs free space for a copy of the live data)",
                       description="Rewrite the store's database files without their free pages, "
                       "giving the space of deleted versions back to the filesystem. Runs in the "
                       "daemon when mounted; refused while another process has the store open.")
    c.add_argument("--json", action="store_true", help=JSON_HELP)
    c.set_defaults(func=cmd_compact)

    c = sub.add_parser("verify", help="re-hash every object and check every reference",
                       description="Re-hash every object (xxh3 id and SHA-256 digest) and check "
                       "every reference count, alias and version; exits 0 only when clean, 7 "
                       "naming each damaged object with the versions and paths it affects.")
    c.add_argument("target", nargs="?", metavar="NAME[:REF]", help="check only this artifact or version")
    c.add_argument("--json", action="store_true", help=JSON_HELP)
    c.add_argument("--remote", metavar="REMOTE", help="instead: check every live version on the bound "
                   "remote REMOTE (objects reachable, bytes matching their ids and digests)")
    c.set_defaults(func=cmd_verify)

    cli_mount.register(sub)
    cli_files.register(sub)
    cli_key.register(sub)
    cli_lineage.register(sub)
    cli_metadata.register(sub)
    cli_retention.register(sub)
    cli_remote.register(sub)
    cli_cache.register(sub)
    cli_access.register(sub)
    completion.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parser.parse_args(fstab.helper_argv(argv, parser) or argv)   # mount(8)'s form too
        cli_key.prepare(args)
        if getattr(args, "no_store", False):
            code = args.func(args)
        else:
            with Store(args.store, create=getattr(args, "creates_store", False)) as store:
                code = args.func(store, args)
        sys.stdout.flush()   # here, so a closed pipe is caught below and not reported at exit
        return code
    except BrokenPipeError:   # before OSError, its base class: `artfs log | head -1` is quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except ArtfsError as e:
        print(f"artfs: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        where = f": {os.fsdecode(e.filename)}" if isinstance(e.filename, (str, bytes)) else ""
        print(f"artfs: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("artfs: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
