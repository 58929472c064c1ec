package container

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// idleContainers is how many containers TestWaitHoldsNoThread keeps waiting.
const idleContainers = 40

// threadSlack is how many OS threads the process may gain while
// idleContainers containers, and a command in each, wait: the runtime's own
// (sysmon, GC, a thread per start in flight), not one per process.
const threadSlack = 10

// Waiting for a main process or a command to exit holds no OS thread: a
// thousand idle runtimes must not cost a thousand threads. The exit statuses
// still come through: each main process's own code or death by SIGKILL, each
// command's code.
func TestWaitHoldsNoThread(t *testing.T) {
	// One root for all: the containers' /tmp is its tmp, where the gates
	// that hold the commands are.
	root := busyboxRoot(t)
	r := newRunner(t, Config{})
	// Runs after the containers' cleanups, which end the commands by
	// killing their containers when the test fails before it releases them.
	var execs sync.WaitGroup
	t.Cleanup(execs.Wait)

	// A start and a command first: whatever threads the machinery of
	// either needs once are in the baseline.
	warm := start(t, r, IDPrefix+"warm", testSpec(root), shell("exec sleep 3600"))
	if code, err := warm.Exec(t.Context(), []string{"sh", "-c", "exit 0"}, nil, nil); err != nil || code != 0 {
		t.Fatalf("warm-up command: %d, %v", code, err)
	}
	base := threads(t)

	type idle struct {
		c        *Container
		grace    time.Duration // Stop's
		want     ExitStatus
		execCode int
		gate     *os.File // released, the command exits with execCode
	}
	var all []*idle
	for i := range idleContainers {
		x := &idle{execCode: 60 + i}
		p := shell("exec sleep 3600")
		x.want = ExitStatus{Code: 137, Signal: "SIGKILL"}
		if i%2 == 1 {
			// Exits with a code of its own on SIGTERM; "ready" says
			// the trap is set.
			code := 10 + i
			p = shell(fmt.Sprintf(`trap "exit %d" TERM; echo ready; sleep 3600 & wait`, code))
			x.grace = time.Minute
			x.want = ExitStatus{Code: code}
		}
		x.c = start(t, r, fmt.Sprintf("%sidle-%d", IDPrefix, i), testSpec(root), p)
		if x.grace > 0 {
			waitOutput(t, x.c, "ready")
		}
		all = append(all, x)
	}
	afterStarts := threads(t)
	t.Logf("OS threads: %d before, %d with %d idle containers", base, afterStarts, idleContainers)
	if afterStarts-base >= threadSlack {
		t.Errorf("%d idle containers added %d OS threads (from %d to %d), want fewer than %d", idleContainers, afterStarts-base, base, afterStarts, threadSlack)
	}

	// A command in each container, blocked reading its gate. They start
	// one after another: a start in flight may take a thread for a while,
	// and the runtime keeps the threads it made.
	type result struct {
		x    *idle
		code int
		err  error
	}
	results := make(chan result, idleContainers)
	for i, x := range all {
		gate := filepath.Join(root, "tmp", fmt.Sprintf("gate-%d", i))
		if err := unix.Mkfifo(gate, 0o600); err != nil {
			t.Fatal(err)
		}
		// Read and write: the open does not wait for the command, nor
		// the command's open for us.
		f, err := os.OpenFile(gate, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		x.gate = f
		t.Cleanup(func() { f.Close() })
		ready := &firstWrite{seen: make(chan struct{})}
		script := fmt.Sprintf("echo ready; read line < /tmp/gate-%d; exit %d", i, x.execCode)
		execs.Go(func() {
			code, err := x.c.Exec(t.Context(), []string{"sh", "-c", script}, ready, nil)
			results <- result{x, code, err}
		})
		select {
		case <-ready.seen:
		case <-time.After(20 * time.Second):
			t.Fatalf("command in %s did not start", x.c.ID())
		}
	}
	afterExecs := threads(t)
	t.Logf("OS threads: %d with a command waiting in each container", afterExecs)
	if afterExecs-base >= threadSlack {
		t.Errorf("%d idle containers and a waiting command in each added %d OS threads (from %d to %d), want fewer than %d",
			idleContainers, afterExecs-base, base, afterExecs, threadSlack)
	}

	for _, x := range all {
		if _, err := x.gate.WriteString("go\n"); err != nil {
			t.Fatal(err)
		}
	}
	for range all {
		res := <-results
		if res.err != nil || res.code != res.x.execCode {
			t.Errorf("command in %s: %d, %v; want %d", res.x.c.ID(), res.code, res.err, res.x.execCode)
		}
	}
	for _, x := range all {
		x.c.Stop(x.grace)
		if !x.c.Exited() {
			t.Errorf("%s: main process still running after Stop", x.c.ID())
			continue
		}
		if got := x.c.Exit(); got != x.want {
			t.Errorf("%s: exit %+v, want %+v (output %q)", x.c.ID(), got, x.want, x.c.Output())
		}
	}
}

// firstWrite closes seen at its first write and discards everything.
type firstWrite struct {
	once sync.Once
	seen chan struct{}
}

func (w *firstWrite) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.seen) })
	return len(p), nil
}

// threads is how many OS threads this process has.
func threads(t *testing.T) int {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no Threads line in /proc/self/status: %v", sc.Err())
	return 0
}

// awaitExit waits through a pidfd without reaping: the child's own Wait
// still gets its status. No root needed, so this also runs in a user
// namespace, as a rootless daemon does.
func TestAwaitExit(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", "read line; exit 3")
	stdin, err := cmd.StdinPipe()
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
	fd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := exitedNow(fd); !errors.Is(err, errRunning) {
		t.Fatalf("running child: %v, want errRunning", err)
	}
	stdin.Close()
	if err := awaitExit(cmd.Process.Pid); err != nil {
		t.Fatalf("awaitExit: %v", err)
	}
	if err := exitedNow(fd); err != nil {
		t.Errorf("after awaitExit: %v, want exited", err)
	}
	// Still a zombie for Wait to reap, with its code.
	var exit *exec.ExitError
	if err := cmd.Wait(); !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Errorf("Wait: %v, want exit code 3", err)
	}
	// Not a child of ours: waitid refuses, so the caller falls back to
	// its blocking Wait, which reports that.
	if err := awaitExit(os.Getppid()); !errors.Is(err, unix.ECHILD) {
		t.Errorf("awaitExit of the parent: %v, want ECHILD", err)
	}
}
