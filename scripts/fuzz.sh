#!/usr/bin/env bash
# Runs every fuzz target of the module for ${FUZZTIME:-10s} each, one after another (go test -fuzz takes one
# target per package per run), prints each target's last execs line, and fails if any target fails. A failing
# input is written by go test under the package's testdata/fuzz/<FuzzName>/: commit it with the fix, as a
# regression seed.
#
#   FUZZTIME=60s scripts/fuzz.sh                  # every target, 60 s each
#   FUZZ_TARGETS='FuzzParseDSN' scripts/fuzz.sh   # only the targets whose name matches (a grep -E pattern)
#
# FuzzUnpackLayer needs root (it unpacks layers as the store does: owners, devices, xattrs).
set -uo pipefail

cd "$(dirname "$0")/.."
TAGS=${TAGS:-containers_image_openpgp containers_image_storage_stub seccomp}
FUZZTIME=${FUZZTIME:-10s}
FUZZ_TARGETS=${FUZZ_TARGETS:-.}
export CGO_ENABLED=${CGO_ENABLED:-1}

failed=()
ran=0
for pkg in ./api ./storage ./images; do
	# The targets, as `go test -list` names them (only those defined in *fuzz_test.go files are fuzz targets).
	targets=$(go test -tags "$TAGS" -list '^Fuzz' "$pkg" | grep '^Fuzz' | grep -E -- "$FUZZ_TARGETS") || true
	for target in $targets; do
		ran=$((ran + 1))
		log=$(mktemp)
		echo "== $pkg $target ($FUZZTIME)"
		# Minimising each new input may take a minute by default (raw tars in FuzzUnpack): capped, so that a run
		# lasts about FUZZTIME per target.
		if go test -tags "$TAGS" -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" \
			-fuzzminimizetime "${FUZZMINIMIZETIME:-5s}" "$pkg" >"$log" 2>&1; then
			# The last progress line holds the total; its rate is the last interval's, so the mean is added.
			grep -E '^fuzz: elapsed' "$log" | tail -n 1 | awk -v t="$target" '{
				e = $3; sub(/,$/, "", e); secs = 0
				if (match(e, /[0-9]+h/)) secs += 3600 * substr(e, RSTART, RLENGTH - 1)
				if (match(e, /[0-9]+m/)) secs += 60 * substr(e, RSTART, RLENGTH - 1)
				if (match(e, /[0-9.]+s/)) secs += substr(e, RSTART, RLENGTH - 1)
				n = $5; gsub(/,/, "", n)
				printf "%s: %s execs in %s (%.0f/sec)\n", t, n, e, (secs > 0 ? n / secs : 0)
			}'
		else
			cat "$log"
			failed+=("$pkg $target")
		fi
		rm -f "$log"
	done
done

if [ "$ran" -eq 0 ]; then
	echo "no fuzz target matches ${FUZZ_TARGETS}" >&2
	exit 1
fi
if [ "${#failed[@]}" -gt 0 ]; then
	printf 'FAILED: %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "all $ran fuzz targets passed"
