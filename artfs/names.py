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
