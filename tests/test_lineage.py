"""Lineage and metadata without an SDK: producers, consumers (API and ``mount --record-use``),
``artfs lineage``, commit's --metadata/--type/--ttl, ``artfs meta`` and ``ls --where``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

import artfs
from artfs.errors import Conflict, InvalidInput, NotFound, UsageError
from tests.helpers import cli_json, put_file, read, run_cli, write


def artfs_cmd(store, *args, cwd=None, env=None) -> subprocess.CompletedProcess:
    """The CLI run from CWD with ENV (run_cli's, plus a working directory)."""
    cmd = [sys.executable, "-m", "artfs", "--store", str(store), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def git_repo(path) -> str:
    """A git repository at PATH with one commit; returns its HEAD."""
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    os.makedirs(path, exist_ok=True)
    subprocess.run(git + ["init", "-q"], check=True)
    write(os.path.join(path, "train.py"), b"print('train')\n")
    subprocess.run(git + ["add", "train.py"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "one"], check=True)
    return subprocess.run(git + ["rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_put_records_its_producer(tmp_path):
    store, data = tmp_path / "store", tmp_path / "data"
    write(data / "f", b"one")
    head = git_repo(tmp_path / "project")
    env = dict(os.environ, ARTFS_RUN_ID="run-7", WANDB_RUN_ID="wandb-1")
    proc = artfs_cmd(store, "put", "ds", data, "-m", "first", cwd=tmp_path / "project", env=env)
    assert proc.returncode == 0, proc.stderr
    info = cli_json(store, "lineage", "ds:v0")
    p = info["producer"]
    assert (info["artifact"], info["version"]) == ("ds", "v0") and info["consumers"] == []
    assert p["argv"][1:] == ["--store", str(store), "put", "ds", str(data), "-m", "first"]
    assert p["cwd"] == str(tmp_path / "project") and p["git_commit"] == head
    assert p["run_id"] == "run-7"                           # ARTFS_RUN_ID before WANDB_RUN_ID
    assert p["uid"] == os.getuid() and p["host"] and p["user"]

    # no git repository, only WANDB_RUN_ID; then no git at all on PATH: recorded without a commit
    write(data / "f", b"two")
    env = {k: v for k, v in os.environ.items() if k != "ARTFS_RUN_ID"} | {"WANDB_RUN_ID": "wandb-2"}
    assert artfs_cmd(store, "put", "ds", data, cwd=tmp_path, env=env).returncode == 0
    p = cli_json(store, "lineage", "ds:v1")["producer"]
    assert (p["cwd"], p["git_commit"], p["run_id"]) == (str(tmp_path), None, "wandb-2")
    write(data / "f", b"three")
    env = dict(os.environ, PATH=os.path.dirname(sys.executable))   # python, but no git
    assert artfs_cmd(store, "put", "ds", data, cwd=tmp_path / "project", env=env).returncode == 0
    assert cli_json(store, "lineage", "ds:v2")["producer"]["git_commit"] is None

    human = run_cli(store, "lineage", "ds:v0", check=True).stdout
    assert "run run-7" in human and head in human and "put ds" in human and "0 consumer" in human


def test_store_use_records_a_consumer(tmp_path, monkeypatch):
    write(tmp_path / "d" / "f", b"x")
    monkeypatch.delenv("ARTFS_RUN_ID", raising=False)
    monkeypatch.setenv("WANDB_RUN_ID", "wandb-9")
    with artfs.Store(str(tmp_path / "store")) as store:
        store.put("ds", str(tmp_path / "d"))
        v = store.use("ds:latest")
        assert isinstance(v, artfs.Version) and v.version == "v0"
        store.use("ds:v0")
        (first, second) = store.lineage("ds:v0")["consumers"]
        assert first["argv"] == sys.argv and first["pid"] == os.getpid()
        assert (first["via"], first["run_id"], first["uid"]) == ("api", "wandb-9", os.getuid())
        assert first["time"] <= second["time"]
        uses = [e for e in store.log("ds") if e["action"] == "version.use"]
        assert [(e["version"], e["via"], e["run_id"]) for e in uses] == [("v0", "api", "wandb-9")] * 2
        with pytest.raises(NotFound):
            store.use("ds:v7")
        # consumers go with their version: a re-created name starts without any
        store.delete("ds")
        store.put("ds", str(tmp_path / "d"))
        assert store.lineage("ds:v0")["consumers"] == []
    assert run_cli(tmp_path / "store", "lineage", "nothing:v0").returncode == NotFound.exit_code
    assert run_cli(tmp_path / "store", "lineage", "bad name").returncode == InvalidInput.exit_code


def record_use_mount(m) -> None:
    """Start M daemonized with --record-use (conftest's Mount stops it by pid)."""
    proc = run_cli(m.store, "mount", m.mnt, "--record-use")
    assert proc.returncode == 0, proc.stderr
    with open(os.path.join(m.store, "daemon.json")) as f:
        m.daemon = json.load(f)["pid"]


READER = """
import sys
for _ in range(3):                      # three opens: one record (the first open)
    with open(sys.argv[1], "rb") as f:
        f.read()
"""


@pytest.mark.fuse
def test_mount_record_use_records_the_first_open_per_process_and_version(mount_factory, tmp_path):
    m = mount_factory()
    write(tmp_path / "d" / "same.txt", b"in both versions")
    write(tmp_path / "d" / "one.txt", b"1")
    run_cli(m.store, "put", "ds", tmp_path / "d", check=True)
    write(tmp_path / "d" / "one.txt", b"2")
    run_cli(m.store, "put", "ds", tmp_path / "d", check=True)        # v1 shares same.txt with v0

    m.start()                                   # without --record-use: nothing is recorded
    assert read(m.path("ds", "v0", "one.txt")) == b"1"
    m.stop()
    assert cli_json(m.store, "lineage", "ds:v0")["consumers"] == []

    record_use_mount(m)
    env = dict(os.environ, ARTFS_RUN_ID="run-mount")
    reader = subprocess.run([sys.executable, "-c", READER, m.path("ds", "latest", "same.txt")],
                            env=env, capture_output=True, timeout=60)
    assert reader.returncode == 0, reader.stderr
    cat = subprocess.run(["cat", m.path("ds", "v0", "same.txt")], capture_output=True, timeout=60)
    assert cat.stdout == b"in both versions"
    os.listdir(m.path("ds", "v0"))              # a listing is not a use
    assert run_cli(m.store, "unmount", m.mnt).returncode == 0     # what is queued is written
    m.daemon = None

    (used,) = cli_json(m.store, "lineage", "ds:v1")["consumers"]  # latest -> v1, though the file
    assert used["argv"] == [sys.executable, "-c", READER, m.path("ds", "latest", "same.txt")]
    assert (used["via"], used["run_id"], used["uid"]) == ("mount", "run-mount", os.getuid())
    assert used["pid"] > 0
    (cat_use,) = cli_json(m.store, "lineage", "ds:v0")["consumers"]   # is the same in v0
    assert cat_use["argv"] == ["cat", m.path("ds", "v0", "same.txt")] and cat_use["run_id"] is None
    events = [e for e in cli_json(m.store, "log", "ds") if e["action"] == "version.use"]
    assert sorted((e["version"], e["via"]) for e in events) == [("v0", "mount"), ("v1", "mount")]
    m.verify()


@pytest.mark.fuse
def test_commit_through_the_daemon_records_the_caller(mounted, tmp_path):
    m = mounted
    os.mkdir(m.path("model"))
    put_file(m.path("model", "staging", "w.bin"), b"weights")
    env = dict(os.environ, ARTFS_RUN_ID="run-commit")
    proc = artfs_cmd(m.store, "commit", "model", "-t", "model", "-m", "trained", "--metadata",
                     '{"acc": 0.93, "tags": ["a"]}', "--ttl", "7d", cwd=tmp_path, env=env)
    assert proc.returncode == 0 and proc.stdout == "model:v0\n", proc.stderr
    info = cli_json(m.store, "lineage", "model:v0")
    daemon_pid = json.loads(read(os.path.join(m.store, "daemon.json")))["pid"]
    p = info["producer"]
    assert p["argv"][1:] == ["--store", m.store, "commit", "model", "-t", "model", "-m", "trained",
                             "--metadata", '{"acc": 0.93, "tags": ["a"]}', "--ttl", "7d"]
    assert p["pid"] != daemon_pid and p["cwd"] == str(tmp_path) and p["run_id"] == "run-commit"
    (row,) = cli_json(m.store, "ls", "model")
    assert (row["type"], row["message"], row["metadata"]) == ("model", "trained", {"acc": 0.93, "tags": ["a"]})
    assert 7 * 86400 - 60 < row["expires"] - row["created"] <= 7 * 86400
    # the type of an artifact that has had a version is fixed, as for put
    put_file(m.path("model", "staging", "w.bin"), b"weights 2")
    bad = m.cli("commit", "model", "-t", "dataset", check=False)
    assert bad.returncode == InvalidInput.exit_code and "has type 'model'" in bad.stderr
    bad = m.cli("commit", "model", "--metadata", "[1]", check=False)
    assert bad.returncode == InvalidInput.exit_code and "JSON object" in bad.stderr
    bad = m.cli("commit", "model", "--ttl", "soon", check=False)
    assert bad.returncode == InvalidInput.exit_code and "--ttl" in bad.stderr
    assert m.cli("status", "model").stdout == "M w.bin\n"        # nothing was committed
    assert [e["action"] for e in cli_json(m.store, "log", "model")] == [
        "artifact.create", "artifact.type", "version.create"]


def test_meta_edits_metadata_description_and_expiry_audited(tmp_path):
    store = tmp_path / "store"
    write(tmp_path / "d" / "f", b"x")
    run_cli(store, "put", "ds", tmp_path / "d", "-m", "first", "--metadata", '{"old": 1, "keep": "k"}',
            check=True)
    out = cli_json(store, "meta", "ds:v0", "source=camera 3", "acc:=0.93", 'tags:=["a", "b"]',
                   "n:=null", "--delete", "old", "--description", "relabelled", "--ttl", "2w")
    assert out["metadata"] == {"keep": "k", "source": "camera 3", "acc": 0.93, "tags": ["a", "b"], "n": None}
    assert out["description"] == "relabelled" and out["expires"] is not None
    (row,) = cli_json(store, "ls", "ds")
    assert row["metadata"] == out["metadata"] and row["message"] == "relabelled"
    assert cli_json(store, "meta", "ds:latest")["expires"] == out["expires"]   # no change: shown
    assert cli_json(store, "meta", "ds:v0", "--ttl", "never")["expires"] is None
    (ev, never) = [e for e in cli_json(store, "log", "ds") if e["action"] == "version.meta"]
    assert ev["version"] == "v0" and ev["deleted"] == ["old"] and ev["description"] == "relabelled"
    assert ev["set"] == {"source": "camera 3", "acc": 0.93, "tags": ["a", "b"], "n": None}
    assert never["expires"] == "never"
    assert "version.meta" in run_cli(store, "log", "ds", check=True).stdout
    human = run_cli(store, "meta", "ds:v0", check=True).stdout
    assert "relabelled" in human and '"source": "camera 3"' in human and "never" in human

    for args, code, text in [
        (["ds:v0", "--delete", "absent"], InvalidInput, "no metadata key 'absent'"),
        (["ds:v0", "novalue"], InvalidInput, "KEY=TEXT or KEY:=JSON"),
        (["ds:v0", "x:=not json"], InvalidInput, "not JSON"),
        (["ds:v0", "a=1", "--delete", "a"], InvalidInput, "both set and deleted"),
        (["ds:v0", "--ttl", "0s"], InvalidInput, "more than 0"),
        (["ds:v9", "a=1"], NotFound, "no version v9"),
    ]:
        proc = run_cli(store, "meta", *args)
        assert proc.returncode == code.exit_code and text in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.splitlines()) == 1
    assert cli_json(store, "meta", "ds:v0")["metadata"] == out["metadata"]   # failures changed nothing


def test_ls_where_filters_versions_by_metadata(tmp_path):
    store = tmp_path / "store"
    versions = [{"acc": 0.9, "split": "train", "done": True},
                {"acc": 0.95, "split": "train", "done": False, "cfg": {"lr": 1}},
                {"acc": 0.9, "split": "test", "n": None, "label": "0.9"}]
    for i, meta in enumerate(versions):
        write(tmp_path / "d" / "f", bytes([i]))
        run_cli(store, "put", "ds", tmp_path / "d", "--metadata", json.dumps(meta), check=True)

    def where(*conds):
        args = [a for c in conds for a in ("--where", c)]
        return [r["version"] for r in cli_json(store, "ls", "ds", *args)]
    assert where("acc=0.9") == ["v0", "v2"]
    assert where("acc=0.9", "split=train") == ["v0"]                # several: all must hold
    assert where("done=true") == ["v0"] and where("done=false") == ["v1"]
    assert where("n=null") == ["v2"] and where("label=0.9") == ["v2"]   # a string compares as itself
    assert where("acc=0.90") == [] and where("missing=1") == []        # JSON text, not numbers
    assert where('cfg={"lr": 1}') == []                                 # objects never match
    assert where("split=") == []
    assert "v2" in run_cli(store, "ls", "ds", "--where", "split=test", check=True).stdout
    with artfs.Store(str(store)) as s:
        assert [v.version for v in s.versions("ds", where={"acc": 0.9, "done": True})] == ["v0"]
        assert [v.version for v in s.versions("ds", where=["split=test"])] == ["v2"]
    for args, code in [(["ds", "--where", "nokey"], InvalidInput), (["ds", "--where", "=x"], InvalidInput),
                       (["--where", "a=1"], UsageError), (["ds:v0", "--where", "a=1"], UsageError),
                       (["nothing", "--where", "a=1"], NotFound)]:
        proc = run_cli(store, "ls", *args)
        assert proc.returncode == code.exit_code and len(proc.stderr.splitlines()) == 1, (args, proc.stderr)


def test_put_refuses_to_move_a_protected_alias_before_reading(tmp_path):
    """(Protected aliases: more in test_retention.py.) A put never moves one: nothing is made."""
    store = tmp_path / "store"
    write(tmp_path / "d" / "f", b"x")
    run_cli(store, "put", "ds", tmp_path / "d", check=True)
    run_cli(store, "alias", "--protect", "ds:v0", "prod", check=True)
    write(tmp_path / "d" / "f", b"y")
    proc = run_cli(store, "put", "ds", tmp_path / "d", "-a", "prod")
    assert proc.returncode == Conflict.exit_code and "protected" in proc.stderr
    assert [r["version"] for r in cli_json(store, "ls", "ds")] == ["v0"]
    assert run_cli(store, "put", "ds", tmp_path / "d", check=True).stdout == "ds:v1\n"
    proc = run_cli(store, "put", "ds", tmp_path / "d", "-a", "prod")   # unchanged content: still a move
    assert proc.returncode == Conflict.exit_code
    run_cli(store, "alias", "--force", "ds:v1", "prod", check=True)
    same = run_cli(store, "put", "ds", tmp_path / "d", "-a", "prod")   # prod is already at latest
    assert same.returncode == 0 and same.stdout == "ds:v1\n"
