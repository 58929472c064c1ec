#!/usr/bin/env bash
# Builds the pure cgroup v2 guest of `make test-cgroup2` into $1: Debian 12's
# own kernel and initrd (vmlinuz, initrd.img) and a minbase root as a raw ext4
# image (root.img). run.sh calls it once per machine and keeps the result
# under a key made from this file's hash, so a change here rebuilds it.
#
# The root holds what the executor and its tests need at run time and nothing
# of the project: each run brings its binaries on a second disk, and the
# root's /init.sh hands over to that disk's init.sh.
set -euo pipefail
out=$1
tree=$(mktemp -d /var/tmp/executor-cgroup2-tree.XXXXXX)
trap 'rm -rf "$tree"' EXIT

# The host's own Debian sources: the mirror this machine is set up to reach.
sources=()
for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
	if [ -s "$f" ]; then
		sources=("$f")
		break
	fi
done
# linux-image-amd64 brings the kernel, its modules (overlay, loop, veth,
# bridge, nf_tables...) and an initrd made in the tree; busybox-static is
# what the test images are made of; e2fsprogs makes runtimes' disks.
# Check-Valid-Until: the mirror may serve a dated snapshot.
mmdebstrap --variant=minbase --mode=root \
	--aptopt='Acquire::Check-Valid-Until "false"' \
	--include=linux-image-amd64,libseccomp2,iproute2,curl,busybox-static,kmod,e2fsprogs \
	--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' \
	bookworm "$tree" "${sources[@]}"

kernel=$(ls "$tree"/boot/vmlinuz-* | sort -V | tail -n 1)
initrd=$(ls "$tree"/boot/initrd.img-* | sort -V | tail -n 1)
mkdir -p "$out"
cp "$kernel" "$out/vmlinuz"
cp "$initrd" "$out/initrd.img"
rm -rf "$tree"/boot/* "$tree"/var/cache/apt/* "$tree"/var/lib/apt/lists/*

# The kernel runs this as PID 1 (init=/init.sh): mount the run's payload
# disk and hand over to its init.sh; power off if that cannot be done, so a
# broken guest ends the run instead of hanging it.
cat >"$tree/init.sh" <<'EOF'
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
# The initrd moves /proc and /dev over, mounted; mount them if it did not.
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /payload
if mount -o ro /dev/vdb /payload && [ -x /payload/init.sh ]; then
	exec /payload/init.sh
fi
echo "cgroup2 guest: no payload disk with init.sh" >/dev/console
busybox poweroff -f
EOF
chmod 755 "$tree/init.sh"
mkdir -p "$tree/sys/fs/cgroup" "$tree/payload"

# Room for the tests' registry, data dirs and runtimes' (sparse) disks. Runs
# boot it with -snapshot: the image itself is never written again.
truncate -s 6G "$out/root.img.tmp"
mkfs.ext4 -q -F -L root -d "$tree" "$out/root.img.tmp"
mv "$out/root.img.tmp" "$out/root.img"
