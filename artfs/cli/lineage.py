"""``artfs lineage NAME:REF``: what made a version and what used it."""

from __future__ import annotations

import shlex

from .output import emit_json, when


def _who(rec: dict) -> str:
    parts = [f"{rec.get('user')}({rec.get('uid')})@{rec.get('host')}", f"pid {rec.get('pid')}"]
    if rec.get("run_id"):
        parts.append(f"run {rec['run_id']}")
    return "  ".join(parts)


def _argv(rec: dict) -> str:
    return shlex.join(rec["argv"]) if rec.get("argv") else "(command line unknown)"


def cmd_lineage(store, args) -> int:
    info = store.lineage(args.ref)
    if args.json:
        emit_json(info)
        return 0
    print(f"{info['artifact']}:{info['version']}  digest {info['digest']}  created {when(info['created'])}")
    p = info["producer"]
    if p:
        print(f"produced by  {_who(p)}")
        print(f"  command    {_argv(p)}")
        print(f"  cwd        {p.get('cwd') or '-'}  git {p.get('git_commit') or '-'}")
    else:
        print("produced by  (not recorded: made before artfs recorded lineage)")
    print(f"used by      {len(info['consumers'])} consumer(s)")
    for c in info["consumers"]:
        print(f"  {when(c['time'])}  {c['via']:<5}  {_who(c)}  {_argv(c)}")
    return 0


def register(sub) -> None:
    c = sub.add_parser("lineage", help="what made a version and what used it",
                       description="Show a version's producer (user, host, command line, working "
                       "directory and its git commit, run id from ARTFS_RUN_ID or WANDB_RUN_ID) and "
                       "its consumers: Store.use() calls and, with 'artfs mount --record-use', the "
                       "first open of the version by each process.")
    c.add_argument("ref", metavar="NAME[:REF]", help="the version (REF: vN or an alias; default latest)")
    c.add_argument("--json", action="store_true", help="print the producer and consumers as JSON")
    c.set_defaults(func=cmd_lineage)
