package container

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	_ "github.com/opencontainers/runc/libcontainer/nsenter"

	"executor/oci"
)

func init() {
	// The test binary is re-executed as a container's init, as bin/executor is.
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libcontainer.Init()
	}
}

// requireRoot fails the test: CI runs as root, and a container test that
// skipped would hide that the runner was never exercised.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("container tests need root (CI runs as root)")
	}
}

// busyboxRoot makes a minimal root with the host's static busybox.
func busyboxRoot(t testing.TB) string {
	t.Helper()
	requireRoot(t)
	src, err := os.Open("/bin/busybox")
	if err != nil {
		t.Fatalf("busybox-static is needed (installed by .ci/run): %v", err)
	}
	defer src.Close()
	root := t.TempDir()
	// The root becomes the container's "/": a main process that is not
	// root must be able to walk it.
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"bin", "proc", "sys", "dev", "tmp", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dst, err := os.OpenFile(filepath.Join(root, "bin", "busybox"), os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	dst.Close()
	for _, applet := range []string{"sh", "echo", "sleep", "cat", "tail", "id", "ps", "grep", "wc"} {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", applet)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// testParent is a cgroup parent of the test's own, so a failed test's
// leftovers cannot meet another test's.
func testParent(t testing.TB) string {
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' {
			return r
		}
		return '-'
	}, t.Name())
	return fmt.Sprintf("/executor-test-%d-%s", os.Getpid(), name)
}

// newRunner makes a Runner with a state directory and cgroup parent of the
// test's own. At the end it removes what the test left (containers,
// processes, cgroups) and fails the test when the parent cgroup cannot go.
// Cleanups run last in, first out: containers started after newRunner are
// stopped and destroyed before this runs.
func newRunner(t testing.TB, cfg Config) *Runner {
	t.Helper()
	requireRoot(t)
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	if cfg.CgroupParent == "" {
		cfg.CgroupParent = testParent(t)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := r.RemoveLeftovers(ctx, nil); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if _, err := r.KillStrays(ctx, nil); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if err := r.SweepCgroups(nil); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		r.RemoveCgroupParent()
		if err := r.Close(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if left := cgroupDirs(r.cfg.CgroupParent); len(left) > 0 {
			t.Errorf("cgroup parent left: %v", left)
		}
	})
	return r
}

// cgroupDirs lists cg on every hierarchy it exists on.
func cgroupDirs(cg string) []string {
	v1, _ := filepath.Glob(filepath.Join(cgroupRoot, "*", cg))
	if _, err := os.Stat(filepath.Join(cgroupRoot, cg)); err == nil {
		v1 = append(v1, filepath.Join(cgroupRoot, cg))
	}
	var dirs []string
	for _, d := range v1 {
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// testSpec is a small runtime's container: half a CPU, 64 MB, 64 pids.
func testSpec(root string) oci.Spec {
	return oci.Spec{
		Rootfs:    root,
		Hostname:  "test",
		CPUs:      0.5,
		MemoryMB:  64,
		PidsLimit: 64,
	}
}

// shell is a main process running script as root in /.
func shell(script string) Process {
	return Process{Args: []string{"sh", "-c", script}, Env: []string{oci.DefaultPATH}, Cwd: "/"}
}

// start starts a container that the test's end stops and destroys.
func start(t testing.TB, r *Runner, id string, spec oci.Spec, p Process) *Container {
	t.Helper()
	c, err := r.Start(id, spec, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { destroy(t, c) })
	return c
}

func destroy(t testing.TB, c *Container) {
	t.Helper()
	c.Stop(0)
	if err := c.Destroy(); err != nil {
		t.Errorf("destroy %s: %v", c.ID(), err)
	}
}

// waitOutput waits up to 10 s for the main process to have written want.
func waitOutput(t testing.TB, c *Container, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(c.Output(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("output %q: no %q after 10 s (exit %v)", c.Output(), want, c.Exit())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitDone waits up to 20 s for the main process to end.
func waitDone(t testing.TB, c *Container) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(20 * time.Second):
		t.Fatalf("the main process of %s did not end (output %q)", c.ID(), c.Output())
	}
}
