package container

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCgroupParentHealth: the parent MakeCgroupParent creates passes
// CheckCgroupParent; removing it from any one hierarchy fails the check with
// that hierarchy's path, and making it again repairs it. Runtimes still start
// under a parent made in advance (libcontainer fills a v1 cpuset parent's
// empty cpus and mems itself).
func TestCgroupParentHealth(t *testing.T) {
	r := newRunner(t, Config{})
	if err := r.CheckCgroupParent(); err == nil || !strings.Contains(err.Error(), "is missing") {
		t.Fatalf("check before the parent exists: %v", err)
	}
	if err := r.MakeCgroupParent(); err != nil {
		t.Fatal(err)
	}
	if err := r.MakeCgroupParent(); err != nil {
		t.Fatalf("making an existing parent again: %v", err)
	}
	if err := r.CheckCgroupParent(); err != nil {
		t.Fatalf("check after MakeCgroupParent: %v", err)
	}
	roots, err := r.cgroupMounts()
	if err != nil {
		t.Fatal(err)
	}
	if want := 1; r.Cgroup2() && len(roots) != want {
		t.Fatalf("cgroup v2 host: hierarchies %v, want only the unified one", roots)
	}
	for _, root := range roots {
		dir := filepath.Join(root, r.cfg.CgroupParent)
		t.Run(filepath.Base(root), func(t *testing.T) {
			if err := os.Remove(dir); err != nil {
				t.Fatal(err)
			}
			if err := r.CheckCgroupParent(); err == nil || !strings.Contains(err.Error(), dir+" is missing") {
				t.Fatalf("check with %s removed: %v", dir, err)
			}
			if err := r.MakeCgroupParent(); err != nil {
				t.Fatal(err)
			}
			if err := r.CheckCgroupParent(); err != nil {
				t.Fatalf("check after making it again: %v", err)
			}
		})
	}
	id := NewID()
	c := start(t, r, id, testSpec(busyboxRoot(t)), shell("echo up; exec sleep 600"))
	waitOutput(t, c, "up")
	if err := r.CheckCgroupParent(); err != nil {
		t.Fatalf("check with a runtime running: %v", err)
	}
	if !r.Cgroup2() {
		checkCpusetCloned(t, filepath.Join(cgroupRoot, "cpuset", r.cfg.CgroupParent), id)
	}
	destroy(t, c)
}

// checkCpusetCloned: on cgroup v1 the parent's cpuset hands its cpus and
// mems to each new runtime's cgroup (cloneCpusetChildren), so libcontainer
// has nothing to write there, and the runtime's are the parent's.
func checkCpusetCloned(t *testing.T, parent, id string) {
	t.Helper()
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	if got := read(filepath.Join(parent, "cgroup.clone_children")); got != "1" {
		t.Errorf("%s/cgroup.clone_children is %q, want 1", parent, got)
	}
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		want, got := read(filepath.Join(parent, f)), read(filepath.Join(parent, id, f))
		if want == "" || got != want {
			t.Errorf("runtime's %s %q, parent's %q: want the parent's, not empty", f, got, want)
		}
	}
}
