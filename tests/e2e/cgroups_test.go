package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestRuntimeCgroupLimits: a runtime's limits are in its own cgroup's files,
// read from the host (memory.max, memory.swap.max, cpu.max and pids.max on
// cgroup v2, their counterparts on v1) and from inside the runtime.
func TestRuntimeCgroupLimits(t *testing.T) {
	x := startExecutor(t)
	checkRuntimeLimits(t, x, "limits")
}

// TestDaemonInItsOwnCgroup: systemd's layout, the daemon started in its
// unit's delegated cgroup with OPR_EXECUTOR_CGROUP_PARENT that very cgroup.
// On cgroup v2 a cgroup holding processes cannot hand memory, io or cpu down
// to runtimes' cgroups, so the daemon moves into a leaf of it first
// (<parent>/supervisor); on v1 it stays where it was started.
func TestDaemonInItsOwnCgroup(t *testing.T) {
	x := startExecutor(t, inUnitCgroup)
	checkRuntimeLimits(t, x, "in-unit")
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", x.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	lines := logLines(string(raw))
	if cgroup2() {
		if want := "0::" + x.unit + "/supervisor"; !slices.Contains(lines, want) {
			t.Fatalf("the daemon is in %q, want %q", raw, want)
		}
		return
	}
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasSuffix(l, ":memory:"+x.unit) }) {
		t.Fatalf("on cgroup v1 the daemon must stay in %s: %q", x.unit, raw)
	}
}

// checkRuntimeLimits starts runtime id with 0.5 CPUs and 128 MB and checks
// its limits from the host and from inside, then removes it.
func checkRuntimeLimits(t *testing.T, x *executor, id string) {
	t.Helper()
	src := source(t, map[string]string{"index.js": "x"})
	r := x.request(t, "POST", "/v1/runtimes/"+id+"/executions", execBody(src, map[string]any{
		"path": "/cgroup", "cpus": 0.5, "memory": 128,
	}), jsonAccept)
	if r.status != 200 {
		t.Fatalf("cold start: %d %s", r.status, r.body)
	}
	var inside struct {
		CgroupVersion int      `json:"cgroupVersion"`
		MemoryBytes   int64    `json:"memoryBytes"`
		CPUQuotaUs    int64    `json:"cpuQuotaUs"`
		CPUPeriodUs   int64    `json:"cpuPeriodUs"`
		PidsMax       int64    `json:"pidsMax"`
		ReadErrors    []string `json:"readErrors"`
	}
	if err := json.Unmarshal([]byte(r.json(t)["body"].(string)), &inside); err != nil {
		t.Fatalf("%v: %s", err, r.body)
	}
	version := 1
	if cgroup2() {
		version = 2
	}
	if inside.CgroupVersion != version || inside.MemoryBytes != 128_000_000 || inside.CPUQuotaUs != 50000 ||
		inside.CPUPeriodUs != 100000 || inside.PidsMax != 1024 {
		t.Errorf("limits seen inside the runtime: %+v, want cgroup v%d", inside, version)
	}
	// 128 MB is a whole number of pages: the kernel keeps it as it is.
	for controller, want := range map[string]string{"memory": "128000000", "cpu": "50000 100000", "pids": "1024"} {
		if got := cgroupValue(t, x, controller); got != want {
			t.Errorf("%s limit on the host %q, want %q", controller, got, want)
		}
	}
	// No swap: v2 says so outright, v1 caps memory+swap at the memory limit.
	if version == 2 {
		if got := readOne(t, filepath.Join("/sys/fs/cgroup", x.cgParent, "rt-*", "memory.swap.max")); got != "0" {
			t.Errorf("memory.swap.max %q, want 0", got)
		}
		enabled := strings.Fields(readOne(t, filepath.Join("/sys/fs/cgroup", x.cgParent, "cgroup.subtree_control")))
		for _, c := range []string{"cpu", "memory", "pids"} {
			if !slices.Contains(enabled, c) {
				t.Errorf("the cgroup parent does not hand %s to runtimes: %v", c, enabled)
			}
		}
	} else {
		dir := filepath.Join("/sys/fs/cgroup/memory", x.cgParent, "rt-*")
		if got, mem := readOne(t, filepath.Join(dir, "memory.memsw.limit_in_bytes")), readOne(t, filepath.Join(dir, "memory.limit_in_bytes")); got != mem {
			t.Errorf("memory.memsw.limit_in_bytes %s, want the memory limit %s", got, mem)
		}
	}
	if r := x.request(t, "DELETE", "/v1/runtimes/"+id, nil, nil); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	x.waitClean(t)
}

// readOne reads the one file matching pattern, trimmed.
func readOne(t *testing.T, pattern string) string {
	t.Helper()
	files, _ := filepath.Glob(pattern)
	if len(files) != 1 {
		t.Fatalf("expected one file %s, found %v", pattern, files)
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}
