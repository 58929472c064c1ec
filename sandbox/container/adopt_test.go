package container

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"

	"executor/oci"
)

// restarted is a second Runner on r's state directory and cgroup parent:
// the daemon after a live restore. r's cleanup removes what the test leaves.
func restarted(t *testing.T, r *Runner) *Runner {
	t.Helper()
	r2, err := New(r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r2
}

// adopt adopts container id through r2 and fails the test when it cannot.
// The test's end stops and destroys it.
func adopt(t *testing.T, r2 *Runner, id string, main Process) *Container {
	t.Helper()
	c, err := r2.Adopt(id, main, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { destroy(t, c) })
	return c
}

// initPID is the pid of the container's init as libcontainer recorded it.
func initPID(t *testing.T, c *Container) int {
	t.Helper()
	lc, err := c.lc()
	if err != nil {
		t.Fatal(err)
	}
	st, err := lc.State()
	if err != nil {
		t.Fatal(err)
	}
	return st.InitProcessPid
}

// wantDestroyed checks that container id has neither state nor cgroups left.
func wantDestroyed(t *testing.T, r *Runner, id string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(r.cfg.StateDir, id)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("state of %s: %v, want it gone", id, err)
	}
	if left := cgroupDirs(filepath.Join(r.cfg.CgroupParent, id)); len(left) > 0 {
		t.Errorf("cgroups of %s left: %v", id, left)
	}
}

