"""``artfs meta NAME:REF [KEY=VALUE | KEY:=JSON]... [--delete KEY] [--description TEXT] [--ttl AGE]``:
show or edit a version's metadata, description and expiry."""

from __future__ import annotations

import json

from ..errors import InvalidInput
from .output import emit_json, when


def parse_assignments(items: list[str]) -> dict:
    """``key=text`` sets a string; ``key:=json`` sets any JSON value (``acc:=0.93``,
    ``tags:='["a","b"]'``), as httpie does."""
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key in ("", ":"):
            raise InvalidInput(f"{item!r}: use KEY=TEXT or KEY:=JSON")
        if key.endswith(":"):
            key = key[:-1]
            try:
                values[key] = json.loads(value)
            except ValueError as e:
                raise InvalidInput(f"{item!r}: the value after ':=' is not JSON: {e}") from None
        else:
            values[key] = value
    return values


def cmd_meta(store, args) -> int:
    values = parse_assignments(args.set)
    if values or args.delete or args.description is not None or args.ttl is not None:
        v = store.edit(args.ref, metadata=values, delete=args.delete, description=args.description,
                       ttl=args.ttl)
    else:
        v = store.get(args.ref)
    if args.json:
        emit_json({"version": v.version, "metadata": v.metadata, "description": v.message,
                   "expires": v.expires})
        return 0
    print(f"{v.name}:{v.version}")
    print(f"description  {v.message or '-'}")
    print(f"expires      {when(v.expires) if v.expires is not None else 'never'}")
    print(f"metadata     {json.dumps(v.metadata, sort_keys=True)}")
    return 0


def register(sub) -> None:
    c = sub.add_parser("meta", help="show or edit a version's metadata, description and expiry",
                       description="Without changes, show them. KEY=TEXT sets a string, KEY:=JSON any "
                       "JSON value; the version's files never change. Every edit is one audited "
                       "transaction (artfs log: version.meta).")
    c.add_argument("ref", metavar="NAME[:REF]", help="the version (REF: vN or an alias; default latest)")
    c.add_argument("set", nargs="*", metavar="KEY=TEXT|KEY:=JSON", help="metadata to set")
    c.add_argument("--delete", action="append", default=[], metavar="KEY",
                   help="remove a metadata key (repeatable; an absent key is an error)")
    c.add_argument("--description", metavar="TEXT", help="replace the description (the version's message)")
    c.add_argument("--ttl", metavar="AGE", help="expire AGE from now (30d, 12h, 90m, 45s, 2w): artfs gc "
                   "then deletes it unless an alias points at it; 'never' removes the expiry")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.set_defaults(func=cmd_meta)
