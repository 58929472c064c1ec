package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// The parts of the host Check looks at, as HealthError.Parts names them.
const (
	PartDataDir      = "data dir"
	PartCgroupParent = "cgroup parent"
	PartNetwork      = "network"
)

// HealthError says which parts of the host that new runtimes need are
// missing or broken. Parts holds their names only (PartDataDir...), which say
// nothing of the host; Problems says how each broke, with the host's
// interface names, paths and errors, for operators.
type HealthError struct {
	Parts    []string
	Problems []string
}

func (e *HealthError) Error() string { return strings.Join(e.Problems, "; ") }

// add records a problem of part; problem says what it is (a path, a network name) itself.
func (e *HealthError) add(part, problem string) {
	if len(e.Parts) == 0 || e.Parts[len(e.Parts)-1] != part {
		e.Parts = append(e.Parts, part)
	}
	e.Problems = append(e.Problems, problem)
}

// PrepareHealth makes what Check expects to find that the daemon would
// otherwise only make with its first runtime: the cgroup parent. Call it once
// after Reconcile, before serving.
func (m *Manager) PrepareHealth() error {
	if m.runner == nil {
		return nil
	}
	if m.runner.LimitsOff() != nil {
		return nil
	}
	if err := m.runner.MakeCgroupParent(); err != nil {
		return fmt.Errorf("sandbox: cgroup parent %s (OPR_EXECUTOR_CGROUP_PARENT): %w", m.cfg.CgroupParent, err)
	}
	return nil
}

// Check reports whether this host can still make runtimes: the data dir and
// the directories New made in it are there and writable, the cgroup parent
// exists on every hierarchy (someone removing it removes the caps operators
// set there), and every network's bridge and firewall are intact. It returns
// nil or a *HealthError naming everything broken. It only stats and looks
// things up, repairs nothing, and touches no runtime: the health endpoint
// calls it.
func (m *Manager) Check(ctx context.Context) error {
	var he HealthError
	if err := m.checkDataDir(); err != nil {
		he.add(PartDataDir, "data dir "+err.Error())
	}
	if m.runner != nil {
		if err := m.runner.CheckCgroupParent(); err != nil {
			he.add(PartCgroupParent, err.Error()) // "cgroup parent <dir> ..."
		}
	}
	for _, n := range m.cfg.Networks {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := n.Check(); err != nil {
			he.add(PartNetwork, "network "+n.Name()+": "+err.Error())
		}
	}
	if len(he.Problems) > 0 {
		return &he
	}
	return nil
}

// checkDataDir finds the data dir, and the runtime and container state
// directories New made in it: a data dir wiped and made again (its lock
// file, layers and state gone) is as broken as a missing one. The file
// system must take writes: not read-only (remounted so after an I/O error),
// with free blocks and inodes.
func (m *Manager) checkDataDir() error {
	dir := m.cfg.DataDir
	for _, d := range []string{dir, m.runDir, filepath.Join(dir, "containers")} {
		st, err := os.Stat(d)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("%s is missing", d)
			}
			return fmt.Errorf("%s: %w", d, err)
		}
		if !st.IsDir() {
			return fmt.Errorf("%s is not a directory", d)
		}
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	switch {
	case fs.Flags&unix.ST_RDONLY != 0:
		return fmt.Errorf("%s is on a read-only file system", dir)
	case fs.Bfree == 0:
		return fmt.Errorf("%s: no space left on its file system", dir)
	case fs.Files > 0 && fs.Ffree == 0:
		// Files is 0 on file systems that do not count inodes.
		return fmt.Errorf("%s: no inodes left on its file system", dir)
	}
	// access(2) also refuses an immutable data dir (chattr +i), where root
	// cannot create files either.
	if err := unix.Access(dir, unix.W_OK); err != nil {
		return fmt.Errorf("%s is not writable: %w", dir, err)
	}
	return nil
}

// Warnings are the weakened guarantees this daemon runs with, for its log
// and GET /v1/health: none, or that runtimes have no CPU, memory or pids
// limits (a rootless daemon nobody delegated cgroups to; LimitsOff says
// why, for the log).
func (m *Manager) Warnings() []string {
	var out []string
	if m.runner != nil && m.runner.LimitsOff() != nil {
		out = append(out, "runtimes run without CPU, memory and pids limits: the executor is rootless and no cgroup was delegated to it")
	}
	if m.cfg.Rootless && m.cfg.DiskLimit == 0 {
		out = append(out, "runtimes' disks are not capped: they share the data dir's file system (a rootless executor cannot make loop devices)")
	}
	return out
}

// LimitsOff says why runtimes run without limits, or nil when they have them.
func (m *Manager) LimitsOff() error {
	if m.runner == nil {
		return nil
	}
	return m.runner.LimitsOff()
}
