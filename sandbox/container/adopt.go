package container

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"

	"os"
	"strconv"
	"strings"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"
)

// ErrNotAdoptable is wrapped by Adopt's errors for a container that cannot be
// adopted: its state is missing or broken, or its main process is not
// running. The caller removes what it holds for it (RemoveLeftovers,
// KillStrays and SweepCgroups remove the container itself).
var ErrNotAdoptable = errors.New("container: not adoptable")

// ErrExitUnknown is the Err of an adopted container's ExitStatus: its main
// process was an earlier daemon's child, so this one cannot wait for it and
// never learns its exit code.
var ErrExitUnknown = errors.New("container: main process ended while adopted, exit code unknown")

// Adopt takes over container id, started by an earlier daemon on the same
// state directory (a live restore: the daemon exited without destroying its
// containers). main is the main process the container was started with, as
// the caller recorded it: Exec runs as its user, with its environment and
// directory, and Restart runs it again. output is the tail of the main
// process's output the earlier daemon kept, which Output goes on from.
//
// The container must be running. One whose state is missing fails with an
// error wrapping both ErrNotAdoptable and fs.ErrNotExist; one whose state
// is broken, or whose main process has exited or is paused or not yet
// started, fails with an error wrapping ErrNotAdoptable.
//
// An adopted Container works like a started one, but for what only the
// parent of the main process can have. Its output is read from the FIFO
// the main process writes on (executor-init drops what it writes while no
// daemon reads). Its exit is found through a pidfd, which turns readable
// when any process exits, child or not, and its exit code is the one
// executor-init reports on its exit FIFO (Process.ReportsExit); where none
// is reported (the main process is not executor-init, or was killed before
// it could report, or the container was started by a daemon without exit
// FIFOs) Exit has Code -1 and Err wrapping ErrExitUnknown, and OOMKilled is
// judged from the cgroup's kill counter (see diedOfOOM). Restart makes an
// ordinary started container again.
func (r *Runner) Adopt(id string, main Process, output string) (*Container, error) {
	if !strings.HasPrefix(id, IDPrefix) {
		return nil, fmt.Errorf("container: id %q does not begin with %q", id, IDPrefix)
	}
	// Files of the earlier daemon's process (a parked start's pipe) are
	// gone; a restart runs the command directly.
	main.extraFiles = nil
	lc, err := libcontainer.Load(r.cfg.StateDir, id)
	if errors.Is(err, libcontainer.ErrNotExist) {
		return nil, fmt.Errorf("container: adopt %s: %w: %w", id, ErrNotAdoptable, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("container: adopt %s: %w: load: %w", id, ErrNotAdoptable, err)
	}
	// Status checks the recorded init against /proc (pid and start time):
	// Stopped when it is gone or a zombie.
	status, err := lc.Status()
	if err != nil {
		return nil, fmt.Errorf("container: adopt %s: %w: %w", id, ErrNotAdoptable, err)
	}
	if status != libcontainer.Running {
		return nil, fmt.Errorf("container: adopt %s: %w: container is %s", id, ErrNotAdoptable, status)
	}
	st, err := lc.State()
	if err != nil {
		return nil, fmt.Errorf("container: adopt %s: %w: %w", id, ErrNotAdoptable, err)
	}
	// Opened before the pidfd is checked once more: a report written
	// after this is ours to read. Missing FIFOs (a container of a daemon
	// before them) leave the output and the exit code unknown.
	outR, err := openFIFO(fifoPath(r.cfg.StateDir, id, outputFIFO))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("container: adopt %s: %w: output: %w", id, ErrNotAdoptable, err)
	}
	exitR, err := openFIFO(fifoPath(r.cfg.StateDir, id, exitFIFO))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		closeAll(outR)
		return nil, fmt.Errorf("container: adopt %s: %w: exit report: %w", id, ErrNotAdoptable, err)
	}
	pidfd, err := openInitPidfd(st.InitProcessPid, st.InitProcessStartTime)
	if err != nil {
		closeAll(outR, exitR)
		return nil, fmt.Errorf("container: adopt %s: %w: %w", id, ErrNotAdoptable, err)
	}
	cfg := lc.Config()
	// Kills counted before the adoption (newContainer's mark) were judged
	// by the earlier daemon, or survived by the main process, which is
	// still running: only a rise past the mark can explain its death.
	c := newContainer(r, lc, &cfg, main)
	c.pidfd = pidfd
	_, _ = c.out.Write([]byte(output))
	drained := closedChan()
	if outR != nil {
		drained = c.drain(outR)
	}
	go func() {
		err := awaitReadable(pidfd)
		pidfd.Close()
		<-drained
		c.exit = adoptedExit(exitR, err)
		c.exit.OOMKilled = c.diedOfOOM(c.exit)
		close(c.done)
	}()
	return c, nil
}

