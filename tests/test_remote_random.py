"""Randomized: hosts (processes with separate local stores, one remote) put, delete and push at
once; afterwards `artfs verify --remote` is clean, no two puts got one number, every live version
on the remote has the content its producer made under that number, and a new clone pulls every
version byte-exact (docs/REMOTE.md: deletes never lose what a concurrent push or commit relies on)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from tests.test_remote import aws_env, bind, cli, clone

pytest.importorskip("obstore", reason="needs obstore: scripts/setup-s3.sh installs it")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = random.Random(0).randbytes(1 << 20)      # every host's versions share these chunks


def worker(store: str, seed: int, ops: int, out: str) -> None:
    """One host: OPS random operations; writes what it made and deleted to OUT (JSON)."""
    from artfs import Store
    from artfs.errors import Conflict, NotFound
    rng = random.Random(seed)
    made, deleted = [], []
    with Store(store) as s:
        for i in range(ops):
            op = rng.choice(["put", "put", "put", "rm", "push"])
            if op == "put":
                d = os.path.join(os.path.dirname(store), f"in-{seed}-{i}")
                os.makedirs(d)
                with open(os.path.join(d, "shared"), "wb") as f:
                    f.write(SHARED[:rng.randrange(1, len(SHARED))])
                with open(os.path.join(d, "own"), "wb") as f:
                    f.write(rng.randbytes(rng.randrange(1, 300_000)))
                v, created = s.put_ex("ds", d)
                if created:
                    made.append([v.version, v.digest])
            elif op == "rm":
                there = s.remote_versions("origin").get("ds", [])
                if there:
                    target = rng.choice(there).version
                    try:
                        deleted.append(s.delete(f"ds:{target}", force=True))
                    except (NotFound, Conflict):      # another host deleted it first
                        pass
            else:
                s.push()
    with open(out, "w") as f:
        json.dump({"made": made, "deleted": deleted}, f)


@pytest.mark.parametrize("seed", [1, 2])
def test_concurrent_puts_deletes_and_pushes_keep_the_remote_consistent(s3, s3_bucket, tmp_path, seed):
    origin = tmp_path / "origin"
    cli(origin, s3, "init")
    bind(origin, s3, s3_bucket)
    hosts = [tmp_path / f"host{i}" / "store" for i in range(3)]
    for h in hosts:
        h.parent.mkdir()
        clone(h, s3, s3_bucket)
    env = aws_env(s3, ARTFS_REMOTE_PACK_SIZE=str(256 << 10), PYTHONPATH=ROOT)
    procs = [subprocess.Popen([sys.executable, "-c", "import sys; from tests.test_remote_random import worker; "
                               "worker(sys.argv[1], int(sys.argv[2]), 8, sys.argv[3])",
                               str(h), str(seed * 10 + i), str(h.parent / "report.json")],
                              cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
             for i, h in enumerate(hosts)]
    errors = [(p.wait(timeout=900), p.stderr.read()) for p in procs]
    for p in procs:
        p.stderr.close()
    assert all(code == 0 for code, _ in errors), errors
    reports = [json.loads((h.parent / "report.json").read_text()) for h in hosts]
    made = [tuple(m) for r in reports for m in r["made"]]
    assert len({label for label, _ in made}) == len(made), made          # no number given twice
    assert cli(origin, s3, "verify", "--remote", "origin").returncode == 0
    check = tmp_path / "check"
    clone(check, s3, s3_bucket)
    cli(check, s3, "pull", "--data")                                     # every byte verified
    from artfs import Store
    with Store(str(check)) as cs:
        live = {v.version: v.digest for v in cs.versions("ds")} if "ds" in cs.artifacts() else {}
    by_label = dict(made)
    assert all(by_label[label] == digest for label, digest in live.items()), (live, made)
    gone = {d.split(":")[1] for r in reports for d in r["deleted"]}
    assert not gone & set(live)
