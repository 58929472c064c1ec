#!/usr/bin/env bash
# make mutate: mutation testing of api, storage, oci, cmd/executor and sandbox with gremlins (pinned below, installed
# from the module proxy into bin/mutate; not a module dependency). Each mutant is one small change of the product
# code (a < that becomes <=, an == that becomes !=, a + that becomes -, ...); the package's tests run against it and
# should fail. A mutant that they pass "lived": either the tests miss a behaviour or the change is equivalent (see
# scripts/mutate-equivalent.txt, reviewed by hand). Prints per package: killed, lived, timed out, not covered,
# efficacy; writes the survivors to $MUTATE_OUT/survivors.txt; fails when lived / (killed + lived + timed out)
# exceeds MUTATE_MAX_SURVIVORS percent (default 10). The share is of the mutants the tests cover: a mutant in code
# that no test runs cannot be killed by any test and says nothing about the tests' assertions, which is what this
# target audits (coverage is reported beside it). Timed-out mutants count as killed, as gremlins's efficacy does: a
# test that hangs on the change did notice it.
#
#   scripts/mutate.sh                          # every package, one after another (long: see the README)
#   MUTATE_PKGS='oci storage' scripts/mutate.sh
#   MUTATE_REV=HEAD~1 MUTATE_WORKERS=1 scripts/mutate.sh
#   MUTATE_PKGS=api MUTATE_EXCLUDE='^(accesslog|errors)\.go$' scripts/mutate.sh   # a package in parts
#
# What is mutated and what runs:
# - Each package's own files only: subpackages (storage/safefs, sandbox/container, sandbox/protocol, ...) are
#   packages of their own, excluded here (gremlins -E '/': any file below the package's directory).
# - sandbox: all its tests but those that start containers or need root. `go test -list . ./sandbox` lists them; the
#   table, prewarm, usage, observer and assemble tests use a fake container host and an HTTP server in the test;
#   TestCheck alone needs root and real cgroups (it calls os.Geteuid), so it is skipped (MUTATE_SANDBOX_SKIP).
#   Real containers are the end-to-end suite's, which is too slow to run once per mutant.
# - The other packages: all their tests (run as root they include the root-only ones; as a user those fail or skip
#   as in `go test`).
#
# gremlins runs on a snapshot (git archive of MUTATE_REV, default HEAD) under a temporary directory, never on the
# checkout: it rewrites files in place while it works, and other work may be going on in the tree. Two things in the
# snapshot differ from the checkout, neither changes what is built:
# - The module is renamed from "executor" to "mutated/executor" (go.mod and import lines). gremlins v0.6.0 strips
#   "<module>/" with strings.ReplaceAll from each coverage file name, which turns executor/cmd/executor/cli.go into
#   cmd/cli.go: every cmd/executor mutant would read "not covered".
# - `go` is a wrapper first in PATH (written below): gremlins derives the package to test from the file's package
#   clause and finds none for package main (it would test the module root, which has no Go files: a build failure
#   counted as "killed"). The wrapper tests $MUTATE_PKG (an import path: gremlins runs a mutant's tests in the
#   package's directory) for every `go test` gremlins runs, adds the sandbox skip list, and leaves every other go
#   command alone.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

GREMLINS_VERSION=v0.6.0
TAGS=${TAGS:-containers_image_openpgp containers_image_storage_stub seccomp}
MUTATE_PKGS=${MUTATE_PKGS:-api storage oci cmd/executor sandbox}
MUTATE_REV=${MUTATE_REV:-HEAD}
MUTATE_WORKERS=${MUTATE_WORKERS:-2}
# gremlins stops a mutant's tests after (time of the coverage run) x this; generous: a loaded machine is slow.
MUTATE_TIMEOUT_COEFFICIENT=${MUTATE_TIMEOUT_COEFFICIENT:-5}
MUTATE_MAX_SURVIVORS=${MUTATE_MAX_SURVIVORS:-10}
MUTATE_SANDBOX_SKIP=${MUTATE_SANDBOX_SKIP:-^TestCheck\$}
# MUTATE_EXCLUDE: a regexp of file names (in the package's directory) not to mutate, to split a long package over
# several runs on a small machine; the summary then covers the files run.
MUTATE_EXCLUDE=${MUTATE_EXCLUDE:-}
MUTATE_OUT=${MUTATE_OUT:-$root/bin/mutate/results}
export CGO_ENABLED=${CGO_ENABLED:-1}

gobin=$root/bin/mutate
mkdir -p "$gobin" "$MUTATE_OUT"
# gremlins --version says "dev" when built by go install: the version installed is kept beside it.
if [[ ! -x $gobin/gremlins || $(cat "$gobin/gremlins.version" 2>/dev/null) != "$GREMLINS_VERSION" ]]; then
	GOBIN=$gobin go install "github.com/go-gremlins/gremlins/cmd/gremlins@$GREMLINS_VERSION"
	echo "$GREMLINS_VERSION" >"$gobin/gremlins.version"
fi

