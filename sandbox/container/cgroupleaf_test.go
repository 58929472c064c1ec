package container

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestInTheWay(t *testing.T) {
	tests := []struct {
		own, parent string
		want        bool
	}{
		{"/system.slice/executor.service", "/system.slice/executor.service", true},
		{"/system.slice/executor.service", "/system.slice/executor.service/runtimes", true},
		{"/", "/executor", false},
		{"/system.slice/executor.service", "/executor", false},
		{"/executor/supervisor", "/executor", false},
		{"/exec", "/executor", false},
		{"/executor-2", "/executor", false},
	}
	for _, tc := range tests {
		if got := inTheWay(tc.own, tc.parent); got != tc.want {
			t.Errorf("inTheWay(%q, %q) = %v, want %v", tc.own, tc.parent, got, tc.want)
		}
	}
}

func TestUnifiedCgroup(t *testing.T) {
	got, err := unifiedCgroup("0::/system.slice/executor.service\n")
	if err != nil || got != "/system.slice/executor.service" {
		t.Errorf("pure v2: %q, %v", got, err)
	}
	got, err = unifiedCgroup("4:memory:/a\n1:cpu:/b\n0::/user.slice/x\n")
	if err != nil || got != "/user.slice/x" {
		t.Errorf("hybrid: %q, %v", got, err)
	}
	if got, err := unifiedCgroup("4:memory:/a\n1:cpu:/b\n"); err == nil {
		t.Errorf("v1 only: %q, want an error", got)
	}
}

// cgroup2Mount finds the cgroup v2 hierarchy: /sys/fs/cgroup on a pure v2
// host, /sys/fs/cgroup/unified on a hybrid one (as CI's). It asks the file
// systems themselves: a scan of /proc/self/mountinfo once missed the
// hierarchy while other tests mounted and unmounted beside this one.
func cgroup2Mount(t *testing.T) string {
	t.Helper()
	for _, dir := range []string{cgroupRoot, filepath.Join(cgroupRoot, "unified")} {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return dir
		}
	}
	t.Fatal("no cgroup2 file system mounted: the supervisor leaf needs one to be tested")
	return ""
}

