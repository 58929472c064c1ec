#!/bin/sh
# Fails with one line when the Go toolchain the build needs is missing or
# older than go.mod's go line, before anything else runs: without it the
# build would stop later with a less clear error, or (GOTOOLCHAIN=auto) try
# to download a toolchain from the network. The Makefile's check-go target
# and .ci/run run it. GO names the go command (default: go on PATH).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
go=${GO:-go}
need=$(sed -n 's/^go \([0-9][0-9.]*\)$/\1/p' "$root/go.mod")
if [ -z "$need" ]; then
	echo "check-go: no go line in $root/go.mod" >&2
	exit 1
fi
if ! path=$(command -v "$go" 2>/dev/null); then
	echo "executor build: Go not found ('$go' is not on PATH): install Go $need or newer (https://go.dev/dl/, e.g. into /usr/local/go) and put its bin on PATH; see README, Building from source" >&2
	exit 1
fi
# GOTOOLCHAIN=local, and outside the module: the version of this go command
# itself, not of a toolchain go.mod would make it switch to.
have=$(cd / && GOTOOLCHAIN=local "$go" version 2>/dev/null | awk '{print $3}') || have=
case $have in
go[0-9]*) have=${have#go} ;;
*)
	# A development build ("devel go1.27-..."): it cannot be compared; let
	# the build itself decide.
	exit 0
	;;
esac
# go1.26 is go1.26.0; a release candidate (go1.27rc1) comes before go1.27.0.
if ! awk -v have="$have" -v need="$need" '
function key(v,   p, n, patch) {
	patch = 0
	if (v ~ /(rc|beta)[0-9]*$/) {
		patch = -1
		sub(/(rc|beta)[0-9]*$/, "", v)
	}
	n = split(v, p, ".")
	if (n >= 3)
		patch = p[3]
	return (p[1] * 1000 + p[2]) * 1000 + patch
}
BEGIN { exit !(key(have) >= key(need)) }'; then
	echo "executor build: $path is go$have, too old: install Go $need or newer (go.mod's go line; https://go.dev/dl/) and put it first on PATH; see README, Building from source" >&2
	exit 1
fi
