package sandbox

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"path/filepath"
	"strconv"
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
// Each execution is lent a log id (lend): the runtime is asked to write its
// files under it, and once they are read and emptied (safefs Drain) the id
// goes back (giveBack) for a later execution, whose runtime appends to the
// same two files. An id is lent to one execution at a time, so concurrent
// executions never share files; one whose exchange failed, or whose files
// could not be taken, is retired instead: its files are removed and the id
// never lent again (the runtime may still write there). Ids begin with a
// random part made per logDir, so that a runtime adopted by a later daemon
// never has an earlier daemon's files taken as its own. Before lending, the
// runtime created and the daemon unlinked two files per execution: most of
// the warm path's log handling, and on a file system that scans recently
// freed inodes at each allocation, most of the runtime's own work.
//
// Files of an id the runtime picked itself (one that ignores the header)
// are removed once read, on a goroutine (removeLater), so that the answer
// does not wait. A runtime may use one log id for every execution
// (development's "dev"): it appends to the files, so the next execution is
// sent only once the files read before it are gone (removePending), or it
// would answer with both executions' logs, or lose its own to the earlier
// removal.
type logDir struct {
	mu       sync.RWMutex
	dir      *safefs.Dir
	released bool

	// rm guards pending and is held while they are removed, so that
	// removePending returns only once every earlier name is gone.
	rm      sync.Mutex
	pending []string

	// ids guards the lending of log ids.
	ids    sync.Mutex
	idBase string   // the ids' random part, made at the first lend
	idNext int      // the number of the next id made
	idFree []string // ids given back, their files empty
}

// lend returns a log id no other execution holds, whose files (if any)
// are empty.
func (l *logDir) lend() string {
	l.ids.Lock()
	defer l.ids.Unlock()
	if n := len(l.idFree); n > 0 {
		id := l.idFree[n-1]
		l.idFree = l.idFree[:n-1]
		return id
	}
	if l.idBase == "" {
		var b [4]byte
		_, _ = rand.Read(b[:]) // never fails (crypto/rand)
		l.idBase = "e" + hex.EncodeToString(b[:]) + "-"
	}
	id := l.idBase + strconv.Itoa(l.idNext)
	l.idNext++
	return id
}

// giveBack returns a lent id whose files were taken (read and emptied).
func (l *logDir) giveBack(id string) {
	l.ids.Lock()
	l.idFree = append(l.idFree, id)
	l.ids.Unlock()
}

// retire removes a lent id's files, which are not known to be empty, and
// never lends it again.
func (l *logDir) retire(rtDir, id string, warn func(name string, err error)) {
	l.removeLater(rtDir, id+"_logs.log", warn)
	l.removeLater(rtDir, id+"_errors.log", warn)
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
