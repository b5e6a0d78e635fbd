#!/usr/bin/env bash
# Generic arm64 Perch image: Debian bookworm + systemd + perchd, built on an x86 (or any) Linux host without loop
# devices, then checked: unit verification inside the rootfs and a real detection under qemu-user.
#
#   sudo image-build/build.sh --models DIR --out DIR [options]
#
# Writes OUT/perch-arm64.img (MBR: vfat boot "PERCHBOOT" + ext4 root "perchroot") and
# OUT/perch-arm64-rootfs.tar.zst; exits non-zero when any step fails.
#
#   --models DIR       model tree in the layout of ../shared/models (files from models.list are baked in)
#   --out DIR          output directory (created)
#   --wheelhouse DIR   reuse wheels from wheelhouse.sh instead of building them (offline rebuilds)
#   --photo FILE       smoke-test photo (default ../shared/images/dog_bicycle_car.jpg next to the repo)
#   --expect LABELS    labels the smoke detection must find (default "dog bicycle car")
#   --mirror URL       Debian mirror (default http://deb.debian.org/debian)
#   --no-smoke         skip the qemu detection run
#   --work DIR         build directory (default: a fresh one under $TMPDIR, removed afterwards)
#   --keep-work        keep the build directory
#
# Needs root and: mmdebstrap, qemu-user-static, binfmt-support, genimage, dosfstools, mtools, e2fsprogs, zstd,
# systemd (systemd-analyze), python3-venv. .ci/image.sh installs them on Debian bookworm.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

suite=bookworm
mirror=http://deb.debian.org/debian
models=
out=
wheelhouse=
photo=$repo/../shared/images/dog_bicycle_car.jpg
expect="dog bicycle car"
smoke=1
work=
keep=0

die() { echo "build.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case $1 in
    --models) models=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --wheelhouse) wheelhouse=$2; shift 2 ;;
    --photo) photo=$2; shift 2 ;;
    --expect) expect=$2; shift 2 ;;
    --mirror) mirror=$2; shift 2 ;;
    --no-smoke) smoke=0; shift ;;
    --work) work=$2; shift 2 ;;
    --keep-work) keep=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[ -n "$models" ] && [ -d "$models" ] || die "--models DIR is required and must exist"
[ -n "$out" ] || die "--out DIR is required"
[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap, chroot and mounts need it)"
for tool in mmdebstrap genimage mkdosfs mcopy mke2fs zstd chroot systemd-analyze python3; do
  command -v "$tool" >/dev/null || die "$tool is missing (see --help for the packages)"
done
[ "$smoke" = 0 ] || [ -f "$photo" ] || die "smoke photo $photo not found (--photo FILE or --no-smoke)"
models=$(cd "$models" && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)

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

# --- 3. Debian rootfs ------------------------------------------------------------------------------------------
step "mmdebstrap $suite arm64"
packages=(
  systemd systemd-sysv udev dbus systemd-resolved systemd-timesyncd
  python3 python3-venv ca-certificates netbase tzdata
  wpasupplicant iproute2 iputils-ping openssh-server
  cloud-guest-utils fdisk e2fsprogs dosfstools kmod less
)
# Documentation and translations are a third of a minimal system and nobody reads them on an appliance; the
# copyright files stay (licences). Under qemu every process start costs ~40 ms: update-ca-certificates forks
# ~700 times and would run twice (postinst and trigger), so it is a no-op during the install and runs once at
# the end (saves ~45 s); unsafe-io skips fsyncs nobody needs while building.
mmdebstrap --mode=root --arch=arm64 --variant=minbase --format=directory \
  --include="$(IFS=,; echo "${packages[*]}")" \
  --aptopt='APT::Install-Recommends "false"' \
  --aptopt='Acquire::Retries "3"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt=force-unsafe-io \
  --essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-ca-certificates &&
    ln -s /bin/true "$1/usr/sbin/update-ca-certificates"' \
  --customize-hook='rm "$1/usr/sbin/update-ca-certificates" &&
    chroot "$1" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-ca-certificates &&
    chroot "$1" update-ca-certificates' \
  --skip=check/empty \
  "$suite" "$root" \
  "deb $mirror $suite main" \
  "deb $mirror $suite-updates main" \
  "deb http://deb.debian.org/debian-security $suite-security main"

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
step "appliance files"
cp -r --no-preserve=ownership "$here/rootfs/." "$root/"
# growroot and first boot run as root from /usr/lib/perch; git keeps the executable bits.
step "install.sh"
"$here/install.sh" --root "$root" --wheelhouse "$wheelhouse" --models "$models"
systemctl --root="$root" enable systemd-networkd.service systemd-resolved.service systemd-timesyncd.service \
  perch-firstboot.service perch-growroot.service perch-sshkeys.service
# The D-Bus-driven wpa_supplicant is for NetworkManager; here wpa_supplicant@wlan0 (first boot) owns the radio.
systemctl --root="$root" disable wpa_supplicant.service

step "image hygiene"
# Per-machine identity must be created on each card, not shared by all of them: machine-id ("uninitialized"
# also makes this the first boot, see perch-growroot.service), SSH host keys, the random seed.
printf 'uninitialized\n' >"$root/etc/machine-id"
rm -f "$root"/etc/ssh/ssh_host_* "$root/var/lib/systemd/random-seed" "$root/var/lib/dbus/machine-id"
ln -sf /etc/machine-id "$root/var/lib/dbus/machine-id"
ln -sfn ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
rm -rf "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* "$root"/var/log/*.log "$root"/tmp/* \
  "$root"/root/.cache

# --- 5. checks inside the rootfs ---------------------------------------------------------------------------------
step "systemd-analyze verify in the rootfs"
units=(perchd.service perch-firstboot.service perch-growroot.service perch-sshkeys.service)
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
    PERCHD_MODEL_DIR=/var/lib/perchd/models PERCHD_STATE_DIR="$inside/state" PERCHD_CACHE_DIR="$inside/cache" \
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
# Room for the ext4 metadata and a little state; perch-growroot fills the card on the first boot.
export PERCH_ROOT_SIZE=$(( (root_mb * 5 / 4 + 256 + 3) / 4 * 4 ))M
export PERCH_ROOT_DIR=$root PERCH_BOOT_DIR=$boot
mkdir -p "$work/images" "$work/input"
genimage --config "$here/genimage.cfg" --rootpath "$root" --tmppath "$work/genimage-tmp" \
  --inputpath "$work/input" --outputpath "$work/images"
mv "$work/images/perch-arm64.img" "$out/perch-arm64.img"

step "done"
ls -l "$out"
echo "apparent image size $(du -h --apparent-size "$out/perch-arm64.img" | cut -f1), on disk $(du -h "$out/perch-arm64.img" | cut -f1)"
