package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// errorRecorder is a testing.TB whose Error and Errorf are recorded instead
// of failing the test: a check's own verdict, read by a test of the check.
type errorRecorder struct {
	testing.TB
	errs []string
}

func (r *errorRecorder) Error(args ...any) { r.errs = append(r.errs, fmt.Sprint(args...)) }
func (r *errorRecorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// mountedCgroups lists the cgroup hierarchies mounted under /sys/fs/cgroup
// and, of them, the unified one (/sys/fs/cgroup on a pure cgroup v2 host,
// /sys/fs/cgroup/unified on a hybrid one). It is read here on its own, not
// with the harness's cgroupHierarchies: the checks are what is under test.
func mountedCgroups(t *testing.T) (all []string, v2 string) {
	t.Helper()
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f := strings.Fields(pre)
		if !ok || len(f) < 5 || !strings.HasPrefix(f[4], "/sys/fs/cgroup") {
			continue
		}
		switch {
		case strings.HasPrefix(post, "cgroup2 "):
			v2 = f[4]
		case !strings.HasPrefix(post, "cgroup "):
			continue
		}
		all = append(all, f[4])
	}
	return all, v2
}

// The leak checks (leftovers, which waitClean and the cleanup of every
// executor use; assertClean; snapshot) see a cgroup left below the cgroup
// parent on every hierarchy, the unified one above all: on a pure cgroup v2
// host it is the only one, and checks that looked at the v1 layout alone
// could not fail there.
func TestLeakChecksSeeEveryHierarchy(t *testing.T) {
	hs, v2 := mountedCgroups(t)
	if v2 == "" {
		t.Fatal("no cgroup2 hierarchy mounted: every host this suite runs on has one (hybrid or pure v2)")
	}
	// No daemon: the checks look at the host only, by the executor's names.
	self := exec.Command("true")
	self.Process, _ = os.FindProcess(os.Getpid())
	x := &executor{t: t, cmd: self, dataDir: t.TempDir(), network: fmt.Sprintf("e2e-lc-%d", os.Getpid()),
		cgParent: fmt.Sprintf("/executor-e2e-leakcheck-%d", os.Getpid())}
	// The unified hierarchy first: the one the old checks were blind to.
	order := append([]string{v2}, slices.DeleteFunc(slices.Clone(hs), func(h string) bool { return h == v2 })...)
	for _, h := range order {
		t.Run(strings.TrimPrefix(h, "/sys/fs/"), func(t *testing.T) {
			parent := filepath.Join(h, x.cgParent)
			// Neither a runtime's name nor at the top: any cgroup counts.
			leaks := []string{filepath.Join(parent, "leaked"), filepath.Join(parent, "rt-leak", "child")}
			t.Cleanup(func() {
				for _, d := range []string{leaks[1], filepath.Dir(leaks[1]), leaks[0], parent} {
					if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
						t.Errorf("remove %s: %v", d, err)
					}
				}
			})
			base := snapshot(t, x).cgroups
			for _, d := range leaks {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			left := strings.Join(x.leftovers(), "\n")
			for _, d := range leaks {
				if !strings.Contains(left, "cgroup: "+d) {
					t.Errorf("leftovers do not list %s:\n%s", d, left)
				}
			}
			if got := snapshot(t, x).cgroups; got != base+3 {
				t.Errorf("snapshot counts %d cgroups below the parent, want %d (%v)", got, base+3, leaks)
			}
			for _, d := range []string{leaks[1], filepath.Dir(leaks[1]), leaks[0]} {
				if err := os.Remove(d); err != nil {
					t.Fatal(err)
				}
			}
			if l := x.leftovers(); len(l) != 0 {
				t.Errorf("leftovers after the leak went: %v", l)
			}
			// The parent alone, after shutdown, is a leak too.
			rec := &errorRecorder{TB: t}
			x.t = rec
			x.assertClean()
			x.t = t
			if !slices.ContainsFunc(rec.errs, func(e string) bool { return strings.Contains(e, parent) }) {
				t.Errorf("assertClean did not report the cgroup parent %s left behind: %q", parent, rec.errs)
			}
		})
	}
}
