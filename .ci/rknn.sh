#!/usr/bin/env bash
# RKNN simulator job: converts the shared yolox_nano.onnx for every Rockchip NPU the probe knows with
# models/rknn/convert.py (rknn-toolkit2 2.5.0) and runs it through accelerators/rknn.py on the toolkit's x86
# simulator, one context per NPU core, comparing the daemon's own pipeline with onnxruntime on the CPU
# (tests/rknn_sim). rknn-toolkit2 pins numpy<=1.26.4 and imports torch, so it gets its own venv, kept between runs
# under ~/.cache and rebuilt when the requirements or the Python version change. .ci/run calls it on every run.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
start=$(date +%s)

PY=${PERCHD_RKNN_PYTHON:-python3.11}
VENV=${PERCHD_RKNN_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/perchd/rknn-venv}
REQ=tests/rknn_sim/requirements.txt
TOOLKIT=rknn-toolkit2==2.5.0

if ! command -v "$PY" >/dev/null; then
  echo "rknn.sh: $PY not found (rknn-toolkit2 2.5.0 and the CPU torch wheel here are cp311)" >&2
  exit 1
fi
want="$("$PY" -c 'import sys; print(sys.version.split()[0])') $TOOLKIT $(sha256sum "$REQ" | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.perchd-stamp" 2>/dev/null)" != "$want" ]; then
  echo "rknn.sh: creating $VENV"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --no-deps "$TOOLKIT"
  if ! "$VENV/bin/pip" install -q -r "$REQ"; then
    echo "rknn.sh: installing $REQ failed (torch==2.13.0+cpu must come from a local wheel; never PyPI's CUDA build)" >&2
    rm -rf "$VENV"
    exit 1
  fi
  echo "$want" >"$VENV/.perchd-stamp"
fi
ready=$(date +%s)

# The project itself, without its dependencies (numpy 2, aiohttp, ... are not needed by the accelerators code).
"$VENV/bin/pip" install -q --no-deps --no-build-isolation -e .

# --noconftest: tests/conftest.py belongs to the daemon's suite and imports packages this venv does not have.
# Without -s: the toolkit logs every conversion step; the comparison table is written to a file and shown below.
rc=0
summary=$(mktemp)
PERCHD_RKNN_SUMMARY=$summary "$VENV/bin/python" -m pytest -q -p no:cacheprovider --noconftest \
  -W ignore::DeprecationWarning -W ignore::UserWarning -W ignore::pytest.PytestConfigWarning \
  tests/rknn_sim || rc=$?
cat "$summary"
rm -f "$summary"
end=$(date +%s)
echo "rknn.sh: venv $((ready - start)) s, tests $((end - ready)) s, total $((end - start)) s"
exit $rc
