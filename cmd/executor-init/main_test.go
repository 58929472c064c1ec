// Package executorinit tests executor-init (src/executor-init.c, C) as the
// executor runs it: the binary, built static, driven through its command
// line, its fds and signals.
package executorinit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"executor/sandbox/container"
	"executor/tests/cmd/benchtable/samples"
	"executor/tests/testenv"
)

// initBin is executor-init built static, as the executor mounts it.
var initBin string

const (
	parkFlag   = container.ParkFlag
	exitFDFlag = container.ExitFDFlag
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "executor-init-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	initBin = filepath.Join(dir, "executor-init")
	if err := testenv.BuildInit(context.Background(), initBin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// parked is cmd encoded as the executor hands it to a parked executor-init.
func parked(t testing.TB, cmd container.ParkedCommand) string {
	t.Helper()
	b, err := cmd.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// exitCode is executor-init's own exit status; it fails the test when
// executor-init was killed by a signal rather than exiting.
func exitCode(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("wait: %v", err)
	}
	if ws := ee.Sys().(syscall.WaitStatus); ws.Signaled() {
		t.Fatalf("executor-init died of %v", ws.Signal())
	}
	return ee.ExitCode()
}

// waitTimeout waits for cmd, killing it after d. An orphan of the command
// holding executor-init's stdout open fails the wait after cmd.WaitDelay.
func waitTimeout(t *testing.T, cmd *exec.Cmd, d time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("executor-init still running after %v", d)
		return nil
	}
}

// The command's stdout and stderr come out of executor-init's stdout, in
// order, and its exit status is executor-init's, also when parked.
func TestOutputAndExitCode(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		park   string // the command as JSON on fd 3, with --park
		output string
		code   int
	}{
		{name: "ok", args: []string{"sh", "-c", "echo out; echo err >&2; echo out2"}, output: "out\nerr\nout2\n"},
		{name: "exit", args: []string{"sh", "-c", "echo failing; exit 3"}, output: "failing\n", code: 3},
		{name: "killed", args: []string{"sh", "-c", "echo dying; kill -9 $$"}, output: "dying\n", code: 128 + 9},
		{name: "not found", args: []string{"no-such-command-here"}, code: 127},
		// More than the pipe holds, all written before the command exits.
		{name: "large", args: []string{"sh", "-c", "i=0; while [ $i -lt 20000 ]; do echo line $i; i=$((i+1)); done; echo end"}, output: lines(20000) + "end\n"},
		// The orphan keeps the pipe open: the output must not wait for it.
		{name: "orphan", args: []string{"sh", "-c", "sleep 30 & echo bye"}, output: "bye\n"},
		{name: "not executable", args: []string{"/etc/passwd"}, code: 126},
		{name: "parked", park: parked(t, container.ParkedCommand{Args: []string{"sh", "-c", "echo parked $FOO; exit 4"}, Env: []string{"FOO=bar", "PATH=/usr/bin:/bin"}}), output: "parked bar\n", code: 4},
		// A key given twice takes its last value; the working directory
		// is the command's; HOME, which the command's environment lacks,
		// is executor-init's own (libcontainer's, for the container's
		// user).
		{name: "parked, cwd and env", park: parked(t, container.ParkedCommand{
			Args: []string{"sh", "-c", `echo "$PWD $FOO $HOME"`}, Env: []string{"FOO=1", "PATH=/usr/bin:/bin", "FOO=2"}, Cwd: "/proc",
		}), output: "/proc 2 " + os.Getenv("HOME") + "\n"},
		{name: "parked, unknown field", park: "aecho\x00xnot a kind\x00", code: 127},
		{name: "parked, unterminated", park: "aecho", code: 127},
		{name: "parked, no arguments", park: "ePATH=/bin\x00", code: 127},
		{name: "parked, no such cwd", park: parked(t, container.ParkedCommand{Args: []string{"true"}, Cwd: "/no/such/dir"}), code: 127},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cmd *exec.Cmd
			if tc.park != "" {
				cmd = exec.Command(initBin, parkFlag)
				r, w, err := os.Pipe()
				if err != nil {
					t.Fatal(err)
				}
				defer r.Close()
				cmd.ExtraFiles = []*os.File{r}
				go func() {
					w.WriteString(tc.park)
					w.Close()
				}()
			} else {
				cmd = exec.Command(initBin, append([]string{"--"}, tc.args...)...)
			}
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			cmd.WaitDelay = 5 * time.Second
			start := time.Now()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			code := exitCode(t, waitTimeout(t, cmd, 20*time.Second))
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %v", d)
			}
			if code != tc.code {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tc.code, stderr.String())
			}
			if got := stdout.String(); got != tc.output {
				if len(got) > 200 {
					got = got[:100] + "..." + got[len(got)-100:]
				}
				t.Errorf("output %q, want %d bytes %q", got, len(tc.output), first(tc.output, 100))
			}
		})
	}
}

