package sandbox

import (
	"testing"
	"time"

	"executor/oci"
)

func TestOOMKillIsDetected(t *testing.T) {
	root := busyboxRoot(t)
	cleanupCgroupParent(t)
	spec := testConfig(t, root, "oom")
	cfg, err := oci.Config(*spec)
	if err != nil {
		t.Fatal(err)
	}
	// busybox tail buffers an endless line from /dev/zero: unbounded memory.
	ct, err := startContainer(t.TempDir(), "oom", cfg, processSpec{Args: []string{"tail", "/dev/zero"}, Env: []string{oci.DefaultPATH}, Cwd: "/"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ct.stop(0); _ = ct.destroy() })
	select {
	case <-ct.done:
	case <-time.After(20 * time.Second):
		t.Fatal("the hog was not killed")
	}
	if !ct.exit.oomKilled {
		t.Fatalf("exit %+v not seen as an OOM kill (cgroups %v, kills %d)", ct.exit, ct.cgPaths, ct.oomKills())
	}
}
