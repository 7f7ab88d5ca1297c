"""Validation of artifact names, aliases and NAME:REF references."""

from __future__ import annotations

import re

from .errors import InvalidInput

_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
VERSION = re.compile(r"v(0|[1-9][0-9]*)")
LATEST = "latest"
STAGING = "staging"


def _check_chars(value: str, what: str) -> None:
    if not value:
        raise InvalidInput(f"{what} must not be empty")
    if len(value) > 128:
        raise InvalidInput(f"{what} {value[:40]!r}... is longer than 128 characters")
    if value in (".", "..") or not _NAME.fullmatch(value):
        raise InvalidInput(f"invalid {what} {value!r}: use 1-128 characters of A-Z a-z 0-9 . _ -")


def check_artifact(name: str) -> str:
    _check_chars(name, "artifact name")
    return name


def check_alias(alias: str) -> str:
    """A user alias: not a version label, not 'staging', not the managed 'latest'."""
    _check_chars(alias, "alias")
    if VERSION.fullmatch(alias) or alias in (STAGING, LATEST):
        raise InvalidInput(f"{alias!r} cannot be an alias: it names a version, staging or latest")
    return alias


def parse_ref(spec: str, default: str | None = LATEST) -> tuple[str, str | None]:
    """Split ``NAME[:REF]``; REF is ``vN``, an alias, or ``default`` when omitted."""
    name, sep, ref = spec.partition(":")
    check_artifact(name)
    if not sep:
        return name, default
    if not ref:
        raise InvalidInput(f"{spec!r}: empty version after ':'")
    if not VERSION.fullmatch(ref):
        _check_chars(ref, "alias")
    return name, ref


def version_number(ref: str) -> int | None:
    return int(ref[1:]) if VERSION.fullmatch(ref) else None


def parse_file_ref(spec: str, default: str | None = LATEST) -> tuple[str, str | None, str]:
    """Split ``NAME[:REF[/PATH]]``: NAME ends at the first ':', REF at the first '/' after it
    (names and refs hold neither), so PATH may hold anything else: ``a:v1/x:y/z`` is the file
    ``x:y/z`` of ``a:v1``. A PATH needs a REF (``a:latest/x``): ``a/x`` is an invalid name, not a
    path. PATH is returned without empty and ``.`` components ("" for the whole version)."""
    name, sep, rest = spec.partition(":")
    if not sep:
        return check_artifact(spec), default, ""
    ref, _, path = rest.partition("/")
    name, ref = parse_ref(f"{name}:{ref}", default)
    return name, ref, "/".join(p for p in path.split("/") if p not in ("", "."))


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw]?)")


def parse_duration(value, what: str = "duration") -> float:
    """Seconds from ``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or a number of seconds; > 0."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        m = _DURATION.fullmatch(str(value).strip())
        if m is None:
            raise InvalidInput(f"invalid {what} {value!r}: use a number with s, m, h, d or w (30d, 12h)")
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if not seconds > 0:
        raise InvalidInput(f"invalid {what} {value!r}: must be more than 0")
    return seconds


def format_duration(seconds: float) -> str:
    """The largest whole unit: 2592000 -> '30d', 5400 -> '90m'."""
    for unit in ("w", "d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"
