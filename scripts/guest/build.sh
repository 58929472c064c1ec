#!/usr/bin/env bash
# Builds the one qemu guest both scripts/cgroup2/run.sh (make test-cgroup2) and
# scripts/systemd/run.sh boot, into $1: Debian 12's own kernel and initrd
# (vmlinuz, initrd.img) and a minbase root as a raw ext4 image (root.img).
# scripts/guest/ensure.sh calls it once per machine and keeps the result under
# a key made from this file's hash, so a change here rebuilds it.
#
# The root holds what the executor and its tests need at run time and nothing
# of the project: each run brings its binaries on a second disk (/dev/vdb)
# and hands over to that disk's init.sh, in one of two ways:
# - scripts/cgroup2 boots it with init=/init.sh (and cgroup_no_v1=all): the
#   root's /init.sh, PID 1, mounts the payload disk and execs its init.sh.
# - scripts/systemd boots systemd as PID 1 (CI's machines do not run systemd
#   as PID 1, so the shipped unit, contrib/executor.service, can only be
#   started for real in a guest): it starts executor-guest.service, which
#   mounts the payload disk and hands over to its init.sh (the tests), then
#   powers the guest off whatever they did.
#
# EXECUTOR_GUEST_SYSTEMD=backports builds a second guest, beside the first
# (ensure.sh keys it apart): the same root but for systemd, which comes from
# bookworm-backports (254 or newer: DelegateSubgroup=, the live-restore path
# of tests/e2e's TestSystemdLiveRestore) instead of Debian 12's own 252. The
# kernel stays Debian 12's. Unset, or empty: Debian 12's systemd.
set -euo pipefail
out=$1
tree=$(mktemp -d /var/tmp/executor-guest-tree.XXXXXX)
trap 'rm -rf "$tree"' EXIT

# The host's own Debian sources: the mirror this machine is set up to reach.
sources=()
for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
	if [ -s "$f" ]; then
		sources=("$f")
		break
	fi
done
# With EXECUTOR_GUEST_SYSTEMD=backports: bookworm-backports from the same
# mirror as a second source (priority 100: nothing comes from it unasked),
# and every binary package of systemd's source (systemd, systemd-sysv,
# libsystemd0, libpam-systemd, libudev1, udev, systemd-timesyncd... those
# the root pulls) pinned to it, so that they all come from there at the same
# version, from the first package mmdebstrap installs (the essential set
# needs libsystemd0) to the last.
extra=()
case ${EXECUTOR_GUEST_SYSTEMD:-} in
"") ;;
backports)
	mirror=$(grep -v '^[[:space:]]*#' "${sources[@]}" | grep -Eo '[a-z]+://[^][:space:]]+' | grep -v -- -security | head -n 1 || true)
	sources+=("deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${mirror:-http://deb.debian.org/debian} bookworm-backports main")
	extra+=(--setup-hook='mkdir -p "$1/etc/apt/preferences.d" && printf "Package: src:systemd\nPin: release n=bookworm-backports\nPin-Priority: 990\n" >"$1/etc/apt/preferences.d/executor-systemd-backports"')
	;;
*)
	echo "EXECUTOR_GUEST_SYSTEMD must be empty (Debian 12's systemd) or backports" >&2
	exit 2
	;;
esac
# systemd-sysv makes systemd the init (the systemd runner; the cgroup2 one
# bypasses it with init=/init.sh). linux-image-amd64 brings the kernel, its
# modules (overlay, loop, veth, bridge, nf_tables...) and an initrd made in
# the tree; kmod also provides the static device nodes (/dev/loop-control)
# that load their module when opened; busybox-static is what the test images
# are made of; e2fsprogs makes runtimes' disks. The rootless daemon (a
# user's systemctl --user unit) needs passwd (useradd, userdel), uidmap (the
# setuid newuidmap/newgidmap) and slirp4netns (its runtimes' egress); its
# user manager, user@UID.service, as a Debian server starts it (loginctl
# enable-linger): dbus (logind and systemd-user-runtime-dir, which makes
# /run/user/UID, talk over the system bus) and libpam-systemd (pam_systemd
# gives the manager its XDG_RUNTIME_DIR). No user bus: systemctl --user
# talks to the manager over its private socket.
# Check-Valid-Until: the mirror may serve a dated snapshot.
mmdebstrap --variant=minbase --mode=root \
	--aptopt='Acquire::Check-Valid-Until "false"' \
	--include=systemd,systemd-sysv,linux-image-amd64,libseccomp2,iproute2,curl,busybox-static,kmod,e2fsprogs,passwd,uidmap,slirp4netns,dbus,libpam-systemd \
	--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' "${extra[@]}" \
	bookworm "$tree" "${sources[@]}"
if [ -n "${EXECUTOR_GUEST_SYSTEMD:-}" ]; then
	# Every package of systemd's source in the root, and from backports.
	dpkg-query --admindir="$tree/var/lib/dpkg" -W -f='${db:Status-Abbrev} ${source:Package} ${Package} ${Version}\n' |
		awk '$1 == "ii" && $2 == "systemd" { print "guest: " $3 " " $4; if ($4 !~ /~bpo12/) bad = 1 } END { exit bad }'
fi

kernel=$(ls "$tree"/boot/vmlinuz-* | sort -V | tail -n 1)
initrd=$(ls "$tree"/boot/initrd.img-* | sort -V | tail -n 1)
mkdir -p "$out"
cp "$kernel" "$out/vmlinuz"
cp "$initrd" "$out/initrd.img"
rm -rf "$tree"/boot/* "$tree"/var/cache/apt/* "$tree"/var/lib/apt/lists/*
mkdir -p "$tree/sys/fs/cgroup" "$tree/payload"

# The cgroup2 runner: the kernel runs this as PID 1 (init=/init.sh): mount
# the run's payload disk and hand over to its init.sh; power off if that
# cannot be done, so a broken guest ends the run instead of hanging it.
cat >"$tree/init.sh" <<'EOS'
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
EOS
chmod 755 "$tree/init.sh"

# The systemd runner: systemd as PID 1 starts executor-guest.service. (The
# cgroup2 runner's init.sh sets its own hostname.)
echo systemd-guest >"$tree/etc/hostname"
: >"$tree/etc/machine-id"
# /dev/net/tun usable by every user, as a distribution's udev rules make it
# (slirp4netns opens it for a rootless daemon); systemd's own
# static-nodes-permissions.conf says the same, this makes it explicit.
mkdir -p "$tree/etc/tmpfiles.d"
echo 'z /dev/net/tun 0666 - - -' >"$tree/etc/tmpfiles.d/executor-tun.conf"
# The guest's only job is the run's payload: no login prompts.
for u in getty@tty1.service serial-getty@ttyS0.service console-getty.service; do
	ln -sf /dev/null "$tree/etc/systemd/system/$u"
done
mkdir -p "$tree/etc/systemd/system/multi-user.target.wants"
cat >"$tree/etc/systemd/system/executor-guest.service" <<'EOS'
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
EOS
ln -sf ../executor-guest.service "$tree/etc/systemd/system/multi-user.target.wants/executor-guest.service"

# Room for the tests' registry, data dirs and runtimes' (sparse) disks (both
# runners needed the same 6G; the root itself takes under 1G). Runs boot it
# with -snapshot: the image itself is never written again.
truncate -s 6G "$out/root.img.tmp"
mkfs.ext4 -q -F -L root -d "$tree" "$out/root.img.tmp"
mv "$out/root.img.tmp" "$out/root.img"
