package sandbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"

	"executor/sandbox/disk"
)

// Reconcile adopts the runtimes an earlier process left running for live
// restore (Config.LiveRestore; see restore.go), then removes everything else
// an earlier process of this executor left behind:
// containers (killed and destroyed), processes left in runtime cgroups, runtime directories and
// roots, endpoints, and empty cgroups under the parent. Call it before
// serving.
func (m *Manager) Reconcile(ctx context.Context) error {
	var errs []error
	// With live restore, the runtimes an earlier process left running are
	// adopted first; everything below spares them.
	adopted := map[string]bool{}
	if m.cfg.LiveRestore {
		adopted = m.restore(ctx)
	} else {
		errs = append(errs, m.clearRecords())
	}
	keep := func(cid string) bool { return adopted[cid] }
	removed, err := m.runner.RemoveLeftovers(ctx, keep)
	errs = append(errs, err)
	// Processes of runtimes whose container state is gone (state removed
	// by hand, a crash while it was written) are still in their cgroups:
	// kill them before their roots, disks and namespaces are taken away.
	killed, err := m.runner.KillStrays(ctx, keep)
	errs = append(errs, err)
	if killed > 0 {
		m.log.Info("killed processes left in runtime cgroups", "processes", killed)
	}
	dirs, err := os.ReadDir(m.runDir)
	if err != nil && !os.IsNotExist(err) {
		errs = append(errs, err)
	}
	swept := 0
	for _, d := range dirs {
		if adopted[d.Name()] {
			continue
		}
		swept++
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
	errs = append(errs, m.runner.SweepCgroups(keep))
	if removed > 0 || swept > 0 {
		m.log.Info("removed leftovers of an earlier run", "containers", removed, "runtimeDirs", swept)
	}
	return errors.Join(errs...)
}

// RemoveCgroupParent removes the (empty) parent cgroup at shutdown.
func (m *Manager) RemoveCgroupParent() { m.runner.RemoveCgroupParent() }
