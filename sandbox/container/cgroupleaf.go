package container

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/cgroups"
)

// SupervisorCgroup is the leaf, below the cgroup parent, that the daemon
// moves itself into on cgroup v2 when it was started where its runtimes'
// cgroups go (see Runner.EnterSupervisorCgroup). It does not begin with
// IDPrefix, so the leftovers sweep leaves it alone.
const SupervisorCgroup = "supervisor"

// runtimeControllers are the controllers runtimes' limits need, enabled for
// the parent's children when available.
func runtimeControllers() []string { return []string{"cpu", "io", "memory", "pids"} }

// EnterSupervisorCgroup moves process pid (the daemon's own) out of the way
// of its runtimes on cgroup v2, and returns the cgroup it moved it to (""
// when it stayed, and always on cgroup v1, where a cgroup may hold processes
// beside children with controllers).
//
// cgroup v2 lets no cgroup but the root hold processes and enable domain
// controllers (memory, io, cpu) for its children. A daemon started in the
// cgroup it is told to make runtimes under, or above it (systemd's layout:
// Delegate=yes and the cgroup parent the unit's own cgroup), would make
// every runtime's cgroup fail ("cannot enter cgroupv2 ... with domain
// controllers -- it is in an invalid state"). So the daemon moves itself,
// all its threads, into <parent>/supervisor: a leaf inside the parent, as no
// cgroup outside the parent is the daemon's to make. Then it enables the
// runtimes' controllers from its old cgroup down to the parent, which fails
// with a clear error when processes other than the daemon are left there.
//
// A daemon elsewhere (the root cgroup, a sibling, a cgroup below the parent)
// is left where it is and nothing is written.
//
// The spawner (see spawner.go), the daemon's child and so in its cgroup,
// moves with it; one started later starts in the leaf.
func (r *Runner) EnterSupervisorCgroup(pid int) (string, error) {
	if !r.cgroup2 || r.limitsOff != nil {
		return "", nil
	}
	var others []int
	if r.spawner != nil {
		if sp := r.spawner.pid(); sp > 0 {
			others = append(others, sp)
		}
	}
	return enterSupervisorCgroup(cgroupRoot, r.cfg.CgroupParent, pid, others...)
}

// MoveToSupervisorCgroup is EnterSupervisorCgroup for the process that
// starts the daemon rather than is it: the host process of a rootless
// daemon, which systemd starts in the unit's cgroup and whose children
// (pasta, the daemon's namespaces) start where it is.
func MoveToSupervisorCgroup(parent string, pid int) (string, error) {
	if !cgroups.IsCgroup2UnifiedMode() {
		return "", nil
	}
	return enterSupervisorCgroup(cgroupRoot, path.Clean(parent), pid)
}

// enterSupervisorCgroup is EnterSupervisorCgroup on the cgroup v2 hierarchy
// mounted at mount (a hybrid host's /sys/fs/cgroup/unified in tests); the
// others, processes of the daemon's own, move with pid.
func enterSupervisorCgroup(mount, parent string, pid int, others ...int) (string, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", fmt.Errorf("cgroup of the executor: %w", err)
	}
	own, err := unifiedCgroup(string(raw))
	if err != nil {
		return "", err
	}
	if !inTheWay(own, parent) {
		return "", nil
	}
	leaf := path.Join(parent, SupervisorCgroup)
	dir := filepath.Join(mount, leaf)
	// A restart finds the leaf of the run before it: keep it.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create cgroup %s: %w", leaf, err)
	}
	// Writing the pid to cgroup.procs moves every thread of the process.
	for _, p := range append([]int{pid}, others...) {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(p)), 0o644); err != nil {
			return "", fmt.Errorf("move the executor's process %d into cgroup %s: %w", p, leaf, err)
		}
	}
	// Each cgroup from the daemon's old one down to the parent hands the
	// controllers to the next; MkdirAll made those below the old one.
	cgs := []string{own}
	if rel := strings.TrimPrefix(parent, own+"/"); rel != parent {
		for _, name := range strings.Split(rel, "/") {
			cgs = append(cgs, path.Join(cgs[len(cgs)-1], name))
		}
	}
	for _, cg := range cgs {
		if err := enableControllers(mount, cg); err != nil {
			return leaf, err
		}
	}
	return leaf, nil
}

// inTheWay says whether a daemon in cgroup own keeps domain controllers from
// runtimes under parent: it sits in the parent or above it. The root cgroup
// may hold processes and still hand controllers down.
func inTheWay(own, parent string) bool {
	if own == "/" {
		return false
	}
	return own == parent || strings.HasPrefix(parent, own+"/")
}

// unifiedCgroup reads the cgroup v2 path from a /proc/<pid>/cgroup file.
func unifiedCgroup(raw string) (string, error) {
	for _, line := range strings.Split(raw, "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok && path.IsAbs(rest) {
			return path.Clean(rest), nil
		}
	}
	return "", fmt.Errorf("no cgroup v2 entry in /proc/<pid>/cgroup: %q", raw)
}

// enableControllers enables, for the children of cgroup cg, those of the
// runtimes' controllers that cg has.
func enableControllers(mount, cg string) error {
	dir := filepath.Join(mount, cg)
	avail, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("controllers of cgroup %s: %w", cg, err)
	}
	have := strings.Fields(string(avail))
	for _, c := range runtimeControllers() {
		if !slices.Contains(have, c) {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+"+c), 0o644); err != nil {
			procs, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
			if others := strings.Fields(string(procs)); len(others) > 0 {
				return fmt.Errorf("enable %s for the children of cgroup %s: processes other than the executor are still there (%s); move them into a leaf cgroup: %w",
					c, cg, strings.Join(others, " "), err)
			}
			return fmt.Errorf("enable %s for the children of cgroup %s: %w", c, cg, err)
		}
	}
	return nil
}
