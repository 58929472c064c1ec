package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"executor/oci"
	"executor/tests/cmd/benchtable/samples"
	"executor/tests/testenv"
)

func TestExitStatusString(t *testing.T) {
	tests := []struct {
		e    ExitStatus
		want string
	}{
		{ExitStatus{Code: 0}, "exit code 0"},
		{ExitStatus{Code: 3}, "exit code 3"},
		{ExitStatus{Code: 137, Signal: "SIGKILL"}, "killed by SIGKILL"},
		{ExitStatus{Code: 137, Signal: "SIGKILL", OOMKilled: true}, "killed: out of memory (exit code 137)"},
		{ExitStatus{Code: -1, Err: errors.New("wait: no child")}, "wait: no child"},
	}
	for _, tc := range tests {
		if got := tc.e.String(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.e, got, tc.want)
		}
	}
}

func TestTailBuffer(t *testing.T) {
	tests := []struct {
		name   string
		max    int
		writes []string
		want   string
	}{
		{"under the limit", 8, []string{"abc", "def"}, "abcdef"},
		{"at the limit", 6, []string{"abc", "def"}, "abcdef"},
		{"over in the last write", 4, []string{"abc", "def"}, "cdef"},
		{"one write larger than the limit", 3, []string{"abcdefgh"}, "fgh"},
		{"nothing", 3, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newTailBuffer(tc.max)
			for _, w := range tc.writes {
				if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write(%q) = %d, %v", w, n, err)
				}
			}
			if got := b.String(); got != tc.want {
				t.Errorf("%q, want %q", got, tc.want)
			}
		})
	}
}

func TestNewID(t *testing.T) {
	a, b := NewID(), NewID()
	for _, id := range []string{a, b} {
		hex := strings.TrimPrefix(id, IDPrefix)
		if hex == id || len(hex) != 48 || strings.Trim(hex, "0123456789abcdef") != "" {
			t.Errorf("id %q: want %q and 48 hex characters", id, IDPrefix)
		}
	}
	if a == b {
		t.Errorf("two ids alike: %q", a)
	}
}

func TestNewRefuses(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no state dir", Config{CgroupParent: "/executor"}},
		{"relative state dir", Config{StateDir: "containers", CgroupParent: "/executor"}},
		{"no cgroup parent", Config{StateDir: dir}},
		{"relative cgroup parent", Config{StateDir: dir, CgroupParent: "executor"}},
		{"root cgroup", Config{StateDir: dir, CgroupParent: "/"}},
		{"root cgroup, unclean", Config{StateDir: dir, CgroupParent: "/executor/.."}},
	}
	for _, tc := range tests {
		if _, err := New(tc.cfg); err == nil {
			t.Errorf("%s: New(%+v) succeeded", tc.name, tc.cfg)
		}
	}
}

// Start refuses before it touches anything: no root needed.
func TestStartRefuses(t *testing.T) {
	r, err := New(Config{StateDir: t.TempDir(), CgroupParent: "/executor-test-refuses", Unconfined: true})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		id   string
		cg   string
	}{
		{"id without the prefix", "runtime-1", ""},
		{"cgroup outside the parent", "rt-1", "/elsewhere/rt-1"},
		{"cgroup of another id", "rt-1", "/executor-test-refuses/rt-2"},
	}
	for _, tc := range tests {
		spec := testSpec("/nonexistent")
		spec.CgroupPath = tc.cg
		if c, err := r.Start(tc.id, spec, shell("true")); err == nil {
			destroy(t, c)
			t.Errorf("%s: started", tc.name)
		}
	}
	if ents, _ := os.ReadDir(r.cfg.StateDir); len(ents) != 0 {
		t.Errorf("state made: %v", ents)
	}
}

func TestContainerLifecycle(t *testing.T) {
	forEachStarter(t, testContainerLifecycle)
}

