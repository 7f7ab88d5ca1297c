#!/usr/bin/env python3
"""Build tests/fixtures/store-format1.tar.gz: a store written by the format-1 release, and its manifest.

RUN IT WITH THE FORMAT-1 RELEASE, not with the code of your checkout: the fixture exists so that
tests/test_migration.py can check that the current code migrates a store *written by an old
release*. Written by today's code it would be a store of today's format and would prove nothing.
Format 1 is what git commit 15717b9 (and everything before it) writes:

    git worktree add /tmp/f1 15717b9        # or: mkdir /tmp/f1 && git archive 15717b9 | tar -x -C /tmp/f1
    PYTHONPATH=/tmp/f1 .venv/bin/python scripts/make_format1_fixture.py [OUTDIR]

(OUTDIR defaults to tests/fixtures of this checkout.) The script refuses to run when the store it
creates does not say {"format": 1} in its ARTFS-STORE marker.

What it writes, using only the release's Python API (artfs.Store put/alias/delete) and, for the
uncommitted staging changes, its Staging class directly (no mount needed):

- artifact ``animals`` (dataset): v0, v1, v3 (v2 deleted); a 1.25 MiB text file edited in the
  middle between versions (shared chunks), an empty file, a symlink, a file with a non-UTF-8 name,
  directories nested three deep, files with modes 0600 and 0755; user aliases ``best`` (v0) and
  ``prod`` (v3); messages and metadata; and uncommitted staging changes on v3: ``notes.txt``
  modified, ``old.txt`` deleted, directory ``added/`` with ``added/new.txt``.
- artifact ``model`` (type model): v0 and v1, aliases ``stable`` (v0) and ``candidate`` (v1).

STORE-format1.json (the manifest) holds, read back through the release's own API: for each artifact
its type and, per version, label, aliases, type, metadata, message, created, file count and bytes,
and per path kind, mode, size, mtime and sha256 (or the symlink target); the staging status and
the staged tree of each artifact; and the audit log. Paths that are not UTF-8 are stored with
Python's surrogateescape (json escapes them as \\udcXX); ``os.fsencode`` gives the bytes back.

The contents are low-entropy text (a small vocabulary) so the gzip'd tarball stays under 1 MiB;
lock.mdb is left out (LMDB recreates it).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import shutil
import sys
import tarfile
import tempfile

import artfs
from artfs.staging.overlay import ROOT, Staging

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# loaded by path: with the old release on PYTHONPATH, "tests" would be the old release's tests
_spec = importlib.util.spec_from_file_location("fixture_manifest",
                                               os.path.join(REPO, "tests", "fixtures", "manifest.py"))
_manifest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_manifest)
tree_manifest = _manifest.tree_manifest

MiB = 1 << 20
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
         "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()
T0 = 1_700_000_000_000_000_000   # source mtimes: fixed, so the manifest does not depend on the day


def text(seed: str, size: int) -> bytes:
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += rng.choice(WORDS).encode() + (b"\n" if rng.random() < 0.1 else b" ")
    return bytes(out[:size])


def write(root: str, rel, data: bytes, mode: int = 0o644, mtime: int = T0) -> None:
    path = os.path.join(os.fsencode(root), os.fsencode(rel))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    os.utime(path, ns=(mtime, mtime))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def staged_manifest(s: Staging, ino: int = ROOT, prefix: bytes = b"") -> dict:
    """The same view of a staging (without mtimes: a mount shows staging's own)."""
    out = {}
    for e in s.readdir(ino):
        path = prefix + e.name
        rel = os.fsdecode(path)
        if e.kind == "d":
            out[rel] = {"kind": "dir", "mode": e.mode & 0o7777}
            out.update(staged_manifest(s, e.ino, path + b"/"))
        elif e.kind == "l":
            out[rel] = {"kind": "link", "target": os.fsdecode(s.readlink(e.ino))}
        else:
            if e.data is not None:
                with open(e.data, "rb") as f:
                    data = f.read()
            else:
                data = s.repo.read(s.repo.file(e.base), 0, e.size)
            out[rel] = {"kind": "file", "mode": e.mode & 0o7777, "size": len(data), "sha256": sha(data)}
    return out


def animals_sources(work: str) -> list[str]:
    """Source trees of animals v0..v3 (v2 is deleted after being made)."""
    big = text("big", 1_310_720)                       # 1.25 MiB
    edited = big[:640_000] + b"EDITED IN THE MIDDLE " + big[640_100:]
    v0 = os.path.join(work, "animals0")
    write(v0, "big.txt", big)
    write(v0, "empty.bin", b"")
    write(v0, b"caf\xe9.txt", b"a name that is not UTF-8\n")
    write(v0, "a/b/c/deep.txt", text("deep", 3000))
    write(v0, "secret.txt", b"mode 0600\n", 0o600)
    write(v0, "run.sh", b"#!/bin/sh\necho mode 0755\n", 0o755)
    write(v0, "notes.txt", text("notes", 5000))
    write(v0, "old.txt", b"deleted in staging\n")
    os.symlink("big.txt", os.path.join(v0, "link"))
    os.utime(os.path.join(v0, "a", "b", "c"), ns=(T0, T0))
    trees = [v0]
    for n, change in ((1, lambda d: write(d, "big.txt", edited, mtime=T0 + 1)),
                      (2, lambda d: write(d, "only-in-v2.txt", b"v2 is deleted\n")),
                      (3, lambda d: write(d, "a/b/c/deep.txt", text("deep3", 3000), mtime=T0 + 3))):
        d = os.path.join(work, f"animals{n}")
        shutil.copytree(trees[-1], d, symlinks=True)
        change(d)
        if n == 3:
            os.remove(os.path.join(d, "only-in-v2.txt"))
        trees.append(d)
    return trees


def build(store_path: str, work: str) -> None:
    srcs = animals_sources(work)
    with artfs.Store(store_path) as store:
        store.put("animals", srcs[0], message="first", metadata={"source": "fixture", "n": 0}, aliases=["best"])
        store.put("animals", srcs[1], message="big.txt edited in the middle", metadata={"n": 1})
        store.put("animals", srcs[2], message="to be deleted")
        store.put("animals", srcs[3], message="deep changed", metadata={"n": 3, "tags": ["x", "y"]},
                  aliases=["prod"])
        store.delete("animals:v2")
        m0, m1 = os.path.join(work, "model0"), os.path.join(work, "model1")
        write(m0, "weights.bin", text("w0", 200_000))
        write(m0, "config.json", b'{"lr": 0.1}\n')
        shutil.copytree(m0, m1)
        write(m1, "weights.bin", text("w1", 200_000), mtime=T0 + 7)
        store.put("model", m0, type="model", message="init", metadata={"lr": 0.1})
        store.put("model", m1, message="retrained", metadata={"lr": 0.05})
        store.alias("model:v0", "stable")
        store.alias("model:v1", "candidate")

        s = Staging(store._repo, "animals")      # uncommitted changes, as the mount would make them
        with open(s.open_data(s.lookup(ROOT, b"notes.txt").ino, truncate=True), "wb") as f:
            f.write(b"modified in staging, not committed\n")
        s.unlink(ROOT, b"old.txt")
        d = s.mkdir(ROOT, b"added", 0o750, os.getuid(), os.getgid())
        new = s.create(d.ino, b"new.txt", 0o640, os.getuid(), os.getgid())
        with open(s.open_data(new.ino, truncate=True), "wb") as f:
            f.write(b"added in staging\n")


def manifest(store_path: str, work: str) -> dict:
    out = {"format": 1, "made_by": "scripts/make_format1_fixture.py with the format-1 release",
           "artifacts": {}, "events": []}
    with artfs.Store(store_path) as store:
        for name in store.artifacts():
            versions = []
            for v in store.versions(name):
                dest = v.download(os.path.join(work, f"get-{name}-{v.version}"))
                versions.append({"label": v.version, "aliases": sorted(v.aliases), "type": v.type,
                                 "metadata": v.metadata, "message": v.message, "created": v.created,
                                 "files": v.file_count, "bytes": v.size, "paths": tree_manifest(dest)})
            s = Staging(store._repo, name)
            out["artifacts"][name] = {"type": store.artifact_type(name), "versions": versions,
                                      "staging": {"status": s.status(), "paths": staged_manifest(s)}}
        out["events"] = [{"time": e["time"], "action": e["action"], "artifact": e["artifact"]}
                         for e in store.log()]
        report = store.verify()
        assert report.ok, report.problems
    return out


def check_sources(m: dict, work: str) -> None:
    """The store holds exactly the source trees (a wrong fixture would test nothing)."""
    animals = {v["label"]: v["paths"] for v in m["artifacts"]["animals"]["versions"]}
    assert sorted(animals) == ["v0", "v1", "v3"], sorted(animals)
    for label, paths in animals.items():
        assert paths == tree_manifest(os.path.join(work, f"animals{label[1:]}")), label
    staging = m["artifacts"]["animals"]["staging"]
    assert staging["status"] == {"added": ["added/", "added/new.txt"], "modified": ["notes.txt"],
                                 "deleted": ["old.txt"]}, staging["status"]
    assert sorted(v["label"] for v in m["artifacts"]["model"]["versions"]) == ["v0", "v1"]


def main(argv: list[str]) -> int:
    outdir = argv[0] if argv else os.path.join(REPO, "tests", "fixtures")
    os.makedirs(outdir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="artfs-fixture-")
    try:
        store_path = os.path.join(work, "store")
        build(store_path, work)
        with open(os.path.join(store_path, "ARTFS-STORE")) as f:
            fmt = json.load(f)["format"]
        if fmt != 1:
            print(f"make_format1_fixture: this artfs ({artfs.__file__}) writes format {fmt}, not 1: "
                  "run it with the format-1 release on PYTHONPATH (see the docstring)", file=sys.stderr)
            return 2
        m = manifest(store_path, work)
        check_sources(m, work)
        tarball = os.path.join(outdir, "store-format1.tar.gz")
        with tarfile.open(tarball, "w:gz", compresslevel=9) as tar:
            tar.add(store_path, arcname="store",
                    filter=lambda ti: None if os.path.basename(ti.name) == "lock.mdb" else ti)
        with open(os.path.join(outdir, "store-format1.json"), "w") as f:
            json.dump(m, f, indent=1, sort_keys=True)
            f.write("\n")
        print(f"{tarball}: {os.path.getsize(tarball)} bytes")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
