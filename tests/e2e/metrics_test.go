package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"executor/netns"
	"executor/tests/testenv"
)

// startWithMetrics is an executor serving its metrics on a free loopback
// port, and that port's address.
func startWithMetrics(t *testing.T, extra ...string) (*executor, string) {
	t.Helper()
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	return startExecutor(t, append([]string{"OPR_EXECUTOR_METRICS_LISTEN=" + addr}, extra...)...), addr
}

// scrape is GET /metrics on addr: its text, and each sample by its series
// as the text format writes it (labels sorted by name), a histogram by its
// _count, _sum and _bucket series.
func scrape(t *testing.T, addr string) (string, map[string]float64) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d %v\n%s", resp.StatusCode, err, body)
	}
	samples := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("sample %q: %v", line, err)
		}
		samples[line[:i]] = v
	}
	return string(body), samples
}

// series is a sample's name as the text format writes it: name, then the
// labels (name, value pairs) sorted by name.
func series(name string, labels ...string) string {
	if len(labels) == 0 {
		return name
	}
	pairs := make([]string, 0, len(labels)/2)
	for i := 0; i+1 < len(labels); i += 2 {
		pairs = append(pairs, fmt.Sprintf("%s=%q", labels[i], labels[i+1]))
	}
	slices.Sort(pairs)
	return name + "{" + strings.Join(pairs, ",") + "}"
}

// promtool is the path of Prometheus' promtool; without it the test is
// skipped, except on CI (CI=true), where it must be installed.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool is not installed (Debian package prometheus: apt-get install -y --no-install-recommends prometheus)")
		}
		t.Skip("promtool is not installed (Debian package prometheus)")
	}
	return p
}

