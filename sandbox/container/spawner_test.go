package container

import (
	"context"
	"errors"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"

	"executor/oci"
)

// buildSpawner builds cmd/executor-spawn for tests.
func buildSpawner(t testing.TB) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "executor-spawn")
	cmd := exec.Command("go", "build", "-tags", "seccomp", "-o", out, "../../cmd/executor-spawn")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build executor-spawn: %v\n%s", err, b)
	}
	return out
}

// forEachStarter runs test with a runner that starts containers itself and
// with one that starts them through executor-spawn.
func forEachStarter(t *testing.T, test func(t *testing.T, cfg Config)) {
	t.Run("in-process", func(t *testing.T) { test(t, Config{}) })
	t.Run("spawner", func(t *testing.T) { test(t, Config{Spawner: buildSpawner(t)}) })
}

// spawnerPID is the pid of r's current spawner process.
func spawnerPID(t testing.TB, r *Runner) int {
	t.Helper()
	if r.spawner == nil {
		t.Fatalf("no spawner: %v", r.SpawnerErr())
	}
	p, err := r.spawner.current()
	if err != nil {
		t.Fatal(err)
	}
	return p.cmd.Process.Pid
}

// parentPID is the parent of process pid.
func parentPID(t testing.TB, pid int) int {
	t.Helper()
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatal(err)
	}
	return ppid
}

// Through the spawner, a container's main process is the spawner's child,
// not the daemon's; everything else works as for one the daemon started:
// exec, signals, exit codes, restart, a parked start and its command.
func TestSpawnerStarts(t *testing.T) {
	root := busyboxRoot(t)
	spec := testSpec(root)
	spec.Binds = []oci.Bind{{Source: buildInit(t), Destination: oci.InitPath, ReadOnly: true}}
	r := newRunner(t, Config{Spawner: buildSpawner(t)})
	spid := spawnerPID(t, r)
	if comm, _ := os.ReadFile("/proc/" + strconv.Itoa(spid) + "/comm"); strings.TrimSpace(string(comm)) != "executor-spawn" {
		t.Errorf("spawner process is %q", comm)
	}

	// The spawner's socket reaches no container: it alone could ask
	// for containers of any configuration.
	fds := start(t, r, IDPrefix+"fds", spec, shell("ls -l /proc/$$/fd/"))
	waitDone(t, fds)
	if out := fds.Output(); strings.Contains(out, "socket:") || !strings.Contains(out, "0 ->") {
		t.Errorf("a container's descriptors: %q", out)
	}

	c := start(t, r, IDPrefix+"spawned", spec, shell("echo up; exec sleep 60"))
	waitOutput(t, c, "up")
	// Its cgroups come with the spawner's answer: the runner does not
	// load the container's state to start it.
	if c.c != nil {
		t.Error("the runner loaded a container the spawner started")
	}
	loaded, err := libcontainer.Load(r.cfg.StateDir, c.ID())
	if err != nil {
		t.Fatal(err)
	}
	if st, err := loaded.State(); err != nil || len(c.cgPaths) == 0 || !maps.Equal(c.cgPaths, st.CgroupPaths) {
		t.Errorf("cgroups %v, want the state's %v (%v)", c.cgPaths, st.CgroupPaths, err)
	}
	if got := parentPID(t, initPID(t, c)); got != spid {
		t.Errorf("main process's parent is %d, want the spawner %d", got, spid)
	}
	var out strings.Builder
	code, err := c.Exec(context.Background(), []string{"sh", "-c", "echo exec-ok; exit 4"}, &out, nil)
	if err != nil || code != 4 || out.String() != "exec-ok\n" {
		t.Errorf("exec: code %d, %v, output %q", code, err, out.String())
	}
	c.Stop(0)
	if e := c.Exit(); e.Code != 137 || e.Signal != "SIGKILL" || e.Err != nil {
		t.Errorf("exit after Stop %+v, want SIGKILL", e)
	}
	n, err := c.Restart()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { destroy(t, n) })
	waitOutput(t, n, "up")
	if got := parentPID(t, initPID(t, n)); got != spid {
		t.Errorf("restarted main process's parent is %d, want the spawner %d", got, spid)
	}
	n.Stop(0)

	// Parked, with executor-init reporting the exit code.
	p, err := r.StartParked(IDPrefix+"parked", spec, oci.InitPath, Process{Env: []string{oci.DefaultPATH}, Cwd: "/"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { destroy(t, p) })
	limited := spec
	limited.MemoryMB = 96
	cmd := Process{Args: oci.WithInit([]string{"sh", "-c", "echo parked-ran; exit 5"}), Env: []string{oci.DefaultPATH}, Cwd: "/", ReportsExit: true}
	if err := r.Unpark(p, limited, cmd); err != nil {
		t.Fatal(err)
	}
	// The request's limits are on the cgroups (set through a cgroup
	// manager of the container's paths, not libcontainer's Set).
	// Megabytes of 1,000,000 bytes (oci.Spec), in whole pages.
	if got, want := memoryLimit(t, p), int64(96_000_000)&^(int64(os.Getpagesize())-1); got != want {
		t.Errorf("memory limit after Unpark %d, want %d", got, want)
	}
	if p.c != nil {
		t.Error("an unparked container the spawner started holds a loaded libcontainer container")
	}
	waitDone(t, p)
	if e := p.Exit(); e.Code != 5 || e.Err != nil || !strings.Contains(p.Output(), "parked-ran") {
		t.Errorf("parked: exit %+v, output %q", e, p.Output())
	}
}

