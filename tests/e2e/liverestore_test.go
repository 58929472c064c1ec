package e2e

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"executor/netns"
	"executor/tests/testenv"
)

// liveRestoreOn is the setting the live-restore tests start their daemon with.
const liveRestoreOn = "OPR_EXECUTOR_LIVE_RESTORE=true"

// withLiveRestore starts a daemon with live restore and arranges for its end:
// whatever state the test left it in, the daemon is stopped, started once
// more without live restore (which removes every runtime an earlier run
// left, records included), and then the harness stops it and checks that
// nothing is left.
func withLiveRestore(t *testing.T, extra ...string) *executor {
	t.Helper()
	x := startExecutor(t, append([]string{liveRestoreOn}, extra...)...)
	endLiveRestore(t, x)
	return x
}

// endLiveRestore arranges for x, started with live restore, to end: stopped
// (its runtimes left running), then started once more without live restore,
// which removes every runtime the earlier run left, records included, before
// the harness stops it and checks that nothing is left. Cleanups run last
// first: call it after startExecutor.
func endLiveRestore(t testing.TB, x *executor) {
	t.Cleanup(func() {
		x.stop()
		x.env = setEnv(x.env, "OPR_EXECUTOR_LIVE_RESTORE", "false")
		x.start()
		if ents, err := os.ReadDir(filepath.Join(x.dataDir, "state")); err == nil && len(ents) > 0 {
			t.Errorf("state records left once live restore is off: %d", len(ents))
		}
	})
}

// setEnv returns env with name set to value (appended: later entries win).
func setEnv(env []string, name, value string) []string {
	return append(append([]string(nil), env...), name+"="+value)
}

// runtimeDir is the data dir's directory of the runtime whose hostname is
// hostname (the container id is its name).
func runtimeDir(t *testing.T, x *executor, hostname string) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(x.dataDir, "runtimes", "*", "hosts"))
	for _, f := range files {
		data, _ := os.ReadFile(f)
		for _, line := range strings.Split(string(data), "\n") {
			if fields := strings.Fields(line); len(fields) == 2 && fields[1] == hostname {
				return filepath.Dir(f)
			}
		}
	}
	t.Fatalf("no runtime directory for host %s", hostname)
	return ""
}

