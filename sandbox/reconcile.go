package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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

// sweepCgroups removes the runtime cgroups under the parent (they are empty
// once their containers are gone), on every v1 hierarchy or on v2.
func (m *Manager) sweepCgroups() error {
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
	var errs []error
	for _, root := range roots {
		parent := filepath.Join(root, m.cfg.CgroupParent)
		kids, err := os.ReadDir(parent)
		if err != nil {
			continue
		}
		for _, k := range kids {
			if !k.IsDir() || !strings.HasPrefix(k.Name(), "rt-") {
				continue
			}
			if err := os.Remove(filepath.Join(parent, k.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", filepath.Join(parent, k.Name()), err))
			}
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
