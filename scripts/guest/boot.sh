# Sourced by scripts/cgroup2/run.sh and scripts/systemd/run.sh: boots a guest
# with a watchdog on its first steps.
#
# Under TCG a guest has been seen to hang before its init ran, printing
# nothing at all on its console (qemu busy at 176% CPU for nine minutes, a
# run later the same image booted at once). A run then waited out its whole
# limit and failed with every test "did not run". So boot_guest gives the
# guest EXECUTOR_GUEST_BOOT_WAIT seconds (default 240; a normal boot prints
# its init's first line in well under a minute) to print a line matching
# READY, and otherwise kills qemu and boots it once more.

# boot_guest LOG READY LIMIT QEMU-ARGS... runs qemu-system-x86_64 with
# QEMU-ARGS for at most LIMIT seconds, its console on stdout and in LOG (the
# last boot's only), and returns qemu's exit status (124: LIMIT ran out, or
# both boots hung).
boot_guest() {
	local log=$1 ready=$2 limit=$3 wait=${EXECUTOR_GUEST_BOOT_WAIT:-240}
	shift 3
	local attempt pid status waited hung
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
		while kill -0 "$pid" 2>/dev/null && ! grep -qE -- "$ready" "$log"; do
			if [ "$waited" -ge "$wait" ]; then
				hung=true
				echo
				echo "== boot $attempt: no line matching '$ready' on the console after $wait s: killing qemu"
				if [ -s "$log.pid" ]; then
					kill "$(cat "$log.pid")" 2>/dev/null || true
				fi
				break
			fi
			sleep 1
			waited=$((waited + 1))
		done
		if ! $hung && grep -qE -- "$ready" "$log"; then
			echo "== boot $attempt: the guest's init ran after about $waited s" >&2
		fi
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