// A start the spawner cannot make fails with libcontainer's reason and
// leaves no state, cgroup or process; the spawner goes on.
func TestSpawnerStartFails(t *testing.T) {
	root := busyboxRoot(t)
	r := newRunner(t, Config{Spawner: buildSpawner(t)})
	spid := spawnerPID(t, r)
	id := IDPrefix + "fails"
	_, err := r.Start(id, testSpec(root), Process{Args: []string{"/no/such/command"}, Env: []string{oci.DefaultPATH}, Cwd: "/"})
	if err == nil || !strings.Contains(err.Error(), "/no/such/command") {
		t.Fatalf("start of a missing command: %v", err)
	}
	if ents, _ := os.ReadDir(r.cfg.StateDir); len(ents) != 0 {
		t.Errorf("state left: %v", ents)
	}
	if left := cgroupDirs(filepath.Join(r.cfg.CgroupParent, id)); len(left) > 0 {
		t.Errorf("cgroups left: %v", left)
	}
	c := start(t, r, id, testSpec(root), shell("echo after"))
	waitDone(t, c)
	if c.Output() != "after\n" || spawnerPID(t, r) != spid {
		t.Errorf("after a failed start: output %q, spawner %d (was %d)", c.Output(), spawnerPID(t, r), spid)
	}
}

// The spawner's death leaves its containers running, with their exit found
// as an adopted container's (executor-init's report); the next start starts
// a new spawner. Closing the runner ends the spawner and leaves containers
// running too.
func TestSpawnerDies(t *testing.T) {
	root := busyboxRoot(t)
	spec := testSpec(root)
	spec.Binds = []oci.Bind{{Source: buildInit(t), Destination: oci.InitPath, ReadOnly: true}}
	r := newRunner(t, Config{Spawner: buildSpawner(t)})
	first, err := r.spawner.current()
	if err != nil {
		t.Fatal(err)
	}
	c := start(t, r, IDPrefix+"orphan", spec, Process{Args: oci.WithInit([]string{"sleep", "60"}), Env: []string{oci.DefaultPATH}, Cwd: "/", ReportsExit: true})
	if err := first.cmd.Process.Signal(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-first.gone:
	case <-time.After(10 * time.Second):
		t.Fatal("the runner did not notice its spawner's death")
	}
	time.Sleep(100 * time.Millisecond)
	if c.Exited() {
		t.Fatalf("the container ended with its spawner: %+v", c.Exit())
	}

	n := start(t, r, IDPrefix+"next", spec, shell("echo next"))
	waitDone(t, n)
	if n.Output() != "next\n" || n.Exit().Code != 0 {
		t.Errorf("start after the spawner died: exit %+v, output %q", n.Exit(), n.Output())
	}
	if second := spawnerPID(t, r); second == first.cmd.Process.Pid {
		t.Errorf("no new spawner: %d", second)
	}

	// executor-init forwards SIGTERM to sleep and reports its death.
	c.Stop(10 * time.Second)
	if e := c.Exit(); e.Code != 128+int(unix.SIGTERM) || e.Err != nil {
		t.Errorf("exit of the dead spawner's container %+v, want code %d from executor-init's report", e, 128+int(unix.SIGTERM))
	}

	last := start(t, r, IDPrefix+"outlives", spec, shell("exec sleep 60"))
	proc, _ := r.spawner.current()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-proc.gone:
	case <-time.After(10 * time.Second):
		t.Fatal("the spawner did not exit when the runner closed")
	}
	time.Sleep(100 * time.Millisecond)
	if last.Exited() {
		t.Errorf("a container ended when the runner closed: %+v", last.Exit())
	}
	if _, err := r.Start(IDPrefix+"closed", spec, shell("true")); err == nil {
		t.Error("a closed runner started a container")
	}
}

