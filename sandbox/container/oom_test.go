package container

import (
	"testing"
	"time"

	"executor/oci"
)

// outOfMemory is the verdict a caller reaches on a failed exchange with the
// runtime, as package sandbox reaches it: a kill counted since the last
// verdict may have the main process as its victim still on its way out, so
// it is given a moment; without one there is nothing to wait for.
func outOfMemory(c *Container) bool {
	if !c.Exited() && c.OOMKillsPending() {
		select {
		case <-c.Done():
		case <-time.After(2 * time.Second):
		}
	}
	return c.Exited() && c.Exit().OOMKilled
}

// TestOOMVerdictIsAboutTheMainProcess runs real containers at a 64 MB limit
// where busybox tail, buffering an endless line from /dev/zero, is the
// memory hog: as the main process or as its child.
func TestOOMVerdictIsAboutTheMainProcess(t *testing.T) {
	root := busyboxRoot(t)
	tests := []struct {
		name string
		args []string
		// survive marks the kills so far as outlived, as a successful
		// exchange does, once the child has been killed; the main process
		// is then killed with SIGKILL from outside.
		survive bool
		oom     bool
	}{
		{name: "main process killed", args: []string{"tail", "/dev/zero"}, oom: true},
		{name: "child killed, shell passes it on", args: []string{"sh", "-c", "tail /dev/zero; exit $?"}, oom: true},
		{name: "child killed, then ordinary exit", args: []string{"sh", "-c", "tail /dev/zero; exit 1"}},
		{name: "child killed and outlived, then SIGKILL", args: []string{"sh", "-c", "tail /dev/zero; exec sleep 600"}, survive: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRunner(t, Config{})
			c := start(t, r, NewID(), testSpec(root), Process{Args: tc.args, Env: []string{oci.DefaultPATH}, Cwd: "/"})
			if tc.survive {
				deadline := time.Now().Add(20 * time.Second)
				for c.oomKills() == 0 {
					if time.Now().After(deadline) {
						t.Fatal("the child hog was not killed")
					}
					time.Sleep(10 * time.Millisecond)
				}
				c.MarkOOM().Survived()
				if c.OOMKillsPending() {
					t.Error("kills pending after they were marked survived")
				}
				if outOfMemory(c) {
					t.Fatalf("a living runtime whose child was killed before a successful exchange: exit %+v", c.Exit())
				}
				c.Stop(0)
			}
			waitDone(t, c)
			if kills := c.oomKills(); kills == 0 {
				t.Fatalf("no OOM kill counted (cgroups %v): the premise failed", c.cgPaths)
			}
			if c.Exit().OOMKilled != tc.oom {
				t.Errorf("exit %+v (%s): OOMKilled %v, want %v", c.Exit(), c.Exit(), c.Exit().OOMKilled, tc.oom)
			}
			if got := outOfMemory(c); got != tc.oom {
				t.Errorf("verdict on a failed exchange: out of memory %v, want %v", got, tc.oom)
			}
		})
	}
}

// A nil container's mark marks nothing: callers take it before they know
// whether the runtime has a container.
func TestOOMMarkOfNoContainer(t *testing.T) {
	var c *Container
	c.MarkOOM().Survived()
}
