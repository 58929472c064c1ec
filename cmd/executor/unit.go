package main

import (
	"bytes"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"executor/sandbox/container"
)

// What the daemon does for the service unit it runs in (contrib/executor.service).

// defaultDrainTimeout is how long a stopping daemon lets requests in flight
// finish: a build's default timeout (the API's 600 s), so that a build
// started just before a stop still ends on its own. The unit's
// TimeoutStopSec= is this plus the time to remove every runtime.
const defaultDrainTimeout = 600 * time.Second

// fallbackCgroupParent is the cgroup parent of a daemon that no service
// manager delegated a cgroup to.
const fallbackCgroupParent = "/executor"

// defaultCgroupParent is the cgroup parent when OPR_EXECUTOR_CGROUP_PARENT
// is unset: the daemon's own cgroup when systemd delegated it to the daemon
// on a pure cgroup v2 host, /executor otherwise.
func defaultCgroupParent() string {
	raw, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return fallbackCgroupParent
	}
	if cg, ok := delegatedUnitCgroup(string(raw), "/sys/fs/cgroup", os.Getuid()); ok {
		return cg
	}
	return fallbackCgroupParent
}

// delegatedUnitCgroup says whether the cgroup a process is in (procCgroup,
// its /proc/<pid>/cgroup) is a service or scope that systemd delegated
// (Delegate=yes) on the pure cgroup v2 hierarchy mounted at mount, and
// returns that cgroup.
//
// Delegation is what makes the unit's subtree the daemon's to arrange:
// systemd then leaves the cgroups below it alone, and moves no process
// there. It marks such a cgroup with the trusted.delegate (or, for a user
// manager, user.delegate) extended attribute, systemd 251 and newer. Without
// the mark the cgroup is systemd's, and runtimes are kept out of it.
//
// Hybrid (cgroup v1) hosts keep /executor: there the unit's cgroup in the
// unified hierarchy has no controllers, and systemd delegates only the v1
// controllers it manages itself (not cpuset or freezer, which libcontainer
// uses too), so a runtime's cgroups would be split between the unit's
// subtree and hierarchies nobody delegated. /executor on every hierarchy is
// the layout that is tested there (make test).
func delegatedUnitCgroup(procCgroup, mount string, uid int) (string, bool) {
	if _, err := os.Stat(filepath.Join(mount, "cgroup.controllers")); err != nil {
		return "", false // not cgroup v2 only
	}
	var own string
	for _, line := range strings.Split(strings.TrimSpace(procCgroup), "\n") {
		rest, ok := strings.CutPrefix(line, "0::")
		if !ok {
			return "", false // a v1 hierarchy too
		}
		own = path.Clean(rest)
	}
	if !path.IsAbs(own) || own == "/" {
		return "", false
	}
	// systemd 254 and newer start a unit with DelegateSubgroup=supervisor
	// in that subgroup of its cgroup: the unit's is the one above.
	if path.Base(own) == container.SupervisorCgroup {
		own = path.Dir(own)
	}
	if base := path.Base(own); !strings.HasSuffix(base, ".service") && !strings.HasSuffix(base, ".scope") {
		return "", false
	}
	dir := filepath.Join(mount, own)
	for _, attr := range []string{"trusted.delegate", "user.delegate"} {
		buf := make([]byte, 8)
		n, err := unix.Getxattr(dir, attr, buf)
		if err == nil && string(bytes.TrimSpace(buf[:n])) == "1" {
			return own, true
		}
	}
	// A user manager older than systemd 253 (Debian 12's 252) marks
	// nothing: there a unit's cgroup that the manager handed to this user
	// (it owns the directory and may enable controllers below it) is the
	// delegation. A user never owns the cgroup of a unit that was not
	// delegated to it. uid is the caller's (os.Getuid()).
	if uid != 0 {
		var st unix.Stat_t
		if unix.Stat(dir, &st) == nil && int(st.Uid) == uid &&
			unix.Access(filepath.Join(dir, "cgroup.subtree_control"), unix.W_OK) == nil {
			return own, true
		}
	}
	return "", false
}
