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
	}
	return nil
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
