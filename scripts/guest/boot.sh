# Sourced by scripts/cgroup2/run.sh and scripts/systemd/run.sh: boots a guest
# with a watchdog on its first steps and on its console.
#
# Under TCG a guest has been seen to hang before its init ran, printing
# nothing at all on its console (qemu busy at 176% CPU for nine minutes, a
# run later the same image booted at once). A run then waited out its whole
# limit and failed with every test "did not run". So boot_guest gives the
# guest EXECUTOR_GUEST_BOOT_WAIT seconds (default 240; a normal boot prints
# its init's first line in well under a minute) to print a line matching
# READY, and otherwise kills qemu and boots it once more.
#
# A guest has also been seen to hang later, in the middle of its tests: on
# 2026-12-02 twice in five systemd-guest runs of the same images and
# binaries, each time at TestRootlessUserUnit's first cold start, the console
# silent from then on with qemu busy on both vCPUs (the other three runs
# passed, that step taking seconds). A hang of ours would not look like that:
# every test prints -test.v lines, and a request the daemon never answers
# fails its test after the harness's 120 s client timeout. So once READY was
# seen, EXECUTOR_GUEST_QUIET seconds (default 300) without a byte on the
# console count as a hung guest too: qemu is killed and the guest booted once
# more. 0 turns that watchdog off.

# boot_guest LOG READY LIMIT QEMU-ARGS... runs qemu-system-x86_64 with
# QEMU-ARGS for at most LIMIT seconds, its console on stdout and in LOG (the
# last boot's only), and returns qemu's exit status (124: LIMIT ran out, or
# both boots hung).
boot_guest() {
	local log=$1 ready=$2 limit=$3 wait=${EXECUTOR_GUEST_BOOT_WAIT:-240} quiet=${EXECUTOR_GUEST_QUIET:-300}
	shift 3
	local attempt pid status waited hung booted size last still
	for attempt in 1 2; do
		: >"$log"
		rm -f "$log.pid"
		# A subshell, so that wait gives qemu's status, not tee's; tr
		# line-buffered, or the log (and the watchdog) sees the console
		# only in 4 KiB chunks.
		(
			timeout "$limit" qemu-system-x86_64 -pidfile "$log.pid" "$@" </dev/null 2>&1 | stdbuf -oL tr -d '\r' | tee -a "$log"
			exit "${PIPESTATUS[0]}"
		) &
		pid=$!
		waited=0
		hung=false
		booted=false
		last=-1
		still=0
		while kill -0 "$pid" 2>/dev/null; do
			if ! $booted && grep -qE -- "$ready" "$log"; then
				booted=true
				echo "== boot $attempt: the guest's init ran after about $waited s" >&2
			fi
			if ! $booted && [ "$waited" -ge "$wait" ]; then
				hung=true
				echo
				echo "== boot $attempt: no line matching '$ready' on the console after $wait s: killing qemu"
			elif $booted && [ "$quiet" -gt 0 ]; then
				size=$(stat -c %s "$log")
				if [ "$size" != "$last" ]; then
					last=$size
					still=0
				elif [ "$still" -ge "$quiet" ]; then
					hung=true
					echo
					echo "== boot $attempt: nothing on the console for $quiet s since the guest's init ran: killing qemu"
				else
					still=$((still + 1))
				fi
			fi
			if $hung; then
				if [ -s "$log.pid" ]; then
					kill "$(cat "$log.pid")" 2>/dev/null || true
				fi
				break
			fi
			sleep 1
			waited=$((waited + 1))
		done
		status=0
		wait "$pid" || status=$?
		rm -f "$log.pid"
		if ! $hung; then
			return "$status"
		fi
		if [ "$attempt" -eq 1 ]; then
			echo "== booting the guest again"
		fi
	done
	# Killed by us (qemu exits 0 on SIGTERM): say it as timeout does.
	return 124
}
