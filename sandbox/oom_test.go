package sandbox

import (
	"testing"
	"time"

	"executor/oci"
)

// TestOOMVerdictIsAboutTheMainProcess runs real containers at a 64 MB limit
// where busybox tail, buffering an endless line from /dev/zero, is the
// memory hog: as the main process or as its child.
func TestOOMVerdictIsAboutTheMainProcess(t *testing.T) {
	root := busyboxRoot(t)
	cleanupCgroupParent(t)
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
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := "oom" + string(rune('a'+i))
			spec := testConfig(t, root, id)
			cfg, err := oci.Config(*spec)
			if err != nil {
				t.Fatal(err)
			}
			ct, err := startContainer(t.TempDir(), id, cfg, processSpec{Args: tc.args, Env: []string{oci.DefaultPATH}, Cwd: "/"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ct.stop(0); _ = ct.destroy() })
			r := &Runtime{ID: id, spec: Spec{MemoryMB: spec.MemoryMB}, ct: ct}
			if tc.survive {
				deadline := time.Now().Add(20 * time.Second)
				for ct.oomKills() == 0 {
					if time.Now().After(deadline) {
						t.Fatal("the child hog was not killed")
					}
					time.Sleep(10 * time.Millisecond)
				}
				ct.markOOM().survived()
				if err := r.outOfMemory(); err != nil {
					t.Fatalf("a living runtime whose child was killed before a successful exchange: %v", err)
				}
				ct.stop(0)
			}
			select {
			case <-ct.done:
			case <-time.After(20 * time.Second):
				t.Fatal("the main process did not end")
			}
			if kills := ct.oomKills(); kills == 0 {
				t.Fatalf("no OOM kill counted (cgroups %v): the premise failed", ct.cgPaths)
			}
			if ct.exit.oomKilled != tc.oom {
				t.Errorf("exit %+v (%s): oomKilled %v, want %v", ct.exit, ct.exit, ct.exit.oomKilled, tc.oom)
			}
			if err := r.outOfMemory(); (err != nil) != tc.oom {
				t.Errorf("verdict on a failed exchange: %v, want out of memory %v", err, tc.oom)
			}
		})
	}
}
