#!/usr/bin/env bash
# Fills an Armbian build tree's userpatches/ for a Perch image on RK3588 boards (Rock 5, Orange Pi 5, ...):
# customize-image.sh, and userpatches/overlay/perch/ with the install script, units, an aarch64 wheelhouse (with
# rknn-toolkit-lite2), the models and Rockchip's librknnrt.so. Run on the build host, which has internet; the
# Armbian chroot then installs everything offline (pip inside a qemu chroot cannot do TLS).
#
#   image-build/boards/armbian-rk3588/prepare.sh --armbian DIR --models DIR --librknnrt FILE [--python-version 3.11]
#   cd DIR && ./compile.sh build BOARD=rock-5b BRANCH=vendor RELEASE=bookworm BUILD_MINIMAL=yes \
#       BUILD_DESKTOP=no KERNEL_CONFIGURE=no
#
# BRANCH=vendor is the Rockchip 6.1 kernel with the rknpu driver; mainline kernels expose only "rocket", which
# librknnrt cannot use. librknnrt.so comes from github.com/airockchip/rknn-toolkit2
# (rknpu2/runtime/Linux/librknn_api/aarch64/librknnrt.so); take the release matching rknn-toolkit-lite2's version.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
armbian=''
models=''
librknnrt=''
pyver=3.11
glibc=2.36
die() { echo "prepare.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case $1 in
    --armbian) armbian=$2; shift 2 ;;
    --models) models=$2; shift 2 ;;
    --librknnrt) librknnrt=$2; shift 2 ;;
    # Ubuntu noble images: --python-version 3.12 --glibc 2.39
    --python-version) pyver=$2; shift 2 ;;
    --glibc) glibc=$2; shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done
[ -d "$armbian/userpatches" ] || mkdir -p "$armbian/userpatches"
[ -d "$models" ] || die "--models DIR is required"
[ -f "$librknnrt" ] || die "--librknnrt FILE is required (see the header)"

dest=$armbian/userpatches/overlay/perch
rm -rf "$dest"
mkdir -p "$dest/image-build/boards/armbian-rk3588"
cp -r "$repo/systemd" "$dest/"
cp "$repo/image-build/install.sh" "$repo/image-build/models.list" "$dest/image-build/"
cp "$here/models.list" "$dest/image-build/boards/armbian-rk3588/"
install -m 0644 "$librknnrt" "$dest/librknnrt.so"
# setup.cfg's rknn extra is marked platform_machine == "aarch64", which pip evaluates on this x86 host: name it.
"$repo/image-build/wheelhouse.sh" --out "$dest/wheelhouse" --python-version "$pyver" --glibc "$glibc" \
  --extra rknn-toolkit-lite2
while read -r rel _; do
  case $rel in '' | '#'*) continue ;; esac
  install -D -m 0644 "$models/$rel" "$dest/models/$rel"
done < <(cat "$repo/image-build/models.list" "$here/models.list")
install -m 0755 "$here/customize-image.sh" "$armbian/userpatches/customize-image.sh"
echo "userpatches ready in $armbian/userpatches"
