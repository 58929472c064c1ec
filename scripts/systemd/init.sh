#!/bin/sh
# Run by executor-guest.service in the systemd guest of scripts/systemd/run.sh
# (systemd is PID 1 there and powers the guest off when this exits). Output
# goes to the console, which run.sh reads the verdicts from.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
set -u

# qemu's user network, restricted: nothing outside the guest is reachable.
ip link set lo up
ip link set eth0 up 2>/dev/null && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
echo "nameserver 10.0.2.3" >/etc/resolv.conf

echo "== systemd guest: kernel $(uname -r), $(systemctl --version | head -n 1), $(nproc) CPUs, $(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo) MB"
echo "== PID 1: $(cat /proc/1/comm); cgroup mounts: $(grep cgroup /proc/self/mounts | cut -d' ' -f2,3 | tr '\n' ' ')"
echo "== loop module: $(grep -w loop /proc/devices || echo 'not loaded')"
# What a rootless daemon under a user manager finds (TestRootlessUserUnit).
echo "== rootless: $(ls -l /dev/net/tun 2>&1); $(for c in newuidmap newgidmap slirp4netns; do command -v $c || echo "no $c"; done | tr '\n' ' ')user@.service: $(grep -h '^Delegate' /lib/systemd/system/user@.service | tr '\n' ' ')"

cp /payload/docker-registry /usr/bin/docker-registry
mkdir -p /var/tmp/systemd-e2e && cd /var/tmp/systemd-e2e

echo "== end-to-end tests"
E2E_REQUIRE_SYSTEMD=1 E2E_UNIT_FILE=/payload/executor.service \
	E2E_ROOTLESS_UNIT_FILE=/payload/executor-rootless.service \
	EXECUTOR_BIN=/payload/executor E2E_RUNTIME_SERVER=/payload/runtime-server \
	/payload/e2e.test -test.v -test.count=1 -test.timeout=1080s -test.run "$(cat /payload/e2e-tests)" 2>&1
e2e=$?

echo "== systemd guest done: e2e=$e2e"
sync
