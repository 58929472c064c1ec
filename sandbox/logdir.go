package sandbox

import (
	"errors"
	"path/filepath"
	"sync"

	"executor/storage/safefs"
)

// errLogsReleased is the answer of a logDir whose runtime is being released.
var errLogsReleased = errors.New("the runtime's logs directory is released")

// logDir is a runtime's logs/ directory as the daemon holds it: opened by
// the first execution that reads a log and kept until the runtime is
// released, so that an execution does not resolve it again (that was a
// quarter of the warm path's log handling). The runtime writes inside
// logs/, never the directory itself (its mount point in the runtime), nor
// anything above it: the path up to it is the daemon's, and OpenDir refuses
// a link as its last element.
//
// Uses hold the read lock for their syscalls, so that release, which
// closes the directory under the write lock, never closes it beneath one
// (its descriptor could be reused by another file meanwhile). The directory
// is on the runtime's disk: release closes it before the disk is unmounted.
type logDir struct {
	mu       sync.RWMutex
	dir      *safefs.Dir
	released bool
}

// do runs fn on the directory, opening it first if need be; rtDir is the
// runtime's directory. An error opening it is fn's answer, and the next
// call tries again.
func (l *logDir) do(rtDir string, fn func(*safefs.Dir) error) error {
	l.mu.RLock()
	if l.dir == nil && !l.released {
		l.mu.RUnlock()
		if err := l.open(rtDir); err != nil {
			return err
		}
		l.mu.RLock()
	}
	defer l.mu.RUnlock()
	if l.released {
		return errLogsReleased
	}
	return fn(l.dir)
}

func (l *logDir) open(rtDir string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dir != nil || l.released {
		return nil
	}
	if rtDir == "" {
		return errors.New("the runtime has no directory yet")
	}
	d, err := safefs.OpenDir(filepath.Join(rtDir, "logs"), safefs.Options{})
	if err != nil {
		return err
	}
	l.dir = d
	return nil
}

// release closes the directory for good, once no use holds it.
func (l *logDir) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.released = true
	if l.dir != nil {
		l.dir.Close()
		l.dir = nil
	}
}
