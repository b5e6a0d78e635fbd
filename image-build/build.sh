#!/usr/bin/env bash
# Generic arm64 Perch image: Debian bookworm + systemd + perchd, bootable on Raspberry Pi 3/4/400/CM4/Zero 2 W
# (firmware -> U-Boot -> GRUB) and on UEFI arm64 machines (-> GRUB), with two root slots for RAUC updates.
# Built on an x86 (or any) Linux host without loop devices, then checked: unit verification inside the rootfs
# and a real detection under qemu-user.
#
#   sudo image-build/build.sh --models DIR --out DIR [options]
#
# Writes to OUT: perch-arm64.img (+ .img.xz, .img.sha256, .img.bmap, perch-imager.json), the signed update
# bundle perch-<version>-arm64.raucb, perch-arm64-rootfs.tar.zst and the slot image perch-arm64-rootfs.ext4.
# Exits non-zero when any step fails.
#
#   --models DIR       model tree in the layout of ../shared/models (files from models.list are baked in)
#   --out DIR          output directory (created)
#   --version V        image and bundle version (default: setup.cfg's version + "+" + UTC build time)
#   --keys DIR         RAUC signing material: ca.cert.pem (goes into the image), signing.cert.pem and
#                      signing.key.pem (sign the bundle). Default: a throwaway CA made now and left in
#                      OUT/throwaway-keys/ (good for CI and tests, never for devices in the field)
#   --wheelhouse DIR   reuse wheels from wheelhouse.sh instead of building them (offline rebuilds)
#   --cache DIR        keep the Debian base (packages, kernel, initramfs) as a tarball there and reuse it while
#                      its package list and hooks are unchanged (local rebuilds; CI starts clean)
#   --photo FILE       smoke-test photo (default ../shared/images/dog_bicycle_car.jpg next to the repo)
#   --expect LABELS    labels the smoke detection must find (default "dog bicycle car")
#   --mirror URL       Debian mirror (default http://deb.debian.org/debian)
#   --release-url URL  where the .img.xz will be downloadable (for perch-imager.json)
#   --no-smoke         skip the qemu detection run
#   --no-xz            skip perch-arm64.img.xz and the Imager entry (quicker local builds)
#   --work DIR         build directory (default: a fresh one under $TMPDIR, removed afterwards)
#   --keep-work        keep the build directory
#
# Needs root and: mmdebstrap, qemu-user-static, binfmt-support, genimage, dosfstools, mtools, e2fsprogs, zstd,
# systemd (systemd-analyze), python3-venv, rauc, squashfs-tools, openssl, xz-utils, bmap-tools.
# .ci/image.sh installs them on Debian bookworm.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

suite=bookworm
mirror=http://deb.debian.org/debian
models=
out=
version=
keys=
wheelhouse=
cache=
photo=$repo/../shared/images/dog_bicycle_car.jpg
expect="dog bicycle car"
release_url=
smoke=1
xz=1
work=
keep=0

die() { echo "build.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case $1 in
    --models) models=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    --keys) keys=$2; shift 2 ;;
    --wheelhouse) wheelhouse=$2; shift 2 ;;
    --cache) cache=$2; shift 2 ;;
    --photo) photo=$2; shift 2 ;;
    --expect) expect=$2; shift 2 ;;
    --mirror) mirror=$2; shift 2 ;;
    --release-url) release_url=$2; shift 2 ;;
    --no-smoke) smoke=0; shift ;;
    --no-xz) xz=0; shift ;;
    --work) work=$2; shift 2 ;;
    --keep-work) keep=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[ -n "$models" ] && [ -d "$models" ] || die "--models DIR is required and must exist"
[ -n "$out" ] || die "--out DIR is required"
[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap, chroot and mounts need it)"
for tool in mmdebstrap genimage mkdosfs mcopy mke2fs zstd chroot systemd-analyze python3 rauc mksquashfs openssl \
  dpkg-deb; do
  command -v "$tool" >/dev/null || die "$tool is missing (see --help for the packages)"
done
[ "$smoke" = 0 ] || [ -f "$photo" ] || die "smoke photo $photo not found (--photo FILE or --no-smoke)"
if [ -z "$version" ]; then
  version="$(sed -n 's/^version *= *//p' "$repo/setup.cfg")+$(date -u +%Y%m%d%H%M)"
