package testenv

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestStartTiedSurvivesRetiredThreads retires many OS threads the way the
// netns helpers do (a goroutine exits while locked) and checks that a child
// started with Pdeathsig is still alive afterwards.
func TestStartTiedSurvivesRetiredThreads(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	done, err := StartTied(cmd)
	if err != nil {
		t.Fatal(err)
	}
	exited := false
	t.Cleanup(func() {
		cmd.Process.Kill()
		if !exited {
			<-done
		}
	})

	for round := 0; round < 50; round++ {
		var wg sync.WaitGroup
		for i := 0; i < 2*runtime.GOMAXPROCS(0)+4; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
				time.Sleep(time.Millisecond)
			}()
		}
		wg.Wait()
	}
	select {
	case err := <-done:
		exited = true
		t.Fatalf("the child died while threads were retired: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
}
