package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// setupRootless is SetupRootless for a test that needs root; the e2e suite
// runs as root in CI, so a non-root run fails rather than skips.
func setupRootless(t *testing.T, cfg RootlessConfig) *Rootless {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the rootless setup needs root (useradd, /etc/subuid, /dev/net/tun, cgroups); CI runs these tests as root")
	}
	r, err := SetupRootless(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	})
	return r
}

func tunMode(t *testing.T) os.FileMode {
	t.Helper()
	st, err := os.Stat(tunPath)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

func owner(t *testing.T, p string) (int, int, os.FileMode) {
	t.Helper()
	st, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	s := st.Sys().(*syscall.Stat_t)
	return int(s.Uid), int(s.Gid), st.Mode().Perm()
}

// asUser runs argv as the user, with its login environment.
func asUser(r *Rootless, argv ...string) *exec.Cmd {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = r.Env()
	cmd.Dir = r.Home
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.Credential()}
	return cmd
}

func fileHasLine(t *testing.T, path, line string) bool {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if l == line {
			return true
		}
	}
	return false
}

func TestRootlessSetupGivesWhatADistributionGives(t *testing.T) {
	before := tunMode(t)
	r := setupRootless(t, RootlessConfig{Delegate: true})

	if r.UID == 0 || r.GID == 0 || !strings.HasPrefix(r.Name, "exrl") {
		t.Fatalf("user %+v", r)
	}
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		line := fmt.Sprintf("%s:%d:65536", r.Name, r.SubStart)
		if !fileHasLine(t, f, line) {
			t.Errorf("%s lacks %q", f, line)
		}
		rs, _ := subIDRanges(f)
		n := 0
		for _, x := range rs {
			if x[0] < r.SubStart+r.SubCount && r.SubStart < x[1] {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s: the user's range overlaps %d other ranges", f, n-1)
		}
	}
	if m := tunMode(t); m != 0o666 {
		t.Errorf("/dev/net/tun mode %v during the test", m)
	}
	if u, g, m := owner(t, r.RuntimeDir); u != r.UID || g != r.GID || m != 0o700 {
		t.Errorf("runtime dir %s: %d:%d %v", r.RuntimeDir, u, g, m)
	}
	if u, _, m := owner(t, r.Home); u != r.UID || m != 0o755 {
		t.Errorf("home %s: uid %d %v", r.Home, u, m)
	}

	// The user's own subordinate ids, mapped with newuidmap/newgidmap as
	// rootless engines do.
	out, err := asUser(r, "unshare", "--user", "--map-auto", "--map-root-user", "cat", "/proc/self/uid_map", "/proc/self/gid_map").CombinedOutput()
	if err != nil {
		t.Fatalf("unshare --map-auto as %s: %v: %s", r.Name, err, out)
	}
	if !strings.Contains(strings.Join(strings.Fields(string(out)), " "), fmt.Sprintf(" 1 %d ", r.SubStart)) {
		t.Errorf("the user namespace does not map the subordinate range:\n%s", out)
	}
	// slirp4netns opens /dev/net/tun as the user.
	out, err = asUser(r, "sh", "-c", "exec 3<>/dev/net/tun && echo opened").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "opened") {
		t.Errorf("the user cannot open /dev/net/tun: %v: %s", err, out)
	}

	// The delegated subtree: the user makes and removes cgroups beneath it
	// and moves its own processes there.
	if len(r.CgroupDirs) == 0 || r.CgroupParent == "" {
		t.Fatal("no delegated cgroup")
	}
	for _, d := range r.CgroupDirs {
		if u, _, _ := owner(t, d); u != r.UID {
			t.Errorf("%s is owned by %d", d, u)
		}
		if u, _, _ := owner(t, filepath.Join(d, "cgroup.procs")); u != r.UID {
			t.Errorf("%s/cgroup.procs is owned by %d", d, u)
		}
	}
	sleeper := asUser(r, "sleep", "30")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sleeper.Process.Kill(); sleeper.Wait() }()
	if err := r.Enter(sleeper.Process.Pid); err != nil {
		t.Fatal(err)
	}
	var script strings.Builder
	for _, d := range r.CgroupDirs {
		fmt.Fprintf(&script, "mkdir %[1]s/child && echo %[2]d >%[1]s/child/cgroup.procs && echo %[2]d >%[1]s/cgroup.procs && rmdir %[1]s/child || exit 1\n", d, sleeper.Process.Pid)
	}
	if out, err := asUser(r, "sh", "-ec", script.String()).CombinedOutput(); err != nil {
		t.Fatalf("the user cannot use its delegated subtree: %v: %s", err, out)
	}
	if got := r.Processes(); len(got) != 1 || got[0].Pid != sleeper.Process.Pid {
		t.Errorf("processes of the user: %v", got)
	}
	sleeper.Process.Kill()
	sleeper.Wait()

	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	assertUndone(t, r, before)
}

