"""Retention: ``artfs retain`` policies, ``--ttl`` expiry, ``artfs gc`` (and its byte count), and
protected aliases; through the store directly and through a mount's daemon."""

from __future__ import annotations

import os

import pytest

import artfs
from artfs.errors import Conflict, InvalidInput, NotFound, UsageError
from artfs.repo.facade import Repo
from tests.helpers import MiB, cli_json, put_file, read, run_cli, write
from tests.test_cli import store  # noqa: F401  (the fixture: a store that must verify clean at the end)

DAY = 86400


def put_version(store, name: str, files: dict[str, bytes], tmp_path, *args) -> str:
    """Put exactly FILES as the next version of NAME; returns its label."""
    d = tmp_path / f"in-{name}-{os.urandom(4).hex()}"
    for path, data in files.items():
        write(d / path, data)
    return run_cli(store, "put", name, d, *args, check=True).stdout.strip().split(":")[1]


def backdate(store, name: str, label: str, *, created: float = 0, expires: float | None = None) -> None:
    """Move a version's creation (and expiry) into the past, as if it were that old."""
    with Repo(str(store)) as repo:
        def action(txn):
            v = repo.catalog.version(txn, name, int(label[1:]))
            v.created -= created
            if expires is not None:
                v.expires = expires
            repo.catalog.update_version(txn, v)
        repo.db.write(action)


def versions(store, name: str) -> list[str]:
    return [r["version"] for r in cli_json(store, "ls", name)]


def stored_bytes(store) -> int:
    return cli_json(store, "du")["store"]["stored_bytes"]


def test_keep_last_gc_frees_the_versions_unique_bytes_together(store, tmp_path):
    shared = os.urandom(2 * MiB)                     # in v0 and v1 only: freed only with both
    for i in range(5):
        files = {"x": os.urandom(MiB)} | ({"s": shared} if i < 2 else {})
        assert put_version(store, "ds", files, tmp_path) == f"v{i}"
    run_cli(store, "alias", "ds:v2", "best", check=True)
    alone = {v["version"]: v["unique_bytes"] for v in cli_json(store, "du", "ds")["artifacts"][0]["versions"]}
    assert alone["v0"] == alone["v1"] == MiB          # each alone frees only its own x

    assert cli_json(store, "retain", "ds", "--keep-last", "2") == {"name": "ds", "retain": {"keep_last": 2}}
    before = stored_bytes(store)
    dry = cli_json(store, "gc", "--dry-run")
    assert dry["dry_run"] is True and dry["versions"] == 2 and dry["freed_bytes"] == 4 * MiB
    (a,) = dry["artifacts"]
    assert a["name"] == "ds" and a["freed_bytes"] == 4 * MiB
    assert [(v["version"], v["reason"]) for v in a["deleted"]] == [("v0", "beyond the last 2"),
                                                                  ("v1", "beyond the last 2")]
    assert a["deleted"][0]["logical_bytes"] == 3 * MiB
    assert versions(store, "ds") == ["v0", "v1", "v2", "v3", "v4"] and stored_bytes(store) == before
    human = run_cli(store, "gc", "--dry-run", check=True).stdout
    assert "would delete ds:v0" in human and "4.0 MiB" in human and "nothing was deleted" in human

    done = cli_json(store, "gc")
    assert done == dict(dry, dry_run=False)                        # what the dry run said, exactly
    assert versions(store, "ds") == ["v2", "v3", "v4"]             # best and the last 2 stay
    assert before - stored_bytes(store) == 4 * MiB                 # and the bytes it said went
    assert cli_json(store, "gc")["versions"] == 0
    assert "gc: deleted 0 versions, freed 0 B" in run_cli(store, "gc", check=True).stdout
    gone = [e for e in cli_json(store, "log", "ds") if e["action"] == "version.delete"]
    assert [(e["version"], e["reason"]) for e in gone] == [("v0", "gc: beyond the last 2"),
                                                          ("v1", "gc: beyond the last 2")]


