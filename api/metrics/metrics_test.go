package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"executor/sandbox"
	"executor/sandbox/protocol"
	"executor/storage"
)

// sample is one series: a counter's or gauge's value, a histogram's count.
func sample(t *testing.T, m *Metrics, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	series:
		for _, s := range f.GetMetric() {
			if len(s.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range s.GetLabel() {
				if v, ok := labels[l.GetName()]; !ok || v != l.GetValue() {
					continue series
				}
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				return s.GetCounter().GetValue(), true
			case dto.MetricType_GAUGE:
				return s.GetGauge().GetValue(), true
			case dto.MetricType_HISTOGRAM:
				return float64(s.GetHistogram().GetSampleCount()), true
			}
		}
	}
	return 0, false
}

type want struct {
	name   string
	labels map[string]string
	value  float64
}

func TestObserversCount(t *testing.T) {
	ctx := context.Background()
	timeout := &sandbox.Error{Kind: sandbox.Timeout}
	oom := &sandbox.Error{Kind: sandbox.OutOfMemory}
	tests := []struct {
		name  string
		event func(m *Metrics)
		want  []want
	}{
		{"stage", func(m *Metrics) { m.Sandbox().Stage(ctx, "pull", time.Now(), time.Millisecond) },
			[]want{{"executor_cold_start_stage_duration_seconds", map[string]string{"stage": "pull"}, 1}}},
		{"readiness stage", func(m *Metrics) { m.Sandbox().Stage(ctx, "readiness", time.Now(), time.Millisecond) },
			[]want{{"executor_cold_start_stage_duration_seconds", map[string]string{"stage": "readiness"}, 1}}},
		{"unknown stage is bounded", func(m *Metrics) { m.Sandbox().Stage(ctx, "runtime-abc123", time.Now(), 0) },
			[]want{{"executor_cold_start_stage_duration_seconds", map[string]string{"stage": "other"}, 1}}},
		{"cold start ok", func(m *Metrics) { m.Sandbox().ColdStart(ctx, false, time.Second, nil) },
			[]want{
				{"executor_cold_starts_total", map[string]string{"outcome": "ok", "prewarmed": "false"}, 1},
				{"executor_cold_start_duration_seconds", map[string]string{"prewarmed": "false"}, 1},
			}},
		{"cold start failed is not a latency", func(m *Metrics) { m.Sandbox().ColdStart(ctx, true, time.Second, errors.New("x")) },
			[]want{
				{"executor_cold_starts_total", map[string]string{"outcome": "error", "prewarmed": "true"}, 1},
				{"executor_cold_starts_total", map[string]string{"outcome": "ok", "prewarmed": "true"}, 0},
				{"executor_cold_start_duration_seconds", map[string]string{"prewarmed": "true"}, 0},
			}},
		{"prewarm", func(m *Metrics) {
			m.Sandbox().Prewarm(ctx, true)
			m.Sandbox().Prewarm(ctx, false)
			m.Sandbox().Prewarm(ctx, false)
		}, []want{
			{"executor_prewarm_lookups_total", map[string]string{"result": "hit"}, 1},
			{"executor_prewarm_lookups_total", map[string]string{"result": "miss"}, 2},
		}},
		{"execution answered", func(m *Metrics) { m.Sandbox().Execution(ctx, protocol.V5, 503, time.Second, nil) },
			[]want{
				{"executor_executions_total", map[string]string{"version": "v5", "status": "5xx"}, 1},
				{"executor_execution_duration_seconds", map[string]string{"version": "v5"}, 1},
			}},
		{"execution timed out", func(m *Metrics) { m.Sandbox().Execution(ctx, protocol.V2, 0, time.Second, timeout) },
			[]want{{"executor_executions_total", map[string]string{"version": "v2", "status": "timeout"}, 1}}},
		{"execution OOM", func(m *Metrics) { m.Sandbox().Execution(ctx, protocol.V5, 0, time.Second, fmt.Errorf("x: %w", oom)) },
			[]want{{"executor_executions_total", map[string]string{"version": "v5", "status": "out_of_memory"}, 1}}},
		{"execution of no runtime", func(m *Metrics) { m.Sandbox().Execution(ctx, "", 0, 0, errors.New("internal")) },
			[]want{{"executor_executions_total", map[string]string{"version": "unknown", "status": "error"}, 1}}},
		{"builds", func(m *Metrics) {
			m.Sandbox().Build(ctx, time.Second, nil)
			m.Sandbox().Build(ctx, time.Second, &sandbox.Error{Kind: sandbox.BuildFailed})
			m.Sandbox().Build(ctx, time.Second, &sandbox.Error{Kind: sandbox.RuntimeFailed, Err: context.DeadlineExceeded})
		}, []want{
			{"executor_builds_total", map[string]string{"outcome": "ok"}, 1},
			{"executor_builds_total", map[string]string{"outcome": "failed"}, 1},
			{"executor_builds_total", map[string]string{"outcome": "timeout"}, 1},
			{"executor_builds_total", map[string]string{"outcome": "error"}, 0},
			{"executor_build_duration_seconds", nil, 3},
		}},
		{"exits and restarts", func(m *Metrics) {
			m.Sandbox().RuntimeExited(true)
			m.Sandbox().RuntimeExited(false)
			m.Sandbox().RuntimeRestarted()
		}, []want{
			{"executor_runtime_exits_total", map[string]string{"reason": "oom"}, 1},
			{"executor_runtime_exits_total", map[string]string{"reason": "exit"}, 1},
			{"executor_runtime_restarts_total", nil, 1},
		}},
		{"removals", func(m *Metrics) {
			m.Sandbox().RuntimeRemoved(sandbox.RemovedMaintenance)
			m.Sandbox().RuntimeRemoved(sandbox.RemovedOOM)
			m.Sandbox().RuntimeRemoved("made-up")
		}, []want{
			{"executor_runtimes_removed_total", map[string]string{"reason": "maintenance"}, 1},
			{"executor_runtimes_removed_total", map[string]string{"reason": "oom"}, 1},
			{"executor_runtimes_removed_total", map[string]string{"reason": "deleted"}, 0},
			{"executor_runtimes_removed_total", map[string]string{"reason": "other"}, 1},
		}},
		{"pulls", func(m *Metrics) {
			m.Images().Pull(ctx, time.Second, 1000, nil)
			m.Images().Pull(ctx, time.Second, 24, errors.New("unreachable"))
		}, []want{
			{"executor_image_pulls_total", map[string]string{"outcome": "ok"}, 1},
			{"executor_image_pulls_total", map[string]string{"outcome": "error"}, 1},
			{"executor_image_pull_bytes_total", nil, 1024},
			{"executor_image_pull_duration_seconds", nil, 2},
		}},
		{"storage", func(m *Metrics) {
			m.Storage().Operation(ctx, "s3", "write", time.Millisecond, nil)
			m.Storage().Operation(ctx, "s3", "write", time.Millisecond, fmt.Errorf("put: %w", storage.ErrUnavailable))
			m.Storage().Operation(ctx, "local", "read", time.Millisecond, storage.ErrOutsideRoots)
		}, []want{
			{"executor_storage_operations_total", map[string]string{"device": "s3", "operation": "write"}, 2},
			{"executor_storage_errors_total", map[string]string{"device": "s3", "operation": "write", "reason": "unavailable"}, 1},
			{"executor_storage_errors_total", map[string]string{"device": "local", "operation": "read", "reason": "refused"}, 1},
			{"executor_storage_operation_duration_seconds", map[string]string{"device": "s3", "operation": "write"}, 2},
		}},
		{"api requests", func(m *Metrics) {
			r := httptest.NewRequest("POST", "/v1/runtimes/abc/executions", nil)
			m.API().Request(r, "/v1/runtimes/:runtimeId/executions", 200, time.Millisecond)
			m.API().Request(r, "/v1/runtimes/:runtimeId/executions", 200, time.Millisecond)
			m.API().Request(httptest.NewRequest("BREW", "/coffee", nil), "", 404, time.Millisecond)
		}, []want{
			{"executor_api_requests_total", map[string]string{"route": "/v1/runtimes/:runtimeId/executions", "method": "POST", "status": "200"}, 2},
			{"executor_api_requests_total", map[string]string{"route": "unmatched", "method": "other", "status": "404"}, 1},
			{"executor_api_request_duration_seconds", map[string]string{"route": "/v1/runtimes/:runtimeId/executions", "method": "POST"}, 2},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := New()
			tc.event(m)
			for _, w := range tc.want {
				got, ok := sample(t, m, w.name, w.labels)
				if !ok && w.value != 0 {
					t.Errorf("%s%v: no such series", w.name, w.labels)
					continue
				}
				if got != w.value {
					t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.value)
				}
			}
		})
	}
}

