#!/usr/bin/env bash
# make test-cgroup2: the end-to-end core on a pure cgroup v2 host. CI's
# machines are hybrid cgroup v1, so this boots Debian 12's own kernel under
# qemu (TCG: there is no KVM) with cgroup_no_v1=all, runs the executor's
# end-to-end tests that exercise cgroups inside it, prints a verdict per
# check and fails on any failure. The guest's root is built once per machine
# (scripts/guest, the same guest scripts/systemd boots) and cached; the
# binaries and tests of this tree come on a second disk at every run. The
# tests' registry runs inside the guest (the e2e harness starts it), so the
# guest needs nothing from the host's network: qemu's user network is
# restricted.
set -euo pipefail
cd "$(dirname "$0")/../.."
started=$(date +%s)
TAGS='containers_image_openpgp containers_image_storage_stub seccomp'
export CGO_ENABLED=1
export PATH="/usr/local/go/bin:$PATH"

# What a guest run needs on the host, and the guest (kernel, initrd and
# root image), shared with scripts/systemd and built once per machine
# (scripts/guest).
. scripts/guest/ensure.sh test-cgroup2

work=$(mktemp -d /var/tmp/executor-cgroup2.XXXXXX)
trap 'rm -rf "$work"' EXIT
payload=$work/payload
mkdir -p "$payload"

# What runs in the guest: the executor, the runtimes' init, the test runtime
# server (the guest has no Go toolchain to build it) and the test binaries.
echo "== test-cgroup2: building the binaries and tests"
cp bin/executor bin/executor-init bin/executor-spawn "$payload/"
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$payload/runtime-server" ./tests/runtime
go test -c -tags "$TAGS" -o "$payload/e2e.test" ./tests/e2e/
go test -c -tags "$TAGS" -o "$payload/container.test" ./sandbox/container/
# The 32-bit probe of Test32BitSyscallsRefused: this guest's kernel runs 386
# binaries, which these machines' kernel does not.
mkdir -p "$payload/probes"
for arch in amd64 386; do
	GOARCH=$arch CGO_ENABLED=0 go build -o "$payload/probes/probe-$arch" ./tests/e2e/testdata/syscallprobe
done
# promtool checks the metrics exposition of TestMetricsCountTheWorkload.
promtool=$(command -v promtool) || {
	echo "test-cgroup2: promtool is not installed (Debian package prometheus)" >&2
	exit 1
}
cp /usr/bin/docker-registry "$promtool" scripts/cgroup2/init.sh "$payload/"

