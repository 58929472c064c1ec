package testenv

import (
	"fmt"
	"os"
	"os/exec"

	"golang.org/x/sys/unix"
)

// etcLockPath serializes the tests that change the host's /etc (the
// rootless tests' user accounts) with those that watch /etc for writes a
// hostile image must never make (the images package's unpack tests): go
// test runs packages in parallel, and useradd renames files in /etc.
const etcLockPath = "/run/executor-tests-etc.lock"

// LockHostEtc takes the /etc lock; unlock releases it.
func LockHostEtc() (unlock func(), err error) {
	f, err := os.OpenFile(etcLockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("the /etc lock: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("the /etc lock: %w", err)
	}
	return func() { f.Close() }, nil
}

// etcCommand runs a command that changes /etc (useradd, usermod, userdel)
// under the /etc lock and returns its combined output.
func etcCommand(name string, args ...string) ([]byte, error) {
	unlock, err := LockHostEtc()
	if err != nil {
		return nil, err
	}
	defer unlock()
	return exec.Command(name, args...).CombinedOutput()
}
