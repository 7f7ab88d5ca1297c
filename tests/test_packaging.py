"""Installing artfs: no C compiler without the mount, pyfuse3 and trio imported only by the mount,
one version number."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import write

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MISSING_MOUNT = ("artfs: error: the mount needs pyfuse3: pip install 'artfs[mount]' "
                 "(needs libfuse3-dev, pkg-config, gcc)\n")

# Runs the CLI in a process where pyfuse3 and trio cannot be imported (as without the extra).
WITHOUT_MOUNT = """\
import sys
sys.modules["pyfuse3"] = sys.modules["trio"] = None
from artfs.cli.main import main
code = main(sys.argv[1:])
assert "pyfuse3" not in sys.modules or sys.modules["pyfuse3"] is None
sys.exit(code)
"""


def without_mount(*args, env=None):
    return subprocess.run([sys.executable, "-c", WITHOUT_MOUNT, *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, env=env)


def test_everything_but_the_mount_works_without_pyfuse3_and_trio(tmp_path):
    store = tmp_path / "store"
    write(tmp_path / "src" / "a.txt", b"a")
    assert without_mount("--store", store, "put", "animals", tmp_path / "src").stdout == "animals:v0\n"
    assert "animals" in without_mount("--store", store, "ls").stdout
    assert without_mount("--store", store, "status", "animals").returncode == 0
    assert without_mount("--store", store, "get", "animals", tmp_path / "out").returncode == 0
    assert (tmp_path / "out" / "a.txt").read_bytes() == b"a"
    code = ("import sys; sys.modules['pyfuse3'] = sys.modules['trio'] = None\n"
            "import artfs, artfs.api.fsspec, fsspec\n"
            "print(fsspec.filesystem('artfs', store=sys.argv[1]).cat_file('animals/a.txt').decode())")
    proc = subprocess.run([sys.executable, "-c", code, store], capture_output=True, text=True, cwd=ROOT)
    assert proc.stdout == "a\n", proc.stderr
    for command in ("mount", "unmount"):
        proc = without_mount("--store", store, command, tmp_path)
        assert (proc.returncode, proc.stderr) == (8, MISSING_MOUNT)


def test_version_is_the_package_metadata():
    proc = subprocess.run([sys.executable, "-m", "artfs", "--version"], capture_output=True, text=True)
    assert proc.stdout == f"artfs {importlib.metadata.version('artfs')}\n"
    import artfs
    assert artfs.__version__ == importlib.metadata.version("artfs")


def test_install_without_a_compiler_in_a_fresh_venv(tmp_path):
    """pip install of the project (no extras) into a fresh venv without system site packages,
    with CC=/bin/false so that any compile fails: the API, the CLI and artfs:// work, and
    ``artfs mount`` says how to get the mount. Needs the package index (or pip's cache)."""
    src = tmp_path / "src"
    shutil.copytree(os.path.join(ROOT, "artfs"), src / "artfs",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    env = {**os.environ, "CC": "/bin/false", "CXX": "/bin/false", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.run([venv / "bin" / "pip", "install", "-q", src], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bin_ = venv / "bin"
    assert subprocess.run([bin_ / "python", "-c", "import pyfuse3"], capture_output=True).returncode != 0

    def artfs(*args):
        return subprocess.run([bin_ / "artfs", "--store", tmp_path / "store", *args], capture_output=True,
                              text=True, env=env, cwd=tmp_path)
    assert artfs("--version").stdout == f"artfs {importlib.metadata.version('artfs')}\n"
    write(tmp_path / "data" / "labels.csv", b"name,label\ncat,1\n")
    assert artfs("put", "animals", tmp_path / "data").stdout == "animals:v0\n"
    assert "animals" in artfs("ls").stdout
    assert artfs("get", "animals:v0", tmp_path / "out").returncode == 0
    assert (tmp_path / "out" / "labels.csv").read_bytes() == b"name,label\ncat,1\n"
    code = "import fsspec, sys; print(fsspec.open(sys.argv[1], store=sys.argv[2]).open().read())"
    read = subprocess.run([bin_ / "python", "-c", code, "artfs://animals/labels.csv", tmp_path / "store"],
                          capture_output=True, text=True, env=env)
    assert read.stdout == "b'name,label\\ncat,1\\n'\n", read.stderr
    (tmp_path / "mnt").mkdir()
    proc = artfs("mount", tmp_path / "mnt")
    assert (proc.returncode, proc.stderr) == (8, MISSING_MOUNT)
