package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"executor/netns"
)

// createIdle makes a runtime whose server runs, for commands and executions.
func createIdle(t *testing.T, x *executor, id string, extra map[string]any) {
	t.Helper()
	body := map[string]any{"runtimeId": id, "image": "openruntimes/test:v5-1", "source": source(t, map[string]string{"index.js": "x"}),
		"entrypoint": "index.js", "runtimeEntrypoint": startCommand}
	for k, v := range extra {
		body[k] = v
	}
	if r := x.request(t, "POST", "/v1/runtimes", body, nil); r.status != 201 {
		t.Fatalf("create %s: %d %s", id, r.status, r.body)
	}
}

func command(t *testing.T, x *executor, id, cmd string) (string, int) {
	t.Helper()
	r := x.request(t, "POST", "/v1/runtimes/"+id+"/commands", map[string]any{"command": cmd, "timeout": 60}, nil)
	if r.status != 200 {
		return string(r.body), r.status
	}
	return r.json(t)["output"].(string), r.status
}

// filterCompiledOnce is what the daemon logs when executor-init installs
// the runtimes' seccomp filter, compiled once (sandbox/container's tests
// compare it with libcontainer's, instruction by instruction).
const filterCompiledOnce = "executor-init installs the seccomp filter, compiled once"

func TestAttacksFromInsideFail(t *testing.T) {
	x := startExecutor(t)
	createIdle(t, x, "victim", nil)
	for _, what := range []string{"mount", "unshare-mount", "unshare-user", "keyctl", "mknod", "raw-socket", "load-module", "reboot", "kcore", "sysrq", "firmware", "ptrace-host", "setuid-root-files"} {
		t.Run(what, func(t *testing.T) {
			r := x.request(t, "POST", "/v1/runtimes/victim/executions", map[string]any{"path": "/attack?what=" + what}, jsonAccept)
			var res struct {
				OK     bool   `json:"ok"`
				Detail string `json:"detail"`
			}
			if err := json.Unmarshal([]byte(r.json(t)["body"].(string)), &res); err != nil {
				t.Fatalf("%s: %v", r.body, err)
			}
			if res.OK {
				t.Fatalf("%s worked from inside a runtime: %s", what, res.Detail)
			}
			t.Logf("%s refused: %s", what, res.Detail)
		})
	}
	t.Run("seccomp filter and capabilities", func(t *testing.T) {
		out, _ := command(t, x, "victim", "grep -E '^(Seccomp|CapEff|NoNewPrivs):' /proc/1/status")
		if !strings.Contains(out, "Seccomp:\t2") || !strings.Contains(out, "NoNewPrivs:\t1") {
			t.Fatalf("status: %q", out)
		}
		// Installed by executor-init, compiled once (sandbox/container's
		// tests compare it with libcontainer's, instruction by instruction).
		if n := x.logs.Count(filterCompiledOnce); n != 1 {
			t.Errorf("the daemon said %d times that executor-init installs the filter:\n%s", n, x.logs.String())
		}
		// podman's set: chown dac_override fowner fsetid kill setgid setuid setpcap net_bind_service sys_chroot setfcap
		const want = "00000000800405fb"
		if !strings.Contains(out, "CapEff:\t"+want) {
			t.Fatalf("effective capabilities: %q, want %s", out, want)
		}
	})
	t.Run("root is an unprivileged host range", func(t *testing.T) {
		out, _ := command(t, x, "victim", "cat /proc/self/uid_map /proc/self/gid_map; id -u; stat -c %u:%g /usr/local/server /mnt/code /tmp")
		f := strings.Fields(out)
		// The default full range: container ids 0..4294901758 on host ids 65536..4294967294.
		if len(f) < 7 || f[0] != "0" || f[1] != "65536" || f[2] != "4294901759" || f[3] != "0" || f[4] != "65536" || f[6] != "0" {
			t.Fatalf("id maps: %q", out)
		}
		// Image files and the mounted directories belong to root inside.
		if !strings.Contains(out, "0:0\n0:0\n0:0") && strings.Count(out, "0:0") < 3 {
			t.Fatalf("owners inside the runtime: %q", out)
		}
		// And the runtime's processes are that range on the host.
		pids := hostPIDsOf(t, x)
		if len(pids) == 0 {
			t.Fatal("no runtime processes found")
		}
		for _, pid := range pids {
			status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			for _, line := range strings.Split(string(status), "\n") {
				if strings.HasPrefix(line, "Uid:") && strings.Fields(line)[1] != "65536" {
					t.Errorf("runtime process %d runs as %q on the host", pid, line)
				}
			}
		}
	})
	t.Run("private /dev", func(t *testing.T) {
		out, _ := command(t, x, "victim", "ls /dev")
		for _, dev := range strings.Fields(out) {
			switch dev {
			case "null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "mqueue", "fd", "stdin", "stdout", "stderr", "console", "core":
			default:
				t.Errorf("unexpected /dev entry %q", dev)
			}
		}
	})
}