// assertUndone checks that nothing of r is left on the host.
func assertUndone(t *testing.T, r *Rootless, tunBefore os.FileMode) {
	t.Helper()
	if _, _, err := lookupIDs(r.Name); err == nil {
		t.Errorf("user %s still exists", r.Name)
	}
	if out, _ := exec.Command("getent", "group", r.Name).Output(); len(out) > 0 {
		t.Errorf("group still exists: %s", out)
	}
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		data, _ := os.ReadFile(f)
		if strings.Contains(string(data), r.Name+":") {
			t.Errorf("%s still names %s:\n%s", f, r.Name, data)
		}
	}
	for _, p := range append([]string{r.Home, r.RuntimeDir}, r.CgroupDirs...) {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s is still there (%v)", p, err)
		}
	}
	if m := tunMode(t); m != tunBefore {
		t.Errorf("/dev/net/tun mode %v after, %v before", m, tunBefore)
	}
}

func TestRootlessCloseReportsAndEndsLeftProcesses(t *testing.T) {
	before := tunMode(t)
	r, err := SetupRootless(RootlessConfig{Delegate: true})
	if err != nil {
		t.Fatal(err)
	}
	sleeper := asUser(r, "sleep", "60")
	if err := sleeper.Start(); err != nil {
		r.Close()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { sleeper.Wait(); close(done) }()
	if err := r.Enter(sleeper.Process.Pid); err != nil {
		t.Error(err)
	}
	err = r.Close()
	if err == nil || !strings.Contains(err.Error(), fmt.Sprint(sleeper.Process.Pid)) {
		t.Errorf("Close with a process of the user left: %v", err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the left process was not ended")
	}
	assertUndone(t, r, before)
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestRootlessWithoutDelegationAndSharedTun(t *testing.T) {
	before := tunMode(t)
	a, err := SetupRootless(RootlessConfig{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := SetupRootless(RootlessConfig{Delegate: true})
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	if a.CgroupParent != "" || len(a.CgroupDirs) != 0 {
		t.Errorf("no delegation asked, got %s %v", a.CgroupParent, a.CgroupDirs)
	}
	if a.Name == b.Name || a.UID == b.UID || a.SubStart == b.SubStart {
		t.Errorf("two users share a name, uid or range: %+v %+v", a, b)
	}
	if err := a.Close(); err != nil {
		t.Error(err)
	}
	if m := tunMode(t); m != 0o666 {
		t.Errorf("/dev/net/tun mode %v while another setup still needs it", m)
	}
	if err := b.Close(); err != nil {
		t.Error(err)
	}
	assertUndone(t, a, before)
	assertUndone(t, b, before)
}

// A test binary killed by its timeout leaves its users behind: the next
// setup removes those of dead processes, and only those.
func TestRootlessSweepsWhatADeadRunLeft(t *testing.T) {
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	pid := dead.Process.Pid
	name := fmt.Sprintf("exrl%d-1", pid)
	home, err := os.MkdirTemp("/var/tmp", fmt.Sprintf("executor-rl-%d-1-", pid))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := etcCommand("useradd", "--home-dir", home, "--no-create-home", "--user-group", "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", name); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if out, err := etcCommand("usermod", "--add-subuids", "3000000000-3000065535", "--add-subgids", "3000000000-3000065535", name); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	live := setupRootless(t, RootlessConfig{})
	if err := SweepRootless(); err != nil {
		t.Fatal(err)
	}
	assertUndone(t, &Rootless{Name: name, Home: home}, tunMode(t))
	if _, _, err := lookupIDs(live.Name); err != nil {
		t.Errorf("the sweep removed this process's user %s", live.Name)
	}
}

// /dev/net/tun's hold is shared with other test processes through tunState:
// a live holder keeps it 0666 after this process let go, and a dead one's
// change is undone by the next process.
func TestRootlessTunHoldAcrossProcesses(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (/dev/net/tun); CI runs these tests as root")
	}
	before := tunMode(t)
	t.Cleanup(func() {
		os.RemoveAll(tunState)
		os.Chmod(tunPath, before)
	})
	if _, err := os.Stat(tunState); err == nil {
		t.Fatalf("%s exists before the test: another test process holds /dev/net/tun", tunState)
	}
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { other.Process.Kill(); other.Wait() }()

	// Another process holds it: releasing ours keeps it 0666.
	release, err := acquireTun()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tunState, fmt.Sprint(other.Process.Pid)), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	if m := tunMode(t); m != 0o666 {
		t.Fatalf("mode %v after release while another process holds it", m)
	}
	// That process dies without letting go: the next hold and release
	// restore the mode saved first.
	other.Process.Kill()
	other.Wait()
	release, err = acquireTun()
	if err != nil {
		t.Fatal(err)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	if m := tunMode(t); m != before {
		t.Fatalf("mode %v after the last release, %v before", m, before)
	}
	if _, err := os.Stat(tunState); !os.IsNotExist(err) {
		t.Errorf("%s left after the last release (%v)", tunState, err)
	}
}
