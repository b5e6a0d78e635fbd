#!/usr/bin/env bash
# Builds an offline wheelhouse of perchd and its dependencies for a foreign target (default: Debian bookworm
# on aarch64, CPython 3.11), so that install.sh --wheelhouse works inside a qemu chroot without network.
#
#   wheelhouse.sh --out DIR [--python-version 3.11] [--glibc 2.36] [--arch aarch64] [--extra SPEC]...
#
# JetPack 6 (Ubuntu 22.04): --python-version 3.10 --glibc 2.35. --extra adds requirements (e.g. an extra).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
out=
pyver=3.11
glibc=2.36
arch=aarch64
extras=()

die() { echo "wheelhouse.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --python-version) pyver=$2; shift 2 ;;
    --glibc) glibc=$2; shift 2 ;;
    --arch) arch=$2; shift 2 ;;
    --extra) extras+=("$2"); shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1" ;;
  esac
done
[ -n "$out" ] || die "--out DIR is required"
mkdir -p "$out"
out=$(cd "$out" && pwd)

# A throwaway venv: the host's python3 may have no pip, or one too old to know recent manylinux tags.
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools/venv"
pip=("$tools/venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install --quiet --upgrade pip

echo "==> perchd wheel"
"${pip[@]}" wheel --quiet --no-deps --wheel-dir "$out" "$repo"
wheel=$(ls -t "$out"/perchd-*.whl | head -n1)

# pip matches a wheel only against the exact platform tags it is given: list every manylinux level the target's
# glibc satisfies, or packages that only ship, say, manylinux_2_28 wheels are reported as "not found".
platforms=(--platform "manylinux2014_$arch")
for minor in $(seq 17 "${glibc#2.}"); do platforms+=(--platform "manylinux_2_${minor}_$arch"); done
abi=cp${pyver/./}

echo "==> dependencies for $abi $arch (glibc $glibc)"
"${pip[@]}" download --quiet --dest "$out" --only-binary=:all: \
  --implementation cp --python-version "$pyver" --abi "$abi" "${platforms[@]}" \
  "$wheel" "${extras[@]}"
# The target's pip and setuptools come from its own ensurepip; nothing else is needed.
ls "$out" | sed 's/^/    /'
du -sh "$out" | sed 's/^/    /'