// readRuntimeCgroupFiles reads a pids-controller file of this executor's
// (only) runtime from the host side, on cgroup v1 or v2.
func readRuntimeCgroupFiles(t *testing.T, x *executor, name string) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/pids", x.cgParent, "rt-*", name))
	if len(files) == 0 {
		files, _ = filepath.Glob(filepath.Join("/sys/fs/cgroup", x.cgParent, "rt-*", name))
	}
	if len(files) != 1 {
		t.Fatalf("expected one runtime cgroup with %s, found %v", name, files)
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// hostPIDsOf lists the host PIDs of processes in this executor's runtime cgroups.
func hostPIDsOf(t *testing.T, x *executor) []int {
	var pids []int
	files, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/pids", x.cgParent, "*", "cgroup.procs"))
	more, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", x.cgParent, "*", "cgroup.procs"))
	for _, f := range append(files, more...) {
		data, _ := os.ReadFile(f)
		for _, p := range strings.Fields(string(data)) {
			if n, err := strconv.Atoi(p); err == nil {
				pids = append(pids, n)
			}
		}
	}
	return pids
}

func TestUserNamespaceOptOut(t *testing.T) {
	x := startExecutor(t, "OPR_EXECUTOR_USERNS=off")
	createIdle(t, x, "plain", nil)
	out, _ := command(t, x, "plain", "cat /proc/self/uid_map")
	if f := strings.Fields(out); len(f) != 3 || f[1] != "0" {
		t.Fatalf("with OPR_EXECUTOR_USERNS=off the runtime should use the host ids: %q", out)
	}
	if r := x.request(t, "POST", "/v1/runtimes/plain/executions", map[string]any{"path": "/"}, jsonAccept); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
}

func TestLimitsHold(t *testing.T) {
	x := startExecutor(t, "OPR_EXECUTOR_PIDS_LIMIT=64")
	t.Run("fork bomb stops at the pids limit", func(t *testing.T) {
		createIdle(t, x, "forks", nil)
		// The bomb itself may fail once it cannot fork any more: what counts
		// is what the host's cgroup says.
		command(t, x, "forks", `i=0; while [ $i -lt 200 ]; do sleep 30 >/dev/null 2>&1 & i=$((i+1)); done 2>/dev/null; true`)
		current := readRuntimeCgroupFiles(t, x, "pids.current")
		events := readRuntimeCgroupFiles(t, x, "pids.events")
		n, err := strconv.Atoi(strings.TrimSpace(current))
		if err != nil || n > 64 || n < 30 {
			t.Fatalf("pids.current after the bomb: %q", current)
		}
		if !strings.Contains(events, "max ") || strings.Contains(events, "max 0") {
			t.Fatalf("pids.events shows no refused fork: %q", events)
		}
		x.deleteRuntime(t, "forks")
	})
	t.Run("memory hog is killed and reported, others keep serving", func(t *testing.T) {
		createIdle(t, x, "bystander", nil)
		createIdle(t, x, "hog", map[string]any{"memory": 64})
		r := x.request(t, "POST", "/v1/runtimes/hog/executions", map[string]any{"path": "/alloc?mb=256"}, jsonAccept)
		if r.status != 500 || !strings.Contains(string(r.body), "ran out of memory") {
			t.Fatalf("hog: %d %s", r.status, r.body)
		}
		if r := x.request(t, "POST", "/v1/runtimes/bystander/executions", map[string]any{"path": "/"}, jsonAccept); r.status != 200 || r.json(t)["statusCode"] != float64(200) {
			t.Fatalf("bystander: %d %s", r.status, r.body)
		}
		// No restart policy: the dead runtime leaves the table.
		deadline := time.Now().Add(time.Minute) // generous: a loaded machine
		for x.request(t, "GET", "/v1/runtimes/hog", nil, nil).status != 404 {
			if time.Now().After(deadline) {
				t.Fatal("OOM-killed runtime still listed")
			}
			time.Sleep(50 * time.Millisecond)
		}
		x.deleteRuntime(t, "bystander")
	})
	t.Run("cpu hog is throttled to its quota", func(t *testing.T) {
		createIdle(t, x, "spinner", map[string]any{"cpus": 0.25})
		start := time.Now()
		r := x.request(t, "POST", "/v1/runtimes/spinner/executions", map[string]any{"path": "/spin?ms=1000"}, jsonAccept)
		if r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		out, _ := command(t, x, "spinner", "cat /sys/fs/cgroup/cpu/cpu.stat 2>/dev/null || cat /sys/fs/cgroup/cpu.stat")
		throttled := -1
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "nr_throttled" {
				throttled, _ = strconv.Atoi(f[1])
			}
		}
		if throttled < 3 {
			t.Fatalf("nr_throttled %d after %v of spinning: %q", throttled, time.Since(start), out)
		}
		x.deleteRuntime(t, "spinner")
	})
	x.waitClean(t)
}

