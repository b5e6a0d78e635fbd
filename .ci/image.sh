#!/usr/bin/env bash
# SD image job: builds the generic arm64 image with image-build/build.sh (Debian bookworm, kernel, GRUB/U-Boot A/B
# boot chain, perchd from an aarch64 wheelhouse, a real detection under qemu-user, genimage, release files and a
# signed RAUC bundle), then boots it in qemu-system-aarch64 and runs the boot and update tests against it
# (image-build/tests, see image-build/README.md). Prints each phase's minutes.
# .ci/run calls it only when image-build/, systemd/ or setup.cfg changed, or with PERCHD_IMAGE_CI=1.
# Locally: sudo PERCHD_IMAGE_CI=1 PERCHD_SHARED=../shared .ci/image.sh
#   PERCHD_IMAGE_OUT=DIR keeps the outputs there; PERCHD_IMAGE_CACHE=DIR reuses the Debian base between runs;
#   PERCHD_IMAGE_SKIP_BUILD=1 tests the image already in PERCHD_IMAGE_OUT.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
start=$(date +%s)
phase_start=$start
phase() {
  local now
  now=$(date +%s)
  awk -v name="$1" -v phase=$((now - phase_start)) -v total=$((now - start)) \
    'BEGIN { printf "image.sh: %-44s %5.1f min (total %5.1f min)\n", name, phase / 60, total / 60 }'
  phase_start=$now
}
command -v sudo >/dev/null 2>&1 || sudo() { "$@"; }

# Installed here rather than in .ci/apt.d/: qemu and friends are ~300 MB that only this job needs.
packages=(mmdebstrap qemu-user-static binfmt-support arch-test genimage dosfstools mtools e2fsprogs zstd
  systemd python3-venv rauc squashfs-tools openssl xz-utils bmap-tools
  qemu-system-arm qemu-efi-aarch64 openssh-client mosquitto)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo apt-get update -qq
  sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The boot test's Python side (pytest, paho-mqtt) is the project's test environment.
[ -x .venv/bin/python ] || { python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]'; }
phase "host packages"

shared=${PERCHD_SHARED:-$(cd .. && pwd)/shared}
if [ -n "${PERCHD_IMAGE_OUT:-}" ]; then
  out=$PERCHD_IMAGE_OUT
  mkdir -p "$out"
else
  out=$(mktemp -d "${TMPDIR:-/tmp}/perch-image-out.XXXXXX")
  trap 'rm -rf "$out"' EXIT
fi
if [ "${PERCHD_IMAGE_SKIP_BUILD:-0}" != 1 ]; then
  sudo image-build/build.sh --models "$shared/models" --photo "$shared/images/dog_bicycle_car.jpg" --out "$out" \
    ${PERCHD_IMAGE_CACHE:+--cache "$PERCHD_IMAGE_CACHE"}
  phase "build (image, bundle, release files)"
fi

# The release contract: what a user downloads and what CI hands to the boot test.
for file in perch-arm64.img perch-arm64.img.xz perch-arm64.img.sha256 perch-arm64.img.bmap perch-imager.json \
  perch-arm64-rootfs.ext4; do
  test -s "$out/$file" || { echo "image.sh: $file missing" >&2; exit 1; }
done
ls "$out"/perch-*-arm64.raucb >/dev/null
(cd "$out" && sha256sum -c --quiet perch-arm64.img.sha256)
xz_mb=$(( $(stat -c %s "$out/perch-arm64.img.xz") / 1048576 ))
echo "image.sh: perch-arm64.img $(( $(stat -c %s "$out/perch-arm64.img") / 1048576 )) MiB raw, ${xz_mb} MiB xz"
[ "$xz_mb" -lt 600 ] || { echo "image.sh: the compressed image is over 600 MB" >&2; exit 1; }

sudo .venv/bin/python -m pytest image-build/tests --image-dir "$out" --shared "$shared" -p no:cacheprovider \
  -v -s --durations=0
phase "boot and update tests (qemu-system-aarch64)"
echo "image.sh: SD image job took $(( ($(date +%s) - start) / 60 )) min $(( ($(date +%s) - start) % 60 )) s"
