package container

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// forget starts a container with a second Runner on r's state directory and
// cgroup parent, as an earlier daemon did, and returns it: the test must not
// stop or destroy it, only watch it go. r's cleanup removes what survives a
// failed test.
func forget(t *testing.T, r *Runner, root, script string) (*Container, int) {
	t.Helper()
	earlier, err := New(r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := earlier.Start(NewID(), testSpec(root), shell(script))
	if err != nil {
		t.Fatal(err)
	}
	waitOutput(t, c, "up")
	pid, err := c.proc.Pid()
	if err != nil {
		t.Fatal(err)
	}
	return c, pid
}

// wantGone checks that the process is dead and reaped (its Container,
// whose goroutine reaps it, is done) and that the container's cgroups are
// gone.
func wantGone(t *testing.T, r *Runner, c *Container, pid int) {
	t.Helper()
	waitDone(t, c)
	if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
		t.Errorf("process %d: %v, want it gone", pid, err)
	}
	if left := cgroupDirs(filepath.Join(r.cfg.CgroupParent, c.ID())); len(left) > 0 {
		t.Errorf("cgroups left: %v", left)
	}
}

func TestRemoveLeftovers(t *testing.T) {
	root := busyboxRoot(t)
	r := newRunner(t, Config{})
	a, pidA := forget(t, r, root, "echo up; exec sleep 600")
	// A main process that ignores SIGTERM, with a child.
	b, pidB := forget(t, r, root, "trap '' TERM; sleep 600 & echo up; wait")
	broken := filepath.Join(r.cfg.StateDir, IDPrefix+"broken")
	if err := os.Mkdir(broken, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(broken, "state.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}

	removed, err := r.RemoveLeftovers(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if removed != 2 {
		t.Errorf("removed %d containers, want 2", removed)
	}
	if ents, _ := os.ReadDir(r.cfg.StateDir); len(ents) != 0 {
		t.Errorf("state left: %v", ents)
	}
	wantGone(t, r, a, pidA)
	wantGone(t, r, b, pidB)
	if cgs := r.runtimeCgroups(nil); len(cgs) != 0 {
		t.Errorf("runtime cgroups left: %v", cgs)
	}
	// Nothing left: nothing to do.
	if removed, err := r.RemoveLeftovers(t.Context(), nil); removed != 0 || err != nil {
		t.Errorf("second call: %d, %v", removed, err)
	}
}

func TestKillStraysAndSweepCgroups(t *testing.T) {
	root := busyboxRoot(t)
	r := newRunner(t, Config{})
	c, pid := forget(t, r, root, "sleep 600 & echo up; exec sleep 600")
	// The state is gone (removed by hand, or a crash while it was
	// written): only the cgroup knows the processes.
	if err := os.RemoveAll(filepath.Join(r.cfg.StateDir, c.ID())); err != nil {
		t.Fatal(err)
	}
	// A process in a cgroup under the parent that is not a runtime's is
	// not the sweep's.
	other := otherCgroup(t, r)

	killed, err := r.KillStrays(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if killed != 2 {
		t.Errorf("killed %d processes, want the main process and its child", killed)
	}
	waitDone(t, c)
	for _, cg := range r.runtimeCgroups(nil) {
		if pids := cgroupPIDs(cg); len(pids) > 0 {
			t.Errorf("cgroup %s still holds %v", cg, pids)
		}
	}
	if err := unix.Kill(other, 0); err != nil {
		t.Errorf("the process outside the runtimes' cgroups: %v", err)
	}
	if err := r.SweepCgroups(nil); err != nil {
		t.Fatal(err)
	}
	if cgs := r.runtimeCgroups(nil); len(cgs) != 0 {
		t.Errorf("runtime cgroups left: %v", cgs)
	}
	if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
		t.Errorf("main process %d: %v, want it gone", pid, err)
	}
	if killed, err := r.KillStrays(t.Context(), nil); killed != 0 || err != nil {
		t.Errorf("second call: %d, %v", killed, err)
	}
}

// otherCgroup starts a process in <parent>/other, on the pids hierarchy
// (v1) or the v2 one, and removes both at the end.
func otherCgroup(t *testing.T, r *Runner) int {
	t.Helper()
	dir := filepath.Join(cgroupRoot, r.cfg.CgroupParent, "other")
	if !r.Cgroup2() {
		dir = filepath.Join(cgroupRoot, "pids", r.cfg.CgroupParent, "other")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if err := os.Remove(dir); err != nil {
			t.Errorf("remove cgroup %s: %v", dir, err)
		}
	})
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

// RemoveCgroupParent removes an empty parent and leaves one that is not.
func TestRemoveCgroupParent(t *testing.T) {
	root := busyboxRoot(t)
	r := newRunner(t, Config{})
	c := start(t, r, NewID(), testSpec(root), shell("echo up; exec sleep 600"))
	waitOutput(t, c, "up")
	r.RemoveCgroupParent()
	if len(cgroupDirs(r.cfg.CgroupParent)) == 0 {
		t.Fatal("removed a parent that holds a runtime")
	}
	destroy(t, c)
	r.RemoveCgroupParent()
	if left := cgroupDirs(r.cfg.CgroupParent); len(left) > 0 {
		t.Fatalf("parent left: %v", left)
	}
}