// hostState counts what runtimes hold on the host.
type hostState struct {
	mounts, veths, cgroups, netns, fds, threads int
}

func snapshot(t testing.TB, x *executor) hostState {
	t.Helper()
	var s hostState
	// Only what is this executor's: other tests may run on the machine.
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mounts), "\n") {
		if strings.Contains(line, x.dataDir+"/") {
			s.mounts++
		}
	}
	links, _ := netlink.LinkList()
	if br, err := netlink.LinkByName(netns.BridgeName(x.network)); err == nil {
		for _, l := range links {
			if l.Attrs().MasterIndex == br.Attrs().Index {
				s.veths++
			}
		}
	}
	// Every hierarchy, the unified one included: on a pure cgroup v2 host a
	// glob of /sys/fs/cgroup/*/<parent> saw none.
	cgs, err := x.cgroupsBelowParent()
	if err != nil {
		t.Fatal(err)
	}
	s.cgroups = len(cgs)
	ns, _ := filepath.Glob(filepath.Join(x.dataDir, "networks", "*", "ns", "*"))
	s.netns = len(ns)
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", x.cmd.Process.Pid))
	s.fds = len(fds)
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", x.cmd.Process.Pid))
	s.threads = len(tasks)
	return s
}

// TestNetworkPool: with network endpoints kept ready (two, the default),
// each cold start takes one, which is made again once it has answered;
// the runtimes' network and files are those of any runtime; the stop
// removes the ready ones (the harness's cleanup checks).
func TestNetworkPool(t *testing.T) {
	x := startExecutor(t, "OPR_EXECUTOR_DNS=192.0.2.53,192.0.2.54", networkPoolDefault)
	src := source(t, map[string]string{"index.js": "x"})
	waitLog(t, x, "network endpoint pooled", 2)
	for i := 0; i < 4; i++ { // more than the pool holds: it refills
		id := fmt.Sprintf("pooled-%d", i)
		if r := x.request(t, "POST", "/v1/runtimes/"+id+"/executions", execBody(src, nil), jsonAccept); r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		if line := waitLogLine(t, x, "runtime prepared", "runtime="+id+" "); !strings.Contains(line, "pooledNetwork=true") {
			t.Errorf("%s did not take a ready endpoint: %s", id, line)
		}
		waitLog(t, x, "network endpoint pooled", 3+i)
	}
	// The four runtimes' namespaces, and two ready: no more.
	ns, _ := filepath.Glob(filepath.Join(x.dataDir, "networks", "*", "ns", "*"))
	if len(ns) != 6 {
		t.Errorf("namespace files %v, want 6: four runtimes' and two ready", ns)
	}
	out, _ := command(t, x, "pooled-0", "cat /etc/resolv.conf; cat /etc/hosts; hostname")
	if !strings.Contains(out, "nameserver 192.0.2.53\nnameserver 192.0.2.54\n") || strings.Count(out, "nameserver") != 2 {
		t.Fatalf("resolv.conf: %q", out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if host := lines[len(lines)-1]; len(host) != 32 || !strings.Contains(out, "\t"+host+"\n") {
		t.Fatalf("/etc/hosts does not name the runtime's hostname %q: %q", host, out)
	}
}

// Runtimes' containers are started by executor-spawn, the daemon's child,
// rather than by the daemon (sandbox/container/spawner.go): a runtime's
// PID 1 is the spawner's child, and the daemon did not fall back.
func TestRuntimesStartThroughSpawner(t *testing.T) {
	x := startExecutor(t)
	createIdle(t, x, "spawned", nil)
	spawner := spawnerOf(t, x.cmd.Process.Pid)
	var parents []int
	for _, pid := range hostPIDsOf(t, x) {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		ppid, _ := strconv.Atoi(f[1])
		parents = append(parents, ppid)
	}
	if !slices.Contains(parents, spawner) {
		t.Errorf("no runtime process is a child of executor-spawn (%d): parents %v", spawner, parents)
	}
	if strings.Contains(x.logs.String(), "install executor-spawn") {
		t.Errorf("the daemon fell back to starting containers itself:\n%s", x.logs.String())
	}
}
