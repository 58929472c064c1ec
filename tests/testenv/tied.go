package testenv

import (
	"os/exec"
	"runtime"
)

// StartTied starts cmd and returns a channel that receives cmd.Wait's result.
//
// A child started with SysProcAttr.Pdeathsig gets that signal when the OS
// thread that forked it exits, not when the process does, and Go retires a
// thread whenever a goroutine exits while locked to it (the netns helpers do
// exactly that on purpose). A plain cmd.Start therefore lets any later
// namespace switch kill the child at random. StartTied forks from a thread
// locked to one goroutine that only waits for the child, so no other
// goroutine can run on it, and it lives exactly as long as the child.
func StartTied(cmd *exec.Cmd) (<-chan error, error) {
	started := make(chan error, 1)
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		done <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return done, nil
}
