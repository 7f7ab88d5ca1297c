#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, real FUSE mounts included. Extra arguments go
# to pytest, e.g. scripts/test.sh -m "not slow" or scripts/test.sh tests/test_core.py
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/pytest -q -ra "$@"
