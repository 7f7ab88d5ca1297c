"""CLI commands on the files of one version: ``ls NAME:REF [PATH]``, ``get NAME:REF/PATH DEST`` and
``cat NAME:REF/PATH``.

``NAME:REF/PATH``: NAME ends at the first ':', REF at the next '/' (artfs.names.parse_file_ref),
so PATH may hold anything else (':' and spaces included).
"""

from __future__ import annotations

import os
import sys

from ..errors import IsADirectory
from ..names import parse_file_ref
from .output import emit_json, human, table
from .progress import progress_bar

BLOCK = 1 << 20


def _version_and_path(store, spec: str, path: str | None = None):
    name, ref, inner = parse_file_ref(spec)
    if path:
        inner = "/".join(p for p in (inner, path) if p)
    return store.get(f"{name}:{ref}"), inner


def cmd_ls_files(store, args) -> int:
    """``artfs ls NAME:REF [PATH]`` (cli/main.py hands over when there is a REF or a PATH)."""
    v, path = _version_and_path(store, args.name, args.path)
    rows = v.entries(path)
    if args.json:
        emit_json(rows)
    elif rows:
        table([["MODE", "KIND", "SIZE", "DIGEST", "PATH"]] +
              [[r["mode"], r["kind"], "-" if r["size"] is None else human(r["size"]),
                r["digest"] or "-", r["path"] + (f" -> {r['target']}" if "target" in r else "")]
               for r in rows])
    return 0


def cmd_get(store, args) -> int:
    v, path = _version_and_path(store, args.ref)
    total = None
    if sys.stderr.isatty():   # the bar's total; a walk only for part of a version
        total = v.size if not path else sum(r["size"] for r in v.entries(path) if r["kind"] == "file")
    with progress_bar(f"get {v.name}:{v.version}/{path}".rstrip("/"), total) as p:
        dest = v.download(args.dest, path=path, progress=p)
    print(dest)
    return 0


def cmd_cat(store, args) -> int:
    v, path = _version_and_path(store, args.ref)
    if not path:
        raise IsADirectory(f"{v.name}:{v.version} is a version, not a file: name a file in it "
                           f"({v.name}:{v.version}/PATH)")
    out = sys.stdout.buffer
    with v.open(path) as f:
        try:
            while True:
                block = f.read(BLOCK)
                if not block:
                    break
                out.write(block)
            out.flush()
        except BrokenPipeError:   # the reader stopped (cat ... | head): quietly, as cli/main.py
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141
    return 0


def register(sub) -> None:
    c = sub.add_parser("cat", help="write one file of a version to stdout (binary-safe)",
                       description="Write the bytes of one file of a version to stdout, every chunk "
                       "hash-checked. NAME ends at the first ':', REF at the next '/'.")
    c.add_argument("ref", metavar="NAME:REF/PATH", help="the file, e.g. animals:v1/labels.csv or "
                   "animals:latest/dir/a:b.txt")
    c.set_defaults(func=cmd_cat)
