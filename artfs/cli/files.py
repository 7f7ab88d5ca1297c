"""CLI commands on the files of one version: ``ls NAME:REF [PATH]``, ``get NAME:REF/PATH DEST`` and
``cat NAME:REF/PATH``.

``NAME:REF/PATH``: NAME ends at the first ':', REF at the next '/' (artfs.names.parse_file_ref),
so PATH may hold anything else (':' and spaces included).
"""

from __future__ import annotations

import os
import sys

from ..errors import IsADirectory, UsageError
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


def add_reference_options(c) -> None:
    """``put``'s options for reference files (docs/SEMANTICS.md "Reference files")."""
    g = c.add_argument_group("reference files (bytes stay at their source)")
    g.add_argument("--reference", metavar="URL",
                   help="record the files at URL instead of storing them: file:///DIR (or a file), "
                   "s3://BUCKET/PREFIX (or an object), https://HOST/PATH (one file)")
    g.add_argument("--no-checksum", action="store_true",
                   help="do not read the files: record only what the source reports (size, ETag, "
                   "version id, mtime)")
    g.add_argument("--cache", action="store_true", help="also keep the bytes in the store")
    g.add_argument("--endpoint", help="the S3-compatible endpoint of an s3:// URL (https://HOST[:PORT])")
    g.add_argument("--region", help="the S3 region (default: $AWS_REGION, else us-east-1)")
    g.add_argument("--ca-bundle", metavar="PEM", help="trust this CA for the endpoint or https URL")
    g.add_argument("--allow-http", action="store_true",
                   help="allow plain http to a host that is not loopback")


def put_source(args) -> tuple[str, dict]:
    """PATH, or --reference URL with its options, as Store.put takes them."""
    if (args.path is None) == (args.reference is None):
        raise UsageError("give PATH or --reference URL (not both)")
    if args.reference is None:
        if args.no_checksum or args.cache or args.endpoint or args.region or args.ca_bundle or args.allow_http:
            raise UsageError("--no-checksum, --cache, --endpoint, --region, --ca-bundle and "
                             "--allow-http go with --reference")
        return args.path, {}
    return args.reference, {"reference": True, "checksum": not args.no_checksum, "cache": args.cache,
                            "endpoint": args.endpoint, "region": args.region,
                            "ca_bundle": args.ca_bundle, "allow_http": args.allow_http}


def register(sub) -> None:
    c = sub.add_parser("cat", help="write one file of a version to stdout (binary-safe)",
                       description="Write the bytes of one file of a version to stdout, every chunk "
                       "hash-checked. NAME ends at the first ':', REF at the next '/'.")
    c.add_argument("ref", metavar="NAME:REF/PATH", help="the file, e.g. animals:v1/labels.csv or "
                   "animals:latest/dir/a:b.txt")
    c.set_defaults(func=cmd_cat)