// TestMetricsCountTheWorkload runs a scripted workload (cold starts, warm
// executions, an execution its runtime answers 500, an OOM kill, a crash
// that the restart policy restarts, a build, a failed build, a delete) and
// checks every count it makes, exactly: counters and histograms' counts.
func TestMetricsCountTheWorkload(t *testing.T) {
	x, addr := startWithMetrics(t)
	src := source(t, map[string]string{"index.js": "x"})
	const route = "/v1/runtimes/:runtimeId/executions"
	run := func(id string, body map[string]any) *response {
		t.Helper()
		return x.request(t, "POST", "/v1/runtimes/"+id+"/executions", body, jsonAccept)
	}
	// Two cold starts.
	for _, id := range []string{"cold-0", "cold-1"} {
		if r := run(id, execBody(src, map[string]any{"path": "/status?code=200"})); r.status != 200 || r.json(t)["statusCode"] != float64(200) {
			t.Fatalf("cold start %s: %d %s", id, r.status, r.body)
		}
	}
	// Three warm executions and one the runtime answers 500.
	for _, code := range []int{201, 202, 204, 500} {
		if r := run("cold-0", map[string]any{"path": fmt.Sprintf("/status?code=%d", code)}); r.status != 200 || r.json(t)["statusCode"] != float64(code) {
			t.Fatalf("warm execution: %d %s", r.status, r.body)
		}
	}
	// An OOM kill: the execution fails and, with no restart policy, the
	// runtime is removed.
	if r := run("oom", execBody(src, map[string]any{"path": "/alloc?mb=256", "memory": 64})); r.status != 500 || !strings.Contains(string(r.body), "ran out of memory") {
		t.Fatalf("OOM: %d %s", r.status, r.body)
	}
	waitGone(t, x, "oom")
	// Counted just after it left the table, on the supervisor's goroutine.
	waitSample(t, addr, series("executor_runtimes_removed_total", "reason", "oom"), 1)
	// A crash that restartPolicy always restarts.
	if r := run("crash", execBody(src, map[string]any{"path": "/exit?code=1", "restartPolicy": "always"})); r.status != 500 {
		t.Fatalf("crash: %d %s", r.status, r.body)
	}
	waitSample(t, addr, series("executor_runtime_restarts_total"), 1)
	x.deleteRuntime(t, "crash")
	// A build (removed once built) and a build that fails.
	dest := shared.storage + "/builds/metrics"
	if r := x.request(t, "POST", "/v1/runtimes", map[string]any{
		"runtimeId": "build", "image": "openruntimes/test:v5-1", "source": src, "entrypoint": "index.js",
		"destination": dest, "remove": true,
		"command": `tar -zxf /tmp/code.tar.gz -C /mnt/code && sh helpers/build.sh "echo installing"`,
	}, nil); r.status != 201 {
		t.Fatalf("build: %d %s", r.status, r.body)
	}
	if r := x.request(t, "POST", "/v1/runtimes", map[string]any{
		"runtimeId": "build-fail", "image": "openruntimes/test:v5-1", "command": "exit 7",
	}, nil); r.status != 400 {
		t.Fatalf("failed build: %d %s", r.status, r.body)
	}
	x.deleteRuntime(t, "cold-1")

	text, got := scrape(t, addr)
	want := map[string]float64{
		// Six executions answered, one OOM kill, one crash.
		series("executor_executions_total", "version", "v5", "status", "2xx"):           5,
		series("executor_executions_total", "version", "v5", "status", "5xx"):           1,
		series("executor_executions_total", "version", "v5", "status", "out_of_memory"): 1,
		series("executor_executions_total", "version", "v5", "status", "error"):         1,
		series("executor_execution_duration_seconds_count", "version", "v5"):            8,
		// cold-0, cold-1, oom, crash, build, build-fail: all assembled.
		series("executor_cold_starts_total", "outcome", "ok", "prewarmed", "false"):      6,
		series("executor_cold_starts_total", "outcome", "error", "prewarmed", "false"):   0,
		series("executor_cold_start_duration_seconds_count", "prewarmed", "false"):       6,
		series("executor_cold_start_stage_duration_seconds_count", "stage", "source"):    6,
		series("executor_cold_start_stage_duration_seconds_count", "stage", "pull"):      6,
		series("executor_cold_start_stage_duration_seconds_count", "stage", "root"):      6,
		series("executor_cold_start_stage_duration_seconds_count", "stage", "network"):   6,
		series("executor_cold_start_stage_duration_seconds_count", "stage", "config"):    6,
		series("executor_cold_start_stage_duration_seconds_count", "stage", "container"): 6,
		// Only executions that started their runtime wait for readiness.
		series("executor_cold_start_stage_duration_seconds_count", "stage", "readiness"): 4,
		// The pool is off (the harness's default).
		series("executor_prewarm_lookups_total", "result", "hit"):  0,
		series("executor_prewarm_lookups_total", "result", "miss"): 0,
		series("executor_builds_total", "outcome", "ok"):           1,
		series("executor_builds_total", "outcome", "failed"):       1,
		series("executor_build_duration_seconds_count"):            2,
		series("executor_runtime_exits_total", "reason", "oom"):    1,
		series("executor_runtime_exits_total", "reason", "exit"):   1,
		series("executor_runtime_restarts_total"):                  1,
		// crash and cold-1 deleted, build removed once built.
		series("executor_runtimes_removed_total", "reason", "deleted"):     3,
		series("executor_runtimes_removed_total", "reason", "oom"):         1,
		series("executor_runtimes_removed_total", "reason", "exited"):      0,
		series("executor_runtimes_removed_total", "reason", "maintenance"): 0,
		series("executor_runtimes", "state", "ready"):                      1,
		series("executor_runtimes", "state", "pending"):                    0,
		// One image, pulled once into this daemon's fresh store.
		series("executor_image_pulls_total", "outcome", "ok"):    1,
		series("executor_image_pulls_total", "outcome", "error"): 0,
		series("executor_image_pull_duration_seconds_count"):     1,
		// Sources read by the five runtimes that have one, the artifact
		// written.
		series("executor_storage_operations_total", "device", "local", "operation", "read"):               5,
		series("executor_storage_operations_total", "device", "local", "operation", "write"):              1,
		series("executor_api_requests_total", "route", route, "method", "POST", "status", "200"):          6,
		series("executor_api_requests_total", "route", route, "method", "POST", "status", "500"):          2,
		series("executor_api_requests_total", "route", "/v1/runtimes", "method", "POST", "status", "201"): 1,
		series("executor_api_requests_total", "route", "/v1/runtimes", "method", "POST", "status", "400"): 1,
		series("executor_api_request_duration_seconds_count", "route", route, "method", "POST"):           8,
	}
	for s, w := range want {
		if v, ok := got[s]; !ok || v != w {
			t.Errorf("%s = %v (present %v), want %v", s, v, ok, w)
		}
	}
	for _, s := range []string{
		series("executor_image_pull_bytes_total"), series("executor_image_layer_store_bytes"),
		series("executor_data_dir_free_bytes"), series("executor_data_dir_size_bytes"),
		"go_goroutines", "process_resident_memory_bytes",
		// The ready runtime's memory and tasks, from the usage sampler.
		series("executor_runtimes_memory_bytes"), series("executor_runtimes_tasks"),
	} {
		if got[s] <= 0 {
			t.Errorf("%s = %v, want more than 0", s, got[s])
		}
	}
	// No runtime id is ever a label.
	for _, id := range []string{"cold-0", "cold-1", "build-fail", "crash"} {
		if strings.Contains(text, id) {
			t.Errorf("the metrics name runtime %s", id)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", text)
	}

	// What Prometheus' own checker says of the output.
	cmd := exec.Command(promtool(t), "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// waitGone waits until the runtime id has left the table.
func waitGone(t *testing.T, x *executor, id string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second) // generous: a loaded machine
	for x.request(t, "GET", "/v1/runtimes/"+id, nil, nil).status != 404 {
		if time.Now().After(deadline) {
			t.Fatalf("runtime %s still listed", id)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitSample waits until the series reaches want (events counted on their
// own goroutines, such as restarts).
func waitSample(t *testing.T, addr, s string, want float64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, got := scrape(t, addr)
		if got[s] == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v", s, got[s], want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The metrics listener serves /metrics only, without the key, and is not
// the API; the API's port does not serve the metrics.
func TestMetricsListenerIsNotTheAPI(t *testing.T) {
	x, addr := startWithMetrics(t)
	get := func(url string) int {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	tests := []struct {
		url    string
		status int
	}{
		{"http://" + addr + "/metrics", 200},
		{"http://" + addr + "/v1/health", 404},
		{"http://" + addr + "/v1/runtimes", 404},
		{"http://" + addr + "/", 404},
		{x.url + "/metrics", 404},
	}
	for _, tc := range tests {
		if got := get(tc.url); got != tc.status {
			t.Errorf("GET %s: %d, want %d", tc.url, got, tc.status)
		}
	}
	// Nor with the key: the API has no /metrics at all.
	if r := x.request(t, "GET", "/metrics", nil, nil); r.status != 404 {
		t.Errorf("GET /metrics on the API with the key: %d %s", r.status, r.body)
	}
	if r := x.request(t, "POST", "/v1/runtimes", nil, nil); r.status == 404 {
		t.Error("the API's port does not answer its own routes")
	}
}

// A metrics port that is taken stops the daemon at start, with a message
// naming the setting, before it made anything: no image store, no bridge,
// no cgroup parent.
func TestBusyMetricsPortStopsTheDaemon(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	apiPort, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	// Beside the harness's data dirs: out of every storage root.
	dir, err := os.MkdirTemp(shared.data, "metrics-busy-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o711); err != nil { // runtimes' root traverses it
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	network := fmt.Sprintf("e2e-mbusy-%d", os.Getpid())
	cgParent := fmt.Sprintf("/executor-e2e-mbusy-%d", os.Getpid())
	cmd := exec.Command(shared.bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "OPR_EXECUTOR_ENV=development", "OPR_EXECUTOR_SECRET=" + secret,
		fmt.Sprintf("OPR_EXECUTOR_LISTEN=127.0.0.1:%d", apiPort), "OPR_EXECUTOR_METRICS_LISTEN=" + ln.Addr().String(),
		"OPR_EXECUTOR_DATA_DIR=" + data, "OPR_EXECUTOR_NETWORK=" + network, "OPR_EXECUTOR_SUBNET=" + freeSubnet(t).String(),
		"OPR_EXECUTOR_CGROUP_PARENT=" + cgParent, "CONTAINERS_REGISTRIES_CONF=" + shared.registriesConf}
	done := make(chan struct{})
	var out []byte
	go func() {
		defer close(done)
		out, err = cmd.CombinedOutput()
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("the daemon did not stop on a busy metrics port:\n%s", out)
	}
	if err == nil || !strings.Contains(string(out), "OPR_EXECUTOR_METRICS_LISTEN") || !strings.Contains(string(out), ln.Addr().String()) {
		t.Fatalf("exit %v, output:\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(data, "images")); err == nil {
		t.Error("the daemon made its image store before refusing the metrics port")
	}
	if _, err := netlink.LinkByName(netns.BridgeName(network)); err == nil {
		t.Errorf("bridge %s made before refusing the metrics port", netns.BridgeName(network))
	}
	hs, err := cgroupHierarchies()
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		if _, err := os.Stat(filepath.Join(h, cgParent)); err == nil {
			t.Errorf("cgroup parent %s made before refusing the metrics port", filepath.Join(h, cgParent))
		}
	}
	// The API's port was let go too.
	if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", apiPort)); err != nil {
		t.Errorf("the API's port is still held: %v", err)
	} else {
		l.Close()
	}
}

// The alert rules in contrib/ are valid Prometheus rules.
func TestAlertRulesCheck(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool(t), "check", "rules", filepath.Join(root, "contrib/prometheus/alerts.yml")).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

// With the prewarm pool on, the first cold start of an image misses and the
// next one, once a sandbox is parked, hits: both counted, and the cold
// starts labelled by it.
func TestMetricsCountPrewarm(t *testing.T) {
	x, addr := startWithMetrics(t, "OPR_EXECUTOR_PREWARM=1")
	src := source(t, map[string]string{"index.js": "x"})
	if r := x.request(t, "POST", "/v1/runtimes/pw-0/executions", execBody(src, nil), jsonAccept); r.status != 200 {
		t.Fatalf("cold start: %d %s", r.status, r.body)
	}
	waitLog(t, x, "sandbox prewarmed", 1)
	if r := x.request(t, "POST", "/v1/runtimes/pw-1/executions", execBody(src, nil), jsonAccept); r.status != 200 {
		t.Fatalf("prewarmed start: %d %s", r.status, r.body)
	}
	_, got := scrape(t, addr)
	for s, w := range map[string]float64{
		series("executor_prewarm_lookups_total", "result", "miss"):                       1,
		series("executor_prewarm_lookups_total", "result", "hit"):                        1,
		series("executor_cold_starts_total", "outcome", "ok", "prewarmed", "false"):      1,
		series("executor_cold_starts_total", "outcome", "ok", "prewarmed", "true"):       1,
		series("executor_cold_start_duration_seconds_count", "prewarmed", "true"):        1,
		series("executor_cold_start_stage_duration_seconds_count", "stage", "pull"):      1,
		series("executor_cold_start_stage_duration_seconds_count", "stage", "readiness"): 2,
		series("executor_executions_total", "version", "v5", "status", "2xx"):            2,
	} {
		if got[s] != w {
			t.Errorf("%s = %v, want %v", s, got[s], w)
		}
	}
}