func lines(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	return b.String()
}

func first(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// With the executor gone (the read end of executor-init's stdout closed),
// the command goes on writing to the end, and its status still comes back.
// executor-init itself is not killed by the SIGPIPE of its failed writes.
func TestOutputAfterExecutorGone(t *testing.T) {
	const loop = "i=0; while [ $i -lt 2000 ]; do echo line $i; echo err $i >&2; i=$((i+1)); done; exit 7"
	for _, tc := range []struct {
		name    string
		running bool // the executor goes once the command runs, not before
	}{
		{name: "before start"},
		{name: "while running", running: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			script := loop
			if tc.running {
				script = "echo ready; read go; " + loop
			} else {
				r.Close()
			}
			cmd := exec.Command(initBin, "--", "sh", "-c", script)
			cmd.Stdout, cmd.Stderr = w, w
			var stdin *os.File
			if tc.running {
				in, out, err := os.Pipe()
				if err != nil {
					t.Fatal(err)
				}
				defer in.Close()
				defer out.Close()
				cmd.Stdin, stdin = in, out
			}
			cmd.WaitDelay = 5 * time.Second
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			if tc.running {
				line, err := bufio.NewReader(r).ReadString('\n')
				r.Close()
				if line != "ready\n" {
					_ = cmd.Process.Kill()
					_ = cmd.Wait()
					t.Fatalf("read %q: %v", line, err)
				}
				// Only now, with the executor gone, does the command write.
				if _, err := stdin.WriteString("go\n"); err != nil {
					t.Fatal(err)
				}
			}
			if code := exitCode(t, waitTimeout(t, cmd, 60*time.Second)); code != 7 {
				t.Fatalf("exit code %d, want the command's 7 (141: it died of SIGPIPE)", code)
			}
		})
	}
}

// Signals reach the command, but for SIGPIPE, which executor-init raises
// for itself when the executor is gone.
func TestSignals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sigs   []syscall.Signal
		code   int
		settle bool
	}{
		{name: "SIGTERM", sigs: []syscall.Signal{syscall.SIGTERM}, code: 128 + 15},
		{name: "SIGINT", sigs: []syscall.Signal{syscall.SIGINT}, code: 128 + 2},
		{name: "SIGPIPE kept", sigs: []syscall.Signal{syscall.SIGPIPE, syscall.SIGTERM}, code: 128 + 15},
		// Notified once the command runs (newSupervisor): the command
		// speaks after that.
		{name: "SIGUSR1", sigs: []syscall.Signal{syscall.SIGUSR1}, code: 128 + 10, settle: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			script := "echo ready; exec sleep 60"
			if tc.settle {
				script = "sleep 0.5; " + script
			}
			cmd := exec.Command(initBin, "--", "sh", "-c", script)
			cmd.WaitDelay = 5 * time.Second
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Once the command speaks, executor-init catches signals and
			// has a process group to send them to.
			line, err := bufio.NewReader(stdout).ReadString('\n')
			if line != "ready\n" {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				t.Fatalf("read %q: %v", line, err)
			}
			for i, sig := range tc.sigs {
				if i > 0 {
					// Time for an earlier signal to have its effect.
					time.Sleep(500 * time.Millisecond)
				}
				if err := cmd.Process.Signal(sig); err != nil {
					t.Fatal(err)
				}
			}
			if code := exitCode(t, waitTimeout(t, cmd, 20*time.Second)); code != tc.code {
				t.Fatalf("exit code %d, want %d", code, tc.code)
			}
		})
	}
}

