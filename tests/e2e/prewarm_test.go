package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// prewarmProbe prints what a runtime's server process can observe of
// itself, less what differs between any two runtimes (secret, hostname,
// the log id of the exchange): its environment, user, working directory,
// limits, capabilities, seccomp and no_new_privs, id maps, mounts, source,
// network files.
const prewarmProbe = `env | grep -v -E '^(OPEN_RUNTIMES_SECRET|HOSTNAME|LOG_ID|LOGS_DIR|PWD|SHLVL|_)=' | sort
echo --- user; id; pwd; ulimit -n; ulimit -u
echo --- status; grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status
echo --- ids; cat /proc/self/uid_map /proc/self/gid_map
echo --- mounts; awk '{print $5, $6}' /proc/self/mountinfo | sort
echo --- source; ls -la /usr/local/server/src/function | awk '{print $1, $3, $4, $5, $9}'; cat /usr/local/server/src/function/marker
echo --- net; grep -c . /etc/hosts; grep -c . /etc/resolv.conf; hostname | wc -c; ip -4 -o addr 2>/dev/null | awk '{print $2}' | sort
`

// TestPrewarmedSandboxes: with OPR_EXECUTOR_PREWARM, the first cold start of
// an image is made as always and has the pool prewarm a sandbox for it; the
// next cold start is made from that sandbox, and its runtime observes the
// same of itself as the first (environment, user, limits, confinement,
// mounts, source, network), serves, runs commands with its environment,
// and restarts under its restart policy with the same environment.
func TestPrewarmedSandboxes(t *testing.T) {
	x := startExecutor(t, "OPR_EXECUTOR_PREWARM=2")
	checkPrewarmed(t, x, source(t, prewarmSource))
}

// TestPrewarmIsOnByDefault: a daemon with OPR_EXECUTOR_PREWARM unset keeps
// a pool: the second cold start of an image is made from a sandbox the
// first one had prewarmed, and at shutdown the pool leaves nothing.
func TestPrewarmIsOnByDefault(t *testing.T) {
	x := startExecutor(t, "OPR_EXECUTOR_PREWARM=")
	src := source(t, map[string]string{"index.js": "x"})
	for i, id := range []string{"default-1", "default-2"} {
		if i == 1 {
			waitLog(t, x, "sandbox prewarmed", 1)
		}
		if r := x.request(t, "POST", "/v1/runtimes/"+id+"/executions", execBody(src, nil), jsonAccept); r.status != 200 {
			t.Fatalf("%s: %d %s", id, r.status, r.body)
		}
	}
	if !strings.Contains(x.logs.String(), `"runtime prepared from a prewarmed sandbox" component=sandbox runtime=default-2`) {
		t.Fatalf("default-2 was not made from a prewarmed sandbox:\n%s", x.logs.String())
	}
	for _, id := range []string{"default-1", "default-2"} {
		if r := x.request(t, "DELETE", "/v1/runtimes/"+id, nil, nil); r.status != 200 {
			t.Fatalf("delete %s: %d %s", id, r.status, r.body)
		}
	}
}

// TestRootlessPrewarmedSandboxes is TestPrewarmedSandboxes with the rootless
// daemon, its cgroup delegated: the limits are set at unpark there too.
func TestRootlessPrewarmedSandboxes(t *testing.T) {
	x := startRootless(t, rootlessUser(t, true), "OPR_EXECUTOR_PREWARM=2")
	checkPrewarmed(t, x.executor, x.source(t, prewarmSource))
}

var prewarmSource = map[string]string{"index.js": "x", "marker": "source of the request"}

