"""``artfs remote add/ls/rm``, ``push``, ``pull``, ``clone`` and ``ls --remote`` (docs/REMOTE.md)."""

from __future__ import annotations

from ..api.store import Store
from ..errors import UsageError
from .output import emit_json, human


def cmd_remote(store: Store, args) -> int:
    if args.action == "add":
        if not args.url:
            raise UsageError("usage: artfs remote add NAME s3://BUCKET[/PREFIX] [--endpoint URL] [--region R] "
                             "[--ca-bundle FILE] [--allow-http]")
        config = store.remote_add(args.name, args.url, endpoint=args.endpoint, region=args.region,
                                  allow_http=args.allow_http, ca_bundle=args.ca_bundle)
        print(f"remote {args.name}: {args.url} (remote id {config['id']})")
    elif args.action == "rm":
        store.remote_remove(args.name)
        print(f"removed remote {args.name}")
    else:
        for name, b in sorted(store.remotes().items()):
            extra = "".join(f"  {k}={b[k]}" for k in ("endpoint", "region", "ca_bundle") if b.get(k))
            print(f"{name}  {b['url']}{extra}{'  allow-http' if b.get('allow_http') else ''}")
    return 0


def cmd_push(store: Store, args) -> int:
    report = store.push(args.ref, remote=args.remote)
    if args.json:
        emit_json(report)
        return 0
    for v in report["versions"]:
        print(f"pushed {v}")
    print(f"{len(report['versions'])} versions pushed, {report['bytes_sent']} bytes sent")
    return 0


def cmd_pull(store: Store, args) -> int:
    report = store.pull(args.ref, remote=args.remote, data=args.data)
    if args.json:
        emit_json(report)
        return 0
    for v in report["dropped"]:
        print(f"dropped {v} (deleted on remote {args.remote})")
    for line in report["kept"]:
        print(line)
    for v in report["versions"]:
        print(f"pulled {v}")
    if report["metadata_only"]:
        print(f"metadata of {len(report['metadata_only'])} versions fetched (their data stays on the remote; "
              "`artfs pull --data` makes them local versions)")
    print(f"{len(report['versions'])} versions pulled, {report['bytes_received']} bytes received")
    return 0


def cmd_clone(args) -> int:
    with Store.clone(args.url, args.dest or args.store, endpoint=args.endpoint, region=args.region,
                     allow_http=args.allow_http, ca_bundle=args.ca_bundle, data=args.data) as store:
        if args.json:
            emit_json({"url": args.url, "store": store.path, "remote": "origin"})
        else:
            print(f"cloned {args.url} into {store.path} (remote origin)")
    return 0


def gc(store: Store, args) -> int:
    """``artfs gc --remote REMOTE [--dry-run]``."""
    if args.name:
        raise UsageError("gc --remote takes no NAME: it frees only what no live version uses")
    report = store.remote_gc(args.remote, dry_run=args.dry_run)
    if args.json:
        emit_json({"dry_run": args.dry_run, **report})
    elif args.dry_run:
        print(f"gc --remote {args.remote} --dry-run: would delete {report['dead_packs']} dead packs, repack "
              f"{report['repacked_packs']}, delete {report['orphan_packs']} orphan packs, "
              f"{report['orphan_indexes']} orphan indexes and {report['stale_locks']} stale locks, "
              f"freeing {human(report['freed_bytes'])}; nothing was deleted")
    else:
        print(f"gc --remote {args.remote}: freed {human(report['freed_bytes'])}")
    return 0


def verify(store: Store, args) -> int:
    """``artfs verify --remote REMOTE``: exit 7 naming each problem."""
    if args.target:
        raise UsageError("verify --remote checks every version on the remote: it takes no NAME[:REF]")
    report = store.remote_verify(args.remote)
    if args.json:
        emit_json({"ok": not report["problems"], **report})
    else:
        for line in report["problems"]:
            print(line)
        print(f"{'ok' if not report['problems'] else 'DAMAGED'}: remote {args.remote}: {report['versions']} "
              f"versions, {report['objects']} objects, {human(report['bytes'])} checked; "
              f"{len(report['problems'])} problems")
    return 7 if report["problems"] else 0