// adoptedExit is how an adopted container's main process ended, from what
// it reported on exitR (nil when it has no exit FIFO) once it exited; werr
// is waiting's error.
func adoptedExit(exitR *os.File, werr error) ExitStatus {
	if werr != nil {
		// Waiting itself failed (it does not, short of a kernel refusing
		// poll(2) on a valid descriptor): Done is closed all the same, as
		// runMain does when waiting fails, so nobody waits for ever; Stop
		// and Destroy then find out from libcontainer whether the process
		// is still there.
		closeAll(exitR)
		return ExitStatus{Code: -1, Err: fmt.Errorf("%w: waiting failed: %w", ErrExitUnknown, werr)}
	}
	if exitR == nil {
		return ExitStatus{Code: -1, Err: fmt.Errorf("%w: it has no exit FIFO", ErrExitUnknown)}
	}
	defer exitR.Close()
	code, err := readExitReport(exitR)
	if err != nil {
		// Killed before it could report (SIGKILL, as Stop sends), or not
		// executor-init.
		return ExitStatus{Code: -1, Err: fmt.Errorf("%w: %w", ErrExitUnknown, err)}
	}
	return ExitStatus{Code: code}
}

func closedChan() <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

func closeAll(files ...*os.File) {
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
}

// openInitPidfd opens a pidfd of a container's init, pid, which started at
// startTime (clock ticks since boot, as libcontainer records it). The
// process is not this one's child, so the pid may have been reused between
// the caller's check and pidfd_open: the start time read after the open
// tells. Had the init been gone before the open and the pid been taken by
// another process, the start time would differ; matching it, the init held
// the pid from before the open to after it, so the pidfd is the init's.
// A pidfd already readable (the init exited since) is refused as well.
func openInitPidfd(pid int, startTime uint64) (*os.File, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("no init process recorded (pid %d)", pid)
	}
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	// A non-blocking descriptor is registered with the poller by NewFile.
	f := os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:%d", pid))
	got, err := procStartTime(pid)
	if err != nil {
		f.Close()
		return nil, err
	}
	if got != startTime {
		f.Close()
		return nil, fmt.Errorf("init process %d is gone: pid taken by a process started at %d, not %d", pid, got, startTime)
	}
	exited, err := pidfdReadable(fd)
	if err == nil && exited {
		err = fmt.Errorf("init process %d has exited", pid)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// procStartTime reads the start time of process pid, in clock ticks since
// boot: field 22 of /proc/<pid>/stat, the figure libcontainer records as
// InitProcessStartTime.
func procStartTime(pid int) (uint64, error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("process %d: %w", pid, err)
	}
	// The command name (field 2) is in parentheses and may hold spaces
	// and parentheses itself: the fields that follow begin after the
	// last ')'. Field 3 (the state) is the first of them, so field 22 is
	// the 20th.
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return 0, fmt.Errorf("process %d: malformed stat %q", pid, raw)
	}
	f := strings.Fields(string(raw[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("process %d: malformed stat %q", pid, raw)
	}
	n, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("process %d: start time %q: %w", pid, f[19], err)
	}
	return n, nil
}

// awaitReadable returns once the process of pidfd f has exited. It waits in
// the runtime's poller, as awaitExit does, but asks poll(2) rather than
// waitid(2): waitid on a pidfd answers ECHILD for a process that is not
// this one's child, whereas a pidfd turns readable when its process exits
// whoever its parent is (and stays readable once it is reaped). Where the
// poller refuses the descriptor it blocks a thread in poll(2) instead.
func awaitReadable(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var perr error
	err = rc.Read(func(fd uintptr) bool {
		var exited bool
		exited, perr = pidfdReadable(int(fd))
		return exited || perr != nil
	})
	if err == nil {
		return perr
	}
	// The poller refused the descriptor: wait in poll(2), holding a
	// thread for the process's life.
	var exited bool
	cerr := rc.Control(func(fd uintptr) {
		for !exited && perr == nil {
			exited, perr = pidfdPoll(int(fd), -1)
		}
	})
	return errors.Join(cerr, perr)
}

// pidfdReadable reports, without blocking, whether the process of pidfd has
// exited.
func pidfdReadable(pidfd int) (bool, error) { return pidfdPoll(pidfd, 0) }

// pidfdPoll waits up to timeout ms (for ever when -1) for pidfd to turn
// readable, that is, for its process to exit: POLLIN from the moment it is a
// zombie, with POLLHUP too once it is reaped (newer kernels).
func pidfdPoll(pidfd, timeout int) (bool, error) {
	for {
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, timeout)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return false, fmt.Errorf("poll pidfd: %w", err)
		case n == 0:
			return false, nil
		case fds[0].Revents&(unix.POLLIN|unix.POLLHUP) != 0:
			return true, nil
		default:
			return false, fmt.Errorf("poll pidfd: events %#x", fds[0].Revents)
		}
	}
}

// signalMain sends sig to the main process: through the libcontainer
// process for a container this process started; for an adopted or spawned
// one, which has none, through the pidfd Adopt opened or the spawner sent, which cannot reach another process
// should the pid be reused (libcontainer's own Signal on a loaded container
// checks the pid's start time, then signals by pid: a narrow race). Once
// the main process has exited and the pidfd is closed, it returns an error.
func (c *Container) signalMain(sig unix.Signal) error {
	if c.proc != nil {
		return c.proc.Signal(sig)
	}
	if c.pidfd == nil {
		return ErrNotRunning
	}
	return pidfdSignal(c.pidfd, sig)
}
