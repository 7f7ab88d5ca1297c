"""What every command prints with: JSON, times, byte counts, tables; and JSON options."""

from __future__ import annotations

import json
import sys
import time

from ..errors import InvalidInput


def emit_json(value) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def json_object(text: str | None, option: str = "--metadata") -> dict | None:
    """The JSON object an option holds (None when not given); InvalidInput otherwise."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as e:
        raise InvalidInput(f"{option} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{option} must be a JSON object, like '{{\"key\": 1}}'")
    return value


def add_version_options(c) -> None:
    """The options of a command that makes a version (put, commit): aliases, message, metadata, TTL."""
    c.add_argument("-a", "--alias", action="append", default=[], help="set or move a user alias (repeatable)")
    c.add_argument("-m", "--message", default="", help="a message stored with the version")
    c.add_argument("--metadata", help="a JSON object stored with the version")
    c.add_argument("--ttl", metavar="AGE", help="let artfs gc delete the version AGE after it is made "
                   "(30d, 12h, 90m, 45s, 2w) unless an alias points at it")
    c.add_argument("--json", action="store_true",
                   help="print the version as JSON (name, version, created, aliases), for scripts")


def print_version(v, created: bool, as_json: bool) -> None:
    """The version a put or commit made (or found equal: CREATED false): NAME:vN, or JSON."""
    if as_json:
        emit_json({"name": v.name, "version": v.version, "created": created, "aliases": sorted(v.aliases)})
    else:
        print(f"{v.name}:{v.version}")