// An adopted container works as a started one: commands run in it as the
// recorded main process's user, with its environment and directory; its
// counters read; Stop asks with SIGTERM first; Done closes when the main
// process ends, with the exit code unknown; Destroy removes state and
// cgroups. The original Container, standing for the daemon that is gone,
// still sees its child end as it ended.
func TestAdopt(t *testing.T) {
	root := busyboxRoot(t)
	r := newRunner(t, Config{})
	id := NewID()
	main := Process{
		Args: []string{"sh", "-c", `trap "exit 0" TERM; echo ready; sleep 3600 & wait`},
		Env:  []string{oci.DefaultPATH, "GREETING=hello"},
		Cwd:  "/tmp",
		UID:  1000,
		GID:  1000,
	}
	orig := start(t, r, id, testSpec(root), main)
	waitOutput(t, orig, "ready")
	pid := initPID(t, orig)

	c := adopt(t, restarted(t, r), id, main)
	if c.ID() != id {
		t.Errorf("id %q, want %q", c.ID(), id)
	}
	if c.Exited() {
		t.Fatalf("adopted container exited at once: %v", c.Exit())
	}
	if (c.Exit() != ExitStatus{}) {
		t.Errorf("exit %+v before the end", c.Exit())
	}
	if out := c.Output(); out != "" {
		t.Errorf("output %q, want none (what came before went to the earlier daemon)", out)
	}
	if c.proc != nil || c.pidfd == nil {
		t.Fatalf("adopted container: proc %v, pidfd %v", c.proc, c.pidfd)
	}
	if got := initPID(t, c); got != pid {
		t.Errorf("init %d, want %d", got, pid)
	}

	var stdout, stderr bytes.Buffer
	code, err := c.Exec(t.Context(), []string{"sh", "-c", `echo "$GREETING $(pwd) $(id -u):$(id -g)"; echo oops >&2; exit 3`}, &stdout, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if code != 3 || stdout.String() != "hello /tmp 1000:1000\n" || stderr.String() != "oops\n" {
		t.Errorf("exec: code %d, stdout %q, stderr %q; want 3, %q, %q", code, stdout.String(), stderr.String(), "hello /tmp 1000:1000\n", "oops\n")
	}

	cpu, err := c.CPUUsage()
	if err != nil || cpu == 0 {
		t.Errorf("CPU usage %d, %v", cpu, err)
	}
	if ctr, err := c.Counters(); err != nil || !ctr.HasMemory || ctr.Memory == 0 || ctr.MemoryLimit != 64_000_000 || !ctr.HasPIDs || ctr.PIDs == 0 {
		t.Errorf("counters %+v, %v", ctr, err)
	}
	if c.OOMKillsPending() {
		t.Error("OOM kills pending in a container that had none")
	}
	c.MarkOOM().Survived()

	// The main process exits 0 on SIGTERM: a Stop that went straight to
	// SIGKILL, or that waited out the grace, shows.
	begin := time.Now()
	c.Stop(30 * time.Second)
	if took := time.Since(begin); took > 20*time.Second {
		t.Errorf("Stop took %v: SIGTERM did not end the main process", took)
	}
	waitDone(t, c)
	e := c.Exit()
	if e.Code != -1 || !errors.Is(e.Err, ErrExitUnknown) || e.Signal != "" || e.OOMKilled {
		t.Errorf("exit %+v, want code -1 and ErrExitUnknown", e)
	}
	if !strings.Contains(e.String(), "exit code unknown") {
		t.Errorf("exit reads %q", e.String())
	}
	waitDone(t, orig)
	if oe := orig.Exit(); oe.Code != 0 || oe.Signal != "" {
		t.Errorf("the main process ended %+v (%s), want exit code 0 from its SIGTERM trap", oe, oe)
	}
	if err := c.signalMain(unix.SIGTERM); err == nil {
		t.Error("signalled a main process that has exited")
	}
	if _, err := c.Exec(t.Context(), []string{"true"}, nil, nil); !errors.Is(err, ErrNotRunning) {
		t.Errorf("exec after the end: %v, want ErrNotRunning", err)
	}

	if err := c.Destroy(); err != nil {
		t.Fatal(err)
	}
	wantDestroyed(t, r, id)
	if err := c.Destroy(); err != nil {
		t.Errorf("second destroy: %v", err)
	}
}

// Only a running container is adopted. What cannot be is refused with
// ErrNotAdoptable, for the caller to remove; a missing one is also
// fs.ErrNotExist.
func TestAdoptRefuses(t *testing.T) {
	root := busyboxRoot(t)
	r := newRunner(t, Config{})
	r2 := restarted(t, r)
	main := shell("echo up; exec sleep 600")

	t.Run("unknown id", func(t *testing.T) {
		_, err := r2.Adopt(NewID(), main, "")
		if !errors.Is(err, ErrNotAdoptable) || !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("got %v, want ErrNotAdoptable and fs.ErrNotExist", err)
		}
	})
	t.Run("not a runtime's id", func(t *testing.T) {
		if _, err := r2.Adopt("other", main, ""); err == nil || errors.Is(err, ErrNotAdoptable) {
			t.Errorf("got %v, want a refusal of the id", err)
		}
	})
	t.Run("broken state", func(t *testing.T) {
		id := NewID()
		dir := filepath.Join(r.cfg.StateDir, id)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte("{not json"), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		_, err := r2.Adopt(id, main, "")
		if !errors.Is(err, ErrNotAdoptable) || errors.Is(err, fs.ErrNotExist) {
			t.Errorf("got %v, want ErrNotAdoptable alone", err)
		}
	})
	t.Run("main process exited", func(t *testing.T) {
		id := NewID()
		c := start(t, r, id, testSpec(root), main)
		waitOutput(t, c, "up")
		c.Stop(0)
		waitDone(t, c)
		// Reaped by the original Container: libcontainer finds no init.
		lc, err := libcontainer.Load(r.cfg.StateDir, id)
		if err != nil {
			t.Fatal(err)
		}
		if st, err := lc.Status(); err != nil || st != libcontainer.Stopped {
			t.Fatalf("status %v, %v; want stopped", st, err)
		}
		_, err = r2.Adopt(id, main, "")
		if !errors.Is(err, ErrNotAdoptable) || errors.Is(err, fs.ErrNotExist) {
			t.Errorf("got %v, want ErrNotAdoptable alone", err)
		}
	})
	t.Run("paused", func(t *testing.T) {
		id := NewID()
		c := start(t, r, id, testSpec(root), main)
		waitOutput(t, c, "up")
		if err := c.c.Pause(); err != nil {
			t.Fatal(err)
		}
		_, err := r2.Adopt(id, main, "")
		if rerr := c.c.Resume(); rerr != nil {
			t.Error(rerr)
		}
		if !errors.Is(err, ErrNotAdoptable) {
			t.Errorf("got %v, want ErrNotAdoptable", err)
		}
		if c.Exited() {
			t.Errorf("a refused adoption ended the container: %v", c.Exit())
		}
	})
}

// The pid recorded in a container's state may name another process by the
// time it is opened: the start time tells.
func TestOpenInitPidfdChecksStartTime(t *testing.T) {
	self := os.Getpid()
	start, err := procStartTime(self)
	if err != nil {
		t.Fatal(err)
	}
	f, err := openInitPidfd(self, start)
	if err != nil {
		t.Fatalf("own pid and start time: %v", err)
	}
	f.Close()
	if f, err := openInitPidfd(self, start+1); err == nil {
		f.Close()
		t.Error("opened a pid whose start time differs from the recorded one")
	}
	if f, err := openInitPidfd(-1, 0); err == nil {
		f.Close()
		t.Error("opened pid -1")
	}
}

