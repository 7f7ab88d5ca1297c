"""``artfs cache ls`` and ``artfs cache clear``: the chunk cache of a remote read lazily
(store/cache.py; docs/REMOTE.md "Lazy mount"). ``artfs pull NAME:REF --data`` fills it."""

from __future__ import annotations

from ..api.store import Store
from .output import emit_json, human, table


def cmd_cache(store: Store, args) -> int:
    if args.action == "clear":
        print(f"cache cleared: {human(store.cache_clear())} freed (chunks of open files kept)")
        return 0
    info = store.cache(args.name)
    if args.json:
        emit_json(info)
        return 0
    c = info["cache"]
    limit = human(c["limit"]) if c["limit"] is not None else "-"
    print(f"cache: {c['chunks']} chunks, {human(c['bytes'])} of {limit} ({human(c['file_bytes'])} on disk)")
    rows = [["NAME", "VERSION", "LOCAL", "CACHED", "REMOTE"]]
    rows += [[v["name"], v["version"], human(v["local"]), human(v["cached"]), human(v["remote"])]
             for v in info["versions"]]
    if len(rows) > 1:
        table(rows)
    return 0


def register(sub) -> None:
    c = sub.add_parser("cache", help="the chunk cache of the remote: ls (what is where) or clear",
                       description="ls: the cache's size and limit, and for each version the bytes "
                       "of its distinct chunks that are local, cached, or only on the remote (fetched "
                       "on first read). clear: drop every cached chunk except those of files open in "
                       "the mount. `artfs pull NAME:REF --data` fills the cache ahead of reading.")
    c.add_argument("action", choices=["ls", "clear"], help="what to do")
    c.add_argument("name", metavar="NAME", nargs="?", help="ls: only the versions of NAME")
    c.add_argument("--json", action="store_true", help="ls: print the result as JSON, for scripts")
    c.set_defaults(func=cmd_cache)
