package api

import (
	"context"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"executor/sandbox"
)

func TestHealth(t *testing.T) {
	stats := func() Backend {
		return statsBackend{fakeBackend: &fakeBackend{}, host: 12.5, per: map[string]float64{"fn-b": 3, "fn-a": math.NaN()}}
	}
	tests := []struct {
		name    string
		backend Backend
		auth    *string
		want    string
	}{
		{"no key", stats(), str(""), `{"status":"pass"}`},
		{"wrong key", stats(), str("Bearer nope"), `{"status":"pass"}`},
		{"valid key with stats", stats(), nil,
			`{"status":"pass","usage":12.5,"runtimes":{"fn-a":{"status":"pass","usage":0},"fn-b":{"status":"pass","usage":3}}}`},
		{"valid key, empty stats", statsBackend{fakeBackend: &fakeBackend{}}, nil, `{"status":"pass","usage":0,"runtimes":{}}`},
		{"valid key without stats", &fakeBackend{}, nil, `{"status":"pass"}`},
		{"valid key with figures", figures(), nil,
			`{"status":"pass","usage":12.5,"memory":{"total":8589934592,"available":3221225472},"runtimes":{` +
				`"fn-a":{"status":"pass","usage":0,"memory":{"usage":67108864,"limit":128000000},"pids":3},` +
				`"fn-b":{"status":"pass","usage":3},` +
				`"fn-c":{"status":"pass","usage":1.5,"memory":{"usage":4096,"limit":0},"pids":0}}}`},
		{"figures, no key", figures(), str(""), `{"status":"pass"}`},
		{"figures without host memory", usageBackend{fakeBackend: &fakeBackend{}, fig: sandbox.Usage{CPU: 1}}, nil,
			`{"status":"pass","usage":1,"runtimes":{}}`},
		{"warning, no key", warnBackend{stats(), []string{"limits off"}}, str(""), `{"status":"pass","warnings":["limits off"]}`},
		{"warning, valid key", warnBackend{statsBackend{fakeBackend: &fakeBackend{}}, []string{"limits off"}}, nil,
			`{"status":"pass","usage":0,"runtimes":{},"warnings":["limits off"]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, tt.backend)
			w := do(t, s, request{method: http.MethodGet, path: "/v1/health", auth: tt.auth})
			if w.Code != 200 || w.Body.String() != tt.want {
				t.Errorf("status %d body %s, want %s", w.Code, w.Body, tt.want)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json; charset=UTF-8" {
				t.Errorf("content type %q", ct)
			}
		})
	}
}

// The daemon's backend gives the memory and pids figures, not only Stats' CPU.
var _ UsageReporter = (*sandbox.Manager)(nil)

// usageBackend adds the optional UsageReporter interface.
type usageBackend struct {
	*fakeBackend
	fig sandbox.Usage
}

func (u usageBackend) UsageFigures() sandbox.Usage { return u.fig }

// figures is a backend with figures of three runtimes: one with memory and
// pids (and a NaN CPU figure), one whose cgroup has neither counter, one
// without a memory limit and with no task left.
func figures() Backend {
	return usageBackend{fakeBackend: &fakeBackend{}, fig: sandbox.Usage{
		CPU: 12.5, MemoryTotal: 8 << 30, MemoryAvailable: 3 << 30, HasMemory: true,
		Runtimes: map[string]sandbox.RuntimeUsage{
			"fn-a": {CPU: math.NaN(), Memory: 64 << 20, MemoryLimit: 128e6, PIDs: 3, HasMemory: true, HasPIDs: true},
			"fn-b": {CPU: 3},
			"fn-c": {CPU: 1.5, Memory: 4096, HasMemory: true, HasPIDs: true},
		},
	}}
}

// warnBackend adds warnings (a rootless daemon without limits) to a backend.
type warnBackend struct {
	Backend
	warnings []string
}

func (w warnBackend) Warnings() []string { return w.warnings }

func (w warnBackend) Usage() (float64, map[string]float64) {
	if s, ok := w.Backend.(Stats); ok {
		return s.Usage()
	}
	return 0, nil
}

func TestHealthWithEmptySecret(t *testing.T) {
	s := newTestServer(t, statsBackend{fakeBackend: &fakeBackend{}, host: 1}, func(c *Config) { c.Secret = "" })
	w := do(t, s, request{method: http.MethodGet, path: "/v1/health", auth: str("Bearer ")})
	if w.Code != 200 || w.Body.String() != `{"status":"pass"}` {
		t.Errorf("status %d body %s", w.Code, w.Body)
	}
}

// checkedBackend adds the optional Checker interface to a backend with stats, and counts the checks.
type checkedBackend struct {
	statsBackend
	mu    sync.Mutex
	err   error
	calls int
}

func (c *checkedBackend) Check(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	return c.err
}

func (c *checkedBackend) set(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.err = err
}

func (c *checkedBackend) checks() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

func checked(err error) *checkedBackend {
	return &checkedBackend{statsBackend: statsBackend{fakeBackend: &fakeBackend{}, host: 12.5, per: map[string]float64{"fn-a": 3}}, err: err}
}

var brokenHost = &sandbox.HealthError{
	Parts:    []string{sandbox.PartCgroupParent, sandbox.PartNetwork},
	Problems: []string{"cgroup parent /sys/fs/cgroup/memory/executor is missing", "network runtimes: bridge opr0123456789 is missing"},
}

// TestHealthReadiness: a backend whose Check fails makes health a 503 with the reason (details only for the key,
// and for HEAD the same status); one whose Check passes keeps the 200 documents byte for byte.
func TestHealthReadiness(t *testing.T) {
	unhealthy := func(msg string) string {
		return `{"type":"general_unknown","message":"` + msg + `","code":503,"version":"test"}`
	}
	tests := []struct {
		name    string
		backend Backend
		method  string
		auth    *string
		code    int
		want    string
	}{
		{"healthy, valid key", checked(nil), http.MethodGet, nil, 200,
			`{"status":"pass","usage":12.5,"runtimes":{"fn-a":{"status":"pass","usage":3}}}`},
		{"healthy, no key", checked(nil), http.MethodGet, str(""), 200, `{"status":"pass"}`},
		{"healthy, checker without stats", struct {
			*fakeBackend
			Checker
		}{&fakeBackend{}, checked(nil)}, http.MethodGet, nil, 200, `{"status":"pass"}`},
		{"broken host, valid key", checked(brokenHost), http.MethodGet, nil, 503,
			unhealthy("Executor is unhealthy: cgroup parent \\/sys\\/fs\\/cgroup\\/memory\\/executor is missing; network runtimes: bridge opr0123456789 is missing")},
		{"broken host, no key", checked(brokenHost), http.MethodGet, str(""), 503,
			unhealthy("Executor is unhealthy: its cgroup parent, network failed the health check (the executor key shows details).")},
		{"broken host, wrong key", checked(brokenHost), http.MethodGet, str("Bearer nope"), 503,
			unhealthy("Executor is unhealthy: its cgroup parent, network failed the health check (the executor key shows details).")},
		{"check error of no part, valid key", checked(errors.New("context deadline exceeded")), http.MethodGet, nil, 503,
			unhealthy("Executor is unhealthy: context deadline exceeded")},
		{"check error of no part, no key", checked(errors.New("context deadline exceeded")), http.MethodGet, str(""), 503,
			unhealthy("Executor is unhealthy (the executor key shows details).")},
		{"broken host, HEAD", checked(brokenHost), http.MethodHead, str(""), 503, "(no body)"},
		{"healthy, HEAD", checked(nil), http.MethodHead, str(""), 200, "(no body)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, tt.backend)
			w := do(t, s, request{method: tt.method, path: "/v1/health", auth: tt.auth})
			// The recorder keeps a HEAD reply's body, which net/http drops: only the status counts there.
			if w.Code != tt.code || (tt.method != http.MethodHead && w.Body.String() != tt.want) {
				t.Errorf("status %d body %s, want %d %s", w.Code, w.Body, tt.code, tt.want)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json; charset=UTF-8" {
				t.Errorf("content type %q", ct)
			}
			if cc := w.Header().Get("Cache-Control"); tt.code == 503 && cc != "no-cache, no-store, must-revalidate" {
				t.Errorf("a 503 may be cached: Cache-Control %q", cc)
			}
		})
	}
}

// TestHealthCheckCached: polls within a second share one check, and the next poll after it checks again, so a
// broken host is reported, and a repaired one passes, within a second.
func TestHealthCheckCached(t *testing.T) {
	b := checked(nil)
	s := newTestServer(t, b)
	now := time.Unix(1784800800, 0)
	s.ready.now = func() time.Time { return now }
	poll := func() int { return do(t, s, request{method: http.MethodGet, path: "/v1/health", auth: str("")}).Code }
	steps := []struct {
		advance time.Duration
		err     error
		code    int
		checks  int
	}{
		{0, nil, 200, 1},
		{0, nil, 200, 1},
		{500 * time.Millisecond, brokenHost, 200, 1}, // broken, but the verdict is half a second old
		{500 * time.Millisecond, brokenHost, 503, 2},
		{999 * time.Millisecond, nil, 503, 2}, // repaired, but the verdict is younger than a second
		{time.Millisecond, nil, 200, 3},
	}
	for i, st := range steps {
		now = now.Add(st.advance)
		b.set(st.err)
		if code := poll(); code != st.code || b.checks() != st.checks {
			t.Fatalf("step %d: status %d after %d checks, want %d after %d", i, code, b.checks(), st.code, st.checks)
		}
	}
}

// blockingBackend's executions wait for release, so that a test can hold one in flight.
type blockingBackend struct {
	*checkedBackend
	entered chan struct{}
	release chan struct{}
}

func (b blockingBackend) Execute(ctx context.Context, req sandbox.ExecRequest) (*sandbox.ExecResult, error) {
	b.entered <- struct{}{}
	<-b.release
	return b.checkedBackend.Execute(ctx, req)
}

// TestDrain: once Drain began, health answers 503 draining to everyone, even when the host is fine, and new keyed
// requests get the 503 of an executor shutting down, while the execution already in flight runs to its end;
// Drain returns when it has, or with its context's error before.
func TestDrain(t *testing.T) {
	b := blockingBackend{checkedBackend: checked(nil), entered: make(chan struct{}), release: make(chan struct{})}
	s := newTestServer(t, b)
	done := make(chan *httptest.ResponseRecorder)
	go func() {
		rq := jsonBody(`{"image":"openruntimes/node:v5-18.0","path":"/"}`)
		rq.path = "/v1/runtimes/fn/executions"
		done <- do(t, s, rq)
	}()
	<-b.entered

	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Drain(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain with an execution in flight returned %v before its deadline", err)
	}
	drained := make(chan error, 1)
	go func() { drained <- s.Drain(context.Background()) }()

	draining := `{"type":"general_unknown","message":"Executor is draining: it finishes the work in flight, takes no new work and stops.","code":503,"version":"test"}`
	for _, auth := range []*string{nil, str("")} {
		if w := do(t, s, request{method: http.MethodGet, path: "/v1/health", auth: auth}); w.Code != 503 || w.Body.String() != draining {
			t.Errorf("health while draining: %d %s", w.Code, w.Body)
		}
	}
	for _, rq := range []request{{method: http.MethodGet, path: "/v1/runtimes"}, {method: http.MethodDelete, path: "/v1/runtimes/fn"}} {
		w := do(t, s, rq)
		if w.Code != 503 || !strings.Contains(w.Body.String(), `"message":"Executor is shutting down."`) {
			t.Errorf("%s %s while draining: %d %s", rq.method, rq.path, w.Code, w.Body)
		}
	}
	if w := do(t, s, request{method: http.MethodGet, path: "/v1/runtimes", auth: str("")}); w.Code != 401 {
		t.Errorf("a request without the key while draining: %d %s, want the 401 it always gets", w.Code, w.Body)
	}
	if b.fakeBackend.deleted != nil {
		t.Errorf("a DELETE sent while draining reached the backend: %v", b.fakeBackend.deleted)
	}
	select {
	case err := <-drained:
		t.Fatalf("Drain returned %v with an execution in flight", err)
	case <-time.After(50 * time.Millisecond):
	}

	close(b.release)
	if w := <-done; w.Code != 200 {
		t.Errorf("the execution in flight when the drain began: %d %s", w.Code, w.Body)
	}
	select {
	case err := <-drained:
		if err != nil {
			t.Fatalf("Drain: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Drain did not return once the execution ended")
	}
	if err := s.Drain(context.Background()); err != nil {
		t.Fatalf("a second Drain: %v", err)
	}
	if w := do(t, s, request{method: http.MethodGet, path: "/v1/health"}); w.Code != 503 {
		t.Errorf("health after the drain: %d %s", w.Code, w.Body)
	}
}

// TestDrainIdle: with nothing in flight Drain returns at once.
func TestDrainIdle(t *testing.T) {
	s := newTestServer(t, &fakeBackend{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.Drain(ctx); err != nil {
		t.Fatalf("Drain of an idle server: %v", err)
	}
}