// containerPIDs lists the host pids of the processes in container cid's
// cgroups (every hierarchy; each pid once).
func containerPIDs(t *testing.T, x *executor, cid string) []int {
	t.Helper()
	cgs, err := x.cgroupsBelowParent()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	var pids []int
	for _, cg := range cgs {
		if filepath.Base(cg) != cid {
			continue
		}
		data, _ := os.ReadFile(filepath.Join(cg, "cgroup.procs"))
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
				seen[pid] = true
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// runtimeInfo is GET /v1/runtimes/{id}'s body.
func runtimeInfo(t *testing.T, x *executor, id string) map[string]any {
	t.Helper()
	r := x.request(t, "GET", "/v1/runtimes/"+id, nil, nil)
	if r.status != 200 {
		t.Fatalf("GET %s: %d %s", id, r.status, r.body)
	}
	return r.json(t)
}

// TestLiveRestore: with OPR_EXECUTOR_LIVE_RESTORE, runtimes outlive a
// restart of the daemon, by SIGTERM and by SIGKILL, and the new daemon
// serves them as its own: same id, key, host name and creation time, no
// cold start, commands, logs, restart policy, delete and shutdown. A
// runtime that ended while no daemon ran, and one whose record is broken,
// are removed, with everything they held.
func TestLiveRestore(t *testing.T) {
	x := withLiveRestore(t)
	createIdle(t, x, "keep", nil)
	createIdle(t, x, "policy", map[string]any{"restartPolicy": "always", "runtimeEntrypoint": countingStart})
	createIdle(t, x, "ended", nil)
	createIdle(t, x, "broken", nil)
	// Built: its build output is what a log stream of it replays.
	createIdle(t, x, "built", map[string]any{"command": "echo built-marker"})
	// Says something as it starts and as it ends, around the server.
	createIdle(t, x, "onfail", map[string]any{"restartPolicy": "on-failure", "runtimeEntrypoint": "echo start-marker; " + startCommand + "; code=$?; echo end-marker-$code; exit $code"})
	before := map[string]map[string]any{}
	for _, id := range []string{"keep", "policy", "ended", "broken"} {
		if r := x.request(t, "POST", "/v1/runtimes/"+id+"/executions", map[string]any{"path": "/"}, jsonAccept); r.status != 200 {
			t.Fatalf("%s: %d %s", id, r.status, r.body)
		}
		before[id] = runtimeInfo(t, x, id)
	}
	keepAddr := runtimeAddr(t, x, before["keep"]["hostname"].(string))

	x.stop()
	if !strings.Contains(x.logs.String(), "runtimes left running for the next start") {
		t.Fatalf("the daemon did not leave its runtimes:\n%s", x.logs.String())
	}
	// The runtimes run on with no daemon: their servers answer, and their
	// output going nowhere does not end them (executor-init drains it).
	if r, err := directGet(keepAddr, before["keep"]["key"].(string)); err != nil || r != 200 {
		t.Fatalf("runtime keep with no daemon: %d %v", r, err)
	}
	// One runtime's processes end while no daemon runs; another's record
	// is garbage.
	endedDir := runtimeDir(t, x, before["ended"]["hostname"].(string))
	for _, pid := range containerPIDs(t, x, filepath.Base(endedDir)) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	brokenDir := runtimeDir(t, x, before["broken"]["hostname"].(string))
	if err := os.WriteFile(filepath.Join(x.dataDir, "state", filepath.Base(brokenDir)+".json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(containerPIDs(t, x, filepath.Base(endedDir))) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}

	mark := len(x.logs.String())
	x.start()
	logs := x.logs.String()[mark:]
	for _, id := range []string{"keep", "policy"} {
		if !strings.Contains(logs, "runtime restored") || !strings.Contains(logs, "runtime="+id+" ") {
			t.Errorf("%s not restored:\n%s", id, logs)
		}
		now := runtimeInfo(t, x, id)
		for _, k := range []string{"created", "hostname", "key", "name", "image", "version"} {
			if now[k] != before[id][k] {
				t.Errorf("%s: %s %v after the restart, %v before", id, k, now[k], before[id][k])
			}
		}
	}
	for _, id := range []string{"ended", "broken"} {
		if r := x.request(t, "GET", "/v1/runtimes/"+id, nil, nil); r.status != 404 {
			t.Errorf("%s after the restart: %d %s, want 404", id, r.status, r.body)
		}
		if !strings.Contains(logs, "runtime not restored: removing it") {
			t.Errorf("no word of %s not being restored:\n%s", id, logs)
		}
	}
	for _, dir := range []string{endedDir, brokenDir} {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%s left after the restart: %v", dir, err)
		}
		if pids := containerPIDs(t, x, filepath.Base(dir)); len(pids) > 0 {
			t.Errorf("processes of %s left: %v", filepath.Base(dir), pids)
		}
	}
	if n := len(x.leftovers()); n == 0 {
		t.Error("leftovers() sees nothing of the restored runtimes: the check below would prove nothing")
	}

	// Served as before, without a cold start.
	mark = len(x.logs.String())
	r := x.request(t, "POST", "/v1/runtimes/keep/executions", map[string]any{"path": "/logs"}, jsonAccept)
	if r.status != 200 {
		t.Fatalf("keep after the restart: %d %s", r.status, r.body)
	}
	if res := r.json(t); !strings.Contains(res["logs"].(string), "log line") || !strings.Contains(res["errors"].(string), "error line") {
		t.Errorf("keep's logs after the restart: %q errors %q", res["logs"], res["errors"])
	}
	if strings.Contains(x.logs.String()[mark:], "runtime prepared") {
		t.Errorf("keep was cold-started again:\n%s", x.logs.String()[mark:])
	}
	if out, st := command(t, x, "keep", "echo from-inside"); st != 200 || !strings.Contains(out, "from-inside") {
		t.Errorf("command in keep after the restart: %d %q", st, out)
	}
	if stream := logStream(t, x, "built"); !strings.Contains(stream, "built-marker") {
		t.Errorf("built's log stream after the restart: %q, want its build output", stream)
	}

	// The restart policy goes on: the main process ends, and comes back.
	if r := x.request(t, "POST", "/v1/runtimes/policy/executions", map[string]any{"path": "/exit?code=1", "method": "POST", "body": "end"}, jsonAccept); r.status != 500 {
		t.Errorf("policy's /exit: %d %s, want 500", r.status, r.body)
	}
	if r := x.request(t, "POST", "/v1/runtimes/policy/executions", map[string]any{"path": "/"}, jsonAccept); r.status != 200 {
		t.Fatalf("policy after its main process ended: %d %s", r.status, r.body)
	}
	if out, _ := command(t, x, "policy", "cat /tmp/starts"); strings.Count(out, "started") != 2 {
		t.Errorf("policy's starts: %q, want 2", out)
	}

	// The exit code of an adopted runtime's main process is known
	// (executor-init reports it): exit 0 under on-failure is not
	// restarted, and the runtime leaves the table. Its output goes on
	// from what the earlier daemon kept with what it wrote since.
	mark = len(x.logs.String())
	if r := x.request(t, "POST", "/v1/runtimes/onfail/executions", map[string]any{"path": "/exit?code=0", "method": "POST", "body": "end"}, jsonAccept); r.status != 500 {
		t.Errorf("onfail's /exit: %d %s, want 500", r.status, r.body)
	}
	deadline = time.Now().Add(30 * time.Second)
	for x.request(t, "GET", "/v1/runtimes/onfail", nil, nil).status != 404 {
		if time.Now().After(deadline) {
			t.Fatal("onfail is still listed after its main process exited 0 under on-failure: its exit code was not known")
		}
		time.Sleep(50 * time.Millisecond)
	}
	var exited string
	for _, line := range strings.Split(x.logs.String()[mark:], "\n") {
		if strings.Contains(line, "runtime main process exited") && strings.Contains(line, "onfail") {
			exited = line
		}
	}
	for _, want := range []string{"exit code 0", "start-marker", "end-marker-0"} {
		if !strings.Contains(exited, want) {
			t.Errorf("onfail's exit, logged as %q, lacks %q", exited, want)
		}
	}

	// A crash of the daemon keeps them too.
	x.kill()
	x.start()
	if got := runtimeInfo(t, x, "keep")["created"]; got != before["keep"]["created"] {
		t.Errorf("keep after SIGKILL: created %v, want %v", got, before["keep"]["created"])
	}
	if r := x.request(t, "POST", "/v1/runtimes/policy/executions", map[string]any{"path": "/"}, jsonAccept); r.status != 200 {
		t.Fatalf("policy after SIGKILL: %d %s", r.status, r.body)
	}

	// A restored runtime is deleted like any other: nothing of it is left.
	keepDir := runtimeDir(t, x, before["keep"]["hostname"].(string))
	x.deleteRuntime(t, "keep")
	deadline = time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(keepDir); os.IsNotExist(err) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(keepDir); !os.IsNotExist(err) {
		t.Errorf("deleted restored runtime's directory is still there: %v", err)
	}
	if pids := containerPIDs(t, x, filepath.Base(keepDir)); len(pids) > 0 {
		t.Errorf("deleted restored runtime's processes are still there: %v", pids)
	}
	if _, err := os.Stat(filepath.Join(x.dataDir, "state", filepath.Base(keepDir)+".json")); !os.IsNotExist(err) {
		t.Errorf("deleted runtime's record is still there: %v", err)
	}
	// A deleted runtime stays deleted across a restart.
	x.kill()
	x.start()
	if r := x.request(t, "GET", "/v1/runtimes/keep", nil, nil); r.status != 404 {
		t.Errorf("deleted runtime after a restart: %d %s", r.status, r.body)
	}
}

// logStream reads GET /v1/runtimes/{id}/logs to its end.
func logStream(t *testing.T, x *executor, id string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", x.url+"/v1/runtimes/"+id+"/logs?timeout=30", nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("log stream of %s: %d %s", id, resp.StatusCode, b)
	}
	return string(b)
}

// directGet sends GET / straight to a runtime's server with its key.
func directGet(addr, key string) (int, error) {
	req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
	req.Header.Set("x-open-runtimes-secret", key)
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("opr:"+key)))
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	drain(resp)
	return resp.StatusCode, nil
}

