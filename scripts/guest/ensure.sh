# Sourced (bash) by scripts/cgroup2/run.sh and scripts/systemd/run.sh, from
# the repository root, with the runner's name as $1 for its messages: makes
# sure the host has what a guest run needs (qemu, mmdebstrap, the payload's
# tools) and that the guest both boot (scripts/guest/build.sh) is built on this machine,
# and sets guest (its directory: vmlinuz, initrd.img, root.img) and built
# (how it got there, for the runner's last line).
#
# One cache for both, $EXECUTOR_GUEST_CACHE (default /var/cache/executor-guest),
# keyed by build.sh's hash; older keys are removed. The build holds a lock
# (flock on the cache's .lock): a runner started while another builds waits
# for that build instead of making a second one. EXECUTOR_GUEST_SYSTEMD=
# backports (build.sh: systemd from bookworm-backports) is a guest of its
# own, keyed by the same hash and -systemd-backports: the two stay side by
# side, and each build removes only its own kind's older keys.
export DEBIAN_FRONTEND=noninteractive
guest_need=()
for pkg in qemu-system-x86 mmdebstrap e2fsprogs busybox-static docker-registry; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || guest_need+=("$pkg")
done
if [ "${#guest_need[@]}" -gt 0 ]; then
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${guest_need[@]}"
fi

guest_cache=${EXECUTOR_GUEST_CACHE:-/var/cache/executor-guest}
case ${EXECUTOR_GUEST_SYSTEMD:-} in
"") guest_kind= ;;
backports) guest_kind=-systemd-backports ;;
*) echo "EXECUTOR_GUEST_SYSTEMD must be empty (Debian 12's systemd) or backports" >&2; exit 2 ;;
esac
guest_key=$(sha256sum scripts/guest/build.sh | cut -c1-16)$guest_kind
guest=$guest_cache/$guest_key
built=cached
if [ ! -s "$guest/root.img" ]; then
	mkdir -p "$guest_cache"
	guest_wait=$(date +%s)
	exec {guest_lock}>"$guest_cache/.lock"
	if ! flock -n "$guest_lock"; then
		echo "== $1: waiting for another run building the guest ($guest)"
		flock "$guest_lock"
	fi
	if [ -s "$guest/root.img" ]; then
		built="cached (built by another run, waited $(($(date +%s) - guest_wait)) s)"
	else
		echo "== $1: building the guest root once for this machine ($guest)"
		for guest_old in "$guest_cache"/*; do
			guest_name=${guest_old##*/}
			if [[ ${guest_name%.tmp} =~ ^[0-9a-f]{16}$guest_kind$ ]] && [ "$guest_name" != "$guest_key" ]; then
				rm -rf "$guest_old"
			fi
		done
		bash scripts/guest/build.sh "$guest.tmp"
		mv "$guest.tmp" "$guest"
		built="built in $(($(date +%s) - guest_wait)) s"
	fi
	exec {guest_lock}>&-
fi
