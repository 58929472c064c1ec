#!/usr/bin/env bash
# make soak: the issue's soak and leak audit at full length against bin/executor (make build first).
#   TestSoak       200 clients over 50 runtimes with creates, deletes, builds and maintenance in the mix for
#                  EXECUTOR_SOAK_DURATION (here 10m; the test's own default, which make test/CI runs, is 60s),
#                  0 errors, RSS/threads/fds after warm-up and at the end printed and compared.
#   TestLeakAudit  EXECUTOR_LEAK_CYCLES create/execute/delete cycles (here 1000; 100 in make test/CI) with a census
#                  of everything a runtime could leave behind before and after: all equal.
#
#   scripts/soak.sh                                  # 10 minutes, 1000 cycles (about 25 minutes on 2 cores)
#   EXECUTOR_SOAK_DURATION=60s EXECUTOR_LEAK_CYCLES=100 scripts/soak.sh
#   EXECUTOR_SOAK_CLIENTS=40 EXECUTOR_SOAK_RUNTIMES=10 scripts/soak.sh   # a smaller machine
# Needs root (containers, cgroups, bridges), as the e2e suite does.
set -euo pipefail
cd "$(dirname "$0")/.."
TAGS=${TAGS:-containers_image_openpgp containers_image_storage_stub seccomp}
export CGO_ENABLED=${CGO_ENABLED:-1}
export EXECUTOR_SOAK_DURATION=${EXECUTOR_SOAK_DURATION:-10m}
export EXECUTOR_LEAK_CYCLES=${EXECUTOR_LEAK_CYCLES:-1000}
export EXECUTOR_BIN=${EXECUTOR_BIN:-$PWD/bin/executor}
[ -x "$EXECUTOR_BIN" ] || { echo "soak: $EXECUTOR_BIN missing: make build first" >&2; exit 1; }
# -v: the figures (rates, RSS, threads, fds, census) are the point of the run. The whole output goes to
# SOAK_OUT; the terminal gets it less the daemon's debug and info lines (its log, printed when a test fails, holds
# one access line per request). The timeout leaves the 10 minutes, the warm-up and the teardown room on a loaded
# machine.
out=${SOAK_OUT:-bin/soak.out}
mkdir -p "$(dirname "$out")"
go test -tags "$TAGS" -count=1 -timeout 90m -v -run '^(TestSoak|TestLeakAudit)$' ./tests/e2e/ 2>&1 | tee "$out" |
	grep -v -E 'level=(DEBUG|INFO)'
echo "soak: the whole output is in $out"
