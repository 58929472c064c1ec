package sandbox

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/opencontainers/cgroups/devices"
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

// busyboxRoot makes a minimal root with the host's static busybox.
func busyboxRoot(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("container tests need root (CI runs as root)")
	}
	src, err := os.Open("/bin/busybox")
	if err != nil {
		t.Fatalf("busybox-static is needed (installed by .ci/run): %v", err)
	}
	defer src.Close()
	root := t.TempDir()
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
	for _, applet := range []string{"sh", "echo", "sleep", "cat", "tail"} {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", applet)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func testConfig(t testing.TB, root, id string) *oci.Spec {
	return &oci.Spec{
		Rootfs:     root,
		Hostname:   "bench",
		CgroupPath: fmt.Sprintf("/executor-test-%d/%s", os.Getpid(), id),
		CPUs:       0.5,
		MemoryMB:   64,
		PidsLimit:  64,
	}
}

func cleanupCgroupParent(t testing.TB) {
	t.Cleanup(func() {
		paths, _ := filepath.Glob(fmt.Sprintf("/sys/fs/cgroup/*/executor-test-%d", os.Getpid()))
		paths2, _ := filepath.Glob(fmt.Sprintf("/sys/fs/cgroup/executor-test-%d", os.Getpid()))
		for _, p := range append(paths, paths2...) {
			if err := os.Remove(p); err != nil {
				t.Errorf("cgroup parent %s: %v", p, err)
			}
		}
	})
}

func TestContainerLifecycle(t *testing.T) {
	root := busyboxRoot(t)
	cleanupCgroupParent(t)
	state := t.TempDir()
	spec := testConfig(t, root, "life")
	cfg, err := oci.Config(*spec)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := startContainer(state, "life", cfg, processSpec{
		Args: []string{"sh", "-c", "echo started; echo to-stderr >&2; exec sleep 60"},
		Env:  []string{oci.DefaultPATH},
		Cwd:  "/",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ct.stop(0); _ = ct.destroy() })
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(ct.out.String(), "to-stderr") && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if out := ct.out.String(); !strings.Contains(out, "started") || !strings.Contains(out, "to-stderr") {
		t.Fatalf("output %q", out)
	}
	if ct.exited() {
		t.Fatal("exited early")
	}
	ct.stop(200 * time.Millisecond) // sleep as PID 1 ignores SIGTERM: SIGKILL follows
	if !ct.exited() || ct.exit.signal != "SIGKILL" {
		t.Fatalf("exit %+v", ct.exit)
	}
	if err := ct.destroy(); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(state); len(ents) != 0 {
		t.Fatalf("state left: %v", ents)
	}
	if p, _ := filepath.Glob(fmt.Sprintf("/sys/fs/cgroup/*/executor-test-%d/life", os.Getpid())); len(p) > 0 {
		t.Fatalf("cgroups left: %v", p)
	}
}

// BenchmarkContainerStart is libcontainer alone: create, run `echo`, first
// output byte, exit, destroy. Cold start is judged against it, with the
// hardening runtimes get (seccomp, user namespace) measured separately.
func BenchmarkContainerStart(b *testing.B) {
	sc, err := oci.DefaultSeccomp()
	if err != nil {
		b.Fatal(err)
	}
	for _, v := range []struct {
		name    string
		seccomp bool
		userns  bool
	}{{"plain", false, false}, {"seccomp", true, false}, {"userns", false, true}, {"seccomp+userns", true, true}} {
		b.Run(v.name, func(b *testing.B) {
			root := busyboxRoot(b)
			if v.userns {
				chownTree(b, root, 1000000000)
			}
			cleanupCgroupParent(b)
			state := b.TempDir()
			var first, total []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				id := fmt.Sprintf("bench-%s-%d", strings.ReplaceAll(v.name, "+", "-"), i)
				spec := testConfig(b, root, id)
				if v.seccomp {
					spec.Seccomp = sc
				}
				if v.userns {
					spec.UserNS = &oci.IDMap{HostUID: 1000000000, HostGID: 1000000000, Size: 65536}
				}
				cfg, err := oci.Config(*spec)
				if err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				ct, err := startContainer(state, id, cfg, processSpec{Args: []string{"echo", "hi"}, Env: []string{oci.DefaultPATH}, Cwd: "/"})
				if err != nil {
					b.Fatal(err)
				}
				for ct.out.String() == "" && !ct.exited() {
					time.Sleep(100 * time.Microsecond)
				}
				first = append(first, time.Since(start))
				<-ct.done
				if err := ct.destroy(); err != nil {
					b.Fatal(err)
				}
				total = append(total, time.Since(start))
			}
			b.StopTimer()
			b.ReportMetric(float64(median(first).Microseconds())/1000, "first-byte-p50-ms")
			b.ReportMetric(float64(median(total).Microseconds())/1000, "start-to-destroyed-p50-ms")
		})
	}
}

func chownTree(t testing.TB, root string, id int) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, id, id)
	})
	if err != nil {
		t.Fatal(err)
	}
	// The test's temp dirs above root must be traversable by the mapped root.
	for d := filepath.Dir(root); d != "/" && d != "."; d = filepath.Dir(d) {
		if st, err := os.Stat(d); err == nil && st.Mode().Perm()&0o001 == 0 {
			_ = os.Chmod(d, st.Mode().Perm()|0o001)
		}
	}
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2]
}

// buildInit builds cmd/executor-init for tests.
func buildInit(t testing.TB) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "executor-init")
	cmd := exec.Command("go", "build", "-o", out, "../cmd/executor-init")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build executor-init: %v\n%s", err, b)
	}
	return out
}

// With executor-init as PID 1, SIGTERM reaches a command that does not
// handle it (sleep), and orphans are reaped instead of piling up as zombies.
func TestInitForwardsSignalsAndReaps(t *testing.T) {
	root := busyboxRoot(t)
	for _, applet := range []string{"ps", "grep", "wc"} {
		_ = os.Symlink("busybox", filepath.Join(root, "bin", applet))
	}
	cleanupCgroupParent(t)
	spec := testConfig(t, root, "init")
	spec.Binds = []oci.Bind{{Source: buildInit(t), Destination: oci.InitPath, ReadOnly: true}}
	cfg, err := oci.Config(*spec)
	if err != nil {
		t.Fatal(err)
	}
	// Orphans: each subshell exits at once, leaving its sleep to PID 1.
	script := `for i in 1 2 3 4 5; do (sleep 0.1 &); done; sleep 1; echo zombies=$(ps -o stat | grep -c '^Z'); exec sleep 60`
	ct, err := startContainer(t.TempDir(), "init", cfg, processSpec{Args: oci.WithInit([]string{"sh", "-c", script}), Env: []string{oci.DefaultPATH}, Cwd: "/"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ct.stop(0); _ = ct.destroy() })
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(ct.out.String(), "zombies=") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(ct.out.String(), "zombies=0") {
		t.Fatalf("output %q: orphans were not reaped", ct.out.String())
	}
	start := time.Now()
	ct.stop(5 * time.Second)
	if d := time.Since(start); d > 2*time.Second || ct.exit.signal == "SIGKILL" {
		t.Fatalf("SIGTERM did not stop the runtime (took %v, exit %+v)", d, ct.exit)
	}
	if ct.exit.code != 128+15 {
		t.Errorf("exit %+v, want the command's SIGTERM status 143", ct.exit)
	}
}