// A pidfd of a process that is not this one's child turns readable when it
// exits, while waitid on it is refused (ECHILD): that is why an adopted
// container waits by readability.
func TestPidfdOfNonChild(t *testing.T) {
	// The sleep is the shell's child, not ours; the shell reaps it.
	cmd := exec.Command("sh", "-c", "sleep 60 & echo $!; wait")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	// The shell waits for the sleep, so its pid is not reused before the
	// kill below.
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	if err := exitedNow(fd); !errors.Is(err, unix.ECHILD) {
		t.Errorf("waitid on a pidfd of a non-child: %v, want ECHILD", err)
	}
	if exited, err := pidfdReadable(fd); exited || err != nil {
		t.Fatalf("readable before the exit: %v, %v", exited, err)
	}
	waited := make(chan error, 1)
	go func() { waited <- awaitReadable(f) }()
	select {
	case err := <-waited:
		t.Fatalf("wait ended before the exit: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waited:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no readability 10 s after the kill")
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("shell: %v", err)
	}
	if exited, err := pidfdReadable(fd); !exited || err != nil {
		t.Errorf("reaped process: readable %v, %v", exited, err)
	}
}

// Restart of an adopted container whose main process ended runs the
// recorded main process again, with the same id: the new one is this
// daemon's child, so its output is captured and its exit code known. The
// record went through JSON, as a caller keeps it across a restart.
func TestAdoptRestart(t *testing.T) {
	root := busyboxRoot(t)
	r := newRunner(t, Config{})
	id := NewID()
	main := Process{
		Args:   []string{"sh", "-c", `echo "run $GREETING $(pwd) $(id -u):$(id -G)"; exec sleep 600`},
		Env:    []string{oci.DefaultPATH, "GREETING=again"},
		Cwd:    "/tmp",
		UID:    1000,
		GID:    1000,
		Groups: []int{1001},
	}
	orig := start(t, r, id, testSpec(root), main)
	const want = "run again /tmp 1000:1000 1001\n"
	waitOutput(t, orig, want)

	raw, err := json.Marshal(main)
	if err != nil {
		t.Fatal(err)
	}
	var recorded Process
	if err := json.Unmarshal(raw, &recorded); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(recorded, main) {
		t.Fatalf("recorded %+v (%s), want %+v", recorded, raw, main)
	}
	c := adopt(t, restarted(t, r), id, recorded)
	if _, err := c.Restart(); err == nil {
		t.Fatal("restarted a running container")
	}
	c.Stop(0)
	waitDone(t, c)
	if e := c.Exit(); e.Code != -1 || !errors.Is(e.Err, ErrExitUnknown) || e.OOMKilled {
		t.Errorf("exit %+v", e)
	}

	c2, err := c.Restart()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { destroy(t, c2) })
	waitOutput(t, c2, want)
	if c2.ID() != id || c2.proc == nil || c2.pidfd != nil {
		t.Fatalf("restarted: id %q, proc %v, pidfd %v", c2.ID(), c2.proc, c2.pidfd)
	}
	newPID, err := c2.proc.Pid()
	if err != nil {
		t.Fatal(err)
	}
	if got := initPID(t, c2); got != newPID {
		t.Errorf("state of init %d, new main process %d", got, newPID)
	}
	if ents, _ := os.ReadDir(r.cfg.StateDir); len(ents) != 1 || ents[0].Name() != id {
		t.Errorf("state %v, want only %s", ents, id)
	}
	var out bytes.Buffer
	if code, err := c2.Exec(t.Context(), []string{"sh", "-c", "echo $GREETING; exit 5"}, &out, nil); code != 5 || err != nil || out.String() != "again\n" {
		t.Errorf("exec in the restarted container: %d, %v, %q", code, err, out.String())
	}
	// This daemon's child: the code is known again.
	c2.Stop(0)
	waitDone(t, c2)
	if e := c2.Exit(); e.Code != 137 || e.Signal != "SIGKILL" || e.Err != nil {
		t.Errorf("restarted container's exit %+v", e)
	}
}

