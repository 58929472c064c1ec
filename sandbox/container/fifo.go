package container

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// The main process's output and exit code go through FIFOs in the
// container's state directory (<StateDir>/<id>, libcontainer's, removed with
// it by Destroy), rather than through anonymous pipes, because a FIFO can be
// opened again by path: a daemon that adopts the container after a restart
// reads the output from then on, and the exit code executor-init reports,
// where the pipes of the daemon that started it died with that daemon.
// The state directory is the daemon's alone (0700 above it): runtimes never
// see these paths, only the descriptors they were started with.
const (
	// outputFIFO carries the main process's stdout and stderr.
	outputFIFO = "output"
	// exitFIFO carries the exit code executor-init reports as it exits
	// (Process.ReportsExit).
	exitFIFO = "exit"
)

// ExitFDFlag is executor-init's argument naming the descriptor it reports
// its command's exit code on (see Process.ReportsExit).
const ExitFDFlag = "--exit-fd"

// maxExitReport bounds what is read of an exit report: a code and a newline.
const maxExitReport = 16

// makeFIFO makes a FIFO at path and opens both ends: the read end in the
// runtime's poller, the write end blocking, as a process expects its stdout
// to be (the mode belongs to the open file, which the process shares).
// Opening the read end first lets the write end open without waiting.
func makeFIFO(path string) (r, w *os.File, err error) {
	if err := unix.Mkfifo(path, 0o600); err != nil {
		return nil, nil, fmt.Errorf("make FIFO %s: %w", path, err)
	}
	r, err = openFIFO(path)
	if err != nil {
		return nil, nil, err
	}
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		r.Close()
		return nil, nil, fmt.Errorf("open FIFO %s: %w", path, err)
	}
	return r, os.NewFile(uintptr(fd), path), nil
}

// openFIFO opens the read end of the FIFO at path, without waiting for a
// writer and in the runtime's poller. Anything but a FIFO is refused, and a
// missing one fails with an error wrapping fs.ErrNotExist.
func openFIFO(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("open FIFO: %w", err)
	}
	fi, err := f.Stat()
	if err == nil && fi.Mode().Type() != fs.ModeNamedPipe {
		err = fmt.Errorf("%s is not a FIFO (%s)", path, fi.Mode().Type())
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// readExitReport reads, without waiting, the exit code executor-init
// reported on f once its process has exited: one decimal code from 0 to
// 255 and a newline, nothing else.
func readExitReport(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	buf := make([]byte, maxExitReport+1)
	var n int
	var rerr error
	if err := rc.Control(func(fd uintptr) {
		for {
			n, rerr = unix.Read(int(fd), buf)
			if !errors.Is(rerr, unix.EINTR) {
				return
			}
		}
	}); err != nil {
		return 0, err
	}
	if errors.Is(rerr, unix.EAGAIN) || (rerr == nil && n == 0) {
		return 0, errors.New("no exit code was reported")
	}
	if rerr != nil {
		return 0, rerr
	}
	s := string(buf[:n])
	if n > maxExitReport || len(s) < 2 || s[len(s)-1] != '\n' {
		return 0, fmt.Errorf("malformed exit report %q", s)
	}
	code, err := strconv.Atoi(s[:len(s)-1])
	if err != nil || code < 0 || code > 255 || strconv.Itoa(code) != s[:len(s)-1] {
		return 0, fmt.Errorf("malformed exit report %q", s)
	}
	return code, nil
}

// fifoPath is the path of FIFO name of container id under stateDir.
func fifoPath(stateDir, id, name string) string {
	return filepath.Join(stateDir, id, name)
}