# The checks: a name and the tests (go test -v names) that must all pass.
# Tests of tests/e2e/cgroup_faults_test.go join once that file is in the tree.
checks=(
	"cold start, warm execution, DELETE leaves nothing|TestColdStartWarmDelete"
	"limits in memory.max, memory.swap.max, cpu.max, pids.max and inside|TestRuntimeCgroupLimits TestLimitsAndImageLayers"
	"pids limit holds a fork bomb|TestLimitsHold/fork_bomb_stops_at_the_pids_limit"
	"CPU throttled to its quota|TestLimitsHold/cpu_hog_is_throttled_to_its_quota"
	"OOM kill of the main process reported|TestLimitsHold/memory_hog_is_killed_and_reported,_others_keep_serving"
	"restart policy after the server exits|TestProcessExitAndRestartPolicy"
	"SIGKILL + restart reconciles leftovers|TestCrashThenRestartRemovesLeftovers TestCrashWithoutContainerStateRemovesLeftovers"
	"SIGTERM removes runtimes and the cgroup parent|TestShutdownRemovesEverything"
	"daemon in a leaf of its own cgroup (systemd layout)|TestDaemonInItsOwnCgroup TestEnterSupervisorCgroup"
	"prewarmed sandbox takes the request's limits and environment|TestPrewarmedSandboxes"
	"32-bit system calls refused by the default profile|Test32BitSyscallsRefused"
	"the tests' leak checks see the v2 hierarchy|TestLeakChecksSeeEveryHierarchy"
	"usage figures from the runtime's v2 cgroup files|TestRuntimeUsageFromCgroup TestCounters TestCountersFiles"
	"metrics count the workload, OOM kill included|TestMetricsCountTheWorkload"
	"live restore: runtimes kept across SIGTERM and SIGKILL, adopted warm|TestLiveRestore TestLiveRestorePrewarmed"
)
for t in TestOOMVerdictIsAboutThisDeath TestSysReadOnlyThroughout; do
	if grep -q "^func $t(" tests/e2e/*.go; then
		case $t in
		TestOOMVerdictIsAboutThisDeath) checks+=("OOM verdict about this death (a child's OOM kill)|$t") ;;
		TestSysReadOnlyThroughout) checks+=("/sys read-only throughout, cgroup2 mount included|$t") ;;
		esac
	else
		echo "== test-cgroup2: $t is not in this tree yet: its check is left out"
	fi
done
unit_tests='^(TestEnterSupervisorCgroup|TestCounters|TestCountersFiles|TestDestroyLeavesCounterPathsAlone|TestAdopt|TestAdoptRestart|TestAdoptOOMKilled|TestLeftoversSpareKept)$'
e2e_tests=()
for c in "${checks[@]}"; do
	for t in ${c#*|}; do
		case $t in TestEnterSupervisorCgroup | TestCounters | TestCountersFiles) ;; *) e2e_tests+=("${t%%/*}") ;; esac
	done
done
printf '%s' "$unit_tests" >"$payload/unit-tests"
printf '^(%s)$' "$(printf '%s\n' "${e2e_tests[@]}" | sort -u | paste -sd'|')" >"$payload/e2e-tests"
echo 780s >"$payload/e2e-timeout"
truncate -s 1G "$work/payload.img"
mkfs.ext4 -q -F -L payload -d "$payload" "$work/payload.img"

echo "== test-cgroup2: booting the cgroup v2 guest (qemu TCG); its console follows"
. scripts/guest/boot.sh
set +e
# Root: the cached image, its writes kept in a throwaway overlay (snapshot).
boot_guest "$work/console.log" '^== cgroup2 guest:' 900 -accel tcg -cpu max -smp 2 -m 3072 \
	-display none -monitor none -serial stdio -no-reboot \
	-kernel "$guest/vmlinuz" -initrd "$guest/initrd.img" \
	-append "root=/dev/vda rw console=ttyS0 cgroup_no_v1=all net.ifnames=0 init=/init.sh panic=-1 quiet" \
	-drive "file=$guest/root.img,format=raw,if=virtio,snapshot=on" \
	-drive "file=$work/payload.img,format=raw,if=virtio,readonly=on" \
	-nic user,model=virtio-net-pci,restrict=on
qemu=$?
set -e

echo
echo "== test-cgroup2 verdicts (pure cgroup v2 guest)"
failed=0
npass=0
nfail=0
for c in "${checks[@]}"; do
	verdict=PASS
	for t in ${c#*|}; do
		if grep -qF -- "--- FAIL: $t (" "$work/console.log"; then
			verdict=FAIL
		elif ! grep -qF -- "--- PASS: $t (" "$work/console.log"; then
			verdict="FAIL (did not run)"
		fi
	done
	if [ "$verdict" = PASS ]; then npass=$((npass + 1)); else failed=1; nfail=$((nfail + 1)); fi
	printf '%-20s %s\n' "$verdict" "${c%%|*}"
done
done_line=$(grep -m1 '^== cgroup2 guest done:' "$work/console.log" || true)
if [ "$qemu" -ne 0 ] || [ "$done_line" != "== cgroup2 guest done: unit=0 e2e=0" ]; then
	echo "guest: qemu exit $qemu; ${done_line:-the guest did not finish}"
	failed=1
fi
echo "== test-cgroup2: guest $built; whole target $(($(date +%s) - started)) s"
echo "cgroup2: $npass passed, $nfail failed"
exit "$failed"
