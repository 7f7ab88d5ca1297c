"""The ``artfs`` command: argument parsing, output, progress and exit codes.

Every failure is one line on stderr (``artfs: error: ...``) and the exit code of its error class
(see errors.py); results go to stdout, with ``--json`` for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from . import completion, fstab, mount as cli_mount
from .. import __version__
from ..api.store import Store
from ..errors import ArtfsError, InvalidInput
from ..names import parse_ref
from .progress import input_bytes, progress_bar


def _emit_json(value) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _version_row(v) -> dict:
    return {"version": v.version, "aliases": v.aliases, "digest": v.digest, "type": v.type,
            "message": v.message, "metadata": v.metadata, "created": v.created,
            "files": v.file_count, "bytes": v.size}


# commands --------------------------------------------------------------------------------------
def cmd_put(store: Store, args) -> int:
    try:
        metadata = json.loads(args.metadata) if args.metadata else None
    except ValueError as e:
        raise InvalidInput(f"--metadata is not valid JSON: {e}") from None
    with progress_bar(f"put {args.name}", input_bytes(args.path) if sys.stderr.isatty() else None) as p:
        v, created = store.put_ex(args.name, args.path, type=args.type, aliases=args.alias,
                                  message=args.message, metadata=metadata, progress=p)
    if not created:
        print(f"artfs: no changes: content equals {v.name}:{v.version}; no version made", file=sys.stderr)
    print(f"{v.name}:{v.version}")
    return 0


def cmd_get(store: Store, args) -> int:
    v = store.get(args.ref)
    with progress_bar(f"get {v.name}:{v.version}", v.size) as p:
        dest = v.download(args.dest, progress=p)
    print(dest)
    return 0


def cmd_ls(store: Store, args) -> int:
    if args.name is None:
        rows = []
        for name in store.artifacts():
            versions = store.versions(name)
            rows.append({"name": name, "type": store.artifact_type(name),
                         "versions": len(versions),
                         "latest": next((v.version for v in versions if "latest" in v.aliases), None)})
        if args.json:
            _emit_json(rows)
        elif rows:
            _table([["NAME", "TYPE", "VERSIONS", "LATEST"]] +
                   [[r["name"], r["type"], str(r["versions"]), r["latest"] or "-"] for r in rows])
        return 0
    rows = [_version_row(v) for v in store.versions(args.name)]
    if args.json:
        _emit_json(rows)
    elif rows:
        _table([["VERSION", "ALIASES", "FILES", "BYTES", "CREATED", "TYPE", "MESSAGE"]] +
               [[r["version"], ",".join(r["aliases"]) or "-", str(r["files"]), _human(r["bytes"]),
                 _when(r["created"]), r["type"], r["message"]] for r in rows])
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
    if args.delete:
        name, _ = parse_ref(args.target, default=None)
        store.unalias(name, args.alias)
        print(f"removed alias {args.alias} of {name}")
    else:
        if args.alias is None:
            raise InvalidInput("usage: artfs alias NAME:REF ALIAS")
        v = store.alias(args.target, args.alias)
        print(f"{v.name}:{args.alias} -> {v.version}")
    return 0


def cmd_rm(store: Store, args) -> int:
    store.delete(args.target, force=args.force)
    print(f"deleted {args.target}")
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
    rows = [["ARTIFACT", "VERSION", "ALIASES", "FILES", "LOGICAL", "UNIQUE"]]
    for a in report["artifacts"]:
        for v in a["versions"]:
            rows.append([a["name"], v["version"], ",".join(v["aliases"]) or "-", str(v["files"]),
                         _human(v["logical_bytes"]), _human(v["unique_bytes"])])
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
    p.add_argument("--version", action="version", version=f"artfs {__version__}",
                   help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           help="artfs COMMAND --help tells more")

    c = sub.add_parser("put", help="log a directory or file as the next version of an artifact",
                       description="Log directory (or single file) PATH as the next version of "
                       "artifact NAME, created on first use, and print NAME:vN. Content equal to "
                       "the latest version makes no new version. Symlinks are stored as symlinks; "
                       "sockets, FIFOs and devices are skipped with a warning.")
    c.add_argument("name", metavar="NAME", help="the artifact (1-128 characters of A-Z a-z 0-9 . _ -)")
    c.add_argument("path", metavar="PATH", help="the directory or file to store")
    c.add_argument("-t", "--type", help="artifact type (default: dataset; fixed at creation)")
    c.add_argument("-a", "--alias", action="append", default=[], help="set or move a user alias (repeatable)")
    c.add_argument("-m", "--message", default="", help="a message stored with the version")
    c.add_argument("--metadata", help="a JSON object stored with the version")
    c.set_defaults(func=cmd_put)

    c = sub.add_parser("get", help="write a version's files into DEST",
                       description="Write the files of a version into DEST, byte-identical with "
                       "modes and mtimes. DEST must not exist or be empty; it appears complete or "
                       "not at all. Prints DEST.")
    c.add_argument("ref", metavar="NAME[:REF]", help=REF_HELP)
    c.add_argument("dest", metavar="DEST", help="the directory to create")
    c.set_defaults(func=cmd_get)

    c = sub.add_parser("ls", help="list artifacts, or the versions of one",
                       description="Without NAME: every artifact with its type, number of versions "
                       "and latest version. With NAME: its versions with aliases, files, bytes, "
                       "creation time, type and message.")
    c.add_argument("name", nargs="?", metavar="NAME", help="the artifact whose versions to list")
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
                       "like a version (v3), nor be staging or latest.")
    c.add_argument("--delete", action="store_true", help="remove ALIAS instead of setting it")
    c.add_argument("target", metavar="NAME:REF", help="the version (with --delete: the artifact)")
    c.add_argument("alias", nargs="?", metavar="ALIAS", help="the alias to set, move or remove")
    c.set_defaults(func=cmd_alias)

    c = sub.add_parser("rm", help="delete a version (NAME:vN) or a whole artifact (NAME)",
                       description="Delete one version, or a whole artifact with its versions, "
                       "aliases and staging. Storage no other version uses is freed at once.")
    c.add_argument("target", metavar="NAME[:REF]", help="a version, or an artifact without :REF")
    c.add_argument("--force", action="store_true", help="delete even if user aliases point at it")
    c.set_defaults(func=cmd_rm)

    c = sub.add_parser("du", help="logical and unique bytes per version; bytes stored",
                       description="Per version: files, logical bytes and unique bytes (what "
                       "deleting that version alone frees); for the store: bytes stored and the "
                       "size of its database files.")
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
    c.set_defaults(func=cmd_verify)

    cli_mount.register(sub)
    completion.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parser.parse_args(fstab.helper_argv(argv, parser) or argv)   # mount(8)'s form too
        if getattr(args, "no_store", False):
            return args.func(args)
        with Store(args.store) as store:
            return args.func(store, args)
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
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
