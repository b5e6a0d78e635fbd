#!/bin/sh
# Grows the data partition (the card's last) to the end of its disk, then the ext4 file system on it, online
# (perch-growdata.service). Leaves a mark once done; exit 0 when there is nothing to grow.
set -eu
source=$(findmnt -nvo SOURCE /data)
name=${source##*/}
disk=/dev/$(lsblk -no PKNAME "$source")
part=$(cat "/sys/class/block/$name/partition")
# growpart: 0 grown, 1 no change needed, anything else an error.
rc=0
growpart "$disk" "$part" || rc=$?
[ "$rc" -le 1 ] || exit "$rc"
resize2fs "$source"
touch /data/.perch-grown
