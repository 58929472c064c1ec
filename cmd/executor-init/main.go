// Command executor-init is the first process of every runtime: it starts the
// runtime's command, passes the signals it gets on to it, reaps every orphan
// that ends up as its child (a PID namespace's init inherits them all), and
// exits with the command's status. Without it a server running as PID 1
// ignores SIGTERM it does not handle and leaves zombies behind.
//
// It is built static (CGO_ENABLED=0) and bind-mounted read-only into each
// runtime by the executor. Usage: executor-init -- COMMAND [ARG...]
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "executor-init: usage: executor-init -- COMMAND [ARG...]")
		os.Exit(127)
	}
	os.Exit(run(args))
}

func run(args []string) int {
	path, err := lookPath(args[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "executor-init: %s: %v\n", args[0], err)
		return 127
	}
	// Catch every signal before the child exists, so none is lost.
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs)
	pid, err := syscall.ForkExec(path, args, &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{0, 1, 2},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "executor-init: start %s: %v\n", args[0], err)
		return 126
	}
	for s := range sigs {
		sig := s.(syscall.Signal)
		if sig == syscall.SIGCHLD {
			if code, done := reap(pid); done {
				return code
			}
			continue
		}
		// To the command's whole process group: shells and the
		// servers they start go together, as under a terminal.
		_ = syscall.Kill(-pid, sig)
	}
	return 0 // not reached: sigs is never closed
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