// An orphan that writes without pause keeps the command's pipe from ever
// being empty: executor-init still exits, with the command's code, once its
// drain deadline (2 s) passes.
func TestBusyOrphanDoesNotHoldTheExit(t *testing.T) {
	// Three yes write faster than executor-init passes on what it reads,
	// even to /dev/null.
	cmd := exec.Command(initBin, "--", "sh", "-c", "yes & yes & yes & sleep 0.2; exit 3")
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	cmd.Stdout = null
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if code := exitCode(t, waitTimeout(t, cmd, 20*time.Second)); code != 3 {
		t.Fatalf("exit code %d, want 3", code)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
}

// A full stdout (an executor that stopped reading its FIFO) holds the
// command's output back, but never executor-init's passing of signals and
// reaping.
func TestSignalsWhileOutputBlocked(t *testing.T) {
	_, r, w := makeFIFO(t, "output")
	defer r.Close() // never read
	// Far more than the FIFO and the command's pipe hold together.
	cmd := exec.Command(initBin, "--", "sh", "-c", `while :; do echo aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; done`)
	cmd.Stdout = w
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	time.Sleep(time.Second) // both pipes full long before
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := exitCode(t, waitTimeout(t, cmd, 20*time.Second)); code != 128+15 {
		t.Fatalf("exit code %d, want %d", code, 128+15)
	}
}

// A parked executor-init catches signals before its command comes, as it
// would once running it: one that would have ended the command ends the
// wait with the command's code; SIGWINCH, SIGCHLD and the like are ignored.
func TestSignalsWhileParked(t *testing.T) {
	for _, tc := range []struct {
		name string
		sig  syscall.Signal
		code int
	}{
		{name: "SIGTERM", sig: syscall.SIGTERM, code: 128 + 15},
		{name: "SIGHUP", sig: syscall.SIGHUP, code: 128 + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr, pw, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer pw.Close()
			cmd := exec.Command(initBin, parkFlag)
			cmd.ExtraFiles = []*os.File{pr}
			cmd.WaitDelay = 5 * time.Second
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			pr.Close()
			for _, sig := range []syscall.Signal{syscall.SIGWINCH, syscall.SIGCHLD} {
				if err := cmd.Process.Signal(sig); err != nil {
					t.Fatal(err)
				}
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				t.Fatalf("parked executor-init ended on SIGWINCH/SIGCHLD: %v", err)
			case <-time.After(300 * time.Millisecond):
				// Long parked by now: tc.sig finds its handler.
			}
			if err := cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if code := exitCode(t, err); code != tc.code {
					t.Fatalf("exit code %d, want %d", code, tc.code)
				}
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatalf("parked executor-init still running 20 s after %v", tc.sig)
			}
		})
	}
}

// With --exit-fd, the command's exit code is written on that descriptor as
// executor-init exits, also for a parked command and when nothing reads it;
// the command itself never has the descriptor.
func TestExitFD(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		park     string
		noReader bool // the FIFO's reader is gone before the exit
		code     int
	}{
		{name: "exit", args: []string{"--", "sh", "-c", "exit 5"}, code: 5},
		{name: "killed", args: []string{"--", "sh", "-c", "kill -9 $$"}, code: 128 + 9},
		// The descriptor after the command's: fd 4 would be open in the
		// command (ls /proc/self/fd) had executor-init left it inheritable.
		{name: "not inherited", args: []string{"--", "sh", "-c", "[ ! -e /proc/self/fd/4 ] || exit 9"}, code: 0},
		{name: "not found", args: []string{"--", "no-such-command-here"}, code: 127},
		{name: "parked", park: parked(t, container.ParkedCommand{Args: []string{"sh", "-c", "exit 6"}, Env: []string{"PATH=/usr/bin:/bin"}}), code: 6},
		{name: "parked, dismissed", park: "", code: 0},
		{name: "no reader", args: []string{"--", "sh", "-c", "exit 3"}, noReader: true, code: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, r, w := makeFIFO(t, "exit")
			defer r.Close()
			args, files := tc.args, []*os.File{nil, w}
			if tc.park != "" || tc.name == "parked, dismissed" {
				pr, pw, err := os.Pipe()
				if err != nil {
					t.Fatal(err)
				}
				defer pr.Close()
				files[0] = pr
				go func() {
					pw.WriteString(tc.park)
					pw.Close()
				}()
				args = []string{parkFlag}
			} else {
				// fd 3 is the command's if not parked: /dev/null.
				null, err := os.Open(os.DevNull)
				if err != nil {
					t.Fatal(err)
				}
				defer null.Close()
				files[0] = null
			}
			cmd := exec.Command(initBin, append([]string{exitFDFlag, "4"}, args...)...)
			cmd.ExtraFiles = files
			cmd.WaitDelay = 5 * time.Second
			if tc.noReader {
				r.Close()
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			w.Close()
			if code := exitCode(t, waitTimeout(t, cmd, 20*time.Second)); code != tc.code {
				t.Fatalf("exit code %d, want %d", code, tc.code)
			}
			if tc.noReader {
				return
			}
			buf := make([]byte, 64)
			n, _ := r.Read(buf)
			if got, want := string(buf[:n]), fmt.Sprintf("%d\n", tc.code); got != want {
				t.Fatalf("reported %q, want %q", got, want)
			}
		})
	}
}

