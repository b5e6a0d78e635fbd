#!/usr/bin/env bash
# GPU run, for a machine with an NVIDIA GPU (a Jetson, or an x86 host with a discrete GPU): installs
# onnxruntime-gpu with its CUDA/cuDNN wheels and PyPI's TensorRT wheels into a fresh venv, then runs
# tests/device/test_gpu.py for real — TensorRT engine build, engine cache reuse on the second start, detections
# equal to the CPU within tolerance, `inferenceDevice: GPU` through the daemon — and prints a summary.
# On a machine without an NVIDIA GPU it says so and exits 0 at once (tests/test_gpu_script.py checks that).
#
#   bash tests/device/gpu.sh                      # needs PyPI (or a mirror: PIP_INDEX_URL)
#   PERCHD_WHEELHOUSE=/wheels bash tests/device/gpu.sh   # offline: wheels downloaded beforehand
#   PERCHD_SHARED=/path/to/shared                 # models and photos (default ../shared)
# Budget: < 8 min including the downloads; the engine build of yolox_nano takes well under a minute on a dGPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
export PERCHD_SHARED="${PERCHD_SHARED:-$(cd .. && pwd)/shared}"

if ! command -v nvidia-smi >/dev/null 2>&1 || ! gpus=$(nvidia-smi -L 2>/dev/null) || [ -z "$gpus" ]; then
  if [ ! -e /etc/nv_tegra_release ]; then
    echo "gpu.sh: SKIPPED: no NVIDIA GPU on this machine (no nvidia-smi device, not a Jetson)"
    exit 0
  fi
  gpus="Jetson ($(head -1 /etc/nv_tegra_release))"
fi
echo "gpu.sh: $gpus"
[ -d "$PERCHD_SHARED/models" ] || { echo "gpu.sh: models not found under $PERCHD_SHARED (set PERCHD_SHARED)" >&2; exit 1; }

PY=${PERCHD_GPU_PYTHON:-python3}
VENV=${PERCHD_GPU_VENV:-$(mktemp -d /tmp/perchd-gpu.XXXXXX)/venv}
pip_args=(-q --disable-pip-version-check)
[ -n "${PERCHD_WHEELHOUSE:-}" ] && pip_args+=(--no-index --find-links "$PERCHD_WHEELHOUSE")
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install "${pip_args[@]}" -e '.[test]'
# onnxruntime and onnxruntime-gpu share the `onnxruntime` module: only one may be installed.
"$VENV/bin/pip" uninstall -y -q onnxruntime
if [ -e /etc/nv_tegra_release ]; then
  # JetPack ships CUDA, cuDNN and TensorRT; NVIDIA's onnxruntime-gpu wheel for the JetPack release must be given.
  "$VENV/bin/pip" install "${pip_args[@]}" "${PERCHD_ORT_WHEEL:?on a Jetson set PERCHD_ORT_WHEEL to the onnxruntime-gpu wheel from NVIDIA}"
else
  "$VENV/bin/pip" install "${pip_args[@]}" 'onnxruntime-gpu[cuda,cudnn]'
  if ! "$VENV/bin/pip" install "${pip_args[@]}" tensorrt-cu12; then
    echo "gpu.sh: no TensorRT wheels could be installed: the TensorRT tests fail, CUDA ones still run" >&2
  fi
fi
installed=$(date +%s)

# The CUDA, cuDNN and TensorRT wheels put their libraries inside site-packages: put them on the loader path.
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
libs=$(find "$site/nvidia" "$site/tensorrt_libs" -maxdepth 2 -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u | paste -sd:)
export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

rc=0
summary=$(mktemp)
PERCHD_GPU_REQUIRED=1 PERCHD_GPU_SUMMARY="$summary" "$VENV/bin/python" -m pytest -q -p no:cacheprovider -rA \
  tests/device/test_gpu.py || rc=$?
end=$(date +%s)
echo "==================== gpu.sh summary ===================="
echo "machine: $gpus"
"$VENV/bin/python" -c 'import onnxruntime as o; print("onnxruntime", o.__version__, o.get_available_providers())'
cat "$summary"
echo "install $((installed - start)) s, tests $((end - installed)) s, total $((end - start)) s; exit $rc"
rm -f "$summary"
exit $rc