func TestScrapedSources(t *testing.T) {
	m := New()
	calls := 0
	err := m.Watch(Sources{
		Runtimes:   func() (int, int) { calls++; return 2, 3 },
		LayerBytes: func() int64 { return 4096 },
		DataDir:    t.TempDir(),
		Usage:      func() (float64, uint64, uint64) { return 1.5, 64 << 20, 12 },
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []want{
		{"executor_runtimes_cpu_cores", nil, 1.5},
		{"executor_runtimes_memory_bytes", nil, 64 << 20},
		{"executor_runtimes_tasks", nil, 12},
		{"executor_runtimes", map[string]string{"state": "pending"}, 2},
		{"executor_runtimes", map[string]string{"state": "ready"}, 3},
		{"executor_image_layer_store_bytes", nil, 4096},
	} {
		if got, _ := sample(t, m, w.name, w.labels); got != w.value {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.value)
		}
	}
	if free, ok := sample(t, m, "executor_data_dir_free_bytes", nil); !ok || free <= 0 {
		t.Errorf("data dir free bytes %v (%v)", free, ok)
	}
	if size, _ := sample(t, m, "executor_data_dir_size_bytes", nil); size <= 0 {
		t.Errorf("data dir size %v", size)
	}
	if calls != 8 {
		t.Errorf("runtimes counted %d times for 8 gathers, want once per gather", calls)
	}
}

// The handler serves the text format with the Go and process collectors,
// and every series declared at 0 is there before anything happened.
func TestHandler(t *testing.T) {
	m := New()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, s := range []string{
		"go_goroutines ", "process_open_fds ",
		`executor_cold_starts_total{outcome="error",prewarmed="false"} 0`,
		`executor_runtime_exits_total{reason="oom"} 0`,
		`executor_runtimes_removed_total{reason="maintenance"} 0`,
	} {
		if !strings.Contains(string(body), s) {
			t.Errorf("no %q in\n%s", s, body)
		}
	}
}

// A data dir that is gone is an error of that metric, not of the scrape.
func TestScrapedDataDirGone(t *testing.T) {
	m := New()
	dir := t.TempDir()
	if err := m.Watch(Sources{DataDir: dir + "/gone", Runtimes: func() (int, int) { return 0, 1 }}); err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(dir + "/gone")
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), `executor_runtimes{state="ready"} 1`) {
		t.Errorf("the other metrics were lost with the data dir's: %d\n%s", resp.StatusCode, body)
	}
}