// sleeper starts a process in cgroup cg of the hierarchy at mount, as a
// service manager starts a daemon in its unit's cgroup.
func sleeper(t *testing.T, mount, cg string) int {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	pid := cmd.Process.Pid
	if err := os.WriteFile(filepath.Join(mount, cg, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	return pid
}

func cgroupOf(t *testing.T, pid int) string {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	cg, err := unifiedCgroup(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	return cg
}

// unitCgroup makes a cgroup for one case, as a service manager makes a
// unit's, and removes it and whatever the case made below it at the end.
func unitCgroup(t *testing.T, mount, name string) string {
	t.Helper()
	cg := path.Join(cgroupOf(t, os.Getpid()), fmt.Sprintf("executor-leaf-test-%d-%s", os.Getpid(), name))
	if err := os.Mkdir(filepath.Join(mount, cg), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Children first: walk the tree and remove the deepest directories
		// first (the processes are gone by now: cleanups run last in, first out).
		var dirs []string
		_ = filepath.WalkDir(filepath.Join(mount, cg), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil {
				t.Errorf("remove cgroup %s: %v", dirs[i], err)
			}
		}
	})
	return cg
}

// wantControllersHandedDown checks that cg enables for its children every
// runtime controller it has.
func wantControllersHandedDown(t *testing.T, mount, cg string) {
	t.Helper()
	have, _ := os.ReadFile(filepath.Join(mount, cg, "cgroup.controllers"))
	enabled, _ := os.ReadFile(filepath.Join(mount, cg, "cgroup.subtree_control"))
	for _, c := range runtimeControllers() {
		if slices.Contains(strings.Fields(string(have)), c) && !slices.Contains(strings.Fields(string(enabled)), c) {
			t.Errorf("cgroup %s has %s but does not enable it for its children (%q)", cg, c, enabled)
		}
	}
}

// TestEnterSupervisorCgroup moves real processes on the host's cgroup v2
// hierarchy. CI's hybrid hierarchy has none of the runtimes' controllers:
// there the moves are tested; the pure v2 guest of `make test-cgroup2` runs
// this test too, with the controllers.
func TestEnterSupervisorCgroup(t *testing.T) {
	requireRoot(t)
	mount := cgroup2Mount(t)
	t.Logf("cgroup2 at %s", mount)

	// On v1 the daemon may stay where it is: the Runner leaves it there.
	// (On v2 the Runner would move this test process: the cases below
	// move sleepers instead.)
	if r := newRunner(t, Config{Unconfined: true}); !r.Cgroup2() {
		if leaf, err := r.EnterSupervisorCgroup(os.Getpid()); leaf != "" || err != nil {
			t.Fatalf("cgroup v1: %q, %v; want nothing done", leaf, err)
		}
	}

	t.Run("parent is the daemon's own cgroup", func(t *testing.T) {
		unit := unitCgroup(t, mount, "own")
		pid := sleeper(t, mount, unit)
		leaf, err := enterSupervisorCgroup(mount, unit, pid)
		if err != nil {
			t.Fatal(err)
		}
		if want := unit + "/supervisor"; leaf != want || cgroupOf(t, pid) != want {
			t.Fatalf("leaf %q, process in %q; want both %q", leaf, cgroupOf(t, pid), want)
		}
		wantControllersHandedDown(t, mount, unit)
		// A restart (the leaf is there already) finds the daemon in the leaf
		// and leaves it.
		if leaf, err := enterSupervisorCgroup(mount, unit, pid); err != nil || leaf != "" {
			t.Fatalf("second call: %q, %v", leaf, err)
		}
	})
	t.Run("the daemon's other processes move with it", func(t *testing.T) {
		// The spawner, the daemon's child, starts in the daemon's cgroup:
		// left there, it would keep the parent from handing controllers
		// down.
		unit := unitCgroup(t, mount, "others")
		pid := sleeper(t, mount, unit)
		spawner := sleeper(t, mount, unit)
		leaf, err := enterSupervisorCgroup(mount, unit, pid, spawner)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []int{pid, spawner} {
			if got := cgroupOf(t, p); got != leaf {
				t.Errorf("process %d in %q, want %q", p, got, leaf)
			}
		}
		wantControllersHandedDown(t, mount, unit)
	})
	t.Run("parent below the daemon's own cgroup", func(t *testing.T) {
		unit := unitCgroup(t, mount, "above")
		pid := sleeper(t, mount, unit)
		parent := unit + "/runtimes/all"
		leaf, err := enterSupervisorCgroup(mount, parent, pid)
		if err != nil {
			t.Fatal(err)
		}
		if want := parent + "/supervisor"; leaf != want || cgroupOf(t, pid) != want {
			t.Fatalf("leaf %q, process in %q; want both %q", leaf, cgroupOf(t, pid), want)
		}
		for _, cg := range []string{unit, unit + "/runtimes", parent} {
			wantControllersHandedDown(t, mount, cg)
		}
	})
	t.Run("daemon elsewhere stays", func(t *testing.T) {
		unit := unitCgroup(t, mount, "elsewhere")
		if err := os.Mkdir(filepath.Join(mount, unit, "daemon"), 0o755); err != nil {
			t.Fatal(err)
		}
		pid := sleeper(t, mount, unit+"/daemon")
		for _, parent := range []string{unit + "/runtimes", unit} {
			if leaf, err := enterSupervisorCgroup(mount, parent, pid); err != nil || leaf != "" {
				t.Fatalf("parent %s: %q, %v", parent, leaf, err)
			}
		}
		if got := cgroupOf(t, pid); got != unit+"/daemon" {
			t.Fatalf("process moved to %q", got)
		}
		if _, err := os.Stat(filepath.Join(mount, unit, "runtimes")); !os.IsNotExist(err) {
			t.Fatalf("a cgroup was made for a daemon not in the way: %v", err)
		}
	})
	t.Run("another process left in the parent", func(t *testing.T) {
		unit := unitCgroup(t, mount, "shared")
		pid := sleeper(t, mount, unit)
		other := sleeper(t, mount, unit)
		_, err := enterSupervisorCgroup(mount, unit, pid)
		have, _ := os.ReadFile(filepath.Join(mount, unit, "cgroup.controllers"))
		// Only domain controllers are refused beside processes.
		domain := slices.ContainsFunc(strings.Fields(string(have)), func(c string) bool { return c == "memory" || c == "io" || c == "cpu" })
		switch {
		case domain && (err == nil || !strings.Contains(err.Error(), strconv.Itoa(other))):
			t.Fatalf("got %v, want an error naming process %d", err, other)
		case !domain && err != nil:
			t.Fatalf("without domain controllers (%q) nothing is refused: %v", have, err)
		}
		if got := cgroupOf(t, pid); got != unit+"/supervisor" {
			t.Fatalf("the daemon is in %q", got)
		}
	})
}
