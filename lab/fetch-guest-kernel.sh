#!/bin/sh
# Unpacks a stock Debian cloud kernel (vmlinuz + modules) for the lab's QEMU guest, without
# installing it: nothing under /boot or /lib/modules changes. Needs apt-get, dpkg-deb and
# depmod (kmod). Run once, as root, with apt
# sources configured (CI's .ci/run does it).
set -eu
DIR=${WGEXIT_LAB_KERNEL_DIR:-/var/cache/wgexit-lab/kernel}
if ls "$DIR"/lib/modules/*/modules.dep >/dev/null 2>&1; then
	echo "guest kernel already in $DIR"
	exit 0
fi
PACKAGE=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
[ -n "$PACKAGE" ] || { echo "no linux-image-cloud-amd64 in the apt sources" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && apt-get download -q "$PACKAGE")
mkdir -p "$DIR"
dpkg-deb -x "$WORK"/*.deb "$DIR"
# The package ships no modules.dep (its postinst would make it); the lab loads modules in dependency order.
for version in "$DIR"/lib/modules/*; do depmod -b "$DIR" "${version##*/}"; done
echo "guest kernel $PACKAGE unpacked in $DIR"
