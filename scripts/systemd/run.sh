#!/usr/bin/env bash
# The executor under systemd as PID 1: CI's machines do not boot systemd
# (tests/e2e/systemd_test.go skips TestSystemdUnit there), so this boots
# Debian 12's own kernel and systemd 252 under qemu and runs, inside, the
# tests that start contrib/executor.service as shipped (Type=notify,
# watchdog, Delegate=yes, every hardening directive), show why each
# directive it leaves out is left out, drive the sd_notify and SIGHUP
# paths, and start contrib/executor-rootless.service as an ordinary user's
# systemctl --user unit under that user's own manager (user@UID.service and
# its cgroup delegation). It prints a verdict per test and fails on any
# failure.
#
# The guest's root is built once per machine (scripts/guest, the same guest
# make test-cgroup2 boots) and cached; this tree's binaries, tests and unit
# come on a second disk at every run. The tests' registry runs inside the
# guest. Pure cgroup v2 by default (Debian 12's default);
# EXECUTOR_SYSTEMD_CGROUP=hybrid boots the v1 hybrid layout.
# EXECUTOR_GUEST_SYSTEMD=backports boots the same guest but for systemd,
# bookworm-backports' (254 or newer) instead of Debian 12's 252: the one
# where TestSystemdLiveRestore keeps a runtime across a restart (with
# DelegateSubgroup=) instead of checking the daemon refuses to. It is built
# once too, and cached beside the other (scripts/guest/ensure.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
started=$(date +%s)
TAGS='containers_image_openpgp containers_image_storage_stub seccomp'
export CGO_ENABLED=1
export PATH="/usr/local/go/bin:$PATH"

# What a guest run needs on the host, and the guest (kernel, initrd and
# root image), shared with scripts/cgroup2 and built once per machine
# (scripts/guest).
. scripts/guest/ensure.sh test-systemd

work=$(mktemp -d /var/tmp/executor-systemd.XXXXXX)
trap 'rm -rf "$work"' EXIT
payload=$work/payload
mkdir -p "$payload"

echo "== test-systemd: building the binaries and tests"
[ -x bin/executor ] && [ -x bin/executor-init ] && [ -x bin/executor-spawn ] || make build
cp bin/executor bin/executor-init bin/executor-spawn contrib/executor.service contrib/executor-rootless.service scripts/systemd/init.sh "$payload/"
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$payload/runtime-server" ./tests/runtime
go test -c -tags "$TAGS" -o "$payload/e2e.test" ./tests/e2e/
cp /usr/bin/docker-registry "$payload/"
tests=(TestSystemdUnit TestSystemdLeftOutDirectives TestNotifySocket TestSIGHUPNeverKills TestRootlessUserUnit TestSystemdLiveRestore)
# EXECUTOR_SYSTEMD_TESTS="TestA TestB" runs only those (while working on one).
if [ -n "${EXECUTOR_SYSTEMD_TESTS:-}" ]; then
	read -r -a tests <<<"$EXECUTOR_SYSTEMD_TESTS"
fi
printf '^(%s)$' "$(IFS='|'; echo "${tests[*]}")" >"$payload/e2e-tests"
truncate -s 1G "$work/payload.img"
mkfs.ext4 -q -F -L payload -d "$payload" "$work/payload.img"

append="root=/dev/vda rw console=ttyS0 net.ifnames=0 panic=-1 quiet systemd.show_status=false"
case ${EXECUTOR_SYSTEMD_CGROUP:-v2} in
v2) ;;
hybrid) append="$append systemd.unified_cgroup_hierarchy=0" ;;
*) echo "EXECUTOR_SYSTEMD_CGROUP must be v2 or hybrid" >&2; exit 2 ;;
esac

echo "== test-systemd: booting the systemd guest (qemu TCG, cgroup ${EXECUTOR_SYSTEMD_CGROUP:-v2}, systemd ${EXECUTOR_GUEST_SYSTEMD:-of Debian 12}); its console follows"
. scripts/guest/boot.sh
set +e
boot_guest "$work/console.log" '^== systemd guest:' 1200 -accel tcg -cpu max -smp 2 -m 3072 \
	-display none -monitor none -serial stdio -no-reboot \
	-kernel "$guest/vmlinuz" -initrd "$guest/initrd.img" -append "$append" \
	-drive "file=$guest/root.img,format=raw,if=virtio,snapshot=on" \
	-drive "file=$work/payload.img,format=raw,if=virtio,readonly=on" \
	-nic user,model=virtio-net-pci,restrict=on
qemu=$?
set -e

echo
echo "== test-systemd verdicts (systemd as PID 1)"
npass=0
nfail=0
for t in "${tests[@]}"; do
	if grep -qF -- "--- PASS: $t (" "$work/console.log"; then
		verdict=PASS
		npass=$((npass + 1))
	elif grep -qF -- "--- FAIL: $t (" "$work/console.log"; then
		verdict=FAIL
		nfail=$((nfail + 1))
	else
		verdict="FAIL (did not run)"
		nfail=$((nfail + 1))
	fi
	printf '%-20s %s\n' "$verdict" "$t"
done
done_line=$(grep -m1 '^== systemd guest done:' "$work/console.log" || true)
if [ "$qemu" -ne 0 ] || [ "$done_line" != "== systemd guest done: e2e=0" ]; then
	echo "guest: qemu exit $qemu; ${done_line:-the guest did not finish}"
	nfail=$((nfail + 1))
fi
echo "== test-systemd: guest $built; whole run $(($(date +%s) - started)) s"
echo "systemd: $npass passed, $nfail failed"
[ "$nfail" -eq 0 ]
