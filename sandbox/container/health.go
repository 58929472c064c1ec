package container

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// MakeCgroupParent creates the cgroup parent on every mounted hierarchy if it
// is missing. libcontainer would make it with the first runtime anyway; made
// at start, its absence later means someone removed it (and with it the caps
// an operator set there), which CheckCgroupParent reports. Controllers are
// left to libcontainer, which enables them down the path as it creates each
// runtime's cgroup.
func (r *Runner) MakeCgroupParent() error {
	roots, err := r.cgroupMounts()
	if err != nil {
		return err
	}
	for _, root := range roots {
		dir := filepath.Join(root, r.cfg.CgroupParent)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create cgroup parent %s: %w", dir, err)
		}
		if !r.cgroup2 {
			cloneCpusetChildren(dir)
		}
	}
	return nil
}

// cloneCpusetChildren has the kernel give each new cgroup under a v1 cpuset
// parent the parent's cpus and mems as it is made (cgroup.clone_children).
// Otherwise libcontainer finds a runtime's new cpuset empty and writes both
// files, and each write of cpuset.cpus has the kernel validate the change
// against every sibling and rebuild the scheduling domains: 0.13 ms a
// runtime on an idle host, 0.30 ms beside 1,000 runtimes, against 0.03 and
// 0.05 ms when cloned (measured on this VM). The cpus and mems are the ones
// libcontainer would have copied; the kernel does not clone beside an
// exclusive sibling, where libcontainer copies as before. A parent that is
// not a cpuset, or a write refused (a parent delegated without it), leaves
// libcontainer's copy in place: nothing is lost but the time.
func cloneCpusetChildren(dir string) {
	if _, err := os.Stat(filepath.Join(dir, "cpuset.cpus")); err != nil {
		return
	}
	f, err := os.OpenFile(filepath.Join(dir, "cgroup.clone_children"), os.O_WRONLY, 0)
	if err != nil {
		return
	}
	_, _ = f.WriteString("1")
	_ = f.Close()
}

// CheckCgroupParent reports whether the cgroup parent is still a cgroup on
// every mounted hierarchy (the unified one on cgroup v2, each one on v1). Only
// stat calls: callers may poll it.
func (r *Runner) CheckCgroupParent() error {
	if r.limitsOff != nil {
		return nil
	}
	roots, err := r.cgroupMounts()
	if err != nil {
		return err
	}
	for _, root := range roots {
		dir := filepath.Join(root, r.cfg.CgroupParent)
		// cgroup.procs is in every cgroup of both versions: a plain
		// directory of that name is not a cgroup.
		if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("cgroup parent %s is missing", dir)
			}
			return fmt.Errorf("cgroup parent %s: %w", dir, err)
		}
	}
	return nil
}

// cgroupMounts is hierarchies less the directories under /sys/fs/cgroup that
// are not a cgroup file system (an unmounted mount point on a v1 host): a
// parent made there would be a plain directory nobody enforces.
func (r *Runner) cgroupMounts() ([]string, error) {
	var out []string
	for _, root := range r.hierarchies() {
		var st unix.Statfs_t
		if err := unix.Statfs(root, &st); err != nil {
			return nil, fmt.Errorf("cgroup hierarchy %s: %w", root, err)
		}
		if st.Type == unix.CGROUP_SUPER_MAGIC || st.Type == unix.CGROUP2_SUPER_MAGIC {
			out = append(out, root)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no cgroup hierarchy is mounted under %s", cgroupRoot)
	}
	return out, nil
}