// TestLiveRestorePrewarmed: with prewarmed sandboxes (the default), a runtime
// made from a sandbox is kept and adopted like one made on the spot, and the
// sandboxes still waiting in the pool are not: the stop removes them.
func TestLiveRestorePrewarmed(t *testing.T) {
	x := withLiveRestore(t, "OPR_EXECUTOR_PREWARM=2")
	src := source(t, map[string]string{"index.js": "x"})
	// The first cold start of the image has the pool prewarm one.
	if r := x.request(t, "POST", "/v1/runtimes/first/executions", execBody(src, nil), jsonAccept); r.status != 200 {
		t.Fatalf("first: %d %s", r.status, r.body)
	}
	waitLog(t, x, "sandbox prewarmed", 1)
	if r := x.request(t, "POST", "/v1/runtimes/pooled/executions", execBody(src, nil), jsonAccept); r.status != 200 {
		t.Fatalf("pooled: %d %s", r.status, r.body)
	}
	// Logged before the answer, read from the daemon's pipe after it.
	waitLog(t, x, "runtime prepared from a prewarmed sandbox", 1)
	waitLog(t, x, "sandbox prewarmed", 2) // the pool refills: one waits at the stop
	created := map[string]any{}
	for _, id := range []string{"first", "pooled"} {
		created[id] = runtimeInfo(t, x, id)["created"]
	}
	x.stop()
	x.start()
	for _, id := range []string{"first", "pooled"} {
		if got := runtimeInfo(t, x, id)["created"]; got != created[id] {
			t.Errorf("%s: created %v after the restart, %v before", id, got, created[id])
		}
		if r := x.request(t, "POST", "/v1/runtimes/"+id+"/executions", map[string]any{"path": "/"}, jsonAccept); r.status != 200 {
			t.Errorf("%s after the restart: %d %s", id, r.status, r.body)
		}
	}
	// Only the two runtimes are left of the first run: the waiting
	// sandbox went with the stop (or the start's sweep).
	dirs, _ := os.ReadDir(filepath.Join(x.dataDir, "runtimes"))
	if len(dirs) != 2 {
		var names []string
		for _, d := range dirs {
			names = append(names, d.Name())
		}
		t.Errorf("runtime directories after the restart: %v, want the two runtimes'", names)
	}
}

