package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// lockHelperEnv makes the test binary a daemon stand-in that takes a lock
// (lockKinds[kind] over dir, given as KIND:DIR), says "locked" and waits to
// be killed.
const lockHelperEnv = "EXECUTOR_TEST_LOCK_HELPER"

// lockKinds are the locks a daemon takes, each over a directory (the data
// dir; the lock dir of a fixed cgroup parent).
var lockKinds = map[string]struct {
	lock  func(dir string) (func(), error)
	inUse error
	// says is what a refusal names besides the holder's pid.
	says []string
}{
	"data dir": {lockDataDir, errDataDirInUse, []string{"data dir of its own"}},
	"cgroup parent": {func(dir string) (func(), error) { return lockCgroupParent(dir, "/executor-lock-test") },
		errCgroupParentInUse, []string{"/executor-lock-test", "cgroup parent of its own"}},
}

func init() {
	v := os.Getenv(lockHelperEnv)
	if v == "" {
		return
	}
	kind, dir, _ := strings.Cut(v, ":")
	if _, err := lockKinds[kind].lock(dir); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("locked")
	time.Sleep(time.Minute)
	os.Exit(0)
}

// startLockHolder runs a process that holds the lock until killed.
func startLockHolder(t *testing.T, kind, dir string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), lockHelperEnv+"="+kind+":"+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "locked" {
		t.Fatalf("lock holder said %q (%v)", line, err)
	}
	return cmd
}

func TestLocks(t *testing.T) {
	tests := []struct {
		name string
		// hold takes the lock first, as another daemon would; it returns
		// the pid the refusal must name.
		hold     func(t *testing.T, kind, dir string) (pid int)
		wantFree bool
	}{
		{"free", func(*testing.T, string, string) int { return 0 }, true},
		{"held by this process", func(t *testing.T, kind, dir string) int {
			unlock, err := lockKinds[kind].lock(dir)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(unlock)
			return os.Getpid()
		}, false},
		{"held by another process", func(t *testing.T, kind, dir string) int {
			return startLockHolder(t, kind, dir).Process.Pid
		}, false},
		{"released by unlock", func(t *testing.T, kind, dir string) int {
			unlock, err := lockKinds[kind].lock(dir)
			if err != nil {
				t.Fatal(err)
			}
			unlock()
			return 0
		}, true},
		{"released by the kernel when its holder dies of SIGKILL", func(t *testing.T, kind, dir string) int {
			cmd := startLockHolder(t, kind, dir)
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
			return 0
		}, true},
	}
	for kind, k := range lockKinds {
		for _, tc := range tests {
			t.Run(kind+"/"+tc.name, func(t *testing.T) {
				dir := t.TempDir()
				pid := tc.hold(t, kind, dir)
				before := lockFiles(t, dir)
				unlock, err := k.lock(dir)
				if tc.wantFree {
					if err != nil {
						t.Fatalf("lock refused: %v", err)
					}
					files := lockFiles(t, dir)
					if len(files) != 1 || strings.TrimSpace(files[0]) != fmt.Sprint(os.Getpid()) {
						t.Errorf("lock files %q, want one recording our pid %d", files, os.Getpid())
					}
					unlock()
					if files := lockFiles(t, dir); len(files) != 1 || files[0] != "" {
						t.Errorf("lock files %q after unlock, want one, empty", files)
					}
					return
				}
				if err == nil {
					unlock()
					t.Fatal("a second lock was granted")
				}
				if !errors.Is(err, k.inUse) {
					t.Errorf("error %v is not %v", err, k.inUse)
				}
				for _, want := range append([]string{fmt.Sprintf("executor pid %d holds it", pid)}, k.says...) {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not say %q", err, want)
					}
				}
				if got := lockFiles(t, dir); fmt.Sprint(got) != fmt.Sprint(before) {
					t.Errorf("a refused lock changed the lock files: %q -> %q", before, got)
				}
			})
		}
	}
}

// lockFiles returns the contents of the files in dir.
func lockFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(dir + "/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// Only the same cgroup parent, however spelt, is the same lock.
func TestCgroupParentLockIsPerParent(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockCgroupParent(dir, "/executor")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	for _, tc := range []struct {
		parent string
		free   bool
	}{
		{"/executor", false},
		{"/executor/", false},
		{"//executor/./", false},
		{"/executor-b", true},
		{"/executor/sub", true},
	} {
		u, err := lockCgroupParent(dir, tc.parent)
		if tc.free != (err == nil) {
			t.Errorf("lock of %q: %v, want free=%v", tc.parent, err, tc.free)
		}
		if err == nil {
			u()
		}
	}
}