// Output written while no executor reads the FIFO is dropped, and output
// flows again once an executor opens it: the next executor after a restart
// gets what the runtime writes from then on.
func TestOutputResumesWithNextReader(t *testing.T) {
	fifo, first, w := makeFIFO(t, "output")
	in, step, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer step.Close()
	// Each line on stdin makes the command write one line.
	cmd := exec.Command(initBin, "--", "sh", "-c", `while read x; do echo "$x"; done; exit 4`)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = in, w, w
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	in.Close()
	w.Close()
	readLine := func(f *os.File) string {
		t.Helper()
		f.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(f).ReadString('\n')
		if err != nil {
			t.Fatalf("read %q: %v", line, err)
		}
		return line
	}
	step.WriteString("one\n")
	if got := readLine(first); got != "one\n" {
		t.Fatalf("first reader got %q", got)
	}
	first.Close() // the executor is gone
	step.WriteString("lost\n")
	time.Sleep(300 * time.Millisecond) // written, and dropped, before the next reader
	next, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	step.WriteString("two\n")
	if got := readLine(next); got != "two\n" {
		t.Fatalf("next reader got %q, want the line written after it opened", got)
	}
	step.Close()
	if code := exitCode(t, waitTimeout(t, cmd, 20*time.Second)); code != 4 {
		t.Fatalf("exit code %d, want 4", code)
	}
}

// makeFIFO makes a FIFO named name in a temporary directory and opens its
// read end (non-blocking) and then its write end, as the executor does.
func makeFIFO(t *testing.T, name string) (path string, r, w *os.File) {
	t.Helper()
	path = filepath.Join(t.TempDir(), name)
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	if w, err = os.OpenFile(path, os.O_WRONLY, 0); err != nil {
		r.Close()
		t.Fatal(err)
	}
	return path, r, w
}

// BenchmarkStart measures from the start of a command to its first byte of
// output: run directly (the floor), under executor-init, and handed to a
// parked executor-init (from the handing).
func BenchmarkStart(b *testing.B) {
	echo, err := exec.LookPath("echo")
	if err != nil {
		b.Fatal(err)
	}
	firstByte := func(b *testing.B, cmd *exec.Cmd, start func() time.Time) time.Duration {
		b.Helper()
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		began := start()
		var one [1]byte
		if _, err := out.Read(one[:]); err != nil {
			b.Fatal(err)
		}
		d := time.Since(began)
		if err := cmd.Wait(); err != nil {
			b.Fatal(err)
		}
		return d
	}
	b.Run("direct", func(b *testing.B) {
		var ds []time.Duration
		for b.Loop() {
			began := time.Now()
			ds = append(ds, firstByte(b, exec.Command(echo, "x"), func() time.Time { return began }))
		}
		samples.Report(b, "start", ds)
	})
	b.Run("executor-init", func(b *testing.B) {
		var ds []time.Duration
		for b.Loop() {
			began := time.Now()
			ds = append(ds, firstByte(b, exec.Command(initBin, "--", echo, "x"), func() time.Time { return began }))
		}
		samples.Report(b, "start", ds)
	})
	b.Run("parked", func(b *testing.B) {
		command := []byte(parked(b, container.ParkedCommand{Args: []string{echo, "x"}}))
		var ds []time.Duration
		for b.Loop() {
			pr, pw, err := os.Pipe()
			if err != nil {
				b.Fatal(err)
			}
			cmd := exec.Command(initBin, parkFlag)
			cmd.ExtraFiles = []*os.File{pr}
			ds = append(ds, firstByte(b, cmd, func() time.Time {
				pr.Close()
				// Parked by now, as a prewarmed runtime is long before
				// a request comes.
				time.Sleep(20 * time.Millisecond)
				began := time.Now()
				pw.Write(command)
				pw.Close()
				return began
			}))
		}
		samples.Report(b, "start", ds)
	})
}

// denyMkdir is a seccomp program that fails mkdir and mkdirat with EPERM
// and allows every other system call.
func denyMkdir(t *testing.T) *os.File {
	t.Helper()
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 2, K: unix.SYS_MKDIR},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 1, K: unix.SYS_MKDIRAT},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
	}
	return programFile(t, unsafe.Slice((*byte)(unsafe.Pointer(&prog[0])), len(prog)*int(unsafe.Sizeof(prog[0]))))
}

