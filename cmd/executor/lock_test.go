package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// lockHelperEnv makes the test binary a daemon stand-in that takes the lock
// of the data dir it names, says "locked" and waits to be killed.
const lockHelperEnv = "EXECUTOR_TEST_LOCK_HELPER"

func init() {
	dir := os.Getenv(lockHelperEnv)
	if dir == "" {
		return
	}
	if _, err := lockDataDir(dir); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("locked")
	time.Sleep(time.Minute)
	os.Exit(0)
}

// startLockHolder runs a process that holds dir's lock until killed.
func startLockHolder(t *testing.T, dir string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), lockHelperEnv+"="+dir)
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

func TestLockDataDir(t *testing.T) {
	tests := []struct {
		name string
		// hold takes the lock first, as another daemon would; it returns
		// the pid the refusal must name, 0 when there must be none.
		hold     func(t *testing.T, dir string) (pid int)
		wantFree bool
	}{
		{"free dir", func(*testing.T, string) int { return 0 }, true},
		{"held by this process", func(t *testing.T, dir string) int {
			unlock, err := lockDataDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(unlock)
			return os.Getpid()
		}, false},
		{"held by another process", func(t *testing.T, dir string) int {
			return startLockHolder(t, dir).Process.Pid
		}, false},
		{"released by unlock", func(t *testing.T, dir string) int {
			unlock, err := lockDataDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			unlock()
			return 0
		}, true},
		{"released by the kernel when its holder dies of SIGKILL", func(t *testing.T, dir string) int {
			cmd := startLockHolder(t, dir)
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
			return 0
		}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			pid := tc.hold(t, dir)
			unlock, err := lockDataDir(dir)
			if tc.wantFree {
				if err != nil {
					t.Fatalf("lock refused: %v", err)
				}
				b, _ := os.ReadFile(filepath.Join(dir, lockFileName))
				if got := strings.TrimSpace(string(b)); got != fmt.Sprint(os.Getpid()) {
					t.Errorf("lock file records %q, want our pid %d", got, os.Getpid())
				}
				unlock()
				if b, _ := os.ReadFile(filepath.Join(dir, lockFileName)); len(b) != 0 {
					t.Errorf("lock file still records %q after unlock", b)
				}
				return
			}
			if err == nil {
				unlock()
				t.Fatal("a second lock on a held data dir was granted")
			}
			if !errors.Is(err, errDataDirInUse) {
				t.Errorf("error %v is not errDataDirInUse", err)
			}
			if want := fmt.Sprintf("pid %d ", pid); !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not name the holder (%q)", err, want)
			}
			if !strings.Contains(err.Error(), dir) {
				t.Errorf("error %q does not name the data dir", err)
			}
		})
	}
}
