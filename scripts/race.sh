#!/usr/bin/env bash
# make race: the end-to-end suite against a -race build of the daemon. Every data race the daemon's race detector
# reports is written to a file of its own (GORACE log_path) and printed at the end; any makes this script fail, even
# in a test that passed. The daemon also exits with status 66 once it found one, which fails the test that stopped
# it (the harness prints the daemon's log then).
#
#   scripts/race.sh                                  # the whole e2e suite (nightly: a -race daemon is 2-10x slower)
#   RACE_RUN='TestColdStartWarmDelete|TestSoak' scripts/race.sh    # a subset (a go test -run pattern)
#   RACE_RUN=TestSoak EXECUTOR_SOAK_DURATION=20s scripts/race.sh
#   RACE_SKIP='^TestSoak$' scripts/race.sh                   # tests left out (a go test -skip pattern)
# Needs root, as the e2e suite does. The rootless tests reach the daemon through a copy the harness makes; the
# wrapper below names the -race binary by its absolute path under bin/race, so those need a checkout that their
# unprivileged user can read.
set -euo pipefail
cd "$(dirname "$0")/.."
TAGS=${TAGS:-containers_image_openpgp containers_image_storage_stub seccomp}
GO=${GO:-go}
RACE_RUN=${RACE_RUN:-.}
# TestReleaseRunsWithoutLibc reads EXECUTOR_BIN as an ELF file (the dynamic build must fail without libc): here it
# is the wrapper script below, and the test is about the release build, not the daemon's behaviour.
RACE_SKIP=${RACE_SKIP:-^TestReleaseRunsWithoutLibc\$}
dir=$PWD/bin/race
reports=$dir/reports
rm -rf "$dir"
mkdir -p "$reports"
chmod 0755 "$dir" "$reports"

CGO_ENABLED=1 "$GO" build -race -tags "$TAGS" -o "$dir/executor.race" ./cmd/executor
# PID 1 of every runtime stays the static, race-free init: it runs inside the containers, without libc.
make -s bin/executor-init && cp bin/executor-init "$dir/executor-init"
# The spawner, found beside the race binary, stays plain too: its binary is each container's init (runc init), and the
# daemon's side of the conversation is what runs under the detector.
CGO_ENABLED=1 "$GO" build -tags "$TAGS" -trimpath -ldflags '-s -w' -o "$dir/executor-spawn" ./cmd/executor-spawn
# The harness gives the daemon a fixed environment, so GORACE is set by a wrapper that the tests run as the
# executor. exec keeps the pid: the harness's signals and /proc readings reach the daemon itself.
cat >"$dir/executor" <<WRAP
#!/bin/sh
GORACE="log_path=$reports/race exitcode=66 history_size=2" exec "$dir/executor.race" "\$@"
WRAP
chmod 0755 "$dir/executor" "$dir/executor.race"

status=0
EXECUTOR_DAEMON_RACE=1 EXECUTOR_BIN=$dir/executor CGO_ENABLED=1 "$GO" test -tags "$TAGS" -count=1 -timeout "${RACE_TIMEOUT:-120m}" \
	-run "$RACE_RUN" -skip "$RACE_SKIP" ./tests/e2e/ || status=$?

# log_path writes race.<pid> per daemon that found a race; a daemon without one writes nothing.
found=$(find "$reports" -type f -name 'race.*' | sort)
if [ -n "$found" ]; then
	n=$(cat $found | grep -c '^WARNING: DATA RACE' || true)
	echo "race: $n data race report(s) from the daemon:"
	for f in $found; do
		echo "== $f"
		cat "$f"
	done
	exit 1
fi
echo "race: no data race reported by the daemon (tests: exit $status)"
exit "$status"
