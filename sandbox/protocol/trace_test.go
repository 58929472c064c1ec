package protocol

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// tracedContext is a context carrying a recorded request span, as the
// daemon's API handler makes one, and the recorder its spans go to.
func tracedContext(t *testing.T) (context.Context, trace.Span, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	ctx, span := tp.Tracer("test").Start(context.Background(), "request", trace.WithSpanKind(trace.SpanKindServer))
	return ctx, span, rec
}

func attrOf(s sdktrace.ReadOnlySpan, key attribute.Key) attribute.Value {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// TestExecuteTrace: with a trace in ctx the forward is a client span, a
// child of the request's, and the runtime is sent its traceparent instead of
// the execution's own traceparent and tracestate; without one the
// execution's headers pass as they are and nothing is added.
func TestExecuteTrace(t *testing.T) {
	const callerTP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	tests := []struct {
		name    string
		traced  bool
		version Version
		headers map[string]string
	}{
		{"traced, caller's traceparent replaced", true, V5, map[string]string{"Traceparent": callerTP, "tracestate": "caller=1"}},
		{"traced, none from the caller", true, V5, nil},
		{"traced v2", true, V2, nil},
		{"untraced, caller's passed", false, V5, map[string]string{"traceparent": callerTP, "tracestate": "caller=1"}},
		{"untraced, none added", false, V5, nil},
		{"untraced v2", false, V2, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, reqs := runtimeServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"response":"ok"}`) })
			ctx := context.Background()
			var parent trace.Span
			var rec *tracetest.SpanRecorder
			if tt.traced {
				ctx, parent, rec = tracedContext(t)
			}
			c, _ := newClient(t)
			req := Request{Method: "POST", Path: "/fn?secret=1", Headers: tt.headers, Timeout: 5 * time.Second}
			if _, err := c.Execute(ctx, Target{Addr: addr, Version: tt.version}, req); err != nil {
				t.Fatal(err)
			}
			got := (<-reqs).header
			if !tt.traced {
				for _, h := range []string{"traceparent", "tracestate"} {
					if want := tt.headers[h]; got.Get(h) != want {
						t.Errorf("%s %q, want %q (the execution's, as it was)", h, got.Get(h), want)
					}
				}
				return
			}
			parent.End()
			spans := rec.Ended()
			if len(spans) != 2 {
				t.Fatalf("%d spans ended, want the forward and the request", len(spans))
			}
			fwd := spans[0]
			if fwd.Name() != "forward" || fwd.SpanKind() != trace.SpanKindClient {
				t.Errorf("forward span %q of kind %v", fwd.Name(), fwd.SpanKind())
			}
			if fwd.Parent().SpanID() != parent.SpanContext().SpanID() || fwd.SpanContext().TraceID() != parent.SpanContext().TraceID() {
				t.Errorf("forward's parent %v, want the request's span %v", fwd.Parent(), parent.SpanContext())
			}
			want := "00-" + fwd.SpanContext().TraceID().String() + "-" + fwd.SpanContext().SpanID().String() + "-01"
			if got.Get("traceparent") != want || len(got.Values("traceparent")) != 1 {
				t.Errorf("runtime got traceparent %q, want %q (the forward's)", got.Values("traceparent"), want)
			}
			if ts := got.Values("tracestate"); len(ts) > 0 {
				t.Errorf("runtime got tracestate %q: the request's trace has none", ts)
			}
			wantPath := "/fn"
			if tt.version == V2 {
				wantPath = "/"
			}
			if p := attrOf(fwd, "url.path").AsString(); p != wantPath {
				t.Errorf("url.path %q, want %q (no query)", p, wantPath)
			}
			if code := attrOf(fwd, "http.response.status_code").AsInt64(); code != 200 {
				t.Errorf("http.response.status_code %d", code)
			}
			if fwd.Status().Code == codes.Error {
				t.Errorf("status %v for a 200", fwd.Status())
			}
		})
	}
}

// TestExecuteTraceFailure: a forward that fails is an error span.
func TestExecuteTraceFailure(t *testing.T) {
	addr := refusedAddr(t)
	ctx, parent, rec := tracedContext(t)
	// Refusals are retried for the execution's whole budget: this is it.
	ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	c, _ := newClient(t)
	c.RetryAttempts, c.RetryDelay = 2, time.Millisecond
	_, err := c.Execute(ctx, Target{Addr: addr, Version: V5}, Request{Timeout: time.Second})
	if err == nil {
		t.Fatal("executed against a closed port")
	}
	parent.End()
	fwd := rec.Ended()[0]
	if fwd.Status().Code != codes.Error || attrOf(fwd, "error.type").AsString() != "transport" {
		t.Errorf("forward span: status %v, error.type %q", fwd.Status(), attrOf(fwd, "error.type").AsString())
	}
	if n := attrOf(fwd, "http.request.resend_count").AsInt64(); n < 1 {
		t.Errorf("http.request.resend_count %d after refusals", n)
	}
}

// BenchmarkExecuteTraced is BenchmarkExecute with the request's span in
// ctx: the forward's span and the injected traceparent, against a provider
// that exports nowhere.
func BenchmarkExecuteTraced(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("content-type", "application/json")
		w.Write(body)
	}))
	b.Cleanup(srv.Close)
	hc := NewHTTPClient()
	b.Cleanup(hc.CloseIdleConnections)
	tp := sdktrace.NewTracerProvider()
	b.Cleanup(func() { tp.Shutdown(context.Background()) })
	ctx, span := tp.Tracer("bench").Start(context.Background(), "request")
	defer span.End()
	c := &Client{HTTP: hc, RetryAttempts: 3, RetryDelay: 10 * time.Millisecond, Log: slog.New(slog.DiscardHandler)}
	target := Target{Addr: strings.TrimPrefix(srv.URL, "http://"), Version: V5}
	req := Request{Method: "POST", Path: "/", Body: []byte(`{"hello":"world"}`), Headers: map[string]string{"content-type": "application/json"}, Timeout: 10 * time.Second}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Execute(ctx, target, req); err != nil {
			b.Fatal(err)
		}
	}
}