// An adopted container whose main process the OOM killer ends reports it,
// though its exit code is unknown: the cgroup's counter rose.
func TestAdoptOOMKilled(t *testing.T) {
	root := busyboxRoot(t)
	r := newRunner(t, Config{})
	id := NewID()
	// The hog starts once the test says so, after the adoption.
	main := shell("echo up; while [ ! -e /tmp/go ]; do sleep 0.05; done; exec tail /dev/zero")
	orig := start(t, r, id, testSpec(root), main)
	waitOutput(t, orig, "up")
	c := adopt(t, restarted(t, r), id, main)
	if code, err := c.Exec(t.Context(), []string{"sh", "-c", ": > /tmp/go"}, nil, nil); code != 0 || err != nil {
		t.Fatalf("exec: %d, %v", code, err)
	}
	waitDone(t, c)
	if c.oomKills() == 0 {
		t.Fatalf("no OOM kill counted (cgroups %v): the premise failed", c.cgPaths)
	}
	e := c.Exit()
	if !e.OOMKilled || e.Code != -1 || !errors.Is(e.Err, ErrExitUnknown) {
		t.Errorf("exit %+v, want OOMKilled with code -1", e)
	}
	if got := e.String(); got != "killed: out of memory" {
		t.Errorf("exit reads %q", got)
	}
	if got := outOfMemory(c); !got {
		t.Error("verdict on a failed exchange: not out of memory")
	}
	waitDone(t, orig)
	if oe := orig.Exit(); !oe.OOMKilled || oe.Code != 137 {
		t.Errorf("the original's exit %+v", oe)
	}
}

// The leftovers sweep spares the adopted containers and removes the rest:
// their state, their processes, their cgroups.
func TestLeftoversSpareKept(t *testing.T) {
	root := busyboxRoot(t)
	r := newRunner(t, Config{})
	kept, keptPID := forget(t, r, root, "echo up; exec sleep 600")
	other, otherPID := forget(t, r, root, "echo up; exec sleep 600")
	keep := func(id string) bool { return id == kept.ID() }

	removed, err := r.RemoveLeftovers(t.Context(), keep)
	if err != nil {
		t.Fatal(err)
	}
	if removed != 1 {
		t.Errorf("removed %d containers, want 1", removed)
	}
	wantGone(t, r, other, otherPID)
	wantDestroyed(t, r, other.ID())

	// A stray: its state is gone, only its cgroup knows its process.
	stray, strayPID := forget(t, r, root, "echo up; exec sleep 600")
	if err := os.RemoveAll(filepath.Join(r.cfg.StateDir, stray.ID())); err != nil {
		t.Fatal(err)
	}
	killed, err := r.KillStrays(t.Context(), keep)
	if err != nil {
		t.Fatal(err)
	}
	if killed != 1 {
		t.Errorf("killed %d processes, want the stray's main process alone", killed)
	}
	waitDone(t, stray)
	if err := r.SweepCgroups(keep); err != nil {
		t.Fatal(err)
	}
	wantGone(t, r, stray, strayPID)

	if kept.Exited() {
		t.Fatalf("the kept container ended: %v", kept.Exit())
	}
	if err := unix.Kill(keptPID, 0); err != nil {
		t.Errorf("kept main process %d: %v", keptPID, err)
	}
	if _, err := os.Stat(filepath.Join(r.cfg.StateDir, kept.ID())); err != nil {
		t.Errorf("kept state: %v", err)
	}
	cgs := r.runtimeCgroups(nil)
	if len(cgs) == 0 {
		t.Error("no runtime cgroups left: the kept one's went")
	}
	for _, cg := range cgs {
		if filepath.Base(cg) != kept.ID() {
			t.Errorf("cgroup %s left", cg)
		}
	}
	// Still whole: it can be adopted and used.
	c := adopt(t, restarted(t, r), kept.ID(), shell(""))
	var out bytes.Buffer
	if code, err := c.Exec(t.Context(), []string{"echo", "alive"}, &out, nil); code != 0 || err != nil || out.String() != "alive\n" {
		t.Errorf("exec in the kept container: %d, %v, %q", code, err, out.String())
	}
	// Kept by no one, it goes too.
	if removed, err := r.RemoveLeftovers(t.Context(), nil); removed != 1 || err != nil {
		t.Errorf("sweep keeping nothing: %d, %v", removed, err)
	}
	waitDone(t, c)
	wantDestroyed(t, r, kept.ID())
}