def test_gc_of_several_artifacts_counts_what_they_share(store, tmp_path):
    """Bytes shared by victims of two artifacts are freed (and counted) once both go."""
    shared = os.urandom(MiB)
    for name in ("p", "q"):
        put_version(store, name, {"t": shared}, tmp_path)
        put_version(store, name, {"y": os.urandom(MiB // 2)}, tmp_path)
        run_cli(store, "retain", name, "--keep-last", "1", check=True)
    put_version(store, "untouched", {"z": os.urandom(1000)}, tmp_path)     # no policy: nothing goes
    before = stored_bytes(store)
    dry = cli_json(store, "gc", "--dry-run")
    assert [a["name"] for a in dry["artifacts"]] == ["p", "q"] and dry["freed_bytes"] == MiB
    assert cli_json(store, "gc", "--dry-run", "p")["freed_bytes"] == 0    # q still holds t
    done = cli_json(store, "gc")
    assert done["freed_bytes"] == MiB == before - stored_bytes(store)
    assert [a["freed_bytes"] for a in done["artifacts"]] == [a["freed_bytes"] for a in dry["artifacts"]]
    assert versions(store, "p") == ["v1"] and versions(store, "untouched") == ["v0"]


def test_max_age_and_both_rules(store, tmp_path):
    for i in range(5):
        put_version(store, "ds", {"x": bytes([i]) * 1000}, tmp_path)
    for label in ("v0", "v1", "v2"):
        backdate(store, "ds", label, created=40 * DAY)
    run_cli(store, "retain", "ds", "--keep-last", "4", "--max-age", "30d", check=True)
    (a,) = cli_json(store, "gc", "--dry-run")["artifacts"]         # beyond the last 4 AND older
    assert [(v["version"], v["reason"]) for v in a["deleted"]] == [("v0", "beyond the last 4 and older than 30d")]
    assert cli_json(store, "retain", "ds") == {"name": "ds", "retain": {"keep_last": 4, "max_age": 30 * DAY}}
    run_cli(store, "retain", "ds", "--max-age", "720h", check=True)   # replaces the whole policy
    assert cli_json(store, "retain", "ds")["retain"] == {"max_age": 30 * DAY}
    (row,) = [r for r in cli_json(store, "ls") if r["name"] == "ds"]
    assert row["retain"] == {"max_age": 30 * DAY}
    assert "30d" in run_cli(store, "ls", check=True).stdout
    assert [v["version"] for v in cli_json(store, "gc")["artifacts"][0]["deleted"]] == ["v0", "v1", "v2"]
    backdate(store, "ds", "v4", created=400 * DAY)                # latest is never collected
    backdate(store, "ds", "v3", created=400 * DAY)
    assert [v["version"] for v in cli_json(store, "gc", "ds")["artifacts"][0]["deleted"]] == ["v3"]
    assert versions(store, "ds") == ["v4"]
    run_cli(store, "retain", "ds", "--clear", check=True)
    assert cli_json(store, "retain", "ds")["retain"] is None
    assert "no retention policy" in run_cli(store, "retain", "ds", check=True).stdout
    log = [e for e in cli_json(store, "log", "ds") if e["action"] == "artifact.retain"]
    assert [e.get("keep_last") for e in log] == [4, None, None] and log[-1]["policy"] == "none"

    for args, code in [(["ds", "--keep-last", "0"], InvalidInput), (["ds", "--max-age", "1y"], InvalidInput),
                       (["ds", "--max-age=-3d"], InvalidInput), (["ds", "--clear", "--keep-last", "2"], UsageError),
                       (["nothing", "--keep-last", "2"], NotFound)]:
        proc = run_cli(store, "retain", *args)
        assert proc.returncode == code.exit_code and len(proc.stderr.splitlines()) == 1, (args, proc.stderr)
    assert run_cli(store, "gc", "nothing").returncode == NotFound.exit_code


def test_ttl_expiry_collected_unless_an_alias_protects(store, tmp_path):
    assert put_version(store, "ds", {"x": b"0"}, tmp_path, "--ttl", "7d") == "v0"
    assert put_version(store, "ds", {"x": b"1"}, tmp_path, "--ttl", "1h") == "v1"
    assert put_version(store, "ds", {"x": b"2"}, tmp_path, "--ttl", "30m") == "v2"
    assert put_version(store, "ds", {"x": b"3"}, tmp_path, "--ttl", "2w") == "v3"
    rows = cli_json(store, "ls", "ds")
    assert [round(r["expires"] - r["created"]) for r in rows] == [7 * DAY, 3600, 1800, 14 * DAY]
    assert "EXPIRES" in run_cli(store, "ls", "ds", check=True).stdout
    assert cli_json(store, "gc")["versions"] == 0                  # nothing has expired yet
    for label in ("v0", "v1", "v2", "v3"):
        backdate(store, "ds", label, expires=1.0)                  # all expired long ago
    run_cli(store, "alias", "ds:v1", "keep", check=True)
    run_cli(store, "meta", "ds:v2", "--ttl", "never", check=True)
    (a,) = cli_json(store, "gc")["artifacts"]
    assert [(v["version"], v["reason"]) for v in a["deleted"]] == [("v0", "expired")]
    assert versions(store, "ds") == ["v1", "v2", "v3"]             # alias, no expiry, latest
    run_cli(store, "meta", "ds:v2", "--ttl", "1s", check=True)
    backdate(store, "ds", "v2", expires=1.0)
    assert [v["version"] for v in cli_json(store, "gc")["artifacts"][0]["deleted"]] == ["v2"]
    proc = run_cli(store, "put", "ds", tmp_path, "--ttl", "tomorrow")
    assert proc.returncode == InvalidInput.exit_code and "--ttl" in proc.stderr


def test_protected_alias_needs_force(store, tmp_path):
    put_version(store, "ds", {"x": b"0"}, tmp_path)
    put_version(store, "ds", {"x": b"1"}, tmp_path)
    assert run_cli(store, "alias", "--protect", "ds:v0", "prod", check=True).stdout == "ds:prod -> v0 (protected)\n"
    assert [r["protected"] for r in cli_json(store, "ls", "ds")] == [["prod"], []]
    assert "prod(protected)" in run_cli(store, "ls", "ds", check=True).stdout
    assert cli_json(store, "meta", "ds:prod")["version"] == "v0"

    for args in (["alias", "ds:v1", "prod"], ["alias", "--delete", "ds", "prod"], ["rm", "ds:v0"]):
        proc = run_cli(store, *args)
        assert proc.returncode == Conflict.exit_code and len(proc.stderr.splitlines()) == 1, args
    assert "protected" in run_cli(store, "alias", "ds:v1", "prod").stderr
    assert run_cli(store, "alias", "ds:v0", "prod", check=True).returncode == 0   # not a move
    assert run_cli(store, "alias", "--force", "ds:v1", "prod", check=True).stdout == "ds:prod -> v1\n"
    assert cli_json(store, "meta", "ds:prod")["version"] == "v1"
    assert [r["protected"] for r in cli_json(store, "ls", "ds")] == [[], ["prod"]]   # still protected
    run_cli(store, "alias", "--unprotect", "ds", "prod", check=True)
    run_cli(store, "alias", "ds:v0", "prod", check=True)                             # moves freely now
    run_cli(store, "alias", "--protect", "ds:v0", "prod", check=True)
    run_cli(store, "rm", "--force", "ds:v0", check=True)           # its version, with --force
    assert cli_json(store, "ls", "ds")[0]["aliases"] == ["latest"]
    run_cli(store, "alias", "ds:v1", "prod", check=True)           # a new prod: not protected
    run_cli(store, "alias", "--delete", "ds", "prod", check=True)
    run_cli(store, "alias", "--protect", "ds:v1", "prod", check=True)
    run_cli(store, "alias", "--delete", "--force", "ds", "prod", check=True)
    actions = [(e["action"], e.get("alias")) for e in cli_json(store, "log", "ds") if "protect" in e["action"]]
    assert actions == [("alias.protect", "prod"), ("alias.unprotect", "prod"), ("alias.protect", "prod"),
                       ("alias.protect", "prod")]
    proc = run_cli(store, "alias", "--protect", "--delete", "ds", "prod")
    assert proc.returncode == UsageError.exit_code                 # argparse: not both

    with artfs.Store(str(store)) as s:
        s.alias("ds:v1", "api", protect=True)
        with pytest.raises(Conflict):
            s.unalias("ds", "api")
        assert s.artifact("ds")["protected"] == ["api"]
        s.unalias("ds", "api", force=True)
        assert s.artifact("ds")["protected"] == []


@pytest.mark.fuse
def test_gc_and_protected_aliases_through_the_mount(mounted, tmp_path):
    m = mounted
    data = {i: os.urandom(MiB) for i in range(4)}
    for i in range(4):
        put_version(m.store, "ds", {"x": data[i]}, tmp_path)
    assert read(m.path("ds", "v0", "x")) == data[0]
    with open(m.path("ds", "v0", "x"), "rb") as reader:            # open while v0 goes
        head = reader.read(1000)
        os.mkdir(m.path("ds", "staging", "new"))                   # a change on base v3 ...
        put_version(m.store, "ds", {"x": os.urandom(1000)}, tmp_path)   # ... then latest moves on
        m.cli("retain", "ds", "--keep-last", "1")
        report = cli_json(m.store, "gc")
        assert [v["version"] for v in report["artifacts"][0]["deleted"]] == ["v0", "v1", "v2"]
        assert head + reader.read() == data[0]                     # still readable to its end
    assert sorted(os.listdir(m.path("ds"))) == ["latest", "staging", "v3", "v4"]   # staging's base stays
    assert read(m.path("ds", "v3", "x")) == data[3]

    m.cli("alias", "--protect", "ds:v3", "prod")
    assert os.readlink(m.path("ds", "prod")) == "v3"
    assert m.cli("alias", "ds:v4", "prod", check=False).returncode == Conflict.exit_code
    assert m.cli("alias", "--force", "ds:v4", "prod").returncode == 0
    assert os.readlink(m.path("ds", "prod")) == "v4"              # the mount shows it at once
    assert m.cli("alias", "--delete", "ds", "prod", check=False).returncode == Conflict.exit_code
    m.cli("alias", "--delete", "--force", "ds", "prod")
    assert not os.path.lexists(m.path("ds", "prod"))
    put_file(m.path("ds", "staging", "new", "f"), b"f")
    assert m.cli("commit", "ds").stdout == "ds:v5\n"
