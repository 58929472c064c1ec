package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"

	"executor/sandbox/disk"
)

// Reconcile removes what an earlier process of this executor left behind:
// containers (killed and destroyed: their output pipes died with that
// process), runtime directories and roots, endpoints, and empty cgroups under
// the parent. Call it before serving.
func (m *Manager) Reconcile(ctx context.Context) error {
	var errs []error
	entries, err := os.ReadDir(m.stateRoot)
	if err != nil && !os.IsNotExist(err) {
		errs = append(errs, err)
	}
	removed := 0
	for _, e := range entries {
		id := e.Name()
		c, err := libcontainer.Load(m.stateRoot, id)
		if err != nil {
			// State too broken to load: remove it; the cgroup sweep below
			// catches what it held.
			errs = append(errs, os.RemoveAll(filepath.Join(m.stateRoot, id)))
			continue
		}
		_ = c.Signal(unix.SIGKILL)
		// The kill is asynchronous: Destroy refuses a container still running.
		for i := 0; i < 500; i++ {
			if st, err := c.Status(); err != nil || st == libcontainer.Stopped {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err := c.Destroy(); err != nil {
			errs = append(errs, fmt.Errorf("destroy leftover container %s: %w", id, err))
			continue
		}
		removed++
	}
	// Processes of runtimes whose container state is gone (state removed
	// by hand, a crash while it was written) are still in their cgroups:
	// kill them before their roots, disks and namespaces are taken away.
	errs = append(errs, m.killLeftoverProcesses())
	dirs, err := os.ReadDir(m.runDir)
	if err != nil && !os.IsNotExist(err) {
		errs = append(errs, err)
	}
	for _, d := range dirs {
		dir := filepath.Join(m.runDir, d.Name())
		if err := m.cfg.Images.UnmountRoot(filepath.Join(dir, "root")); err != nil {
			errs = append(errs, err)
			continue
		}
		// The runtime's disk goes whole; a mount there that is not one
		// of ours is left alone, and so is what is beneath it.
		if err := disk.Unmount(dir); err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, os.RemoveAll(dir))
	}
	for _, n := range m.cfg.Networks {
		errs = append(errs, n.Reset(ctx))
	}
	errs = append(errs, m.sweepCgroups())
	if removed > 0 || len(dirs) > 0 {
		m.log.Info("removed leftovers of an earlier run", "containers", removed, "runtimeDirs", len(dirs))
	}
	return errors.Join(errs...)
}

// runtimeCgroups lists the runtime cgroups under the parent, on every v1
// hierarchy or on v2.
func (m *Manager) runtimeCgroups() []string {
	var roots []string
	if m.cgroup2 {
		roots = []string{"/sys/fs/cgroup"}
	} else {
		ents, _ := os.ReadDir("/sys/fs/cgroup")
		for _, e := range ents {
			if e.IsDir() {
				roots = append(roots, filepath.Join("/sys/fs/cgroup", e.Name()))
			}
		}
	}
	var out []string
	for _, root := range roots {
		parent := filepath.Join(root, m.cfg.CgroupParent)
		kids, err := os.ReadDir(parent)
		if err != nil {
			continue
		}
		for _, k := range kids {
			if k.IsDir() && strings.HasPrefix(k.Name(), "rt-") {
				out = append(out, filepath.Join(parent, k.Name()))
			}
		}
	}
	return out
}

// killLeftoverProcesses SIGKILLs what is left in the runtime cgroups under
// the parent and waits (up to 5 s) for them to be empty. Only our parent's
// rt-* cgroups are touched: they hold nothing but runtimes.
func (m *Manager) killLeftoverProcesses() error {
	cgs := m.runtimeCgroups()
	killed := 0
	for _, cg := range cgs {
		for _, pid := range cgroupPIDs(cg) {
			if unix.Kill(pid, unix.SIGKILL) == nil {
				killed++
			}
		}
	}
	if killed == 0 {
		return nil
	}
	m.log.Info("killed processes left in runtime cgroups", "processes", killed)
	deadline := time.Now().Add(5 * time.Second)
	for _, cg := range cgs {
		for len(cgroupPIDs(cg)) > 0 {
			if time.Now().After(deadline) {
				return fmt.Errorf("processes in cgroup %s survived SIGKILL", cg)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

// cgroupPIDs reads a cgroup's processes (none when it is gone).
func cgroupPIDs(cg string) []int {
	data, err := os.ReadFile(filepath.Join(cg, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// sweepCgroups removes the runtime cgroups under the parent (they are empty
// once their containers are gone).
func (m *Manager) sweepCgroups() error {
	var errs []error
	for _, cg := range m.runtimeCgroups() {
		if err := os.Remove(cg); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", cg, err))
		}
	}
	return errors.Join(errs...)
}

// RemoveCgroupParent removes the (empty) parent cgroup at shutdown.
func (m *Manager) RemoveCgroupParent() {
	if m.cgroup2 {
		_ = os.Remove(filepath.Join("/sys/fs/cgroup", m.cfg.CgroupParent))
		return
	}
	ents, _ := os.ReadDir("/sys/fs/cgroup")
	for _, e := range ents {
		_ = os.Remove(filepath.Join("/sys/fs/cgroup", e.Name(), m.cfg.CgroupParent))
	}
}
