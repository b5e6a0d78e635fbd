#!/usr/bin/env bash
# Packs the perch-boot Debian package (architecture all) from this folder:
#
#   build-deb.sh VERSION OUT.deb
#
# It owns the boot chain's upkeep on the shared boot partition: update-boot runs from its postinst, from dpkg
# triggers when GRUB's arm64 EFI modules or U-Boot change, and from a kernel postinst.d hook. A package (rather
# than files copied by build.sh) is what lets apt upgrades on a running box keep the partition consistent.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# = 2 ] || { echo "usage: build-deb.sh VERSION OUT.deb" >&2; exit 2; }
version=$1
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

install -D -m 0755 "$here/update-boot" "$stage/usr/lib/perch/update-boot"
install -D -m 0644 "$here/grub.cfg" "$stage/usr/lib/perch/boot/grub.cfg"
install -D -m 0755 "$here/kernel-hook" "$stage/etc/kernel/postinst.d/zz-perch-boot"
mkdir -p "$stage/DEBIAN"
# Debian versions may not carry "+" build suffixes after a "-"; the image version is used as is otherwise.
sed "s/@VERSION@/${version//-/.}/" "$here/control" >"$stage/DEBIAN/control"
install -m 0755 "$here/postinst" "$stage/DEBIAN/postinst"
install -m 0644 "$here/triggers" "$stage/DEBIAN/triggers"
echo /etc/kernel/postinst.d/zz-perch-boot >"$stage/DEBIAN/conffiles"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$2" >/dev/null
