#!/usr/bin/env bash
# SD image job: builds the generic arm64 image with image-build/build.sh into a temporary directory (Debian
# bookworm rootfs via mmdebstrap, perchd from an aarch64 wheelhouse, a real detection under qemu-user, genimage)
# and checks the contract: perch-arm64.img and perch-arm64-rootfs.tar.* exist. Takes ~6 minutes on 2 cores.
# .ci/run calls it only when image-build/, systemd/ or setup.cfg changed, or with PERCHD_IMAGE_CI=1.
# Locally: sudo PERCHD_IMAGE_CI=1 .ci/image.sh   (or image-build/build.sh directly, see image-build/README.md)
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
start=$(date +%s)
command -v sudo >/dev/null 2>&1 || sudo() { "$@"; }

# Installed here rather than in .ci/apt.d/: qemu and friends are ~150 MB that only this job needs.
packages=(mmdebstrap qemu-user-static binfmt-support arch-test genimage dosfstools mtools e2fsprogs zstd
  systemd python3-venv)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo apt-get update -qq
  sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "image.sh: packages ready after $(( $(date +%s) - start )) s"

shared=${PERCHD_SHARED:-$(cd .. && pwd)/shared}
out=$(mktemp -d "${TMPDIR:-/tmp}/perch-image-out.XXXXXX")
trap 'rm -rf "$out"' EXIT
sudo image-build/build.sh --models "$shared/models" --photo "$shared/images/dog_bicycle_car.jpg" --out "$out"

test -s "$out/perch-arm64.img"
ls "$out"/perch-arm64-rootfs.tar* >/dev/null
echo "image.sh: SD image job took $(( $(date +%s) - start )) s"
