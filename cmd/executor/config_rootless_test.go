package main

import (
	"strings"
	"testing"

	"executor/oci"
)

// A rootless daemon (an ordinary user's, or a process of the namespaces it made) defaults its data dir to the
// user's own ($XDG_DATA_HOME/executor, else ~/.local/share/executor) and has no per-runtime disks (loop devices
// need root); what the user sets still wins, and every other setting keeps its default.
func TestLoadConfigRootlessDefaults(t *testing.T) {
	t.Setenv(rootlessStageEnv, stageInit)
	tests := []struct {
		name      string
		env       map[string]string
		dataDir   string
		diskLimit int64
		err       string
	}{
		{name: "XDG_DATA_HOME", env: map[string]string{"XDG_DATA_HOME": "/home/alice/data", "HOME": "/home/alice"}, dataDir: "/home/alice/data/executor"},
		{name: "HOME", env: map[string]string{"HOME": "/home/alice"}, dataDir: "/home/alice/.local/share/executor"},
		{name: "set", env: map[string]string{"HOME": "/home/alice", "OPR_EXECUTOR_DATA_DIR": "/srv/executor", "OPR_EXECUTOR_DISK_LIMIT": "1GiB"},
			dataDir: "/srv/executor", diskLimit: 1 << 30},
		{name: "nowhere", env: map[string]string{}, err: "OPR_EXECUTOR_DATA_DIR is not set, and neither XDG_DATA_HOME nor HOME to default it to"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.env["OPR_EXECUTOR_SECRET"] = "k"
			c, err := loadConfig(envOf(tt.env))
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.DataDir != tt.dataDir || c.DiskLimit != tt.diskLimit {
				t.Errorf("data dir %q, disk limit %d; want %q, %d", c.DataDir, c.DiskLimit, tt.dataDir, tt.diskLimit)
			}
			if c.Listen != "0.0.0.0:9900" || c.InactiveThreshold.Seconds() != 60 {
				t.Errorf("listen %q, inactive threshold %v: not the defaults", c.Listen, c.InactiveThreshold)
			}
		})
	}
}

// In the daemon stage of a rootless daemon OPR_EXECUTOR_USERNS=full is the subordinate ids its own user namespace
// maps (nsIDMap, from /proc/self/uid_map and gid_map), not the host's whole range; off and explicit ranges are
// taken as set.
func TestLoadConfigRootlessUserNS(t *testing.T) {
	t.Setenv(rootlessStageEnv, stageRun)
	load := func(v string) (*config, error) {
		return loadConfig(envOf(map[string]string{"OPR_EXECUTOR_SECRET": "k", "HOME": "/home/alice", "OPR_EXECUTOR_USERNS": v}))
	}
	c, err := load("off")
	if err != nil || c.UserNS != nil {
		t.Errorf("off: %+v, %v; want no user namespace", c.UserNS, err)
	}
	c, err = load("100000:200000:65536")
	if want := (oci.IDMap{HostUID: 100000, HostGID: 200000, Size: 65536}); err != nil || c.UserNS == nil || *c.UserNS != want {
		t.Errorf("a range: %+v, %v; want %+v", c.UserNS, err, want)
	}
	// What full is depends on the namespaces this test runs in: the same as nsIDMap says, or its error.
	c, err = load("full")
	want, werr := nsIDMap()
	switch {
	case werr != nil:
		if err == nil || !strings.HasPrefix(err.Error(), "OPR_EXECUTOR_USERNS=full: ") {
			t.Errorf("full: %+v, %v; want the error of nsIDMap (%v)", c.UserNS, err, werr)
		}
	case err != nil || c.UserNS == nil || *c.UserNS != *want:
		t.Errorf("full: %+v, %v; want %+v", c.UserNS, err, want)
	}
}