// Every executor_ metric the alert rules and the dashboard in contrib/ use
// is one of ours: a rename here must not leave them querying nothing.
func TestContribUsesOurMetrics(t *testing.T) {
	m := New()
	if err := m.Watch(Sources{Runtimes: func() (int, int) { return 0, 0 }, LayerBytes: func() int64 { return 0 }, DataDir: "/"}); err != nil {
		t.Fatal(err)
	}
	ours := map[string]bool{}
	descs := make(chan *prometheus.Desc)
	go func() {
		for _, c := range []prometheus.Collector{m.executions, m.executionDuration, m.coldStarts, m.coldStartDuration, m.stageDuration,
			m.prewarm, m.builds, m.buildDuration, m.exits, m.restarts, m.removed, m.pulls, m.pullBytes, m.pullDuration,
			m.storageOps, m.storageErrors, m.storageDuration, m.requests, m.requestDuration, &scraped{src: Sources{Runtimes: func() (int, int) { return 0, 0 }, LayerBytes: func() int64 { return 0 }, DataDir: "/"}}} {
			c.Describe(descs)
		}
		close(descs)
	}()
	fqName := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for d := range descs {
		if sm := fqName.FindStringSubmatch(d.String()); sm != nil {
			ours[sm[1]] = true
		}
	}
	if len(ours) < 20 {
		t.Fatalf("found only %d metrics: %v", len(ours), ours)
	}
	used := regexp.MustCompile(`\bexecutor_[a-z_]+`)
	for _, file := range []string{"../../contrib/prometheus/alerts.yml", "../../contrib/grafana/executor-dashboard.json"} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		names := used.FindAllString(string(data), -1)
		if len(names) == 0 {
			t.Errorf("%s uses no executor metric", file)
		}
		for _, n := range names {
			base := n
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				if b, ok := strings.CutSuffix(n, suffix); ok && ours[b] {
					base = b
				}
			}
			if !ours[base] {
				t.Errorf("%s uses %s, which is not a metric of the executor", file, n)
			}
		}
	}
}

func TestStatusLabels(t *testing.T) {
	for _, tc := range []struct {
		status int
		err    error
		want   string
	}{
		{200, nil, "2xx"}, {302, nil, "3xx"}, {404, nil, "4xx"}, {0, nil, "other"},
		{0, &sandbox.Error{Kind: sandbox.RuntimeFailed}, "runtime_failed"},
		{0, &sandbox.Error{Kind: sandbox.HostFailed}, "host_failed"},
		{0, &sandbox.Error{Kind: sandbox.Capacity}, "capacity"},
		{0, &sandbox.Error{Kind: sandbox.ShuttingDown}, "shutting_down"},
		{0, fmt.Errorf("x: %w", context.Canceled), "canceled"},
	} {
		if got := executionStatus(tc.status, tc.err); got != tc.want {
			t.Errorf("executionStatus(%d, %v) = %s, want %s", tc.status, tc.err, got, tc.want)
		}
	}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{storage.ErrNotFound, "not_found"}, {storage.ErrUnauthorized, "unauthorized"}, {storage.ErrTooLarge, "too_large"},
		{storage.ErrNotRegular, "refused"}, {storage.ErrInvalidPath, "refused"}, {context.DeadlineExceeded, "canceled"},
		{errors.New("disk on fire"), "other"},
	} {
		if got := storageReason(tc.err); got != tc.want {
			t.Errorf("storageReason(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}
