package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

func TestTracesURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"},
		{"http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/traces"},
		{"https://collector.example/otlp/v1/traces", "https://collector.example/otlp/v1/traces"},
		{"http://[::1]:4318/custom", "http://[::1]:4318/custom"},
	}
	for _, tt := range tests {
		got, err := tracesURL(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("tracesURL(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// recordingTracing is a tracing whose spans go to the returned recorder.
func recordingTracing(t *testing.T) (*tracing, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	return newTracing(tp, slog.New(slog.DiscardHandler)), rec
}

// TestTracingRequestSpan: the handler's span continues the caller's trace,
// is named after the route the API reports, carries its status (an error
// for a 5xx only) and is the parent of the stage spans, which keep the
// stages' own times.
func TestTracingRequestSpan(t *testing.T) {
	const (
		callerTrace = "0af7651916cd43dd8448eb211c80319c"
		callerSpan  = "b7ad6b7169203331"
	)
	tests := []struct {
		name        string
		method      string
		traceparent string
		route       string
		status      int
		wantName    string
		wantError   bool
	}{
		{"continued", "POST", "00-" + callerTrace + "-" + callerSpan + "-01", "/v1/runtimes/:runtimeId/executions", 200, "POST /v1/runtimes/:runtimeId/executions", false},
		{"new trace", "GET", "", "/v1/runtimes", 200, "GET /v1/runtimes", false},
		{"client error", "DELETE", "", "/v1/runtimes/:runtimeId", 404, "DELETE /v1/runtimes/:runtimeId", false},
		{"server error", "POST", "", "/v1/runtimes", 503, "POST /v1/runtimes", true},
		{"the first server error", "GET", "", "/v1/health", 500, "GET /v1/health", true},
		{"the last client error", "GET", "", "/v1/health", 499, "GET /v1/health", false},
		{"no route", "GET", "", "", 404, "GET", false},
		{"odd method", "BREW", "", "", 405, "_OTHER", false},
		{"malformed traceparent", "GET", "00-zz-yy-01", "/v1/health", 200, "GET /v1/health", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, rec := recordingTracing(t)
			stageStart := time.Now().Add(-time.Second)
			api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				tr.sandboxObserver().Stage(r.Context(), "pull", stageStart, 250*time.Millisecond)
				w.WriteHeader(tt.status)
				tr.apiObserver().Request(r, tt.route, tt.status, time.Millisecond)
			})
			r := httptest.NewRequest(tt.method, "/v1/anything", nil)
			if tt.traceparent != "" {
				r.Header.Set("traceparent", tt.traceparent)
			}
			r.Header.Set("User-Agent", "caller/1.0")
			tr.handler(api).ServeHTTP(httptest.NewRecorder(), r)

			spans := rec.Ended()
			if len(spans) != 2 {
				t.Fatalf("%d spans, want the stage and the request", len(spans))
			}
			stage, server := spans[0], spans[1]
			if server.Name() != tt.wantName || server.SpanKind() != trace.SpanKindServer {
				t.Errorf("request span %q (%v), want %q (server)", server.Name(), server.SpanKind(), tt.wantName)
			}
			continued := tt.traceparent != "" && !strings.Contains(tt.traceparent, "zz")
			if continued {
				if server.SpanContext().TraceID().String() != callerTrace || server.Parent().SpanID().String() != callerSpan || !server.Parent().IsRemote() {
					t.Errorf("request span in trace %s under %v, want the caller's %s/%s", server.SpanContext().TraceID(), server.Parent(), callerTrace, callerSpan)
				}
			} else if server.Parent().IsValid() {
				t.Errorf("request span has parent %v, want a new trace", server.Parent())
			}
			if got := attrValue(server.Attributes(), "http.response.status_code"); got != int64(tt.status) {
				t.Errorf("http.response.status_code %v", got)
			}
			// Who asked, and how (httptest's requests come from 192.0.2.1, over plain HTTP).
			for key, want := range map[string]any{"client.address": "192.0.2.1", "user_agent.original": "caller/1.0",
				"url.scheme": "http", "url.path": "/v1/anything", "http.request.method": spanMethod(tt.method)} {
				if got := attrValue(server.Attributes(), key); got != want {
					t.Errorf("%s %v, want %v", key, got, want)
				}
			}
			if tt.route != "" && attrValue(server.Attributes(), "http.route") != tt.route {
				t.Errorf("http.route %v", attrValue(server.Attributes(), "http.route"))
			}
			if isErr := server.Status().Code == codes.Error; isErr != tt.wantError {
				t.Errorf("status %v for %d", server.Status(), tt.status)
			}
			if stage.Name() != "pull" || stage.Parent().SpanID() != server.SpanContext().SpanID() {
				t.Errorf("stage span %q under %v, want pull under the request's %v", stage.Name(), stage.Parent().SpanID(), server.SpanContext().SpanID())
			}
			if !stage.StartTime().Equal(stageStart) || stage.EndTime().Sub(stage.StartTime()) != 250*time.Millisecond {
				t.Errorf("stage span [%v, %v], want %v for 250ms", stage.StartTime(), stage.EndTime(), stageStart)
			}
		})
	}
}

