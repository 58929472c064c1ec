package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Another host user (nobody) learns every runtime's directory from the
// mount table, but can neither list it nor read the tenant's source, build
// output or logs in it.
func TestRuntimeFilesPrivateOnTheHost(t *testing.T) {
	x := startExecutor(t)
	createIdle(t, x, "private", nil)
	if out, code := command(t, x, "private", "echo built > /mnt/code/out.txt && echo log > /mnt/logs/l.log"); code != 200 {
		t.Fatalf("command: %d %s", code, out)
	}
	dirs, err := filepath.Glob(filepath.Join(x.dataDir, "runtimes", "rt-*"))
	if err != nil || len(dirs) != 1 {
		t.Fatalf("runtime directories: %v, %v", dirs, err)
	}
	dir := dirs[0]
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if !strings.Contains(string(mounts), dir) {
		t.Fatalf("the runtime directory %s is not in the mount table: the test would not show what nobody can find", dir)
	}
	for _, p := range []string{"src/code.tar.gz", "builds/out.txt", "logs/l.log"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Fatalf("root cannot see %s: %v", p, err)
		}
	}
	asNobody := func(args ...string) (string, error) {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, args := range [][]string{
		{"/bin/ls", dir},
		{"/bin/cat", filepath.Join(dir, "src", "code.tar.gz")},
		{"/bin/cat", filepath.Join(dir, "builds", "out.txt")},
		{"/bin/cat", filepath.Join(dir, "logs", "l.log")},
		{"/bin/ls", filepath.Join(dir, "root", "upper")},
	} {
		out, err := asNobody(args...)
		if err == nil {
			t.Errorf("nobody ran %v: %q", args, out)
		} else if !strings.Contains(out, "Permission denied") {
			t.Errorf("%v as nobody failed, but not for want of permission: %q", args, out)
		}
	}
}
