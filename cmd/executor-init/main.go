// Command executor-init is the first process of every runtime: it starts the
// runtime's command, passes the signals it gets on to it, reaps every orphan
// that ends up as its child (a PID namespace's init inherits them all), and
// exits with the command's status. Without it a server running as PID 1
// ignores SIGTERM it does not handle and leaves zombies behind. With
// --park it first waits for its command on fd 3 (a prewarmed runtime),
// with its signals already caught and its output pipe made, so the command
// starts as soon as it comes; a signal that would have ended the command
// ends the wait.
//
// The command's stdout and stderr are a pipe of executor-init's, which it
// copies on to its own stdout, the executor's FIFO. Runtimes outlive a
// restart of the executor (live restore), and the FIFO's reader goes with
// the executor: written to directly, it would kill the command with
// SIGPIPE, or leave it failing with EPIPE. executor-init instead keeps
// reading, drops what finds no reader, and passes the output on again once
// the next executor opens the FIFO.
//
// With --exit-fd N it also writes the command's exit code, in decimal and
// a newline, on fd N as it exits: an executor that adopted the runtime after
// a restart is not its parent and cannot wait for it, but reads the code
// there (a FIFO too, written only if some executor reads it).
//
// It is built static (CGO_ENABLED=0) and bind-mounted read-only into each
// runtime by the executor.
// Usage: executor-init [--exit-fd N] { --park | -- COMMAND [ARG...] }
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// exitFDFlag names the descriptor executor-init reports the exit code on.
const exitFDFlag = "--exit-fd"

func main() { os.Exit(start(os.Args[1:])) }

// start runs executor-init with its arguments and returns its exit code,
// reported on the --exit-fd descriptor first.
func start(args []string) int {
	exitFD := -1
	if len(args) >= 2 && args[0] == exitFDFlag {
		n, err := strconv.Atoi(args[1])
		if err != nil || n < 3 {
			fmt.Fprintf(os.Stderr, "executor-init: %s %q: not a descriptor above 2\n", exitFDFlag, args[1])
			return 127
		}
		// The command must not inherit it: it would be the runtime's to
		// write a status of its choosing on.
		syscall.CloseOnExec(n)
		exitFD, args = n, args[2:]
	}
	code := command(args)
	if exitFD >= 0 {
		reportExit(exitFD, code)
	}
	return code
}

// command runs the command args name, or the parked one, and returns its
// exit code.
func command(args []string) int {
	parked := len(args) == 1 && args[0] == parkFlag
	if !parked && len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if !parked && len(args) == 0 {
		fmt.Fprintln(os.Stderr, "executor-init: usage: executor-init [--exit-fd N] { --park | -- COMMAND [ARG...] }")
		return 127
	}
	sv, err := newSupervisor()
	if err != nil {
		fmt.Fprintf(os.Stderr, "executor-init: %v\n", err)
		return 126
	}
	if parked {
		var code int
		if args, code = sv.unpark(); args == nil {
			return code
		}
	}
	return sv.run(args)
}

// reportExit writes code on fd. Without a reader (no executor runs, or the
// one that started the runtime waits for it as its parent) the write fails
// with EPIPE, which is fine: the code is for an executor that adopted the
// runtime, and one that did reads the FIFO. Go ignores the SIGPIPE of a
// write to a descriptor other than 1 and 2.
func reportExit(fd, code int) {
	_, _ = syscall.Write(fd, []byte(strconv.Itoa(code)+"\n"))
	syscall.Close(fd)
}

// supervisor is what executor-init needs to run a command: every signal
// caught, and the pipe the command's output comes through, copied on as it
// comes. It is made before a parked init waits: once the command arrives,
// only its start is left (the signal thread and the copier took a
// millisecond or two of a prewarmed runtime's start otherwise).
type supervisor struct {
	sigs   chan os.Signal
	r, w   *os.File
	copied chan struct{}
}

func newSupervisor() (*supervisor, error) {
	// Catch the signals that would end or stop executor-init before the
	// child exists, so that none of them is lost: SIGCHLD, and SIGPIPE,
	// so that a write to a broken stdout fails with EPIPE instead. Go
	// enables each notified signal with a round trip to a thread of its
	// own: all 64 took 1.6-3.1 ms, on the path of every start. The rest
	// (SIGUSR1, SIGWINCH, real-time signals...), which an executor-init
	// not yet notified of them ignores, follow in the background.
	sv := &supervisor{sigs: make(chan os.Signal, 32), copied: make(chan struct{})}
	signal.Notify(sv.sigs, stopSignals...)
	go signal.Notify(sv.sigs)
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	sv.r, sv.w = r, w
	go func() {
		copyOutput(r)
		close(sv.copied)
	}()
	return sv, nil
}

// stopSignals are the signals Go's default handling would end executor-init
// on (or that it needs before its child exists).
var stopSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGABRT, syscall.SIGCHLD, syscall.SIGPIPE}

