"""Editing a version's metadata, description and expiry after the fact, and filtering by metadata.

Versions are immutable in content, not in their labels: ``artfs meta NAME:vN`` sets and deletes
metadata keys, replaces the description (the version's message) and sets or clears its expiry, in
one audited transaction (event ``version.meta`` naming what changed).

Filtering (``artfs ls NAME --where key=value``): a version matches ``key=value`` when its metadata
has the top-level KEY with a JSON scalar whose text is VALUE: a string as itself, a number,
``true``/``false`` and ``null`` as JSON writes them (``acc=0.9``, ``done=true``). Objects and lists
never match. Several conditions must all hold.
"""

from __future__ import annotations

import json
import time

from ..errors import InvalidInput
from ..names import check_artifact, parse_duration

NEVER = "never"   # the ttl that removes an expiry


def scalar_text(value) -> str | None:
    """The text a --where value is compared with; None for objects and lists."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (bool, int, float)):
        return json.dumps(value)
    return None


def parse_where(conditions) -> dict[str, str]:
    """``["k=v", ...]`` (or a dict, from the API) as {key: text}."""
    if isinstance(conditions, dict):
        out = {}
        for key, value in conditions.items():
            text = scalar_text(value)
            if text is None:
                raise InvalidInput(f"where {key!r}: compare with a string, number, bool or None")
            out[str(key)] = text
        return out
    out = {}
    for cond in conditions:
        key, sep, value = cond.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--where {cond!r}: use KEY=VALUE")
        out[key] = value
    return out


def matches(metadata: dict, where: dict[str, str]) -> bool:
    return all(key in metadata and scalar_text(metadata[key]) == text for key, text in where.items())


def edit(repo, name: str, ref: str, *, values: dict | None = None, delete=(),
         description: str | None = None, ttl=None):
    """Set VALUES, delete keys, replace the description, set the expiry to now + TTL (``never``:
    none). Deleting a key that is not there is an error (a typo would otherwise pass silently)."""
    values = dict(values or {})
    if ttl is not None and ttl != NEVER:
        ttl = parse_duration(ttl, "--ttl")
    if not values and not delete and description is None and ttl is None:
        raise InvalidInput("nothing to change: give KEY=VALUE, --delete KEY, --description or --ttl")
    both = set(values) & set(delete)
    if both:
        raise InvalidInput(f"key {sorted(both)[0]!r} is both set and deleted")

    def action(txn):
        v = repo.catalog.resolve(txn, check_artifact(name), ref)
        missing = [k for k in delete if k not in v.metadata]
        if missing:
            raise InvalidInput(f"{name}:{v.label} has no metadata key {missing[0]!r}")
        change = {}
        if values:
            v.metadata.update(values)
            change["set"] = values
        if delete:
            for key in delete:
                del v.metadata[key]
            change["deleted"] = sorted(delete)
        if description is not None:
            v.message = change["description"] = description
        if ttl is not None:
            v.expires = None if ttl == NEVER else time.time() + ttl
            change["expires"] = NEVER if v.expires is None else v.expires
        repo.catalog.update_version(txn, v)
        repo.catalog.event(txn, "version.meta", name, version=v.label, **change)
        return v
    return repo.db.write(action)
