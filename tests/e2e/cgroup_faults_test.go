package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestOOMVerdictIsAboutThisDeath: the kernel's OOM kill counter covers every
// process of a runtime's cgroup for its whole life, so a child killed in one
// execution must not be blamed for a later death of the runtime that has
// another cause; and a runtime that lost a child still has its own OOM death
// reported.
func TestOOMVerdictIsAboutThisDeath(t *testing.T) {
	x := startExecutor(t)
	tests := []struct {
		name string
		// served runs an ordinary execution between the child's death and
		// the last one: the runtime outlived the kill.
		served bool
		last   map[string]any // the execution that ends the runtime
		oom    bool
	}{
		{name: "ordinary exit after a child's OOM kill", last: map[string]any{"path": "/exit?code=1"}},
		{name: "own OOM kill after a child's", last: map[string]any{"path": "/alloc?mb=256"}, oom: true},
		// The server dies of SIGKILL as an OOM victim would, but the counter
		// has not risen since the runtime last answered.
		{name: "SIGKILL after a child's OOM kill and a served execution", served: true,
			last: map[string]any{"path": "/shell", "method": "POST", "body": "kill -KILL $PPID"}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := "oom-" + strconv.Itoa(i)
			exec := func(body map[string]any) *response {
				return x.request(t, "POST", "/v1/runtimes/"+id+"/executions", body, jsonAccept)
			}
			createIdle(t, x, id, map[string]any{"memory": 64})
			// busybox tail buffers an endless line: the child, not the
			// runtime's server, is the biggest process when the limit hits.
			r := exec(map[string]any{"path": "/shell", "method": "POST", "body": `tail /dev/zero; echo "tail: $?"`})
			if r.status != 200 {
				t.Fatalf("the execution whose child ran out of memory: %d %s", r.status, r.body)
			}
			if res := r.json(t); res["statusCode"] != float64(200) || !strings.Contains(res["body"].(string), "tail: 137") {
				t.Fatalf("the child was not killed by SIGKILL: %s", r.body)
			}
			if n := runtimeOOMKills(t, x); n < 1 {
				t.Fatalf("the runtime's cgroup counted %d OOM kills", n)
			}
			if tc.served {
				if r := exec(map[string]any{"path": "/"}); r.status != 200 || r.json(t)["statusCode"] != float64(200) {
					t.Fatalf("an ordinary execution: %d %s", r.status, r.body)
				}
			}
			r = exec(tc.last)
			if r.status != 500 || strings.Contains(string(r.body), "ran out of memory") != tc.oom {
				t.Fatalf("%v: %d %s, want a 500 that blames memory: %v", tc.last, r.status, r.body, tc.oom)
			}
			// Its main process died: the runtime may have left the table
			// already (404), else DELETE removes it (200, no body).
			if r := x.request(t, "DELETE", "/v1/runtimes/"+id, nil, nil); !(r.status == 200 && len(r.body) == 0) && !(r.status == 404 && r.json(t)["type"] == "runtime_not_found") {
				t.Fatalf("DELETE %s: %d %s", id, r.status, r.body)
			}
			x.waitClean(t)
		})
	}
}

// runtimeOOMKills reads the OOM kill counter of this executor's (only)
// runtime from the host side, on cgroup v1 or v2.
func runtimeOOMKills(t *testing.T, x *executor) int {
	t.Helper()
	file, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/memory", x.cgParent, "rt-*", "memory.oom_control"))
	if len(file) == 0 {
		file, _ = filepath.Glob(filepath.Join("/sys/fs/cgroup", x.cgParent, "rt-*", "memory.events"))
	}
	if len(file) != 1 {
		t.Fatalf("expected one runtime memory cgroup, found %v", file)
	}
	data, err := os.ReadFile(file[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range logLines(string(data)) {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "oom_kill" {
			n, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatalf("%s: %q", file[0], line)
			}
			return n
		}
	}
	t.Fatalf("%s has no oom_kill counter: %q", file[0], data)
	return 0
}

// TestSysReadOnlyThroughout: no mount under /sys is writable from inside a
// runtime, with or without a user namespace (where /sys is a bind of the
// host's, submounts and all). Mounts covered by others count too: the flags
// of every one are checked, not only of those in reach.
func TestSysReadOnlyThroughout(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
	}{
		{"user namespace", nil},
		{"host ids", []string{"OPR_EXECUTOR_USERNS=off"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := startExecutor(t, tc.env...)
			createIdle(t, x, "sys", nil)
			out, _ := command(t, x, "sys", "cat /proc/self/mountinfo")
			mounts := parseMountinfo(t, out)
			seen := map[string]bool{}
			for _, m := range mounts {
				if m.point != "/sys" && !strings.HasPrefix(m.point, "/sys/") {
					continue
				}
				seen[m.point] = true
				if !m.readOnly() && !mounts.coveredReadOnly(m) {
					t.Errorf("%s (%s) is writable: %s", m.point, m.fstype, m.line)
				}
			}
			if !seen["/sys"] || !seen["/sys/fs/cgroup"] {
				t.Fatalf("no /sys or /sys/fs/cgroup mount in\n%s", out)
			}
			// And what the flags say holds: libcontainer's cgroup v1 tmpfs
			// is the one writable filesystem a runtime could try.
			if out, _ := command(t, x, "sys", "mkdir /sys/fs/cgroup/probe 2>&1; echo rc=$?"); strings.Contains(out, "rc=0") {
				t.Errorf("made a directory under /sys/fs/cgroup: %q", out)
			}
		})
	}
}

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	id, parent, dev, root string
	point, fstype         string
	options               []string // the mount's own (per mount point) options
	line                  string
}

func (m mountEntry) readOnly() bool {
	for _, o := range m.options {
		if o == "ro" {
			return true
		}
	}
	return false
}

type mountTable []mountEntry

func parseMountinfo(t *testing.T, s string) mountTable {
	t.Helper()
	var out mountTable
	for _, line := range logLines(s) {
		f := strings.Fields(line)
		sep := -1
		for i, v := range f {
			if v == "-" {
				sep = i
				break
			}
		}
		if len(f) < 6 || sep < 6 || sep+1 >= len(f) {
			t.Fatalf("mountinfo line %q", line)
		}
		out = append(out, mountEntry{id: f[0], parent: f[1], dev: f[2], root: f[3], point: f[4], fstype: f[sep+1],
			options: strings.Split(f[5], ","), line: line})
	}
	return out
}

// coveredReadOnly reports whether m is reachable only through a read-only
// view of itself stacked on it: how libcontainer makes a read-only path of a
// writable mount (the cgroup v1 tmpfs). Nothing can uncover it: runtimes
// cannot unmount.
func (mt mountTable) coveredReadOnly(m mountEntry) bool {
	for _, e := range mt {
		if e.parent == m.id && e.point == m.point {
			return e.dev == m.dev && e.root == m.root && e.readOnly()
		}
	}
	return false
}
