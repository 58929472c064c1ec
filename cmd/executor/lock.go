package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// lockFileName is the file in the data dir whose lock marks the daemon that
// owns the data dir.
const lockFileName = "executor.lock"

// runLockDir holds the locks of what daemons share outside their data dir:
// their cgroup parents. Under /run: a reboot clears it with the daemons.
const runLockDir = "/run/executor"

var (
	// errDataDirInUse is what a daemon gets when another one holds the data dir.
	errDataDirInUse = errors.New("the data dir is in use by another executor")
	// errCgroupParentInUse likewise for the cgroup parent.
	errCgroupParentInUse = errors.New("the cgroup parent is in use by another executor")
)

// lockDataDir takes the data dir for this daemon alone; unlock releases it.
// A second daemon on the same data dir would take the first's runtimes,
// containers and leases for leftovers of a crash and remove them.
func lockDataDir(dir string) (unlock func(), err error) {
	unlock, err = lockFile(filepath.Join(dir, lockFileName))
	if errors.Is(err, errLocked) {
		return nil, fmt.Errorf("%w (%s): %s; give each executor a data dir of its own", errDataDirInUse, dir, strings.TrimPrefix(err.Error(), errLocked.Error()+": "))
	}
	return unlock, err
}

// lockCgroupParent takes the cgroup parent for this daemon alone. At start a
// daemon kills every process in the runtime cgroups under its parent (those
// of a crashed run) and at shutdown removes the parent: a second daemon with
// the same parent, even with a data dir of its own, would kill the first's
// runtimes. The lock lives in dir (runLockDir), named by a hash of the
// parent, since cgroup file systems hold no regular files.
func lockCgroupParent(dir, parent string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("lock dir: %w", err)
	}
	sum := sha256.Sum256([]byte(filepath.Clean(parent)))
	unlock, err = lockFile(filepath.Join(dir, "cgroup-"+hex.EncodeToString(sum[:8])+".lock"))
	if errors.Is(err, errLocked) {
		return nil, fmt.Errorf("%w (%s): %s; give each executor a cgroup parent of its own", errCgroupParentInUse, parent, strings.TrimPrefix(err.Error(), errLocked.Error()+": "))
	}
	return unlock, err
}

// errLocked is lockFile's error when another process holds the lock.
var errLocked = errors.New("locked")

// lockFile takes an exclusive flock(2) on path, held through an open file
// until unlock: the kernel drops it when the process ends, crashes
// included, so a stale lock cannot outlive its daemon and a restart after a
// crash is never refused. The file records the holder's pid for the message
// the next daemon gives. The descriptor is close-on-exec: runtimes (which
// outlive a crashed daemon) and libcontainer's init never inherit the lock.
// The file is never removed: unlinking a lock file lets a second daemon lock
// a new file while a third still holds the old one.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", errLocked, holder(f))
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// Only the holder writes the file, so the pid read by a refused daemon
	// is the holder's, or empty in the instant before it is written.
	err = f.Truncate(0)
	if err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: record pid: %w", path, err)
	}
	return func() {
		// Clear the pid while still holding the lock: a stale pid in a
		// free lock file would point an operator at an unrelated process.
		_ = f.Truncate(0)
		_ = f.Close()
	}, nil
}

// holder describes the daemon holding the lock of f from the pid it recorded.
func holder(f *os.File) string {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	if err != nil || pid <= 0 {
		return "its pid is not recorded yet (it is starting)"
	}
	return fmt.Sprintf("executor pid %d holds it", pid)
}
