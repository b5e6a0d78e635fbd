#!/usr/bin/env bash
# Release files beside an image: IMAGE.xz (multi-threaded xz), IMAGE.sha256 (`sha256sum -c` checks both the image
# and the .xz), IMAGE.bmap (bmaptool: flashing skips the empty slot B and free space) and perch-imager.json, an
# os_list entry for Raspberry Pi Imager's custom repository.
#
#   release.sh --image OUT/perch-arm64.img --version V [--url BASE_URL] [--no-xz]
#
# --url is where the .xz will be downloadable (default: a file name relative to the JSON, for local tests).
set -euo pipefail
image= version= url= xz=1
while [ $# -gt 0 ]; do
  case $1 in
    --image) image=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    --url) url=${2%/}/; shift 2 ;;
    --no-xz) xz=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "release.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -f "$image" ] && [ -n "$version" ] || { echo "release.sh: --image FILE --version V are required" >&2; exit 2; }
dir=$(cd "$(dirname "$image")" && pwd)
name=$(basename "$image")
cd "$dir"

bmaptool -q create -o "$name.bmap" "$name"
if [ "$xz" = 1 ]; then
  # -T0: every core. -2, not the default -6: 294 instead of 252 MB, a quarter of the time (the 6 GB image is
  # mostly zeros, and -6 took 9 minutes on the 2-core machine).
  xz -T0 -2 -k -f "$name"
  sha256sum "$name" "$name.xz" >"$name.sha256"
else
  sha256sum "$name" >"$name.sha256"
fi

if [ "$xz" = 1 ]; then
  python3 - "$name" "$version" "$url" <<'PY'
import datetime
import json
import os
import sys

name, version, url = sys.argv[1:4]


# The digests sha256sum just wrote: hashing the 5 GB image again would only cost time.
with open(name + ".sha256") as f:
    digests = {file: digest for digest, file in (line.split(maxsplit=1) for line in f.read().splitlines())}


entry = {
    "name": f"Perch {version} (64-bit)",
    "description": "Perch vision appliance: object and face detection for Home Assistant, Blue Iris and Frigate",
    "url": f"{url}{name}.xz",
    "website": "https://github.com/perch-ai/perch",
    "release_date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
    "extract_size": os.path.getsize(name),
    "extract_sha256": digests[name],
    "image_download_size": os.path.getsize(name + ".xz"),
    "image_download_sha256": digests[name + ".xz"],
    # Pi 5 needs a newer kernel than Debian bookworm's: see image-build/README.md.
    # Imager's OS customisation writes its own first-run script, which this image does not read: no
    # "init_format", so Imager does not offer it; perch-settings.txt on PERCHBOOT does that job.
    "devices": ["pi4-64bit", "pi3-64bit"],
}
with open("perch-imager.json", "w") as f:
    json.dump({"os_list": [entry]}, f, indent=2)
    f.write("\n")
PY
fi
{ ls -l "$name"* perch-imager.json 2>/dev/null || true; } | awk '{print "    " $5 "\t" $9}'
