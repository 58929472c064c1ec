package container

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"
)

// leftoverWait bounds how long a leftover is given to die after SIGKILL.
const leftoverWait = 5 * time.Second

// RemoveLeftovers kills and destroys every container under the state
// directory: those of an earlier daemon that were not adopted. State too
// broken to load is removed; the processes it held are KillStrays' and its
// cgroups SweepCgroups'. It
// returns how many containers it destroyed. Call it before starting any
// container: it removes this Runner's own containers too. The containers
// whose id keep reports (those adopted after a live restore; see Adopt) are
// spared, their state left as it is; a nil keep spares none.
func (r *Runner) RemoveLeftovers(ctx context.Context, keep func(id string) bool) (int, error) {
	var errs []error
	entries, err := os.ReadDir(r.cfg.StateDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	removed := 0
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		id := e.Name()
		if keep != nil && keep(id) {
			continue
		}
		c, err := libcontainer.Load(r.cfg.StateDir, id)
		if err != nil {
			// State too broken to load: remove it; the cgroup sweep
			// catches what it held.
			if err := os.RemoveAll(filepath.Join(r.cfg.StateDir, id)); err != nil {
				errs = append(errs, fmt.Errorf("remove broken container state %s: %w", id, err))
			}
			continue
		}
		_ = c.Signal(unix.SIGKILL)
		// The kill is asynchronous: Destroy refuses a container still running.
		stopped := func() bool {
			st, err := c.Status()
			return err != nil || st == libcontainer.Stopped
		}
		// Past the wait Destroy is tried anyway: its error says what is
		// left.
		if err := poll(ctx, leftoverWait, stopped); err != nil && ctx.Err() != nil {
			errs = append(errs, err)
			break
		}
		if err := c.Destroy(); err != nil {
			errs = append(errs, fmt.Errorf("destroy leftover container %s: %w", id, err))
			continue
		}
		removed++
	}
	return removed, errors.Join(errs...)
}

// KillStrays SIGKILLs the processes left in the runtime cgroups
// (<parent>/rt-*) and waits, up to 5 s, for those cgroups to be empty. Such
// processes belong to runtimes whose container state is gone (removed by
// hand, a crash while it was written): they must die before their roots,
// disks and namespaces are taken away. Only the parent's rt-* cgroups are
// touched: they hold nothing but runtimes. It returns how many processes it
// signalled. The cgroups of the containers whose id keep reports (adopted
// ones; see Adopt) are spared; a nil keep spares none.
func (r *Runner) KillStrays(ctx context.Context, keep func(id string) bool) (int, error) {
	cgs := r.runtimeCgroups(keep)
	// On cgroup v1 a process is in a cgroup of every hierarchy: count it
	// once.
	killed := map[int]bool{}
	for _, cg := range cgs {
		for _, pid := range cgroupPIDs(cg) {
			if !killed[pid] && unix.Kill(pid, unix.SIGKILL) == nil {
				killed[pid] = true
			}
		}
	}
	if len(killed) == 0 {
		return 0, nil
	}
	deadline := time.Now().Add(leftoverWait)
	for _, cg := range cgs {
		empty := func() bool { return len(cgroupPIDs(cg)) == 0 }
		if err := poll(ctx, time.Until(deadline), empty); err != nil {
			return len(killed), fmt.Errorf("processes in cgroup %s survived SIGKILL: %w", cg, err)
		}
	}
	return len(killed), nil
}

// errTimeout is poll's error when the time given ran out.
var errTimeout = errors.New("timed out")

// poll calls done every 10 ms until it holds, ctx ends or timeout passes.
func poll(ctx context.Context, timeout time.Duration, done func() bool) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !done() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			if done() {
				return nil
			}
			return errTimeout
		case <-tick.C:
		}
	}
	return nil
}

// SweepCgroups removes the runtime cgroups (<parent>/rt-*) on every
// hierarchy. They are empty once their containers are gone; one still
// holding processes is left, with an error. The cgroups of the containers
// whose id keep reports (adopted ones; see Adopt) are spared; a nil keep
// spares none.
func (r *Runner) SweepCgroups(keep func(id string) bool) error {
	var errs []error
	for _, cg := range r.runtimeCgroups(keep) {
		if err := os.Remove(cg); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", cg, err))
		}
	}
	return errors.Join(errs...)
}

// RemoveCgroupParent removes the parent cgroup, on every hierarchy, at
// shutdown. It is best effort: a parent that is not empty stays.
func (r *Runner) RemoveCgroupParent() {
	for _, root := range r.hierarchies() {
		_ = os.Remove(filepath.Join(root, r.cfg.CgroupParent))
	}
}

// hierarchies lists the mounted cgroup hierarchies: the v2 one, or every v1
// one (and the unified one of a hybrid host).
func (r *Runner) hierarchies() []string {
	if r.cgroup2 {
		return []string{cgroupRoot}
	}
	var roots []string
	ents, _ := os.ReadDir(cgroupRoot)
	for _, e := range ents {
		if e.IsDir() {
			roots = append(roots, filepath.Join(cgroupRoot, e.Name()))
		}
	}
	return roots
}

// runtimeCgroups lists the runtime cgroups under the parent, on every v1
// hierarchy or on v2, less those of the containers whose id keep reports: a
// runtime's cgroup is named after its container (<parent>/<id>, see
// Runner.config). A nil keep leaves out none.
func (r *Runner) runtimeCgroups(keep func(id string) bool) []string {
	var out []string
	for _, root := range r.hierarchies() {
		parent := filepath.Join(root, r.cfg.CgroupParent)
		kids, err := os.ReadDir(parent)
		if err != nil {
			continue
		}
		for _, k := range kids {
			if k.IsDir() && strings.HasPrefix(k.Name(), IDPrefix) && (keep == nil || !keep(k.Name())) {
				out = append(out, filepath.Join(parent, k.Name()))
			}
		}
	}
	return out
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
