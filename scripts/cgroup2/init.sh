#!/bin/sh
# PID 1 of the cgroup v2 guest of `make test-cgroup2`, started from the
# payload disk (/payload) by the root's /init.sh. It sets up what systemd
# would (file systems, cgroup2 with the controllers handed down, modules, the
# network), runs the tests and powers off. Everything goes to the console,
# which is the CI log; run.sh reads the verdicts from it.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
set -u

# The initrd hands over /proc, /sys and /dev mounted: mount what is not.
mountpoint -q /sys || mount -t sysfs sysfs /sys
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
mountpoint -q /run || mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /dev/pts /dev/shm
mountpoint -q /dev/pts || mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mountpoint -q /dev/shm || mount -t tmpfs -o mode=1777 tmpfs /dev/shm
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
hostname cgroup2-guest

# Kernel modules the executor needs (the kernel loads nf_tables' own parts
# on demand through modprobe).
for m in overlay loop veth bridge nf_tables nft_chain_nat nft_masq nft_ct nf_nat; do
	modprobe "$m" || echo "cgroup2 guest: modprobe $m failed"
done

# qemu's user network, restricted: nothing outside the guest is reachable.
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
echo "nameserver 10.0.2.3" >/etc/resolv.conf

# As systemd does on a cgroup v2 host: the controllers are handed down from
# the root.
echo "+cpu +io +memory +pids" >/sys/fs/cgroup/cgroup.subtree_control

echo "== cgroup2 guest: kernel $(uname -r), $(nproc) CPUs, $(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo) MB"
echo "== mounts: $(grep cgroup /proc/self/mounts | tr '\n' ' ')"
echo "== /sys/fs/cgroup/cgroup.controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
echo "== /sys/fs/cgroup/cgroup.subtree_control: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
echo "== loop: $(ls /dev/loop-control 2>&1)"

cp /payload/docker-registry /payload/promtool /usr/bin/
mkdir -p /var/tmp/cgroup2 && cd /var/tmp/cgroup2

echo "== unit tests (sandbox/container)"
/payload/container.test -test.v -test.count=1 -test.timeout=120s -test.run "$(cat /payload/unit-tests)" 2>&1
unit=$?

echo "== end-to-end tests"
CI=true EXECUTOR_BIN=/payload/executor E2E_RUNTIME_SERVER=/payload/runtime-server E2E_PROBE_DIR=/payload/probes \
	/payload/e2e.test -test.v -test.count=1 -test.timeout="$(cat /payload/e2e-timeout)" -test.run "$(cat /payload/e2e-tests)" 2>&1
e2e=$?

echo "== cgroup2 guest done: unit=$unit e2e=$e2e"
sync
busybox poweroff -f
