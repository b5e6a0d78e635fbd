#!/usr/bin/env bash
# Usage: .ci/changed.sh PATH... ; exits 0 when any PATH changed in the commits being tested.
# "The commits being tested" = those committed within 4 hours before HEAD (one work session), or the whole
# history when it is younger than that. A shallow clone without that history counts as "changed".
set -u
cd "$(git rev-parse --show-toplevel)" || exit 0
head_ts=$(git log -1 --format=%ct HEAD 2>/dev/null) || exit 0
base=$(git rev-list -1 --before=$((head_ts - 14400)) HEAD 2>/dev/null)
if [ -z "$base" ]; then
  # Nothing older than the window: every file in the tree is new.
  [ -n "$(git ls-files -- "$@")" ] && exit 0 || exit 1
fi
[ -n "$(git diff --name-only "$base" HEAD -- "$@")" ] && exit 0 || exit 1