// checkPrewarmed runs the checks of TestPrewarmedSandboxes on x, whose
// OPR_EXECUTOR_PREWARM is 2, with src (prewarmSource).
func checkPrewarmed(t *testing.T, x *executor, src string) {
	body := func(extra map[string]any) map[string]any {
		b := execBody(src, map[string]any{
			"variables": map[string]string{"TEST_PREWARM": "request's variable"},
			"cpus":      0.5, "memory": 128, "restartPolicy": "always",
		})
		for k, v := range extra {
			b[k] = v
		}
		return b
	}
	probe := func(id string, cold bool) string {
		t.Helper()
		b := map[string]any{"path": "/shell", "method": "POST", "body": prewarmProbe}
		if cold {
			b = body(b)
		}
		r := x.request(t, "POST", "/v1/runtimes/"+id+"/executions", b, jsonAccept)
		if r.status != 200 {
			t.Fatalf("%s: %d %s", id, r.status, r.body)
		}
		out, _ := r.json(t)["body"].(string)
		if !strings.Contains(out, "--- net") || strings.Contains(out, "shell: ") {
			t.Fatalf("%s: probe: %s", id, out)
		}
		return out
	}

	plain := probe("pw-plain", true)
	if strings.Contains(x.logs.String(), "from a prewarmed sandbox") {
		t.Fatal("the first cold start of the image had a prewarmed sandbox")
	}
	waitLog(t, x, "sandbox prewarmed", 1)
	pooled := probe("pw-pooled", true)
	if !strings.Contains(x.logs.String(), `"runtime prepared from a prewarmed sandbox" component=sandbox runtime=pw-pooled`) {
		t.Fatalf("pw-pooled was not made from the prewarmed sandbox:\n%s", x.logs.String())
	}
	if plain != pooled {
		t.Fatalf("a runtime from a prewarmed sandbox observes another self:\n--- made as always:\n%s\n--- from the sandbox:\n%s", plain, pooled)
	}
	for _, want := range []string{"TEST_PREWARM=request's variable", "source of the request"} {
		if !strings.Contains(pooled, want) {
			t.Errorf("the pooled runtime lacks %q:\n%s", want, pooled)
		}
	}

	// Its limits are the request's, not the sandbox's.
	r := x.request(t, "POST", "/v1/runtimes/pw-pooled/executions", map[string]any{"path": "/cgroup"}, jsonAccept)
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if cg := readCgroupSeen(t, r); cg.MemoryBytes != 128_000_000 || cg.CPUQuotaUs != 50000 || cg.CPUPeriodUs != 100000 || cg.PidsMax != 1024 {
		t.Fatalf("limits seen inside the pooled runtime: %+v", cg)
	}
	// Commands get the runtime's environment.
	if out, status := command(t, x, "pw-pooled", "echo $TEST_PREWARM; pwd"); status != 200 || out != "request's variable\n/usr/local/server\n" {
		t.Fatalf("command in the pooled runtime: %d %q", status, out)
	}
	// The list shows the hostname the runtime has.
	var rt map[string]any
	if r := x.request(t, "GET", "/v1/runtimes/pw-pooled", nil, nil); r.status != 200 {
		t.Fatalf("get: %d %s", r.status, r.body)
	} else if err := json.Unmarshal(r.body, &rt); err != nil {
		t.Fatal(err)
	}
	if out, _ := command(t, x, "pw-pooled", "hostname"); strings.TrimSpace(out) != rt["hostname"] {
		t.Errorf("hostname %q inside, %q in the API", strings.TrimSpace(out), rt["hostname"])
	}
	// A restart runs the request's command with its environment again.
	x.request(t, "POST", "/v1/runtimes/pw-pooled/executions", map[string]any{"path": "/exit?code=3"}, jsonAccept)
	deadline := time.Now().Add(30 * time.Second)
	for {
		again := probe("pw-pooled", false)
		if again == pooled {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a restart the pooled runtime observes another self:\n%s\n--- before:\n%s", again, pooled)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// With demand for two, the pool refills to two.
	waitLog(t, x, "sandbox prewarmed", 2)

	// A request a sandbox cannot take (its source is missing) fails as
	// on the spot (core_test's "missing source"), and the sandbox goes
	// with it: the harness finds nothing left after the stop.
	missing := filepath.Join(filepath.Dir(src), "nonexistent", "code.tar.gz")
	r = x.request(t, "POST", "/v1/runtimes/pw-missing/executions", execBody(missing, nil), jsonAccept)
	if r.status != 500 || !strings.Contains(string(r.body), "Failed to copy source code") {
		t.Fatalf("a missing source with a prewarmed sandbox: %d %s", r.status, r.body)
	}
	waitLog(t, x, "a prewarmed sandbox could not take the request", 1)
	if r := x.request(t, "GET", "/v1/runtimes/pw-missing", nil, nil); r.status != 404 {
		t.Fatalf("the failed runtime is listed: %d %s", r.status, r.body)
	}
	for _, id := range []string{"pw-plain", "pw-pooled"} {
		if r := x.request(t, "DELETE", "/v1/runtimes/"+id, nil, nil); r.status != 200 {
			t.Fatalf("delete %s: %d %s", id, r.status, r.body)
		}
	}
	// The daemon's stop removes the idle sandboxes: the harness checks
	// that nothing is left.
}

// waitLog waits until the executor's log holds msg at least n times.
func waitLog(t testing.TB, x *executor, msg string, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for x.logs.Count(msg) < n {
		if time.Now().After(deadline) {
			t.Fatalf("the log never said %q %d times:\n%s", msg, n, x.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitLogLine waits for a whole line of x's log that holds every one of
// parts, and returns it.
func waitLogLine(t testing.TB, x *executor, parts ...string) string {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if line, ok := x.logs.line(parts...); ok {
			return line
		}
		if time.Now().After(deadline) {
			t.Fatalf("the log never had a line with %q:\n%s", parts, x.logs.String())
		}
	}
}
