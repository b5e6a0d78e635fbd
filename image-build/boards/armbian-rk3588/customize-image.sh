#!/bin/bash
# Armbian userpatches hook (installed by prepare.sh): runs inside the image chroot as root, with
# userpatches/overlay mounted at /tmp/overlay. Arguments: RELEASE LINUXFAMILY BOARD BUILD_DESKTOP ARCH.
set -euo pipefail
board=${3:-unknown}
perch=/tmp/overlay/perch
echo "perch: customizing $board ($1, $2)"

apt-get install -y --no-install-recommends python3 python3-venv ca-certificates
# Rockchip's NPU runtime, where the accelerator probe and rknn-toolkit-lite2 look for it.
install -m 0644 "$perch/librknnrt.so" /usr/lib/librknnrt.so
ldconfig

"$perch/image-build/install.sh" --root / --wheelhouse "$perch/wheelhouse" --extras rknn \
  --models "$perch/models" \
  --models-list "$perch/image-build/models.list" \
  --models-list "$perch/image-build/boards/armbian-rk3588/models.list"
