#!/usr/bin/env bash
# Builds the systemd guest of scripts/systemd/run.sh into $1: Debian 12's own
# kernel and initrd (vmlinuz, initrd.img) and a minbase root with systemd as
# PID 1 as a raw ext4 image (root.img). run.sh calls it once per machine and
# keeps the result under a key made from this file's hash.
#
# CI's machines do not run systemd as PID 1, so the shipped unit
# (contrib/executor.service) can only be started for real in a guest: this
# one boots systemd, which starts executor-guest.service; that unit mounts the
# run's payload disk and hands over to its init.sh (the tests), then powers
# the guest off whatever they did.
set -euo pipefail
out=$1
tree=$(mktemp -d /var/tmp/executor-systemd-tree.XXXXXX)
trap 'rm -rf "$tree"' EXIT

sources=()
for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
	if [ -s "$f" ]; then
		sources=("$f")
		break
	fi
done
# systemd-sysv makes systemd the init; kmod also provides the static device
# nodes (/dev/loop-control) that load their module when opened. The rest is
# what the executor and its tests need at run time, as in scripts/cgroup2.
mmdebstrap --variant=minbase --mode=root \
	--aptopt='Acquire::Check-Valid-Until "false"' \
	--include=systemd,systemd-sysv,linux-image-amd64,libseccomp2,iproute2,busybox-static,kmod,e2fsprogs \
	--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' \
	bookworm "$tree" "${sources[@]}"

kernel=$(ls "$tree"/boot/vmlinuz-* | sort -V | tail -n 1)
initrd=$(ls "$tree"/boot/initrd.img-* | sort -V | tail -n 1)
mkdir -p "$out"
cp "$kernel" "$out/vmlinuz"
cp "$initrd" "$out/initrd.img"
rm -rf "$tree"/boot/* "$tree"/var/cache/apt/* "$tree"/var/lib/apt/lists/*

echo systemd-guest >"$tree/etc/hostname"
: >"$tree/etc/machine-id"
# The guest's only job is the run's payload: no login prompts.
for u in getty@tty1.service serial-getty@ttyS0.service console-getty.service; do
	ln -sf /dev/null "$tree/etc/systemd/system/$u"
done
mkdir -p "$tree/payload" "$tree/etc/systemd/system/multi-user.target.wants"
cat >"$tree/etc/systemd/system/executor-guest.service" <<'EOF'
[Unit]
Description=Run the payload disk's init.sh, then power off
After=local-fs.target systemd-modules-load.service kmod-static-nodes.service
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'mount -o ro /dev/vdb /payload && exec /payload/init.sh'
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
EOF
ln -sf ../executor-guest.service "$tree/etc/systemd/system/multi-user.target.wants/executor-guest.service"

truncate -s 6G "$out/root.img.tmp"
mkfs.ext4 -q -F -L root -d "$tree" "$out/root.img.tmp"
mv "$out/root.img.tmp" "$out/root.img"
