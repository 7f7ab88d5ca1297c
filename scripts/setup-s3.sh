#!/usr/bin/env bash
# Idempotent set-up of what the S3 tests need, after scripts/setup.sh made .venv: Ceph's mon, OSD and
# radosgw from Debian's packages (installing them starts no daemon; tests/s3servers.py runs them)
# and, in .venv, moto's server plus the S3 clients the tests use. Prints only short progress lines.
# rclone and s3fs (s3fs-fuse) are the peers of the lazy-mount rows of scripts/bench.py.
set -euo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp); trap 'rm -f "$log"' EXIT
quiet() { "$@" >"$log" 2>&1 || { cat "$log" >&2; echo "setup-s3: failed: $*" >&2; exit 1; }; }

[ -x .venv/bin/python ] || { echo "setup-s3: no .venv here: run scripts/setup.sh first" >&2; exit 1; }

need=()
for pkg in radosgw ceph-mon ceph-osd ceph-common rclone s3fs; do   # rclone, s3fs: bench peers
  [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null)" = "ii " ] || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup-s3: installing ${need[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  quiet $SUDO apt-get update -qq
  quiet $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# Versions pinned to the minor: obstore's Python API still changes between 0.x releases.
if ! .venv/bin/python -c 'import importlib.util as u, sys
sys.exit(not all(map(u.find_spec, ["moto", "flask", "flask_cors", "obstore", "boto3", "cryptography"])))'; then
  echo "setup-s3: installing moto[server], obstore, boto3, cryptography into .venv" >&2
  quiet .venv/bin/pip install -q --disable-pip-version-check \
    'moto[server]>=5.1,<6' 'obstore>=0.12,<0.13' 'boto3>=1.34' 'cryptography>=42'
fi
