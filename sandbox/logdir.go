package sandbox

import (
	"errors"
	"io/fs"
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
//
// Log files are removed once read, on a goroutine (removeLater), so that
// the answer does not wait: two unlinks on the runtime's disk were a third
// of the warm path's log handling. A runtime may use one log id for every
// execution (development's "dev", or one the client names): it appends to
// the files, so the next execution is sent only once the files read before
// it are gone (removePending), or it would answer with both executions'
// logs, or lose its own to the earlier removal.
type logDir struct {
	mu       sync.RWMutex
	dir      *safefs.Dir
	released bool

	// rm guards pending and is held while they are removed, so that
	// removePending returns only once every earlier name is gone.
	rm      sync.Mutex
	pending []string
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

// removeLater queues name for removal, on a goroutine started when the
// queue was empty (one already queued takes it along otherwise).
func (l *logDir) removeLater(rtDir, name string, warn func(name string, err error)) {
	l.rm.Lock()
	start := len(l.pending) == 0
	l.pending = append(l.pending, name)
	l.rm.Unlock()
	if start {
		go l.removePending(rtDir, warn)
	}
}

// removePending removes the queued names. It returns once every name queued
// before the call is removed, by it or by a call in progress. A released
// directory went with its runtime's: nothing is left to remove.
func (l *logDir) removePending(rtDir string, warn func(name string, err error)) {
	l.rm.Lock()
	defer l.rm.Unlock()
	names := l.pending
	l.pending = nil
	for _, name := range names {
		err := l.do(rtDir, func(d *safefs.Dir) error { return d.Remove(name) })
		if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, errLogsReleased) {
			warn(name, err)
		}
	}
}
