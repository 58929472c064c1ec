package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"executor/netns"
	"executor/tests/testenv"
)

// Two executors on one host must never harm each other: a second daemon that
// would share the first's data dir, cgroup parent, bridge, subnet or port is refused at
// start, exits non-zero with a message naming the setting, and the first's
// runtimes carry on untouched.

// runtimePIDs lists the processes in the executor's runtime cgroups, sorted.
func (x *executor) runtimePIDs(t *testing.T) []int {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/pids", x.cgParent, "*", "cgroup.procs"))
	more, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", x.cgParent, "*", "cgroup.procs"))
	var pids []int
	for _, f := range append(files, more...) {
		b, _ := os.ReadFile(f)
		for _, s := range strings.Fields(string(b)) {
			if p, err := strconv.Atoi(s); err == nil && !slices.Contains(pids, p) {
				pids = append(pids, p)
			}
		}
	}
	slices.Sort(pids)
	return pids
}

// bridgeState describes the executor's bridge (index, alias, ports), to
// compare before and after another daemon's start.
func (x *executor) bridgeState(t *testing.T) string {
	t.Helper()
	br, err := netlink.LinkByName(netns.BridgeName(x.network))
	if err != nil {
		t.Fatalf("bridge of %s: %v", x.network, err)
	}
	links, _ := netlink.LinkList()
	var ports []string
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			ports = append(ports, l.Attrs().Name)
		}
	}
	slices.Sort(ports)
	return fmt.Sprintf("index=%d alias=%q ports=%v", br.Attrs().Index, br.Attrs().Alias, ports)
}

// instance is the configuration of a second daemon, fresh in every setting
// that must differ between two executors on a host.
type instance struct {
	dataDir, network, cgParent, subnet, listen string
}

func newInstance(t *testing.T) instance {
	t.Helper()
	instanceSeq.mu.Lock()
	instanceSeq.n++
	seq := instanceSeq.n
	instanceSeq.mu.Unlock()
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	in := instance{
		dataDir:  filepath.Join(shared.data, fmt.Sprintf("second-%d", seq)),
		network:  fmt.Sprintf("e2e-%d-second-%d", os.Getpid(), seq),
		cgParent: fmt.Sprintf("/executor-e2e-%d-second-%d", os.Getpid(), seq),
		subnet:   freeSubnet(t).String(),
		listen:   fmt.Sprintf("127.0.0.1:%d", port),
	}
	t.Cleanup(func() { _ = os.RemoveAll(in.dataDir) })
	return in
}

func (in instance) env() []string {
	return []string{
		"OPR_EXECUTOR_DATA_DIR=" + in.dataDir,
		"OPR_EXECUTOR_NETWORK=" + in.network,
		"OPR_EXECUTOR_CGROUP_PARENT=" + in.cgParent,
		"OPR_EXECUTOR_SUBNET=" + in.subnet,
		"OPR_EXECUTOR_LISTEN=" + in.listen,
	}
}

// runRefused runs bin/executor with the first's environment plus env (later
// entries win) and expects it to exit non-zero by itself; it returns the output.
func runRefused(t *testing.T, first *executor, env ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, shared.bin)
	cmd.Env = append(append([]string{}, first.env...), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A daemon that was not refused (the failure this test looks for) is
	// stopped as an operator would, so that it removes what it made; only
	// one that does not stop is killed.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 60 * time.Second
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("the second daemon was not refused: it still ran after 60s\n%s", out)
	case err == nil:
		t.Fatalf("the second daemon exited 0, want a refusal\n%s", out)
	case !errors.As(err, &exit):
		t.Fatalf("run the second daemon: %v", err)
	}
	return string(out)
}

// assertServes checks that the runtime id still answers an execution.
func (x *executor) assertServes(t *testing.T, id, src string) {
	t.Helper()
	r := x.request(t, "POST", "/v1/runtimes/"+id+"/executions", execBody(src, nil), jsonAccept)
	if r.status != 200 || r.json(t)["statusCode"] != float64(200) {
		t.Fatalf("runtime %s of the first daemon: %d %s", id, r.status, r.body)
	}
}