// earlierDaemonEnv, set in the environment of this test binary, makes it the
// earlier daemon of TestAdoptAfterDaemonExit: it starts the container the
// variable describes (an earlierDaemon as JSON), prints "started" and exits
// without stopping it. With reaperEnv set too, the binary is instead the
// daemon's parent: it runs the daemon as a child subreaper, so the
// orphaned container init becomes its child, and it reaps it, as a host's
// init would, then exits once it has no children left.
const (
	earlierDaemonEnv = "EXECUTOR_TEST_EARLIER_DAEMON"
	reaperEnv        = "EXECUTOR_TEST_REAPER"
)

// earlierDaemon is what the earlier daemon starts.
type earlierDaemon struct {
	Config Config
	Root   string
	ID     string
	Main   Process
}

func init() {
	// libcontainer's own re-execution of the binary is the other init's.
	if len(os.Args) > 1 && os.Args[1] == "init" {
		return
	}
	raw := os.Getenv(earlierDaemonEnv)
	switch {
	case raw == "":
	case os.Getenv(reaperEnv) != "":
		os.Exit(runReaper())
	default:
		os.Exit(runEarlierDaemon(raw))
	}
}

func runReaper() int {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	daemon := exec.Command(self)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, reaperEnv+"=") {
			daemon.Env = append(daemon.Env, kv)
		}
	}
	daemon.Stdout, daemon.Stderr = os.Stdout, os.Stderr
	if err := daemon.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "earlier daemon:", err)
		return 1
	}
	for {
		_, err := unix.Wait4(-1, nil, 0, nil)
		switch {
		case errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.ECHILD):
			return 0
		case err != nil:
			fmt.Fprintln(os.Stderr, "wait:", err)
			return 1
		}
	}
}

func runEarlierDaemon(raw string) int {
	var d earlierDaemon
	if err := json.Unmarshal([]byte(raw), &d); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	r, err := New(d.Config)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	c, err := r.Start(d.ID, testSpec(d.Root), d.Main)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(c.Output(), "up") {
		if c.Exited() || time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "no \"up\": output %q, exit %v\n", c.Output(), c.Exit())
			c.Stop(0)
			_ = c.Destroy()
			return 1
		}
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Println("started")
	return 0
}