// TestLiveRestoreNetworkPool: with network endpoints kept ready (the
// default), a runtime whose endpoint came from the pool is adopted like
// any other, through a graceful restart and then a SIGKILL: the endpoints
// each new process makes ready never take the adopted one's namespace
// (pooled namespaces are named by the process that made them), and the
// ready ones of a stopped or killed process are removed.
func TestLiveRestoreNetworkPool(t *testing.T) {
	x := withLiveRestore(t, networkPoolDefault)
	src := source(t, map[string]string{"index.js": "x"})
	waitLog(t, x, "network endpoint pooled", 2)
	if r := x.request(t, "POST", "/v1/runtimes/pooled/executions", execBody(src, nil), jsonAccept); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if line := waitLogLine(t, x, "runtime prepared", "runtime=pooled "); !strings.Contains(line, "pooledNetwork=true") {
		t.Fatalf("the runtime did not take a ready endpoint: %s", line)
	}
	created := runtimeInfo(t, x, "pooled")["created"]
	pooled := 3 // made ready so far: two at start, one refill
	waitLog(t, x, "network endpoint pooled", pooled)
	for _, restart := range []struct {
		name string
		stop func()
	}{{"restart", x.stop}, {"SIGKILL", x.kill}} {
		restart.stop()
		x.start()
		pooled += 2 // the new process makes two ready
		waitLog(t, x, "network endpoint pooled", pooled)
		if got := runtimeInfo(t, x, "pooled")["created"]; got != created {
			t.Fatalf("after a %s: created %v, %v before: not adopted", restart.name, got, created)
		}
		if r := x.request(t, "POST", "/v1/runtimes/pooled/executions", map[string]any{"path": "/"}, jsonAccept); r.status != 200 {
			t.Fatalf("after a %s: %d %s", restart.name, r.status, r.body)
		}
		// The runtime's namespace and two ready ones: the earlier
		// process's ready ones are gone.
		ns, _ := filepath.Glob(filepath.Join(x.dataDir, "networks", "*", "ns", "*"))
		if len(ns) != 3 {
			t.Errorf("after a %s: namespace files %v, want the runtime's and two ready", restart.name, ns)
		}
	}
}

// TestLiveRestoreRefusesAPrivateMountNamespace: a daemon in a mount
// namespace of its own (systemd's ProtectHome= and the like) would take its
// runtimes' mounts with it when it stops, so live restore refuses to start
// there, before it takes the port or makes anything. (unshare makes the
// namespace and then runs the daemon: its parent is this test, in the
// namespace the daemon was started from.)
func TestLiveRestoreRefusesAPrivateMountNamespace(t *testing.T) {
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	network := fmt.Sprintf("e2e-lr-%d", os.Getpid())
	cmd := exec.Command("unshare", "--mount", "--propagation", "slave", "--", shared.bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "OPR_EXECUTOR_ENV=development", "OPR_EXECUTOR_SECRET=" + secret,
		fmt.Sprintf("OPR_EXECUTOR_LISTEN=127.0.0.1:%d", port), "OPR_EXECUTOR_DATA_DIR=" + filepath.Join(shared.data, "live-restore-refused"),
		"OPR_EXECUTOR_NETWORK=" + network, "OPR_EXECUTOR_SUBNET=" + freeSubnet(t).String(),
		"OPR_EXECUTOR_CGROUP_PARENT=/" + network, liveRestoreOn}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Errorf("exit %v, want 1:\n%s", err, out)
	}
	if want := "OPR_EXECUTOR_LIVE_RESTORE: the daemon runs in a mount namespace of its own"; !strings.Contains(string(out), want) {
		t.Errorf("output lacks %q:\n%s", want, out)
	}
	if _, err := netlink.LinkByName(netns.BridgeName(network)); err == nil {
		t.Errorf("bridge %s made by a daemon that refused to start", netns.BridgeName(network))
	}
}