snap=$(mktemp -d /tmp/mutate.XXXXXX)
trap 'chmod -R u+w "$snap" 2>/dev/null; rm -rf "$snap"' EXIT
mkdir -p "$snap/src" "$snap/path" "$snap/tmp"
git archive "$MUTATE_REV" | tar -x -C "$snap/src"
(
	cd "$snap/src"
	go mod edit -module mutated/executor
	# Import lines only ("executor/..." alone on a line, or after an import name or the import keyword).
	find . -name '*.go' -print0 | xargs -0 sed -i -E \
		's#^((import[[:space:]]+)?[[:space:]]*([A-Za-z_][A-Za-z0-9_]*[[:space:]]+|\.[[:space:]]+)?)"executor/#\1"mutated/executor/#'
	go build -tags "$TAGS" ./... # the rename is complete, or this fails here and not as mutants "killed"
)

realgo=$(command -v go)
cat >"$snap/path/go" <<WRAP
#!/usr/bin/env bash
# gremlins's go: see scripts/mutate.sh. Its test commands end with the package (or ./pkg/... for coverage).
if [[ \${1-} == test && -n \${MUTATE_PKG-} ]]; then
	args=("\$@")
	unset 'args[\${#args[@]}-1]'
	extra=()
	if [[ -n \${MUTATE_SKIP-} ]]; then extra=(-skip "\$MUTATE_SKIP"); fi
	exec "$realgo" "\${args[@]}" "\${extra[@]}" "\$MUTATE_PKG"
fi
exec "$realgo" "\$@"
WRAP
chmod 0755 "$snap/path/go"

survivors=$MUTATE_OUT/survivors.txt
: >"$survivors"
printf '%-14s %8s %7s %6s %9s %12s %9s %9s\n' package mutants killed lived timed-out not-covered efficacy survived >"$MUTATE_OUT/summary.txt"
total_k=0 total_l=0 total_t=0
for pkg in $MUTATE_PKGS; do
	name=${pkg//\//_}
	log=$MUTATE_OUT/$name.log
	skip=
	[[ $pkg == sandbox ]] && skip=$MUTATE_SANDBOX_SKIP
	echo "== $pkg ($(date -u +%H:%M:%S))"
	start=$SECONDS
	status=0
	(
		cd "$snap/src/$pkg"
		# TMPDIR: gremlins's copies of the module live under the snapshot, which the trap removes even when a
		# run is interrupted (gremlins itself leaves its /tmp/gremlins-* behind when killed).
		TMPDIR=$snap/tmp PATH=$snap/path:$PATH MUTATE_PKG=mutated/executor/$pkg MUTATE_SKIP=$skip "$gobin/gremlins" unleash \
			--tags "${TAGS// /,}" --workers "$MUTATE_WORKERS" --timeout-coefficient "$MUTATE_TIMEOUT_COEFFICIENT" \
			-E '/' ${MUTATE_EXCLUDE:+-E "$MUTATE_EXCLUDE"} -o "$MUTATE_OUT/$name.json"
	) >"$log" 2>&1 || status=$?
	if [[ $status -ne 0 ]]; then
		tail -30 "$log"
		echo "gremlins failed on $pkg (status $status): $log" >&2
		exit 1
	fi
	# gremlins's lines: "      KILLED CONDITIONALS_NEGATION at validate.go:317:56"
	count() { grep -cE "^[[:space:]]*$1 [A-Z_]+ at " "$log" || true; }
	k=$(count KILLED) l=$(count LIVED) t=$(count 'TIMED OUT') nc=$(count 'NOT COVERED') nv=$(count 'NOT VIABLE')
	grep -E '^[[:space:]]*LIVED ' "$log" | sed -E "s#^[[:space:]]*LIVED ([A-Z_]+) at (.*)\$#$pkg/\2 \1#" >>"$survivors" || true
	covered=$((k + l + t))
	eff=$(awk -v k=$((k + t)) -v c=$covered 'BEGIN { if (c) printf "%.1f%%", 100 * k / c; else print "-" }')
	surv=$(awk -v l=$l -v c=$covered 'BEGIN { if (c) printf "%.1f%%", 100 * l / c; else print "-" }')
	printf '%-14s %8d %7d %6d %9d %12d %9s %9s\n' "$pkg" $((covered + nc + nv)) "$k" "$l" "$t" "$nc" "$eff" "$surv" |
		tee -a "$MUTATE_OUT/summary.txt"
	echo "   ($((SECONDS - start)) s; not viable: $nv)"
	total_k=$((total_k + k)) total_l=$((total_l + l)) total_t=$((total_t + t))
done

covered=$((total_k + total_l + total_t))
echo
cat "$MUTATE_OUT/summary.txt"
echo
if [[ -s $survivors ]]; then
	echo "survivors ($survivors; equivalent ones are explained in scripts/mutate-equivalent.txt):"
	cat "$survivors"
fi
share=$(awk -v l=$total_l -v c=$covered 'BEGIN { if (c) printf "%.1f", 100 * l / c; else print 0 }')
echo "survived: $total_l of $covered covered mutants ($share%), limit $MUTATE_MAX_SURVIVORS%"
if awk -v s="$share" -v m="$MUTATE_MAX_SURVIVORS" 'BEGIN { exit !(s > m) }'; then
	exit 1
fi
