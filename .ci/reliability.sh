#!/usr/bin/env bash
# The reliability job (issue 13), after the main suite: a 20,000-request soak, three daemons behind HAProxy with one
# killed and one stopped, and a 30 s broker outage with a camera. Real daemons, Mosquitto, HAProxy and nginx
# (.ci/apt.d/reliability.txt). About 5 minutes on the 2-core CI machine.
#   PERCHD_SOAK_REQUESTS=N   soak length (default 20000)
#   PERCHD_SOAK_MINUTES=M    soak for M minutes instead (the long variant)
#   PERCHD_OUTAGE_S=S        broker outage length (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
export PERCHD_SHARED="${PERCHD_SHARED:-$(cd .. && pwd)/shared}"
start=$(date +%s)
.venv/bin/python -m pytest -q -s -m reliability tests/reliability
echo "reliability job: $(( $(date +%s) - start )) s"