func TestSecondInstanceIsRefused(t *testing.T) {
	// The first daemon also carries a misspelt setting: it is warned about
	// by name, and nothing else changes.
	first := startExecutor(t, "OPR_EXECUTOR_FOO=1", "OPR_EXECUTOR_NETWROK=typo")
	for _, name := range []string{"OPR_EXECUTOR_FOO", "OPR_EXECUTOR_NETWROK"} {
		found := false
		for _, line := range logLines(first.logs.String()) {
			if strings.Contains(line, "unknown setting") && strings.Contains(line, name) {
				found = true
			}
		}
		if !found {
			t.Errorf("no warning names the unknown setting %s:\n%s", name, first.logs.String())
		}
	}
	for _, line := range logLines(first.logs.String()) {
		if strings.Contains(line, "unknown setting") && !strings.Contains(line, "OPR_EXECUTOR_FOO") && !strings.Contains(line, "OPR_EXECUTOR_NETWROK") {
			t.Errorf("a known setting was warned about: %s", line)
		}
	}

	src := source(t, map[string]string{"index.js": "first"})
	first.assertServes(t, "keep", src)
	subnet := first.subnet(t)
	inner := fmt.Sprintf("%s/%d", subnet.Addr().Next().Next(), subnet.Bits()+1) // overlaps, not equal
	firstBridge := netns.BridgeName(first.network)

	tests := []struct {
		name string
		// keep are the first's settings the second daemon shares (from
		// its own fresh ones, a subnet given as a value overrides).
		keep func(in *instance)
		// says is what the refusal must name.
		says []string
		// sharesBridge: the second's bridge is the first's (same network
		// name), so its absence is not to be checked.
		sharesBridge bool
	}{
		{"same data dir", func(in *instance) { in.dataDir = first.dataDir },
			[]string{"OPR_EXECUTOR_DATA_DIR", first.dataDir, fmt.Sprintf("executor pid %d holds it", first.cmd.Process.Pid)}, false},
		{"same network name", func(in *instance) { in.network = first.network },
			[]string{"OPR_EXECUTOR_NETWORK", first.network, "bridge " + firstBridge, "belongs to another executor", first.dataDir}, true},
		{"same network name and subnet", func(in *instance) { in.network, in.subnet = first.network, subnet.String() },
			[]string{"OPR_EXECUTOR_NETWORK", "bridge " + firstBridge, "belongs to another executor"}, true},
		{"same subnet", func(in *instance) { in.subnet = subnet.String() },
			[]string{"OPR_EXECUTOR_SUBNET", subnet.String(), "interface " + firstBridge, "another executor"}, false},
		{"a subnet inside the first's", func(in *instance) { in.subnet = inner },
			[]string{"OPR_EXECUTOR_SUBNET", "interface " + firstBridge}, false},
		{"same cgroup parent", func(in *instance) { in.cgParent = first.cgParent },
			[]string{"OPR_EXECUTOR_CGROUP_PARENT", first.cgParent, fmt.Sprintf("executor pid %d holds it", first.cmd.Process.Pid)}, false},
		{"same port", func(in *instance) { in.listen = strings.TrimPrefix(first.url, "http://") },
			[]string{"OPR_EXECUTOR_LISTEN", strings.TrimPrefix(first.url, "http://"), "address already in use"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			first.assertServes(t, "keep", src) // warm, or started again should an earlier case have failed
			pids := first.runtimePIDs(t)
			if len(pids) == 0 {
				t.Fatal("the first daemon's runtime has no processes: the check would be blind")
			}
			bridge := first.bridgeState(t)
			in := newInstance(t)
			tc.keep(&in)
			out := runRefused(t, first, in.env()...)
			if lines := logLines(out); len(lines) > 0 {
				t.Logf("refused: %s", lines[len(lines)-1])
			}
			for _, s := range tc.says {
				if !strings.Contains(out, s) {
					t.Errorf("the refusal does not say %q:\n%s", s, out)
				}
			}
			if strings.Contains(out, "Executor is ready") {
				t.Errorf("the refused daemon said it was ready:\n%s", out)
			}
			// The first is untouched: the same runtime processes, bridge
			// and ports; it still serves, its runtime warm.
			if got := first.runtimePIDs(t); !slices.Equal(got, pids) {
				t.Errorf("the first's runtime processes changed: %v -> %v", pids, got)
			}
			if got := first.bridgeState(t); got != bridge {
				t.Errorf("the first's bridge changed:\n%s\n%s", bridge, got)
			}
			first.assertServes(t, "keep", src)
			// And the refused daemon left nothing of its own on the host.
			if !tc.sharesBridge {
				if _, err := netlink.LinkByName(netns.BridgeName(in.network)); err == nil {
					t.Errorf("the refused daemon left its bridge %s", netns.BridgeName(in.network))
				}
			}
			if in.cgParent != first.cgParent {
				if p, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*", in.cgParent)); len(p) > 0 {
					t.Errorf("the refused daemon made its cgroup parent: %v", p)
				}
				if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", in.cgParent)); err == nil {
					t.Errorf("the refused daemon made its cgroup parent %s", in.cgParent)
				}
			}
		})
	}
	// The first still stops cleanly and removes everything (the harness
	// checks): none of the refused daemons took any of it.
}

// The daemon binds its port before it reconciles: a restart after a crash
// that cannot have its port must not have removed (killed) the runtimes the
// crashed run left, which another process could still be serving.
func TestListenerBoundBeforeReconcile(t *testing.T) {
	x := startExecutor(t)
	src := source(t, map[string]string{"index.js": "x"})
	x.assertServes(t, "left", src)
	x.kill()
	pids := x.runtimePIDs(t)
	left := x.leftovers()
	if len(pids) == 0 || len(left) == 0 {
		t.Fatal("a killed executor should have left its runtime running (the check would be blind)")
	}
	// Someone else takes the port in the meantime.
	addr := strings.TrimPrefix(x.url, "http://")
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("take the crashed daemon's port: %v", err)
	}
	defer l.Close()

	out := runRefused(t, x)
	for _, s := range []string{"OPR_EXECUTOR_LISTEN", addr, "address already in use"} {
		if !strings.Contains(out, s) {
			t.Errorf("the refusal does not say %q:\n%s", s, out)
		}
	}
	if strings.Contains(out, "removed leftovers") || strings.Contains(out, "killed processes") {
		t.Errorf("the refused restart reconciled:\n%s", out)
	}
	if got := x.runtimePIDs(t); !slices.Equal(got, pids) {
		t.Errorf("the refused restart touched the runtime's processes: %v -> %v", pids, got)
	}
	for _, p := range pids {
		if err := syscall.Kill(p, 0); err != nil {
			t.Errorf("runtime process %d: %v", p, err)
		}
	}
	if got := x.leftovers(); !slices.Equal(got, left) {
		t.Errorf("the refused restart removed leftovers:\n%s\n->\n%s", strings.Join(left, "\n"), strings.Join(got, "\n"))
	}

	// With its port back it reconciles and serves.
	l.Close()
	x.start()
	x.waitClean(t)
	x.assertServes(t, "again", src)
}
