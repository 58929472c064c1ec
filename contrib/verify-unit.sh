#!/usr/bin/env bash
# systemd-analyze verify contrib/executor.service (and, as a user unit,
# contrib/executor-rootless.service), clean: no error and no warning (verify exits 0 on unknown or unparsable directives, which systemd
# then ignores, so any output fails here too).
#
# verify also checks that every Exec*= line names an executable, and CI
# machines do not have the executor installed, so the unit is verified in a
# scratch root (--root) holding the unit, systemd's own units, and a stand-in
# executable at each Exec*= path. Needs systemd-analyze (package systemd), not
# a running systemd.
set -euo pipefail
cd "$(dirname "$0")"
unit=executor.service
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
cp "$unit" "$root/etc/systemd/system/$unit"
# The command of each Exec*= line, without its prefixes (-@:+!).
sed -n 's/^Exec[A-Za-z]*=[-@:+!]*\([^ ]*\).*/\1/p' "$unit" | while read -r cmd; do
	mkdir -p "$root$(dirname "$cmd")"
	install -m 755 /dev/null "$root$cmd"
done
out=$(systemd-analyze --root="$root" verify "$unit" 2>&1) && rc=0 || rc=$?
if [ "$rc" -ne 0 ] || [ -n "$out" ]; then
	echo "systemd-analyze verify $unit: exit $rc" >&2
	echo "$out" >&2
	exit 1
fi
echo "systemd-analyze verify $unit: clean ($(systemd-analyze --version | head -n 1))"

# The user unit: --user does not take --root, so its Exec*= commands are
# pointed at stand-ins in the scratch dir; a user manager needs an
# XDG_RUNTIME_DIR.
unit=executor-rootless.service
mkdir -p "$root/user" "$root/xdg"
chmod 700 "$root/xdg"
sed "s|^\(Exec[A-Za-z]*=[-@:+!]*\)/|\1$root/user/|" "$unit" >"$root/user/executor.service"
sed -n 's/^Exec[A-Za-z]*=[-@:+!]*\([^ ]*\).*/\1/p' "$root/user/executor.service" | while read -r cmd; do
	mkdir -p "$(dirname "$cmd")"
	install -m 755 /dev/null "$cmd"
done
out=$(XDG_RUNTIME_DIR="$root/xdg" systemd-analyze --user verify "$root/user/executor.service" 2>&1) && rc=0 || rc=$?
if [ "$rc" -ne 0 ] || [ -n "$out" ]; then
	echo "systemd-analyze --user verify $unit: exit $rc" >&2
	echo "$out" >&2
	exit 1
fi
echo "systemd-analyze --user verify $unit: clean"
