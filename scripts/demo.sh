#!/usr/bin/env bash
# The main job: set up (if needed), mount the default store at ~/artifacts (or $1) and walk through
# the seed scenario on the mount: animals:v0 (cat, dog), animals:v1 (+ rat), latest, du.
# The mount stays up for you to explore; `.venv/bin/artfs unmount MOUNTPOINT` ends it. It writes into
# $HOME (the store ~/.local/share/artfs, the mount point ~/artifacts) unless ARTFS_STORE and $1 say
# otherwise: ARTFS_STORE=/tmp/demo-store scripts/demo.sh /tmp/demo-mnt
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
artfs() { .venv/bin/artfs "$@"; }
run() { printf '\n$'; printf ' %q' "$@"; printf '\n'; "$@"; }

MNT=${1:-${ARTFS_MOUNT:-$HOME/artifacts}}
mkdir -p "$MNT"
if ! mountpoint -q "$MNT"; then
  run artfs mount "$MNT"
fi
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
head -c 2M /dev/urandom > "$src/cat.png"
head -c 1M /dev/urandom > "$src/dog.png"
head -c 3M /dev/urandom > "$src/rat.png"

[ -d "$MNT/animals" ] || run mkdir "$MNT/animals"
run cp "$src/cat.png" "$src/dog.png" "$MNT/animals/staging/"
run artfs commit animals -m "cat and dog"
run cp "$src/rat.png" "$MNT/animals/staging/"
run artfs commit animals -m "add rat" -a best
run ls -l "$MNT/animals/"
v=$(readlink "$MNT/animals/latest")
run ls -l "$MNT/animals/$v/"
run cmp "$src/rat.png" "$MNT/animals/latest/rat.png"
run artfs ls animals
run artfs du animals
printf '\nMounted at %s (store: %s).\n' "$MNT" "${ARTFS_STORE:-$HOME/.local/share/artfs}"
printf 'To use artfs in your shell:  . %s/.venv/bin/activate   (or: export PATH="%s/.venv/bin:$PATH")\n' \
  "$PWD" "$PWD"
printf 'Unmount with: artfs unmount %s\n' "$MNT"