func attrValue(kvs []attribute.KeyValue, key string) any {
	for _, kv := range kvs {
		if string(kv.Key) == key {
			return kv.Value.AsInterface()
		}
	}
	return nil
}

// TestTracingStageWithoutTrace: a creation no request waits for (prewarm)
// makes no span, rather than a trace of its own.
func TestTracingStageWithoutTrace(t *testing.T) {
	tr, rec := recordingTracing(t)
	tr.sandboxObserver().Stage(context.Background(), "pull", time.Now(), time.Second)
	if n := len(rec.Ended()); n != 0 {
		t.Errorf("%d spans without a request", n)
	}
}

// TestNilTracing: a nil *tracing leaves the handler as it is and observes
// nothing.
func TestNilTracing(t *testing.T) {
	tr, err := startTracing(context.Background(), &config{}, slog.New(slog.DiscardHandler))
	if err != nil || tr != nil {
		t.Fatalf("startTracing without an endpoint: %v, %v", tr, err)
	}
	h := http.NotFoundHandler()
	if got := tr.handler(h); got == nil {
		t.Error("no handler")
	}
	if tr.apiObserver() != nil || tr.sandboxObserver() != nil {
		t.Error("observers without tracing")
	}
	tr.shutdown(context.Background())
}

// failingExporter fails the exports while fail is set.
type failingExporter struct {
	mu   sync.Mutex
	fail bool
}

func (e *failingExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.fail {
		return errors.New("connection refused")
	}
	return nil
}

func (e *failingExporter) Shutdown(context.Context) error { return nil }

// TestReportingExporter: a collector that stops taking spans is reported
// once at warning level, and once more when it takes them again; the
// processor is never handed the error (it would only print it).
func TestReportingExporter(t *testing.T) {
	var logs bytes.Buffer
	inner := &failingExporter{}
	e := &reportingExporter{SpanExporter: inner, log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})), endpoint: "http://c/v1/traces"}
	for _, fail := range []bool{false, true, true, true, false, false, true} {
		inner.fail = fail
		if err := e.ExportSpans(context.Background(), nil); err != nil {
			t.Fatalf("ExportSpans returned %v", err)
		}
	}
	out := logs.String()
	if n := strings.Count(out, "level=WARN"); n != 2 {
		t.Errorf("%d warnings for two outages:\n%s", n, out)
	}
	if n := strings.Count(out, "takes spans again"); n != 1 {
		t.Errorf("%d recoveries logged for one:\n%s", n, out)
	}
}

// TestStartTracingExports: the daemon's tracing sends OTLP/HTTP protobuf to
// the endpoint's default path, with the service's resource, and flushes
// what it holds at shutdown.
func TestStartTracingExports(t *testing.T) {
	var mu sync.Mutex
	var got []*coltracepb.ExportTraceServiceRequest
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			body = zr
		}
		raw, _ := io.ReadAll(body)
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(raw, &req); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		mu.Lock()
		got = append(got, &req)
		paths = append(paths, r.URL.Path)
		mu.Unlock()
	}))
	defer srv.Close()
	cfg := &config{TracingEndpoint: srv.URL, Version: "1.2.3"}
	var logs bytes.Buffer
	tr, err := startTracing(context.Background(), cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tr.apiObserver().Request(r, "/v1/health", 200, time.Millisecond)
	})
	tr.handler(api).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/health", nil))
	tr.shutdown(context.Background())
	// The start is logged; a shutdown that sent everything is not.
	if lines := strings.Split(strings.TrimSpace(logs.String()), "\n"); len(lines) != 1 || !strings.Contains(lines[0], "traces of API requests go to the collector") {
		t.Errorf("logged %q", lines)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || paths[0] != "/v1/traces" {
		t.Fatalf("%d exports to %q, want one to /v1/traces", len(got), paths)
	}
	rs := got[0].ResourceSpans
	if len(rs) != 1 || len(rs[0].ScopeSpans) != 1 || len(rs[0].ScopeSpans[0].Spans) != 1 {
		t.Fatalf("export %v, want one span", got[0])
	}
	if name := rs[0].ScopeSpans[0].Spans[0].Name; name != "GET /v1/health" {
		t.Errorf("span %q", name)
	}
	host, _ := os.Hostname()
	res := map[string]string{}
	for _, kv := range rs[0].Resource.Attributes {
		res[kv.Key] = kv.Value.GetStringValue()
	}
	for k, want := range map[string]string{"service.name": "executor", "service.version": "1.2.3", "host.name": host} {
		if res[k] != want {
			t.Errorf("resource %s = %q, want %q", k, res[k], want)
		}
	}
}
