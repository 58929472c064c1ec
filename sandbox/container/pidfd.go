package container

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"
)

// waitProcess reaps p, a started child of this process, once it has exited,
// and returns what p.Wait returns. ctx ending first kills p with SIGKILL; the
// wait then goes on until it is reaped.
//
// p.Wait alone blocks in waitid(2) and so holds an OS thread for the
// process's whole life: one thread per runtime, never given back to the
// system. waitProcess first waits for the exit on a pidfd through the
// runtime's poller, which holds no thread of its own, and only then calls
// p.Wait, which reaps at once.
func waitProcess(ctx context.Context, p *libcontainer.Process) (*os.ProcessState, error) {
	// Signalling goes through the os.Process libcontainer holds, which owns
	// a pidfd of its own (or, without pidfds, knows whether it reaped): a
	// kill racing with the reap below cannot reach another process.
	stop := context.AfterFunc(ctx, func() { _ = p.Signal(unix.SIGKILL) })
	defer stop()
	if pid, err := p.Pid(); err == nil {
		// Without a pidfd to poll (pidfd_open needs Linux 5.3; a seccomp
		// filter may refuse it) p.Wait blocks a thread as before: the cost
		// is a thread per process, not a wrong status, so the fallback is
		// silent.
		_ = awaitExit(pid)
	}
	return p.Wait()
}

// awaitExit returns once pid, a child of this process, has exited, leaving it
// a zombie for its Wait to reap. It waits in the runtime's poller: a pidfd
// turns readable when its process exits, and readiness on it is reported
// like any socket's. An error means it cannot wait that way, or that waitid
// refused (the child is not ours, or was reaped): in both cases a blocking
// Wait says how the child ended.
//
// Opening the pidfd after the child started is race-free: the pid cannot
// name another process before the child is reaped, and only its Wait, after
// this returns, reaps it.
func awaitExit(pid int) error {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	// A non-blocking descriptor is registered with the poller by NewFile.
	f := os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:%d", pid))
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("pidfd %d: %w", pid, err)
	}
	var werr error
	err = rc.Read(func(fd uintptr) bool {
		werr = exitedNow(int(fd))
		return !errors.Is(werr, errRunning)
	})
	if err != nil {
		// The poller refused the descriptor: waiting for readiness
		// would fail at once, never block.
		return fmt.Errorf("poll pidfd %d: %w", pid, err)
	}
	return werr
}

// errRunning is exitedNow's answer for a process that has not exited.
var errRunning = errors.New("process still running")

// exitedNow reports whether the process of pidfd has exited, without reaping
// it (WNOWAIT) and without blocking (WNOHANG): nil once it has, errRunning
// before.
func exitedNow(pidfd int) error {
	for {
		// With WNOHANG and no exited child the kernel clears si_signo;
		// it is SIGCHLD when it reports one.
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PIDFD, pidfd, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return fmt.Errorf("waitid: %w", err)
		case info.Signo != int32(unix.SIGCHLD):
			return errRunning
		default:
			return nil
		}
	}
}
