package main

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"executor/oci"
)

// TestDelegatedUnitCgroup: the default cgroup parent is the daemon's own
// cgroup only for a delegated service or scope on pure cgroup v2.
func TestDelegatedUnitCgroup(t *testing.T) {
	const unit = "/system.slice/executor.service"
	const userUnit = "/user.slice/user-1000.slice/user@1000.service/app.slice/executor.service"
	tests := []struct {
		name string
		// v2 makes the mount look like a cgroup v2 root; xattr is set on
		// cgroup (made under the mount) when not "".
		v2         bool
		cgroup     string
		xattr      string
		procCgroup string
		want       string
		// uid is the caller's; owner, when not 0, owns the cgroup.
		uid, owner int
	}{
		{"delegated service", true, unit, "trusted.delegate", "0::" + unit + "\n", unit, 0, 0},
		{"delegated service started in its subgroup (DelegateSubgroup=supervisor)", true, unit, "trusted.delegate", "0::" + unit + "/supervisor\n", unit, 0, 0},
		{"another subgroup of a delegated service", true, unit, "trusted.delegate", "0::" + unit + "/other\n", "", 0, 0},
		{"delegated scope (systemd-run --scope -p Delegate=yes)", true, "/system.slice/run-r1.scope", "trusted.delegate", "0::/system.slice/run-r1.scope\n", "/system.slice/run-r1.scope", 0, 0},
		{"user manager's mark", true, unit, "user.delegate", "0::" + unit + "\n", unit, 0, 0},
		{"not delegated", true, unit, "", "0::" + unit + "\n", "", 0, 0},
		{"a slice", true, "/system.slice", "trusted.delegate", "0::/system.slice\n", "", 0, 0},
		{"root cgroup (a container's cgroup namespace)", true, "", "", "0::/\n", "", 0, 0},
		{"hybrid v1 host", true, unit, "trusted.delegate", "4:memory:" + unit + "\n0::" + unit + "\n", "", 0, 0},
		{"no cgroup v2 root", false, unit, "trusted.delegate", "0::" + unit + "\n", "", 0, 0},
		{"user manager without marks (systemd 252): the user's own unit cgroup", true, userUnit, "", "0::" + userUnit + "\n", userUnit, 1000, 1000},
		{"user manager without marks: another user's cgroup", true, userUnit, "", "0::" + userUnit + "\n", "", 1000, 1001},
		{"user manager without marks: root's cgroup", true, userUnit, "", "0::" + userUnit + "\n", "", 1000, 0},
		{"root daemon: ownership is no delegation", true, unit, "", "0::" + unit + "\n", "", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mount := t.TempDir()
			if tt.v2 {
				if err := os.WriteFile(filepath.Join(mount, "cgroup.controllers"), []byte("cpu io memory pids\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			dir := filepath.Join(mount, tt.cgroup)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if tt.xattr != "" {
				// trusted.* needs CAP_SYS_ADMIN, as on cgroupfs.
				if err := unix.Setxattr(dir, tt.xattr, []byte("1"), 0); err != nil {
					t.Fatalf("setxattr %s on %s (root and a file system with xattrs needed): %v", tt.xattr, dir, err)
				}
			}
			if tt.owner != 0 {
				if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), nil, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Chown(dir, tt.owner, tt.owner); err != nil {
					t.Fatal(err)
				}
			}
			got, ok := delegatedUnitCgroup(tt.procCgroup, mount, tt.uid)
			if got != tt.want || ok != (tt.want != "") {
				t.Errorf("got %q %v, want %q", got, ok, tt.want)
			}
		})
	}
}

// unitDirectives reads a unit file's directives: name -> values in order.
func unitDirectives(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q is not a directive", path, line)
		}
		out[k] = append(out[k], v)
	}
	return out
}

// TestShippedUnit: contrib/executor.service and contrib/executor.env agree
// with the daemon: notify protocol, reload by SIGHUP of the file the unit
// loads, a stop timeout that covers the drain, a bounding set that holds
// every capability runtimes get, and an environment file the daemon starts
// with. systemd_test.go (e2e) runs the unit under systemd itself.
func TestShippedUnit(t *testing.T) {
	u := unitDirectives(t, "../../contrib/executor.service")
	one := func(name string) string {
		t.Helper()
		if len(u[name]) != 1 {
			t.Fatalf("%s: %d values %q, want one", name, len(u[name]), u[name])
		}
		return u[name][0]
	}
	for name, want := range map[string]string{
		"Type": "notify", "NotifyAccess": "main", "Delegate": "yes", "KillMode": "mixed", "KillSignal": "SIGTERM",
		"Restart": "always", "NoNewPrivileges": "yes", "TasksMax": "infinity", "ExecReload": `/bin/sh -c 'kill -HUP "$$MAINPID"'`,
	} {
		if got := one(name); got != want {
			t.Errorf("%s=%s, want %s", name, got, want)
		}
	}
	envFile := one("EnvironmentFile")
	if got := one("Environment"); got != "OPR_EXECUTOR_ENV_FILE="+envFile {
		t.Errorf("Environment=%s: SIGHUP must re-read the EnvironmentFile= %s", got, envFile)
	}
	if adj, err := strconv.Atoi(one("OOMScoreAdjust")); err != nil || adj >= 0 {
		t.Errorf("OOMScoreAdjust=%s: want a negative score, so the daemon outlives its runtimes", one("OOMScoreAdjust"))
	}
	if _, err := strconv.Atoi(one("WatchdogSec")); err != nil {
		t.Errorf("WatchdogSec=%s: want seconds", one("WatchdogSec"))
	}

	env, err := readEnvFile("../../contrib/executor.env")
	if err != nil {
		t.Fatal(err)
	}
	drain := defaultDrainTimeout
	if v, ok := env["OPR_EXECUTOR_DRAIN_TIMEOUT"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatal(err)
		}
		drain = time.Duration(n) * time.Second
	}
	stop, err := strconv.Atoi(one("TimeoutStopSec"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := time.Duration(stop)*time.Second, drain+time.Minute; got != want {
		t.Errorf("TimeoutStopSec=%v, want the drain (%v) plus a minute to remove the runtimes: %v", got, drain, want)
	}

	bounding := strings.Fields(one("CapabilityBoundingSet"))
	for _, c := range oci.DefaultCapabilities() {
		if !slices.Contains(bounding, c) {
			t.Errorf("CapabilityBoundingSet lacks %s, which runtimes get: their start would fail", c)
		}
	}

	if _, ok := env["OPR_EXECUTOR_CGROUP_PARENT"]; ok {
		t.Error("executor.env sets OPR_EXECUTOR_CGROUP_PARENT: unset, it follows the unit's delegated cgroup")
	}
	var environ []string
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	if unknown := unknownSettings(environ); len(unknown) > 0 {
		t.Errorf("executor.env sets unknown settings %v", unknown)
	}
	if _, err := loadConfig(envOf(env)); err != nil {
		t.Errorf("the daemon would not start with executor.env: %v", err)
	}
}
