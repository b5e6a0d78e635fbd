#!/usr/bin/env bash
# Installs Perch on a running NVIDIA Jetson (JetPack 6 / L4T r36: Ubuntu 22.04, Python 3.10, CUDA 12, TensorRT
# 10), from a checkout of this repository, with the internet reachable:
#
#   sudo image-build/boards/jetson/install-jetson.sh [--models DIR] [--ort-index URL] [--no-start]
#
# Jetsons boot NVIDIA's own images (SDK Manager / the SD card image), so Perch ships as this script rather than
# an image: the same install.sh as the image stages, then NVIDIA's GPU build of ONNX Runtime in place of PyPI's
# CPU wheel (the TensorRT and CUDA execution providers come from it), and a drop-in for the GPU device nodes.
#   --models DIR     model tree to copy (models.list); default: none, `perchd models pull` fetches them later
#   --ort-index URL  pip index with onnxruntime-gpu for this JetPack (default: Jetson AI Lab's jp6/cu126 index;
#                    its address has moved before, check https://pypi.jetson-ai-lab.io)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
models=
ort_index=https://pypi.jetson-ai-lab.io/jp6/cu126
start=1
die() { echo "install-jetson.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case $1 in
    --models) models=$2; shift 2 ;;
    --ort-index) ort_index=$2; shift 2 ;;
    --no-start) start=0; shift ;;
    *) die "unknown argument $1" ;;
  esac
done
[ "$(id -u)" = 0 ] || die "run as root"
[ -f /etc/nv_tegra_release ] || die "this is not a Jetson (/etc/nv_tegra_release missing)"

apt-get install -y --no-install-recommends python3-venv ca-certificates
"$repo/image-build/install.sh" --root / --pip-source "$repo" ${models:+--models "$models"}

echo "==> onnxruntime-gpu from $ort_index"
# Both wheels provide the same "onnxruntime" module: the CPU one has to go first.
/opt/perchd/venv/bin/pip uninstall --yes --quiet onnxruntime
/opt/perchd/venv/bin/pip install --quiet --index-url "$ort_index" onnxruntime-gpu
/opt/perchd/venv/bin/python -c 'import onnxruntime as o; print("    providers:", ", ".join(o.get_available_providers()))'

install -D -m 0644 "$here/perchd.service.d/jetson.conf" /etc/systemd/system/perchd.service.d/jetson.conf
systemctl daemon-reload
if [ "$start" = 1 ]; then
  systemctl restart perchd.service
  systemctl --no-pager --lines=5 status perchd.service || true
fi
/opt/perchd/venv/bin/perchd hardware || true
