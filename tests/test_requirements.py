"""A test whose requirement (root, FUSE) is missing is skipped, except under CI=true, where it
fails: a CI machine that lost FUSE or root must not pass by skipping (tests/helpers.py missing).

Root is really missing: each check runs in a forked child that became uid 65534 (nobody), with
everything it needs imported before, and reports its outcome through a pipe."""

from __future__ import annotations

import os

import pytest

from tests import conftest
from tests.helpers import need_root

NOBODY = 65534


def outcome(check, *, ci: bool, uid: int = NOBODY) -> str:
    """'ran', 'skipped: REASON' or 'failed: MESSAGE' of check() as UID (when root), with CI=true
    or without CI in the environment."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            if os.geteuid() == 0 and uid != 0:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            os.environ.pop("CI", None)
            if ci:
                os.environ["CI"] = "true"
            try:
                check()
                result = "ran"
            except pytest.fail.Exception as e:
                result = f"failed: {e}"
            except pytest.skip.Exception as e:
                result = f"skipped: {e}"
            except BaseException as e:  # noqa: BLE001 - reported to the parent
                result = f"error: {e!r}"
            os.write(w, result.encode())
        finally:
            os._exit(0)
    os.close(w)
    with open(r, "rb") as f:
        result = f.read().decode()
    os.waitpid(pid, 0)
    return result


def marked_root(node):
    """The conftest's set-up hook on this test's item, marked ``root`` (in the child only)."""
    def check():
        node.add_marker(pytest.mark.root("this needs root"))
        conftest.pytest_runtest_setup(node)
    return check


def test_missing_root_skips_outside_ci(request):
    assert outcome(lambda: need_root("this needs root"), ci=False) == "skipped: this needs root"
    assert outcome(marked_root(request.node), ci=False) == "skipped: this needs root"


def test_missing_root_fails_under_ci(request):
    assert outcome(lambda: need_root("this needs root"), ci=True) == "failed: CI=true and this needs root"
    assert outcome(marked_root(request.node), ci=True) == "failed: CI=true and this needs root"
    assert outcome(lambda: conftest.pytest_runtest_setup(request.node), ci=True) == "ran"  # not marked


def test_root_runs_them_under_ci(request):
    need_root("running the checks as root needs root")
    assert outcome(lambda: need_root("this needs root"), ci=True, uid=0) == "ran"
    assert outcome(marked_root(request.node), ci=True, uid=0) == "ran"