func (sv *supervisor) run(args []string) int {
	path, err := lookPath(args[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "executor-init: %s: %v\n", args[0], err)
		return 127
	}
	r, w, sigs, copied := sv.r, sv.w, sv.sigs, sv.copied
	// Fd puts w in blocking mode, as a command expects of its stdout.
	out := w.Fd()
	pid, err := syscall.ForkExec(path, args, &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{0, out, out},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	w.Close()
	if err != nil {
		fmt.Fprintf(os.Stderr, "executor-init: start %s: %v\n", args[0], err)
		return 126
	}
	for s := range sigs {
		sig := s.(syscall.Signal)
		switch sig {
		case syscall.SIGCHLD:
			if code, done := reap(pid); done {
				finishOutput(r, copied)
				return code
			}
		case syscall.SIGPIPE:
			// Raised by our own write to an executor that is gone:
			// passed on, it would kill the runtime it is there to spare.
		default:
			// To the command's whole process group: shells and the
			// servers they start go together, as under a terminal.
			_ = syscall.Kill(-pid, sig)
		}
	}
	return 0 // not reached: sigs is never closed
}

// drainMax bounds the wait for the command's last output once it has
// exited, should the executor stop reading or an orphan write without pause.
const drainMax = 2 * time.Second

// copyOutput passes the command's output on to our stdout as it comes, until
// EOF, or until finishOutput's deadline, after which it passes on what the
// pipe still holds and returns.
func copyOutput(r *os.File) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		passOn(buf[:n])
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			return
		}
	}
	// The command has exited, and all it wrote is in the pipe. Orphans it
	// left (nohup server &) may hold the pipe open for ever, so read only
	// until it is empty, not until EOF.
	rc, err := r.SyscallConn()
	if err != nil || r.SetReadDeadline(time.Time{}) != nil {
		return
	}
	_ = rc.Read(func(fd uintptr) bool {
		for {
			n, err := syscall.Read(int(fd), buf)
			if n > 0 {
				passOn(buf[:n])
				continue
			}
			if err != syscall.EINTR {
				return true // EAGAIN (empty), EOF or an error
			}
		}
	})
}

// finishOutput, once the command has exited, has copyOutput pass on the
// rest of its output and waits for that, but not for ever.
func finishOutput(r *os.File, copied <-chan struct{}) {
	// The deadline wakes copyOutput from a read waiting for output that
	// may never come; copyOutput clears it for its final reads.
	_ = r.SetReadDeadline(time.Now())
	select {
	case <-copied:
	case <-time.After(drainMax):
	}
}

// passOn writes p on our stdout, the executor's FIFO. A write that fails
// finds no reader (EPIPE: the executor is gone, or not yet back after a
// restart) and is dropped; the next is tried all the same, so output flows
// again once an executor opens the FIFO. The command never blocks on a
// missing reader.
func passOn(p []byte) {
	if len(p) > 0 {
		_, _ = os.Stdout.Write(p)
	}
}

// parkFlag starts a prewarmed runtime's init parked: everything of the
// container is in place but its command, which the executor writes on fd 3
// as parkedCommand's JSON (sandbox/container.ParkedCommand) once a request
// asks for the runtime, then closes.
const parkFlag = "--park"

type parkedCommand struct {
	Args []string `json:"args"`
	Env  []string `json:"env"`
	Cwd  string   `json:"cwd"`
}

// unpark waits for the command on fd 3 and takes on its environment and
// working directory, as the container's init would have been given them.
// EOF with nothing read means the runtime was never needed: exit 0. A
// signal that would have ended the command ends the wait (128+signal).
func (sv *supervisor) unpark() (args []string, code int) {
	type read struct {
		b   []byte
		err error
	}
	got := make(chan read, 1)
	go func() {
		f := os.NewFile(3, "command")
		b, err := io.ReadAll(io.LimitReader(f, 64<<20))
		f.Close()
		got <- read{b, err}
	}()
	var b []byte
	for b == nil {
		select {
		case rd := <-got:
			if rd.err != nil {
				fmt.Fprintf(os.Stderr, "executor-init: read the command: %v\n", rd.err)
				return nil, 127
			}
			if len(rd.b) == 0 {
				return nil, 0
			}
			b = rd.b
		case s := <-sv.sigs:
			switch sig := s.(syscall.Signal); sig {
			case syscall.SIGCHLD, syscall.SIGPIPE, syscall.SIGURG, syscall.SIGWINCH, syscall.SIGCONT:
				// No command to pass them on to, nor to end.
			default:
				return nil, 128 + int(sig)
			}
		}
	}
	var c parkedCommand
	if err := json.Unmarshal(b, &c); err != nil || len(c.Args) == 0 {
		fmt.Fprintf(os.Stderr, "executor-init: bad command (%v)\n", err)
		return nil, 127
	}
	// libcontainer gave this process the user's HOME when its environment
	// had none, as it would have given the command's.
	home := os.Getenv("HOME")
	os.Clearenv()
	for _, kv := range c.Env {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			os.Setenv(k, v)
		}
	}
	if _, ok := os.LookupEnv("HOME"); !ok && home != "" {
		os.Setenv("HOME", home)
	}
	if c.Cwd != "" {
		if err := os.Chdir(c.Cwd); err != nil {
			fmt.Fprintf(os.Stderr, "executor-init: %v\n", err)
			return nil, 127
		}
	}
	return c.Args, 0
}

// reap collects every exited child; done reports that the command itself
// ended, with the exit code to pass on.
func reap(child int) (code int, done bool) {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return code, done
		}
		if pid == child {
			done = true
			switch {
			case ws.Exited():
				code = ws.ExitStatus()
			case ws.Signaled():
				code = 128 + int(ws.Signal())
			}
		}
	}
}

// lookPath resolves a command name against PATH the way a shell does.
func lookPath(name string) (string, error) {
	if len(name) > 0 && (name[0] == '/' || contains(name, '/')) {
		return name, nil
	}
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	start := 0
	for i := 0; i <= len(path); i++ {
		if i == len(path) || path[i] == ':' {
			dir := path[start:i]
			start = i + 1
			if dir == "" {
				dir = "."
			}
			p := dir + "/" + name
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("not found in PATH")
}

func contains(s string, c byte) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return true
		}
	}
	return false
}