fi
# It ends up in a file name and in RAUC's manifest: keep it to characters both take.
[[ $version =~ ^[0-9A-Za-z.+~-]+$ ]] || die "--version $version: use letters, digits and . + ~ -"
models=$(cd "$models" && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
[ -z "$cache" ] || { mkdir -p "$cache" && cache=$(cd "$cache" && pwd); }

started=$SECONDS
step_started=$SECONDS
step() {
  echo "==> [$((SECONDS - started))s, previous step $((SECONDS - step_started))s] $*"
  step_started=$SECONDS
}

if [ -z "$work" ]; then work=$(mktemp -d "${TMPDIR:-/tmp}/perch-image.XXXXXX"); else mkdir -p "$work"; fi
work=$(cd "$work" && pwd)
# mktemp makes it 0700, which keeps apt's unprivileged _apt user from downloading into the rootfs beneath it.
chmod 0755 "$work"
root=$work/rootfs

# --- mounts inside the rootfs, always undone (also on failure) before anything is deleted --------------------
mounts=()
mount_in() { mount "$@"; mounts+=("${*: -1}"); }
umount_all() {
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    umount "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}"
  done
  mounts=()
}
wheel_job=
cleanup() {
  local rc=$?
  if [ -n "$wheel_job" ]; then kill "$wheel_job" 2>/dev/null || true; wait "$wheel_job" 2>/dev/null || true; fi
  umount_all
  if [ "$keep" = 1 ]; then
    echo "build directory kept: $work"
  else
    # --one-file-system: never follow a bind mount that somehow survived into the host's /dev.
    rm -rf --one-file-system "$work"
  fi
  [ "$rc" = 0 ] || echo "build.sh: FAILED (exit $rc) after $((SECONDS - started))s" >&2
}
trap cleanup EXIT

# --- 1. foreign binaries: qemu-user through binfmt_misc ----------------------------------------------------------
step "qemu-user for arm64"
# The F flag (qemu-user-static's default) opens the interpreter at registration, so it works inside the chroot
# without copying qemu into it. binfmt_misc must be mounted before update-binfmts can enable anything.
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if command -v update-binfmts >/dev/null; then update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true; fi
grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null ||
  die "qemu-aarch64 is not registered with binfmt_misc (apt install qemu-user-static binfmt-support)"

# --- 2. wheels (downloaded while mmdebstrap runs: one waits on the network, the other on qemu) ------------------
if [ -z "$wheelhouse" ]; then
  step "wheelhouse (aarch64, cp311), in the background"
  wheelhouse=$work/wheelhouse
  "$here/wheelhouse.sh" --out "$wheelhouse" --python-version 3.11 --glibc 2.36 --arch aarch64 \
    >"$work/wheelhouse.log" 2>&1 &
  wheel_job=$!
fi

# --- 3. Debian rootfs: base system, kernel, boot loaders, RAUC --------------------------------------------------
packages=(
  systemd systemd-sysv udev dbus systemd-resolved systemd-timesyncd
  python3 python3-venv ca-certificates netbase tzdata
  wpasupplicant iproute2 iputils-ping openssh-server
  cloud-guest-utils fdisk e2fsprogs dosfstools kmod less
  # Raspberry Pi firmware (non-free-firmware) and Wi-Fi, the generic arm64 kernel, U-Boot for the Pi, GRUB's
  # arm64 EFI modules (grub-efi-arm64-bin alone: the full package would run grub-install), RAUC.
  linux-image-arm64 initramfs-tools zstd raspi-firmware firmware-brcm80211 wireless-regdb u-boot-rpi
  grub-efi-arm64-bin rauc rauc-service
)
# Before any package: kernels get /boot/vmlinuz and /boot/initrd.img links (what GRUB loads from each slot), and
# the initramfs checks the root file system (ext4: its fsck hook cannot see the type from inside a chroot).
setup_hook='printf "do_symlinks = yes\nlink_in_boot = yes\n" >"$1/etc/kernel-img.conf" &&
  mkdir -p "$1/etc/initramfs-tools/conf.d" && echo FSTYPE=ext4 >"$1/etc/initramfs-tools/conf.d/perch"'
# Under qemu every process start costs ~40 ms. update-ca-certificates forks ~700 times and would run twice;
# update-initramfs (MODULES=most, ~9 min under qemu) would run for the kernel and again for every trigger: both
# are no-ops during the install and run once at the end. unsafe-io skips fsyncs nobody needs while building.
essential_hook='for tool in /usr/sbin/update-ca-certificates /usr/sbin/update-initramfs; do
    chroot "$1" dpkg-divert --quiet --local --rename --add "$tool" && ln -s /bin/true "$1$tool"; done'
# The Pi firmware starts U-Boot (which starts GRUB), not the kernel: raspi-firmware's hook then writes a
# config.txt with kernel=u-boot.bin and copies no kernel. Its cmdline.txt is not used (GRUB passes each slot's
# command line); ROOTPART only keeps the hook from guessing the build host's root.
customize_hook='for tool in /usr/sbin/update-ca-certificates /usr/sbin/update-initramfs; do
    rm "$1$tool" && chroot "$1" dpkg-divert --quiet --local --rename --remove "$tool"; done &&
  sed -i -e "s/^#\?KERNEL=.*/KERNEL=\"u-boot.bin\"/" -e "s/^#\?INITRAMFS=.*/INITRAMFS=\"no\"/" \
    -e "s/^#\?ROOTPART=.*/ROOTPART=\"PARTUUID=50455243-02\"/" "$1/etc/default/raspi-firmware" &&
  chroot "$1" update-ca-certificates &&
  chroot "$1" update-initramfs -c -k all'
mmdebstrap_args=(
  --mode=root --arch=arm64 --variant=minbase --format=directory
  --include="$(IFS=,; echo "${packages[*]}")"
  --aptopt='APT::Install-Recommends "false"'
  --aptopt='Acquire::Retries "3"'
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-include=/usr/share/locale/locale.alias'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt=force-unsafe-io
  --setup-hook="$setup_hook"
  --essential-hook="$essential_hook"
  --customize-hook="$customize_hook"
  --skip=check/empty
  "$suite" "$root"
  "deb $mirror $suite main non-free-firmware"
  "deb $mirror $suite-updates main non-free-firmware"
  "deb http://deb.debian.org/debian-security $suite-security main non-free-firmware"
)
base_key=$(printf '%s\n' "${mmdebstrap_args[@]/$root/ROOT}" | sha256sum | cut -c1-16)
base_tar=${cache:+$cache/perch-base-$base_key.tar.zst}
if [ -n "$base_tar" ] && [ -f "$base_tar" ]; then
  step "Debian base from the cache ($base_tar)"
  mkdir -p "$root"
  zstd -q -d -c "$base_tar" | tar --numeric-owner --xattrs --xattrs-include='*' -C "$root" -xf -
else
  step "mmdebstrap $suite arm64"
  mmdebstrap "${mmdebstrap_args[@]}"
  if [ -n "$base_tar" ]; then
    tar --numeric-owner --xattrs --xattrs-include='*' -C "$root" -cf - . | zstd -q -T0 -3 -o "$base_tar.tmp" -f
    mv "$base_tar.tmp" "$base_tar"
  fi
fi

# Everything below runs arm64 code in the rootfs. aarch64 onnxruntime and LiteRT parse /proc/cpuinfo at import
# and crash on the host's x86 one: an ARM cpuinfo (one entry per host CPU) is bound over it.
cpuinfo=$work/cpuinfo
for ((cpu = 0; cpu < $(nproc --all); cpu++)); do
  sed "s/^processor.*/processor\t: $cpu/" "$here/qemu/cpuinfo-aarch64"
  echo
done >"$cpuinfo"
mount_in -t proc proc "$root/proc"
mount_in --bind "$cpuinfo" "$root/proc/cpuinfo"
mount_in -t sysfs -o ro sysfs "$root/sys"
mount_in --bind /dev "$root/dev"
chroot "$root" /usr/bin/uname -m | grep -qx aarch64 || die "arm64 binaries do not run in the rootfs"

if [ -n "$wheel_job" ]; then
  wait "$wheel_job" || { wheel_job=; cat "$work/wheelhouse.log" >&2; die "wheelhouse.sh failed"; }
  wheel_job=
  sed 's/^/    /' "$work/wheelhouse.log" | tail -n 3
fi
wheelhouse=$(cd "$wheelhouse" && pwd)

# --- 4. Perch --------------------------------------------------------------------------------------------------
step "appliance files, boot chain"
cp -r --no-preserve=ownership "$here/rootfs/." "$root/"
printf 'VERSION=%s\n' "$version" >"$root/usr/lib/perch/release"
# The boot partition's content comes from package hooks (raspi-firmware's, and perch-boot's for GRUB, U-Boot and
# the device trees), so apt upgrades of the kernel, GRUB or U-Boot keep it consistent the same way.
"$here/perch-boot/build-deb.sh" "$version" "$work/perch-boot.deb"
cp "$work/perch-boot.deb" "$root/tmp/perch-boot.deb"
chroot "$root" dpkg -i /tmp/perch-boot.deb
rm "$root/tmp/perch-boot.deb"
for file in config.txt u-boot.bin EFI/BOOT/BOOTAA64.EFI EFI/perch/grub.cfg EFI/perch/grubenv \
  bcm2837-rpi-3-b.dtb bcm2711-rpi-4-b.dtb start4.elf bootcode.bin; do
  [ -s "$root/boot/firmware/$file" ] || die "boot partition lacks $file after the package hooks ran"
done
grep -qx 'kernel=u-boot.bin' "$root/boot/firmware/config.txt" || die "config.txt does not start U-Boot"

if [ -n "$keys" ]; then
  keys=$(cd "$keys" && pwd)
else
  keys=$out/throwaway-keys
  "$here/rauc/make-keys.sh" "$keys" "Perch throwaway $version"
fi
for file in ca.cert.pem signing.cert.pem signing.key.pem; do
  [ -s "$keys/$file" ] || die "--keys $keys lacks $file"
done
# Only the CA certificate goes into the image: it checks bundles, it cannot sign them.
install -m 0644 "$keys/ca.cert.pem" "$root/etc/rauc/ca.cert.pem"

step "install.sh"
"$here/install.sh" --root "$root" --wheelhouse "$wheelhouse" --models "$models" \
  --models-dest /usr/share/perch/models
systemctl --root="$root" enable systemd-networkd.service systemd-resolved.service systemd-timesyncd.service \
  perch-firstboot.service perch-growdata.service perch-sshkeys.service perch-data.service \
  perch-slot-check.service
# The D-Bus-driven wpa_supplicant is for NetworkManager; here wpa_supplicant@wlan0 owns the radio, started when
# wlan0 appears and a Wi-Fi configuration exists (perch-settings.txt puts it on the data partition).
systemctl --root="$root" disable wpa_supplicant.service
mkdir -p "$root/etc/systemd/system/sys-subsystem-net-devices-wlan0.device.wants"
ln -sf /usr/lib/systemd/system/wpa_supplicant@.service \
  "$root/etc/systemd/system/sys-subsystem-net-devices-wlan0.device.wants/wpa_supplicant@wlan0.service"

step "image hygiene"
# Per-machine identity must be created on each card, not shared by all of them: machine-id ("uninitialized"
# also makes this the first boot), SSH host keys (made on the data partition), the random seed.
printf 'uninitialized\n' >"$root/etc/machine-id"
rm -f "$root"/etc/ssh/ssh_host_* "$root/var/lib/systemd/random-seed" "$root/var/lib/dbus/machine-id"
ln -sf /etc/machine-id "$root/var/lib/dbus/machine-id"
ln -sfn ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
rm -rf "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* "$root"/var/log/*.log "$root"/tmp/* \
  "$root"/root/.cache
# Root logs in with a key only: no password, locked.
[ "$(chroot "$root" passwd -S root | cut -d' ' -f2)" = L ] || chroot "$root" passwd -l root >/dev/null

# --- 5. checks inside the rootfs ---------------------------------------------------------------------------------
step "systemd-analyze verify in the rootfs"
units=(perchd.service perch-firstboot.service perch-growdata.service perch-sshkeys.service perch-data.service
  perch-slot-check.service)
# verify exits 0 on unknown keys and only prints them: any output fails the build.
report=$(systemd-analyze --root="$root" verify "${units[@]}" 2>&1) || die "verify failed: $report"
[ -z "$report" ] || die "systemd-analyze verify is not clean:"$'\n'"$report"
systemd-analyze security --root="$root" --offline=true --threshold=25 perchd.service | tail -n1
[ "$(systemctl --root="$root" is-enabled perchd.service)" = enabled ] || die "perchd.service is not enabled"

if [ "$smoke" = 1 ]; then
  step "smoke detection under qemu-user"
  smoke_dir=$(mktemp -d "$root/tmp/perch-smoke.XXXXXX")
  cp "$photo" "$smoke_dir/photo.${photo##*.}"
  chown -R --reference="$root/var/lib/perchd" "$smoke_dir"
  inside=/tmp/${smoke_dir##*/}
  # As the service user and with the unit's directories, so file permissions are part of the check; state and
  # cache go to a scratch directory that does not end up in the image.
  chroot --userspec="$(stat -c %u:%g "$root/var/lib/perchd")" "$root" env -i \
    PATH=/usr/bin:/bin HOME="$inside" LC_ALL=C.UTF-8 \
    PERCHD_MODEL_DIR=/usr/share/perch/models PERCHD_STATE_DIR="$inside/state" PERCHD_CACHE_DIR="$inside/cache" \
    /opt/perchd/venv/bin/perchd detect "$inside/photo.${photo##*.}" --json >"$work/smoke.json" ||
    die "perchd detect failed under qemu"
  python3 - "$work/smoke.json" $expect <<'EOF'
import json
import sys

payload = json.load(open(sys.argv[1]))
found: dict[str, float] = {}
for p in payload.get("predictions", []):
    found[p["label"]] = max(found.get(p["label"], 0.0), p["confidence"])
print(f"    {payload.get('model')}: " + ", ".join(f"{label} {conf:.2f}" for label, conf in found.items()))
missing = [label for label in sys.argv[2:] if label not in found]
if missing:
    sys.exit(f"smoke detection missed: {', '.join(missing)}")
EOF
  rm -rf "$smoke_dir"
fi
umount_all

# --- 6. outputs --------------------------------------------------------------------------------------------------
step "rootfs tarball"
tar --numeric-owner --xattrs --xattrs-include='*' -C "$root" -cf - . |
  zstd -q -T0 -6 -o "$out/perch-arm64-rootfs.tar.zst" -f

step "genimage"
# The boot partition's files leave the root tree, which keeps only the empty mount point.
boot=$work/boot
mkdir -p "$boot"
find "$root/boot/firmware" -mindepth 1 -maxdepth 1 -exec mv -t "$boot" {} +
root_mb=$(( $(du -smx "$root" | cut -f1) ))
# The slot image is only as large as its content plus room for ext4's metadata: that is what a bundle carries
# and writes. Each slot partition is larger; x-systemd.growfs fills it on boot.
export PERCH_ROOT_SIZE=$(( (root_mb * 9 / 8 + 160 + 3) / 4 * 4 ))M
export PERCH_SLOT_SIZE=2560M
export PERCH_ROOT_DIR=$root PERCH_BOOT_DIR=$boot
[ "${PERCH_ROOT_SIZE%M}" -lt "${PERCH_SLOT_SIZE%M}" ] || die "root file system ($PERCH_ROOT_SIZE) outgrew the slot"
mkdir -p "$work/images" "$work/input"
genimage --config "$here/genimage.cfg" --rootpath "$root" --tmppath "$work/genimage-tmp" \
  --inputpath "$work/input" --outputpath "$work/images"
mv "$work/images/perch-arm64.img" "$out/perch-arm64.img"
mv "$work/images/rootfs.ext4" "$out/perch-arm64-rootfs.ext4"

step "update bundle"
"$here/rauc/bundle.sh" --rootfs "$out/perch-arm64-rootfs.ext4" --version "$version" --keys "$keys" \
  --out "$out/perch-$version-arm64.raucb"

step "release files"
release_args=(--image "$out/perch-arm64.img" --version "$version")
[ "$xz" = 1 ] || release_args+=(--no-xz)
[ -z "$release_url" ] || release_args+=(--url "$release_url")
"$here/release.sh" "${release_args[@]}"

step "done"
ls -l "$out"
echo "version $version; image $(du -h --apparent-size "$out/perch-arm64.img" | cut -f1) apparent," \
  "$(du -h "$out/perch-arm64.img" | cut -f1) on disk"