func testContainerLifecycle(t *testing.T, cfg Config) {
	root := busyboxRoot(t)
	r := newRunner(t, cfg)
	id := IDPrefix + "life"
	c := start(t, r, id, testSpec(root), shell("echo started; echo to-stderr >&2; exec sleep 60"))
	if c.ID() != id {
		t.Errorf("ID %q, want %q", c.ID(), id)
	}
	waitOutput(t, c, "to-stderr")
	if out := c.Output(); !strings.Contains(out, "started") {
		t.Fatalf("output %q", out)
	}
	if c.Exited() {
		t.Fatal("exited early")
	}
	if e := c.Exit(); e != (ExitStatus{}) {
		t.Errorf("exit status before the exit: %+v", e)
	}
	if ns, err := c.CPUUsage(); err != nil || ns == 0 {
		t.Errorf("CPU time %d ns, %v: want some", ns, err)
	}
	cgs := cgroupDirs(filepath.Join(r.cfg.CgroupParent, id))
	if len(cgs) == 0 {
		t.Fatal("no cgroup for the container")
	}
	c.Stop(200 * time.Millisecond) // sleep as PID 1 ignores SIGTERM: SIGKILL follows
	if !c.Exited() || c.Exit().Signal != "SIGKILL" || c.Exit().Code != 137 {
		t.Fatalf("exit %+v", c.Exit())
	}
	if c.Exit().OOMKilled {
		t.Errorf("a SIGKILL from Stop judged an OOM death: %+v", c.Exit())
	}
	if err := c.Destroy(); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(r.cfg.StateDir); len(ents) != 0 {
		t.Fatalf("state left: %v", ents)
	}
	if left := cgroupDirs(filepath.Join(r.cfg.CgroupParent, id)); len(left) > 0 {
		t.Fatalf("cgroups left: %v", left)
	}
	if err := c.Destroy(); err != nil {
		t.Errorf("second destroy: %v", err)
	}
}

// The tail keeps the end of the output, and the exit status is the main
// process's own.
func TestOutputTailAndExitCode(t *testing.T) {
	forEachStarter(t, testOutputTailAndExitCode)
}

func testOutputTailAndExitCode(t *testing.T, cfg Config) {
	root := busyboxRoot(t)
	r := newRunner(t, cfg)
	// 20,000 lines: about twice what the tail holds.
	c := start(t, r, IDPrefix+"tail", testSpec(root), shell(`i=0; while [ $i -lt 20000 ]; do echo "l$i"; i=$((i+1)); done; echo last >&2; exit 7`))
	waitDone(t, c)
	if e := c.Exit(); e.Code != 7 || e.Signal != "" || e.Err != nil || e.OOMKilled {
		t.Errorf("exit %+v, want code 7", e)
	}
	out := c.Output()
	if len(out) != outputTail {
		t.Errorf("output of %d bytes, want the last %d", len(out), outputTail)
	}
	if !strings.HasSuffix(out, "\nl19999\nlast\n") {
		t.Errorf("output ends %q", out[max(0, len(out)-40):])
	}
}

func TestRestart(t *testing.T) {
	root := busyboxRoot(t)
	r := newRunner(t, Config{})
	id := IDPrefix + "restart"
	c := start(t, r, id, testSpec(root), shell("echo run $$; exec sleep 60"))
	waitOutput(t, c, "run")
	if _, err := c.Restart(); err == nil {
		t.Fatal("restarted a running container")
	}
	oldPID, err := c.proc.Pid()
	if err != nil {
		t.Fatal(err)
	}
	c.Stop(0)
	c2, err := c.Restart()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { destroy(t, c2) })
	waitOutput(t, c2, "run 1")
	if c2.Exited() {
		t.Fatalf("the new main process exited: %v", c2.Exit())
	}
	// The old Container still answers about the old main process.
	if !c.Exited() || c.Exit().Signal != "SIGKILL" || c.Output() != "run 1\n" {
		t.Errorf("old container: exit %+v, output %q", c.Exit(), c.Output())
	}
	// One state, the new container's: the old one's is gone.
	if ents, _ := os.ReadDir(r.cfg.StateDir); len(ents) != 1 || ents[0].Name() != id {
		t.Fatalf("state %v, want only %s", ents, id)
	}
	st, err := c2.c.State()
	if err != nil {
		t.Fatal(err)
	}
	newPID, _ := c2.proc.Pid()
	if st.InitProcessPid != newPID || newPID == oldPID {
		t.Errorf("state of init %d; old main process %d, new %d", st.InitProcessPid, oldPID, newPID)
	}
	// The new container has the same configuration: the same cgroup.
	got := c2.cgPaths["pids"]
	if got == "" {
		got = c2.cgPaths[""]
	}
	if !strings.HasSuffix(got, r.cfg.CgroupParent+"/"+id) {
		t.Errorf("cgroup %q", got)
	}
	if _, err := c2.Exec(t.Context(), []string{"echo", "ok"}, nil, nil); err != nil {
		t.Errorf("exec in the new container: %v", err)
	}
}