def _endpoint_args(c) -> None:
    c.add_argument("--endpoint", help="S3 endpoint URL (default: AWS, or $AWS_ENDPOINT_URL)")
    c.add_argument("--region", help="bucket region (default: $AWS_REGION, else us-east-1)")
    c.add_argument("--ca-bundle", metavar="FILE", help="PEM file of the CA to trust for an https endpoint "
                   "(a private CA); kept by path")
    c.add_argument("--allow-http", action="store_true", help="allow a plain-http endpoint that is not "
                   "loopback (credentials and data unencrypted)")


def register(sub) -> None:
    c = sub.add_parser("remote", help="bind (add), list (ls) or unbind (rm) remotes: S3-compatible buckets",
                       description="Bind this store to a remote (a prefix of an S3-compatible bucket; "
                       "credentials come from the usual AWS environment variables and are never "
                       "stored), list the bound remotes, or unbind one (nothing on the remote changes).")
    c.add_argument("action", choices=["add", "ls", "rm"], help="add, ls or rm")
    c.add_argument("name", nargs="?", default="origin", help="the remote's name here (default origin)")
    c.add_argument("url", nargs="?", metavar="s3://BUCKET[/PREFIX]", help="where the remote lives (add)")
    _endpoint_args(c)
    c.add_argument("--encrypt", action="store_true", help="the remote is encrypted, as every remote of an "
                   "encrypted store is (init --encrypt): objects, indexes and records sealed, names opaque; "
                   "refused for a plain store")
    c.set_defaults(func=cmd_remote)

    c = sub.add_parser("push", help="upload versions the remote lacks; prints versions pushed and bytes sent",
                       description="Upload the objects the remote lacks (in packs) and record the "
                       "versions there. A version number the remote has with other content is "
                       "refused before anything is uploaded.")
    c.add_argument("ref", nargs="?", metavar="NAME[:REF]", help="one artifact or version (default: all)")
    c.add_argument("--remote", default="origin", help="the bound remote (default origin)")
    c.add_argument("--json", action="store_true", help="print the report as JSON, for scripts")
    c.set_defaults(func=cmd_push)

    c = sub.add_parser("pull", help="record the remote's versions here (data on first read; --data now)",
                       description="Fetch and verify the trees and file lists of the remote's "
                       "versions and record them here: ls, get, cat and the mount work at once, "
                       "file data is fetched on first read into the chunk cache (artfs cache). "
                       "With --data the data is fetched now, into the cache. Without a REF, versions "
                       "deleted on the remote are deleted here too (never one never published, never "
                       "the base of a staging with changes).")
    c.add_argument("ref", nargs="?", metavar="NAME[:REF]", help="one artifact or version (default: all)")
    c.add_argument("--remote", default="origin", help="the bound remote (default origin)")
    c.add_argument("--data", action="store_true", help="also fetch the data now (prefetch before "
                   "the first epoch)")
    c.add_argument("--json", action="store_true", help="print the report as JSON, for scripts")
    c.set_defaults(func=cmd_pull)

    c = sub.add_parser("clone", help="a new local store bound to a remote as origin, metadata pulled",
                       description="Create a new store bound to the remote as origin and pull the "
                       "metadata of every version (with --data, the versions themselves).")
    c.add_argument("url", metavar="s3://BUCKET[/PREFIX]", help="the remote to clone")
    c.add_argument("dest", nargs="?", metavar="STORE", help="new store directory (default: --store)")
    _endpoint_args(c)
    c.add_argument("--data", action="store_true", help="also fetch the data of every version")
    c.add_argument("--json", action="store_true", help="print the report as JSON, for scripts")
    c.set_defaults(func=cmd_clone, no_store=True)
