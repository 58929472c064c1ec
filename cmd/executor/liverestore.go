package main

import (
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"

	"executor/sandbox/container"
)

// checkMountNamespace refuses live restore where it cannot work. The mounts
// of a runtime (its root, its disk, its pinned network namespace) live in
// the daemon's mount namespace, and a restarted daemon finds them only when
// that namespace outlives the process: when it is the one the daemon was
// started from. systemd gives a unit a namespace of its own for
// ProtectHome=, ProtectKernelModules=, ProtectKernelLogs= and the like
// (contrib/executor.service sets two), which ends with the daemon and
// unmounts all of it: the runtimes would run on with no way back to them.
//
// The namespace is compared with the parent's (systemd, a supervisor, a
// shell), or PID 1's where the parent's cannot be read. Where neither can,
// there is no telling, and live restore is refused too.
func checkMountNamespace() error {
	own, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return fmt.Errorf("read this process's mount namespace: %w", err)
	}
	var errs []error
	for _, pid := range []string{strconv.Itoa(os.Getppid()), "1"} {
		other, err := os.Readlink("/proc/" + pid + "/ns/mnt")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if other != own {
			return fmt.Errorf("the daemon runs in a mount namespace of its own (%s, process %s's is %s), which ends with it and takes its runtimes' roots, disks and network namespaces along: "+
				"run it in the namespace it is started from (under systemd: ProtectHome=no, ProtectKernelModules=no and KillMode=process in a drop-in; see the README's Live restore)", own, pid, other)
		}
		return nil
	}
	return fmt.Errorf("cannot tell whether the daemon's mount namespace outlives it (%v)", errs)
}

// checkStartCgroup refuses live restore where the next daemon could not
// start. On cgroup v2 a cgroup whose children have controllers holds no
// process of its own: a daemon started in the cgroup its runtimes go under
// (a delegated systemd unit's, which systemd before 254 starts the main
// process in) moves itself into a leaf, but whoever starts the next one puts
// it there again, and fails (EBUSY; systemd's status 219/CGROUP) while the
// runtimes left running still hold the cgroup. procCgroup is
// /proc/self/cgroup, parent OPR_EXECUTOR_CGROUP_PARENT.
func checkStartCgroup(procCgroup, parent string) error {
	lines := strings.Split(strings.TrimSpace(procCgroup), "\n")
	own, ok := strings.CutPrefix(lines[0], "0::")
	if len(lines) != 1 || !ok {
		return nil // cgroup v1 (hybrid): no such rule
	}
	own = path.Clean(own)
	if own == "/" || (own != parent && !strings.HasPrefix(parent, own+"/")) {
		return nil
	}
	return fmt.Errorf("the daemon was started in cgroup %s, which its runtimes' cgroups go under (OPR_EXECUTOR_CGROUP_PARENT=%s): "+
		"the next daemon could not be started there while the runtimes it keeps hold it (systemd: status 219/CGROUP). "+
		"Under systemd 254 or newer add DelegateSubgroup=%s to the unit, or set a cgroup parent outside the daemon's cgroup", own, parent, container.SupervisorCgroup)
}