// BenchmarkContainerStart is libcontainer alone: create, run `echo`, first
// output byte, exit, destroy. Cold start is judged against it, with the
// hardening runtimes get (seccomp, user namespace) measured separately.
func BenchmarkContainerStart(b *testing.B) {
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
			r := newRunner(b, Config{Unconfined: !v.seccomp})
			var first, total []time.Duration
			for i := 0; b.Loop(); i++ {
				id := fmt.Sprintf("%sbench-%d", IDPrefix, i)
				spec := testSpec(root)
				if v.userns {
					spec.UserNS = &oci.IDMap{HostUID: 1000000000, HostGID: 1000000000, Size: 65536}
				}
				f, t := timeStart(b, r, id, spec)
				first = append(first, f)
				total = append(total, t)
			}
			samples.Report(b, "first-byte", first)
			samples.Report(b, "start-to-destroyed", total)
		})
	}
}

// timeStart starts container id running "echo hi" and says how long its
// first output byte took and how long until it was destroyed.
func timeStart(b *testing.B, r *Runner, id string, spec oci.Spec) (first, total time.Duration) {
	b.Helper()
	start := time.Now()
	c, err := r.Start(id, spec, Process{Args: []string{"echo", "hi"}, Env: []string{oci.DefaultPATH}, Cwd: "/"})
	if err != nil {
		b.Fatal(err)
	}
	for c.Output() == "" && !c.Exited() {
		time.Sleep(100 * time.Microsecond)
	}
	first = time.Since(start)
	<-c.Done()
	if err := c.Destroy(); err != nil {
		b.Fatal(err)
	}
	if c.Output() != "hi\n" {
		b.Fatalf("output %q", c.Output())
	}
	return first, time.Since(start)
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

// buildInit builds cmd/executor-init for tests.
func buildInit(t testing.TB) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "executor-init")
	if err := testenv.BuildInit(context.Background(), out); err != nil {
		t.Fatal(err)
	}
	return out
}

// With executor-init as PID 1, SIGTERM reaches a command that does not
// handle it (sleep), and orphans are reaped instead of piling up as zombies.
func TestInitForwardsSignalsAndReaps(t *testing.T) {
	root := busyboxRoot(t)
	r := newRunner(t, Config{})
	spec := testSpec(root)
	spec.Binds = []oci.Bind{{Source: buildInit(t), Destination: oci.InitPath, ReadOnly: true}}
	// Orphans: each subshell exits at once, leaving its sleep to PID 1.
	script := `for i in 1 2 3 4 5; do (sleep 0.1 &); done; sleep 1; echo zombies=$(ps -o stat | grep -c '^Z'); exec sleep 60`
	c := start(t, r, IDPrefix+"init", spec, Process{Args: oci.WithInit([]string{"sh", "-c", script}), Env: []string{oci.DefaultPATH}, Cwd: "/"})
	waitOutput(t, c, "zombies=")
	if !strings.Contains(c.Output(), "zombies=0") {
		t.Fatalf("output %q: orphans were not reaped", c.Output())
	}
	start := time.Now()
	c.Stop(5 * time.Second)
	if d := time.Since(start); d > 2*time.Second || c.Exit().Signal == "SIGKILL" {
		t.Fatalf("SIGTERM did not stop the runtime (took %v, exit %+v)", d, c.Exit())
	}
	if c.Exit().Code != 128+15 {
		t.Errorf("exit %+v, want the command's SIGTERM status 143", c.Exit())
	}
}
