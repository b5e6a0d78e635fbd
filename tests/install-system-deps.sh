#!/usr/bin/env bash
# Installs the Debian packages the test suite needs (mosquitto, GStreamer RTSP server, systemd-analyze, …).
# The lists live in .ci/apt.d/*.txt, one package per line, so each part of the project names its own needs.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
mapfile -t pkgs < <(cat "$here"/.ci/apt.d/*.txt 2>/dev/null | sed 's/#.*//' | tr -s ' \t' '\n' | sed '/^$/d' | sort -u)
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends python3-venv "${pkgs[@]}" >/dev/null
echo "installed: python3-venv ${pkgs[*]}"
