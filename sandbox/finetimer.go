package sandbox

import (
	"context"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// fineTimer sleeps for d, not for d rounded up to whole milliseconds as
// Go's timers do in an otherwise idle process (the poller waits in whole
// milliseconds: 200 µs asked woke after 1.1 ms, 1 ms after 1.1): a
// timerfd read through the poller wakes at its expiry (1.04 ms for 1 ms),
// and costs no thread while it waits.
type fineTimer struct {
	f  *os.File
	rc syscall.RawConn // f's, to arm it without taking it out of the poller
}

func newFineTimer() (*fineTimer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("timerfd_create", err)
	}
	f := os.NewFile(uintptr(fd), "timerfd")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &fineTimer{f: f, rc: rc}, nil
}

// sleep returns after d, or with ctx's error once ctx ends.
func (t *fineTimer) sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	its := unix.ItimerSpec{Value: unix.NsecToTimespec(max(d, time.Microsecond).Nanoseconds())}
	var serr error
	if err := t.rc.Control(func(fd uintptr) { serr = unix.TimerfdSettime(int(fd), 0, &its, nil) }); err != nil {
		return err
	}
	if serr != nil {
		return os.NewSyscallError("timerfd_settime", serr)
	}
	// A read deadline is how a read waiting in the poller is woken; one
	// left by an earlier sleep's context is cleared first.
	if err := t.f.SetReadDeadline(time.Time{}); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = t.f.SetReadDeadline(time.Now()) })
	defer stop()
	var buf [8]byte
	_, err := t.f.Read(buf[:])
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	return err
}

func (t *fineTimer) close() error { return t.f.Close() }
