"""Retention: per-artifact policies, per-version expiry, and ``gc`` applying them.

A policy (``artfs retain NAME --keep-last N --max-age AGE``, kept in the artifact record) names
what to keep: ``keep_last`` the N newest versions, ``max_age`` versions younger than AGE. A version
that no rule of the policy keeps may go; with both rules set it goes only when it is beyond the N
newest *and* older than AGE. Independently of any policy, a version whose expiry (``--ttl``) has
passed may go. Never collected: ``latest``, a version any user alias points at (protected or not),
and the version a staging with changes was made on.

``gc`` decides and deletes an artifact's versions in one write transaction, so nothing that
changed since the decision (a new alias, a new latest) is missed; the bytes it frees are the
versions' unique bytes counted together (repo/accounting.py), what ``du`` would show. A dry run
makes the same decisions in a read transaction and deletes nothing.
"""

from __future__ import annotations

import time
from collections import Counter

from ..catalog.staging_index import StagingIndex
from ..errors import InvalidInput
from ..names import check_artifact, format_duration, parse_duration
from .accounting import unique_bytes


def set_policy(repo, name: str, keep_last: int | None = None, max_age=None) -> dict | None:
    """Store NAME's policy (both None: remove it); returns it. Audited as ``artifact.retain``."""
    check_artifact(name)
    if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(keep_last, int)
                                  or keep_last < 1):
        raise InvalidInput(f"--keep-last must be a whole number of at least 1, not {keep_last!r}")
    policy = {}
    if keep_last is not None:
        policy["keep_last"] = keep_last
    if max_age is not None:
        policy["max_age"] = parse_duration(max_age, "--max-age")

    def action(txn):
        repo.catalog.set_artifact_field(txn, name, "retain", policy or None)
        repo.catalog.event(txn, "artifact.retain", name, **(describe(policy) if policy else {"policy": "none"}))
        return policy or None
    return repo.db.write(action)


def describe(policy: dict) -> dict:
    out = {}
    if "keep_last" in policy:
        out["keep_last"] = policy["keep_last"]
    if "max_age" in policy:
        out["max_age"] = format_duration(policy["max_age"])
    return out


def plan(repo, txn, name: str, now: float) -> list[tuple[object, str]]:
    """(version, reason) for every version of NAME that retention lets go, oldest first."""
    policy = repo.catalog.artifact(txn, name).get("retain") or {}
    keep_last, max_age = policy.get("keep_last"), policy.get("max_age")
    staged = StagingIndex(repo.db.dbs, name).header(txn)
    versions = repo.catalog.versions(txn, name)
    out = []
    for newer, v in enumerate(reversed(versions)):   # newer: how many versions are newer than v
        if v.aliases or (staged is not None and staged.number == v.number):
            continue
        if v.expires is not None and v.expires <= now:
            out.append((v, "expired"))
            continue
        rules = []
        if keep_last is not None:
            rules.append((newer >= keep_last, f"beyond the last {keep_last}"))
        if max_age is not None:
            rules.append((now - v.created > max_age, f"older than {format_duration(max_age)}"))
        if rules and all(go for go, _ in rules):
            out.append((v, " and ".join(why for _, why in rules)))
    return out[::-1]


class _InTransaction:
    """unique_bytes reads reference counts through a batch; inside a write, that transaction."""

    def __init__(self, txn):
        self.txn = txn

    def step(self) -> None:
        pass


def _report(name: str, victims, freed: int) -> dict:
    return {"name": name, "freed_bytes": freed,
            "deleted": [{"version": v.label, "reason": why, "logical_bytes": v.bytes}
                        for v, why in victims]}


def gc(repo, name: str | None = None, *, dry_run: bool = False, pinned=None) -> dict:
    """Apply every artifact's retention (or NAME's): returns what went (or would go) and the
    bytes freed, per artifact and in total. PINNED tells which files a mount has open: those are
    parked as zombies, not freed (catalog/objects.py)."""
    now = time.time()
    names = [check_artifact(name)] if name is not None else repo.artifacts()
    if name is not None:
        repo.artifact(name)   # NotFound for an unknown name
    reports = []
    if dry_run:
        dropped: Counter = Counter()   # later artifacts see the earlier ones' versions gone
        with repo.db.read_batches() as batch:
            for n in names:
                if repo.catalog.artifact(batch.txn, n) is None:
                    continue   # deleted meanwhile
                victims = plan(repo, batch.txn, n, now)
                freed = unique_bytes(repo, batch, *(v.root for v, _ in victims), dropped=dropped)
                reports.append(_report(n, victims, freed))
    else:
        for n in names:
            reports.append(repo.db.write(lambda txn, n=n: _collect(repo, txn, n, now, pinned)))
    reports = [r for r in reports if r["deleted"]]
    return {"dry_run": dry_run, "freed_bytes": sum(r["freed_bytes"] for r in reports),
            "versions": sum(len(r["deleted"]) for r in reports), "artifacts": reports}


def _collect(repo, txn, name: str, now: float, pinned) -> dict:
    if repo.catalog.artifact(txn, name) is None:
        return _report(name, [], 0)   # deleted meanwhile
    victims = plan(repo, txn, name, now)
    freed = unique_bytes(repo, _InTransaction(txn), *(v.root for v, _ in victims))
    for v, why in victims:
        repo.catalog.drop_version(txn, name, v.number)
        repo.objects.decref_tree(txn, v.root, pinned)
        repo.catalog.event(txn, "version.delete", name, version=v.label, digest=v.digest,
                           aliases=[], reason=f"gc: {why}")
    return _report(name, victims, freed)