// programFile is a file holding raw, open for reading.
func programFile(t *testing.T, raw []byte) *os.File {
	t.Helper()
	path := filepath.Join(t.TempDir(), "filter")
	if err := os.WriteFile(path, raw, 0o400); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// With --seccomp-fd executor-init installs the program on that descriptor
// on itself before anything else, with the load flags given, and
// everything it runs inherits it: the command, a parked one, one it
// becomes with --exec (which keeps its own stdout, stderr and status).
// Without a filter it can install, or with flags it does not know, it runs
// nothing and exits 127.
func TestSeccompFilter(t *testing.T) {
	const mkdir = `mkdir "$1/made" && echo made; grep Seccomp: /proc/self/status; echo err >&2; exit 3`
	for _, tc := range []struct {
		name     string
		args     []string
		filter   *os.File
		park     *container.ParkedCommand
		code     int
		out, err string // err: stderr, when separate; want in out when empty
	}{
		{name: "command", args: []string{"--seccomp-flags", "4", "--", "sh", "-c", mkdir, "sh"}, filter: denyMkdir(t), code: 3,
			out: "Operation not permitted\nSeccomp:\t2\nerr\n"},
		{name: "no flags", args: []string{"--", "sh", "-c", mkdir, "sh"}, filter: denyMkdir(t), code: 3,
			out: "Operation not permitted\nSeccomp:\t2\nerr\n"},
		{name: "parked", args: []string{parkFlag}, filter: denyMkdir(t), code: 3,
			park: &container.ParkedCommand{Args: []string{"sh", "-c", mkdir, "sh"}, Env: []string{"PATH=/usr/bin:/bin"}},
			out:  "Operation not permitted\nSeccomp:\t2\nerr\n"},
		{name: "exec", args: []string{"--exec", "--", "sh", "-c", mkdir, "sh"}, filter: denyMkdir(t), code: 3,
			out: "Seccomp:\t2\n", err: "Operation not permitted\nerr\n"},
		{name: "not a program", args: []string{"--", "sh", "-c", mkdir, "sh"}, filter: programFile(t, []byte("1234567")), code: 127,
			out: "not a program (7 bytes)"},
		{name: "no descriptor", args: []string{"--", "sh", "-c", mkdir, "sh"}, code: 127, out: "seccomp filter on fd 3"},
		{name: "unknown flags", args: []string{"--seccomp-flags", "1", "--", "sh", "-c", mkdir, "sh"}, filter: denyMkdir(t), code: 127,
			out: `--seccomp-flags "1": not a set of LOG and SPEC_ALLOW`},
		{name: "exec reports no exit", args: []string{exitFDFlag, "4", "--exec", "--", "sh", "-c", mkdir, "sh"}, filter: denyMkdir(t), code: 127,
			out: "reports no exit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			args := slices.Concat([]string{container.SeccompFDFlag, "3"}, tc.args)
			var files []*os.File
			if tc.filter != nil {
				files = append(files, tc.filter)
			}
			if tc.park != nil {
				// The parked command on fd 3, the filter on fd 4.
				pr, pw, err := os.Pipe()
				if err != nil {
					t.Fatal(err)
				}
				defer pr.Close()
				files = []*os.File{pr, tc.filter}
				args[1] = "4"
				cmd := *tc.park
				cmd.Args = append(slices.Clip(cmd.Args), dir)
				b := parked(t, cmd)
				go func() {
					pw.WriteString(b)
					pw.Close()
				}()
			} else {
				args = append(args, dir)
			}
			if slices.Contains(args, exitFDFlag) {
				null, err := os.Open(os.DevNull)
				if err != nil {
					t.Fatal(err)
				}
				defer null.Close()
				files = append(files, null)
			}
			var out, errOut bytes.Buffer
			cmd := exec.Command(initBin, args...)
			cmd.ExtraFiles = files
			cmd.Stdout = &out
			cmd.Stderr = &out
			if tc.err != "" {
				cmd.Stderr = &errOut
			}
			cmd.WaitDelay = 5 * time.Second
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			if code := exitCode(t, waitTimeout(t, cmd, 20*time.Second)); code != tc.code {
				t.Errorf("exit code %d, want %d (output %q)", code, tc.code, out.String())
			}
			if !strings.Contains(out.String(), tc.out) || !strings.Contains(errOut.String(), tc.err) {
				t.Errorf("stdout %q, stderr %q, want %q and %q", out.String(), errOut.String(), tc.out, tc.err)
			}
			if _, err := os.Stat(filepath.Join(dir, "made")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the command made a directory the filter denies: %v", err)
			}
		})
	}
}
