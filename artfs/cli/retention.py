"""``artfs retain`` (an artifact's retention policy) and ``artfs gc`` (applying every policy and
version expiry)."""

from __future__ import annotations

from ..errors import UsageError
from ..names import format_duration
from . import remote as cli_remote
from .output import emit_json, human


def describe_policy(policy: dict | None) -> str:
    """'last 5, 30d' for keep_last 5 and max_age 30 days; '-' for none."""
    if not policy:
        return "-"
    parts = []
    if "keep_last" in policy:
        parts.append(f"last {policy['keep_last']}")
    if "max_age" in policy:
        parts.append(format_duration(policy["max_age"]))
    return ", ".join(parts)


def cmd_retain(store, args) -> int:
    if args.clear and (args.keep_last is not None or args.max_age is not None):
        raise UsageError("--clear takes no --keep-last or --max-age")
    if args.clear or args.keep_last is not None or args.max_age is not None:
        policy = store.retain(args.name, keep_last=args.keep_last, max_age=args.max_age)
    else:
        policy = store.artifact(args.name)["retain"]
    if args.json:
        emit_json({"name": args.name, "retain": policy})
    elif not policy:
        print(f"{args.name}: no retention policy (gc deletes only expired versions)")
    else:
        keeps = []
        if "keep_last" in policy:
            keeps.append(f"the last {policy['keep_last']} versions")
        if "max_age" in policy:
            keeps.append(f"versions younger than {format_duration(policy['max_age'])}")
        print(f"{args.name}: gc keeps {' and '.join(keeps)}, latest and every version with an alias")
    return 0


def cmd_gc(store, args) -> int:
    if args.remote:
        return cli_remote.gc(store, args)
    report = store.gc(args.name, dry_run=args.dry_run)
    if args.json:
        emit_json(report)
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    for a in report["artifacts"]:
        for v in a["deleted"]:
            print(f"{verb} {a['name']}:{v['version']}  ({v['reason']}; {human(v['logical_bytes'])} logical)")
    what = f"{report['versions']} version{'s' if report['versions'] != 1 else ''}"
    freed = human(report["freed_bytes"])
    if args.dry_run:
        print(f"gc --dry-run: would delete {what}, freeing {freed}; nothing was deleted")
    else:
        print(f"gc: deleted {what}, freed {freed}")
    if "remote_versions" in report:
        print(f"gc: deleted {len(report['remote_versions'])} of them on the remote, freed "
              f"{human(report['remote_freed_bytes'])} there")
    return 0


def register(sub) -> None:
    c = sub.add_parser("retain", help="show or set an artifact's retention policy (applied by gc)",
                       description="Set which versions artfs gc keeps: the N newest (--keep-last) and "
                       "those younger than AGE (--max-age); with both, a version goes only when it is "
                       "beyond the N newest and older than AGE. latest and every version with a user "
                       "alias are always kept. Setting replaces the whole policy; without options, "
                       "show it.")
    c.add_argument("name", metavar="NAME", help="the artifact")
    c.add_argument("--keep-last", type=int, metavar="N", help="keep the N newest versions (N >= 1)")
    c.add_argument("--max-age", metavar="AGE", help="keep versions younger than AGE (30d, 12h, 90m, 45s, 2w)")
    c.add_argument("--clear", action="store_true", help="remove the policy")
    c.add_argument("--json", action="store_true", help="print the policy as JSON (max_age in seconds)")
    c.set_defaults(func=cmd_retain)

    c = sub.add_parser("gc", help="delete the versions retention policies and expiry let go",
                       description="Apply every artifact's retention policy (or NAME's) and every "
                       "version's expiry (--ttl): delete what they let go, never latest nor a version "
                       "with a user alias, and print what went and the bytes freed (unique bytes of the "
                       "deleted versions together, as du counts them). With a remote bound they are "
                       "deleted there first (those published), freeing their unique bytes in the bucket.")
    c.add_argument("name", nargs="?", metavar="NAME", help="only this artifact (default: all)")
    c.add_argument("--dry-run", action="store_true", help="show what would go and the bytes it would free; "
                   "delete nothing")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.add_argument("--remote", metavar="REMOTE", help="instead: free what no live version on the bound "
                   "remote REMOTE uses (dead and partly dead packs, orphans past the grace period, stale locks)")
    c.set_defaults(func=cmd_gc)
