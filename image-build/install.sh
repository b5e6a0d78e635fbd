#!/usr/bin/env bash
# Installs perchd into a Debian-family system: the generic image stage runs it against an arm64 rootfs
# (--root DIR, commands inside it under qemu-user), the board overlays run it inside their own build chroot or
# on the device itself (--root /, the default).
#
#   install.sh [--root DIR] (--wheelhouse DIR | --pip-source SPEC) [--extras LIST] [--models DIR]
#              [--models-list FILE]... [--models-dest DIR] [--system-site-packages] [--no-enable]
#
#   --wheelhouse DIR       install offline from wheels built by wheelhouse.sh (pip inside a qemu chroot cannot
#                          do TLS, so image builds always use this)
#   --pip-source SPEC      install online instead, e.g. a source checkout path or "perchd==0.1.0"
#   --extras LIST          setup.cfg extras to install with it, e.g. "rknn" (the wheelhouse must hold them)
#   --models DIR           model tree to bake in (layout of ../shared/models); only the files in --models-list
#   --models-list FILE     relative paths to copy, one per line; repeatable (default: models.list next to this
#                          script; board overlays add their own list on top of it)
#   --models-dest DIR      where in the target they go (default /var/lib/perchd/models; the generic image puts
#                          them into its root slot, /usr/share/perch/models, so that an update brings its own)
#   --system-site-packages let the venv see apt's python3 packages (Raspberry Pi OS: python3-picamera2)
#   --no-enable            install the unit without enabling it
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

root=/
wheelhouse=
pip_source=
models=
models_lists=()
models_dest=/var/lib/perchd/models
extras=
venv_flags=()
enable=1

die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case $1 in
    --root) root=$2; shift 2 ;;
    --wheelhouse) wheelhouse=$(cd "$2" && pwd); shift 2 ;;
    --pip-source) pip_source=$2; shift 2 ;;
    --models) models=$(cd "$2" && pwd); shift 2 ;;
    --models-list) models_lists+=("$2"); shift 2 ;;
    --models-dest) models_dest=$2; shift 2 ;;
    --extras) extras=$2; shift 2 ;;
    --system-site-packages) venv_flags+=(--system-site-packages); shift ;;
    --no-enable) enable=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[ -n "$wheelhouse$pip_source" ] || die "give --wheelhouse DIR or --pip-source SPEC"
root=$(cd "$root" && pwd)
[ ${#models_lists[@]} -gt 0 ] || models_lists=("$here/models.list")
spec=perchd${extras:+[$extras]}

venv=/opt/perchd/venv
# Everything that runs *inside* the target goes through here: a chroot (qemu-user for a foreign arch) when
# --root is not /, directly otherwise. A clean environment keeps the host's PIP_* settings and paths out.
in_root() {
  local -a clean=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
    LC_ALL=C.UTF-8 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1)
  if [ "$root" = / ]; then "${clean[@]}" "$@"; else chroot "$root" "${clean[@]}" "$@"; fi
}

step() { echo "==> $*"; }

# --- files -------------------------------------------------------------------------------------------------
step "systemd unit, sysusers, udev rules"
install -D -m 0644 "$repo/systemd/perchd.service" "$root/usr/lib/systemd/system/perchd.service"
install -D -m 0644 "$repo/systemd/perchd.sysusers.conf" "$root/usr/lib/sysusers.d/perchd.conf"
install -D -m 0644 "$repo/systemd/60-perchd-accelerators.rules" \
  "$root/usr/lib/udev/rules.d/60-perchd-accelerators.rules"
install -D -m 0644 "$repo/systemd/config.example.yaml" "$root/etc/perchd/config.example.yaml"
# The user has to exist before files are chowned to it and before the first boot (the image has no network
# and no time to spare then); systemd-sysusers is idempotent.
if [ "$root" = / ]; then systemd-sysusers perchd.conf; else systemd-sysusers --root="$root" perchd.conf; fi

# --- the daemon ----------------------------------------------------------------------------------------------
step "virtual environment $venv"
python=$(in_root sh -c 'command -v python3') || die "python3 is missing in $root"
in_root "$python" -m venv "${venv_flags[@]}" "$venv"
if [ -n "$wheelhouse" ]; then
  # The wheelhouse travels into the target for the chroot's pip and leaves again afterwards.
  stage=$(mktemp -d "$root/tmp/perch-wheels.XXXXXX")
  trap 'rm -rf "$stage"' EXIT
  cp "$wheelhouse"/*.whl "$stage/"
  # --no-compile: byte-compiling under qemu is slow; done natively below when the versions allow it.
  in_root "$venv/bin/pip" install --no-index --find-links "/tmp/${stage##*/}" --no-compile --quiet --upgrade "$spec"
  rm -rf "$stage"
  trap - EXIT
else
  in_root "$venv/bin/pip" install --quiet "$pip_source${extras:+[$extras]}"
fi

step "byte-compile"
target_version=$(in_root "$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
site=$venv/lib/python$target_version/site-packages
# .pyc files do not depend on the CPU: the host's interpreter of the same minor version writes identical
# ones in seconds, where the emulated one takes minutes. The service cannot write them later
# (ProtectSystem=strict), so they must be there before the first start.
if [ "$root" != / ] && command -v "python$target_version" >/dev/null; then
  "python$target_version" -m compileall -q -j 0 -s "$root" -p / "$root$site" >/dev/null
else
  in_root "$venv/bin/python" -m compileall -q "$site" >/dev/null
fi
in_root "$venv/bin/perchd" --help >/dev/null || die "perchd does not start in the target"
# `perchd update`, `perchd models pull` and friends are typed by people: on the PATH, not only in the venv.
install -d "$root/usr/local/bin"
ln -sfn "$venv/bin/perchd" "$root/usr/local/bin/perchd"

# --- models --------------------------------------------------------------------------------------------------
if [ -n "$models" ]; then
  step "models from $models"
  dest=$root$models_dest
  for list in "${models_lists[@]}"; do
    while read -r rel _; do
      case $rel in '' | '#'*) continue ;; esac
      [ -f "$models/$rel" ] || die "model $rel listed in $list is missing from $models"
      install -D -m 0644 "$models/$rel" "$dest/$rel"
    done <"$list"
  done
  du -sh "$dest" | sed 's/^/    /'
fi
# The daemon owns its state directory (faces, settings, pulled models); systemd would chown it on the first
# start anyway, doing it here keeps the image's files consistent with what the service sees.
mkdir -p "$root/var/lib/perchd"
owner=$(awk -F: '$1 == "perchd" { print $3 ":" $4 }' "$root/etc/passwd")
[ -n "$owner" ] || die "user perchd was not created"
chown -R "$owner" "$root/var/lib/perchd"
chmod 0750 "$root/var/lib/perchd"

# --- enable --------------------------------------------------------------------------------------------------
if [ "$enable" = 1 ]; then
  step "enable perchd.service"
  # --root works on a stopped tree and inside a chroot alike; on a live system the caller starts it.
  systemctl --root="$root" enable perchd.service
fi
step "perchd installed into $root"
