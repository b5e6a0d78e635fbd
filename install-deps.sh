#!/usr/bin/env bash
# Installs the Debian packages Perch needs, with `apt-get update` first (a fresh machine has no package lists).
#   ./install-deps.sh           what the daemon needs to be installed from source (python3-venv)
#   ./install-deps.sh --tests   and what the test suite needs: .ci/apt.d/*.txt, one package per line, so each part of
#                               the project names its own needs (mosquitto, GStreamer RTSP server, Chromium, RAUC, …)
# Run it as yourself or as root: it asks sudo only when it is not root, so a root shell without sudo works too.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-deps.sh: run it as root (there is no sudo here)" >&2; exit 1; }
  exec sudo "$0" "$@"
fi
here=$(cd "$(dirname "$0")" && pwd)
pkgs=(python3-venv)
case "${1:-}" in
  "") ;;
  --tests) mapfile -t -O 1 pkgs < <(cat "$here"/.ci/apt.d/*.txt | sed 's/#.*//' | tr -s ' \t' '\n' | sed '/^$/d' | sort -u) ;;
  *) echo "usage: $0 [--tests]" >&2; exit 2 ;;
esac
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
echo "installed: ${pkgs[*]}"