// A spawner that does not greet the runner (it exits at once: not the
// executor's, or broken) or speaks another protocol (left from another
// build) is refused when the runner is made: containers start in this
// process, and SpawnerErr says why.
func TestSpawnerRefused(t *testing.T) {
	root := busyboxRoot(t)
	for _, tc := range []struct {
		name, script, want string
	}{
		{"exits at once", "exit 0", "no greeting"},
		{"another protocol", `printf '{"protocol":99,"tag":0}' >&3; exec sleep 60`, "speaks protocol 99"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := filepath.Join(t.TempDir(), "executor-spawn")
			if err := os.WriteFile(fake, []byte("#!/bin/sh\n"+tc.script+"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			r := newRunner(t, Config{Spawner: fake})
			if err := r.SpawnerErr(); err == nil || !strings.Contains(err.Error(), tc.want) || r.spawner != nil {
				t.Fatalf("SpawnerErr %v (spawner %v), want one saying %q", err, r.spawner, tc.want)
			}
			c := start(t, r, IDPrefix+"refused", testSpec(root), shell("echo in-process"))
			waitDone(t, c)
			if c.Output() != "in-process\n" || c.proc == nil {
				t.Errorf("output %q, started here %v", c.Output(), c.proc != nil)
			}
		})
	}
}

// memoryLimit is the memory limit on c's cgroup, in bytes.
func memoryLimit(t *testing.T, c *Container) int64 {
	t.Helper()
	name := "memory.limit_in_bytes"
	if c.cgPaths["memory"] == "" {
		name = "memory.max"
	}
	v := cgroupValue(t, c, "memory", name)
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatalf("%s %q: %v", name, v, err)
	}
	return n
}

// The spawner holds the runner's default seccomp profile: a start names it
// by its digest rather than carrying its rules, and the container, and a
// command exec'd into it later (from the state the spawner wrote), run
// under it. A spawner that greeted with another digest is sent the rules;
// a start naming a profile the spawner does not hold is refused.
func TestSpawnerHoldsTheSeccompProfile(t *testing.T) {
	root := busyboxRoot(t)
	r := newRunner(t, Config{Spawner: buildSpawner(t)})
	proc, err := r.spawner.current()
	if err != nil {
		t.Fatal(err)
	}
	if proc.seccomp == "" || proc.seccomp != r.seccomp.digest {
		t.Fatalf("the spawner greeted with profile %q, the runner's is %q", proc.seccomp, r.seccomp.digest)
	}
	cfg, err := r.config(IDPrefix+"profile", testSpec(root))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		greeted   string
		rules     *configs.Seccomp
		omitsRule bool
	}{
		{"its own profile", r.seccomp.digest, r.seccomp.rules, true},
		{"a spawner of another build", "another", r.seccomp.rules, false},
		{"a spawner without a profile", "", r.seccomp.rules, false},
		{"other rules", r.seccomp.digest, &configs.Seccomp{DefaultAction: configs.Allow}, false},
		{"unconfined", r.seccomp.digest, nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := *cfg
			in.Seccomp = c.rules
			p := &spawnerProc{seccomp: c.greeted}
			sent, digest := p.sendable(&in, r.seccomp)
			if in.Seccomp != c.rules {
				t.Fatal("sendable changed the configuration it was given")
			}
			if c.omitsRule {
				if sent.Seccomp != nil || digest != r.seccomp.digest || sent.Hostname != in.Hostname {
					t.Errorf("sent rules %v and digest %q, want none and %q", sent.Seccomp != nil, digest, r.seccomp.digest)
				}
			} else if sent != &in || digest != "" {
				t.Errorf("sent %p (given %p) and digest %q, want the configuration itself and no digest", sent, &in, digest)
			}
		})
	}

	c := start(t, r, IDPrefix+"profile", testSpec(root), shell("grep Seccomp: /proc/self/status; exec sleep 60"))
	waitOutput(t, c, "Seccomp:\t2\n")
	var out strings.Builder
	if code, err := c.Exec(context.Background(), []string{"grep", "Seccomp:", "/proc/self/status"}, &out, nil); err != nil || code != 0 || out.String() != "Seccomp:\t2\n" {
		t.Errorf("exec: code %d, %v, output %q", code, err, out.String())
	}
	c.Stop(0)

	sent, _ := proc.sendable(cfg, r.seccomp)
	id := IDPrefix + "unknown-profile"
	_, _, _, err = proc.start(&spawnRequest{StateDir: r.cfg.StateDir, ID: id, Config: sent, Seccomp: "not-the-spawners",
		Process: spawnProcess{Args: []string{"true"}, Env: []string{oci.DefaultPATH}, Cwd: "/"}}, nil)
	if err == nil || !strings.Contains(err.Error(), "seccomp profile") {
		t.Errorf("a start naming another profile: %v", err)
	}
	if _, err := os.Stat(filepath.Join(r.cfg.StateDir, id)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("state of the refused start: %v", err)
	}
}