// A live restore for real: the daemon that started the container exits, and
// the container, whose init is no child of this process, is adopted. It is
// reaped by a reaper process standing for the host's init.
func TestAdoptAfterDaemonExit(t *testing.T) {
	root := busyboxRoot(t)
	r := newRunner(t, Config{})
	id := NewID()
	main := shell("echo up; exec sleep 600")
	raw, err := json.Marshal(earlierDaemon{Config: r.cfg, Root: root, ID: id, Main: main})
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	reaper := exec.Command(self)
	reaper.Env = append(os.Environ(), earlierDaemonEnv+"="+string(raw), reaperEnv+"=1")
	reaper.Stderr = os.Stderr
	stdout, err := reaper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := reaper.Start(); err != nil {
		t.Fatal(err)
	}
	reaperDone := make(chan error, 1)
	t.Cleanup(func() {
		// The container goes first (whatever the test left of it), so
		// the reaper reaps its init and exits; killed before, it would
		// hand the init on to PID 1.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := r.RemoveLeftovers(ctx, nil); err != nil {
			t.Error(err)
		}
		select {
		case err := <-reaperDone:
			if err != nil {
				t.Errorf("reaper: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("the reaper did not exit")
			_ = reaper.Process.Kill()
			<-reaperDone
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	// Wait only once the pipe is read: it closes the read end.
	go func() { reaperDone <- reaper.Wait() }()
	if err != nil || line != "started\n" {
		t.Fatalf("earlier daemon: %q, %v", line, err)
	}

	c, err := r.Adopt(id, main, "")
	if err != nil {
		t.Fatal(err)
	}
	pid := initPID(t, c)
	if _, err := unix.Wait4(pid, nil, unix.WNOHANG, nil); !errors.Is(err, unix.ECHILD) {
		t.Fatalf("wait4 on the init %d: %v; want ECHILD, it is not this process's child", pid, err)
	}
	var stdoutBuf bytes.Buffer
	if code, err := c.Exec(t.Context(), []string{"sh", "-c", "echo $$ survived"}, &stdoutBuf, nil); code != 0 || err != nil || !strings.HasSuffix(stdoutBuf.String(), " survived\n") {
		t.Errorf("exec: %d, %v, %q", code, err, stdoutBuf.String())
	}
	if c.Exited() {
		t.Fatalf("exited: %v", c.Exit())
	}
	c.Stop(0)
	waitDone(t, c)
	if e := c.Exit(); e.Code != -1 || !errors.Is(e.Err, ErrExitUnknown) || e.OOMKilled {
		t.Errorf("exit %+v", e)
	}
	if err := c.Destroy(); err != nil {
		t.Fatal(err)
	}
	wantDestroyed(t, r, id)
}

// With executor-init as its main process (Process.ReportsExit), an adopted
// container's output goes on from the tail the earlier daemon kept with what
// the runtime writes after the adoption, and its exit code is known: the
// one executor-init reported, also after a restart of the adopted
// container's own daemon. Killed before it can report, the code is unknown.
func TestAdoptReadsOutputAndExitCode(t *testing.T) {
	root := busyboxRoot(t)
	r := newRunner(t, Config{})
	spec := testSpec(root)
	spec.Binds = []oci.Bind{{Source: buildInit(t), Destination: oci.InitPath, ReadOnly: true}}
	// Each line in /tmp/say is said once; the file "exit" ends it with its
	// code.
	// The subtests share the root: each starts from no files.
	script := `rm -f /tmp/say /tmp/exit; echo before; n=0; while :; do if [ -f /tmp/exit ]; then exit $(cat /tmp/exit); fi; c=0; [ -f /tmp/say ] && c=$(wc -l < /tmp/say); while [ $n -lt $c ]; do n=$((n+1)); sed -n ${n}p /tmp/say; done; sleep 0.05; done`
	main := Process{Args: oci.WithInit([]string{"sh", "-c", script}), Env: []string{oci.DefaultPATH}, Cwd: "/", ReportsExit: true}
	execIn := func(t *testing.T, c *Container, cmd string) {
		t.Helper()
		if code, err := c.Exec(t.Context(), []string{"sh", "-c", cmd}, nil, nil); err != nil || code != 0 {
			t.Fatalf("exec %q: %d, %v", cmd, code, err)
		}
	}
	for _, tc := range []struct {
		name string
		end  func(t *testing.T, c *Container) // ends the main process
		want ExitStatus
	}{
		{name: "exits", end: func(t *testing.T, c *Container) { execIn(t, c, "echo 3 > /tmp/exit") }, want: ExitStatus{Code: 3}},
		{name: "exits 0", end: func(t *testing.T, c *Container) { execIn(t, c, "echo 0 > /tmp/exit") }, want: ExitStatus{Code: 0}},
		// SIGTERM to executor-init, passed on to the shell, which dies of it.
		{name: "terminated", end: func(_ *testing.T, c *Container) { c.Stop(30 * time.Second) }, want: ExitStatus{Code: 128 + 15}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := NewID()
			orig := start(t, r, id, spec, main)
			waitOutput(t, orig, "before")
			execIn(t, orig, "echo said-to-first >> /tmp/say")
			waitOutput(t, orig, "said-to-first")
			r2 := restarted(t, r)
			c, err := r2.Adopt(id, main, orig.Output())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { destroy(t, c) })
			// Written while two daemons read: it goes to one of them.
			// Then only the adopter reads.
			closeReader(t, orig)
			execIn(t, c, "echo said-to-second >> /tmp/say")
			waitOutput(t, c, "said-to-second")
			if out := c.Output(); !strings.HasPrefix(out, "before\nsaid-to-first\n") {
				t.Errorf("output %q does not begin with the earlier tail", out)
			}
			tc.end(t, c)
			waitDone(t, c)
			if e := c.Exit(); e != tc.want {
				t.Errorf("exit %+v (%s), want %+v", e, e, tc.want)
			}
		})
	}
	t.Run("killed", func(t *testing.T) {
		id := NewID()
		orig := start(t, r, id, spec, main)
		waitOutput(t, orig, "before")
		c, err := restarted(t, r).Adopt(id, main, "")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { destroy(t, c) })
		c.Stop(0)
		waitDone(t, c)
		if e := c.Exit(); e.Code != -1 || !errors.Is(e.Err, ErrExitUnknown) {
			t.Errorf("exit %+v, want code -1 and ErrExitUnknown", e)
		}
	})
}

// closeReader closes the output FIFO's read end of c, a started container,
// as the exit of the daemon that started it does, without waiting for its
// main process: the drain's read fails and it ends.
func closeReader(t *testing.T, c *Container) {
	t.Helper()
	if c.outR == nil {
		t.Fatal("no output FIFO")
	}
	c.outR.Close()
}
