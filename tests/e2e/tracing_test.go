package e2e

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// executionsRoute is the route executions are answered on, as the API names it.
const executionsRoute = "/v1/runtimes/:runtimeId/executions"

// coldStartStages are the stages of a runtime's creation the daemon makes a
// span of ("readiness" may follow them).
var coldStartStages = []string{"source", "pull", "root", "network", "config", "container"}

// receivedSpan is one span the collector got, with its resource's attributes.
type receivedSpan struct {
	*tracepb.Span
	resource map[string]string
}

func (s receivedSpan) traceID() string  { return hex.EncodeToString(s.TraceId) }
func (s receivedSpan) spanID() string   { return hex.EncodeToString(s.SpanId) }
func (s receivedSpan) parentID() string { return hex.EncodeToString(s.ParentSpanId) }
func (s receivedSpan) attr(key string) string {
	return attrString(s.Attributes, key)
}

func attrString(kvs []*commonpb.KeyValue, key string) string {
	for _, kv := range kvs {
		if kv.Key != key {
			continue
		}
		switch v := kv.Value.Value.(type) {
		case *commonpb.AnyValue_StringValue:
			return v.StringValue
		case *commonpb.AnyValue_IntValue:
			return fmt.Sprint(v.IntValue)
		}
	}
	return ""
}

// otlpReceiver is an OTLP/HTTP collector on loopback that keeps what it is
// sent (protobuf, gzipped or not).
type otlpReceiver struct {
	url string
	mu  sync.Mutex
	got []receivedSpan
	bad []string // requests it could not take
}

func startOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	rcv := &otlpReceiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		spans, err := decodeExport(r)
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		if err != nil {
			rcv.bad = append(rcv.bad, err.Error())
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rcv.got = append(rcv.got, spans...)
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(out)
	}))
	t.Cleanup(srv.Close)
	rcv.url = srv.URL
	return rcv
}

func decodeExport(r *http.Request) ([]receivedSpan, error) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
		return nil, fmt.Errorf("%s %s: want POST /v1/traces", r.Method, r.URL.Path)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		return nil, fmt.Errorf("content-type %q", ct)
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			return nil, err
		}
		body = zr
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		return nil, err
	}
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(raw, &req); err != nil {
		return nil, err
	}
	var out []receivedSpan
	for _, rs := range req.ResourceSpans {
		res := map[string]string{}
		for _, kv := range rs.GetResource().GetAttributes() {
			res[kv.Key] = attrString(rs.Resource.Attributes, kv.Key)
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				out = append(out, receivedSpan{Span: s, resource: res})
			}
		}
	}
	return out, nil
}

// trace returns the spans received for traceID.
func (rcv *otlpReceiver) trace(traceID string) []receivedSpan {
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	var out []receivedSpan
	for _, s := range rcv.got {
		if s.traceID() == traceID {
			out = append(out, s)
		}
	}
	return out
}

// newTraceparent is a sampled W3C traceparent of a new trace, and its ids.
func newTraceparent(t *testing.T) (header, traceID, spanID string) {
	t.Helper()
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	traceID, spanID = hex.EncodeToString(b[:16]), hex.EncodeToString(b[16:])
	return "00-" + traceID + "-" + spanID + "-01", traceID, spanID
}

// parseTraceparent splits a version 00 traceparent into its trace and parent ids.
func parseTraceparent(t *testing.T, h string) (traceID, parentID string) {
	t.Helper()
	parts := strings.Split(h, "-")
	if len(parts) != 4 || parts[0] != "00" || len(parts[1]) != 32 || len(parts[2]) != 16 {
		t.Fatalf("traceparent %q is not a version 00 one", h)
	}
	return parts[1], parts[2]
}

// tracedExecution runs the echo behaviour on runtime id with the API
// request's own headers apiHeaders and the execution's headers execHeaders
// (GET, the default method),
// and returns the headers the runtime received.
func tracedExecution(t *testing.T, x *executor, id, src string, apiHeaders, execHeaders map[string]string) map[string]string {
	t.Helper()
	headers := map[string]string{}
	for k, v := range jsonAccept {
		headers[k] = v
	}
	for k, v := range apiHeaders {
		headers[k] = v
	}
	extra := map[string]any{"path": "/echo"}
	if execHeaders != nil {
		extra["headers"] = execHeaders
	}
	r := x.request(t, "POST", "/v1/runtimes/"+id+"/executions", execBody(src, extra), headers)
	if r.status != 200 {
		t.Fatalf("execution: %d %s\n%s", r.status, r.body, x.logs.String())
	}
	res := r.json(t)
	var echo struct {
		Headers map[string]string `json:"headers"`
	}
	body, _ := res["body"].(string)
	if err := json.Unmarshal([]byte(body), &echo); err != nil {
		t.Fatalf("echo body: %v: %s", err, r.body)
	}
	return echo.Headers
}

// TestTracing: with OPR_EXECUTOR_TRACING_ENDPOINT set, a cold execution
// continuing the caller's trace is one trace at the collector: the request's
// server span (a child of the caller's span, named after its route), a span
// per cold-start stage and the forward's client span, children of it; the
// runtime is sent the forward's traceparent instead of the one among the
// execution's headers. A warm execution has no stage spans. The spans of
// the last request reach the collector by the flush at shutdown.
func TestTracing(t *testing.T) {
	rcv := startOTLPReceiver(t)
	// No path: the OTLP/HTTP default, /v1/traces, is the one used.
	x := startExecutor(t, "OPR_EXECUTOR_TRACING_ENDPOINT="+rcv.url)
	src := source(t, map[string]string{"index.js": "traced"})

	coldTP, coldTrace, callerSpan := newTraceparent(t)
	execTP, _, _ := newTraceparent(t)
	coldSeen := tracedExecution(t, x, "traced", src,
		map[string]string{"traceparent": coldTP},
		map[string]string{"traceparent": execTP, "tracestate": "caller=1"})
	warmTP, warmTrace, warmCaller := newTraceparent(t)
	warmSeen := tracedExecution(t, x, "traced", src, map[string]string{"traceparent": warmTP}, nil)
	x.deleteRuntime(t, "traced")
	// SIGTERM: the daemon flushes its spans on the way out.
	x.stop()

	rcv.mu.Lock()
	if len(rcv.bad) > 0 {
		t.Errorf("exports the collector could not take: %q", rcv.bad)
	}
	rcv.mu.Unlock()
	host, _ := os.Hostname()

	check := func(t *testing.T, traceID, caller string, seen map[string]string, wantStages bool) {
		spans := rcv.trace(traceID)
		var server *receivedSpan
		for i, s := range spans {
			if s.Kind == tracepb.Span_SPAN_KIND_SERVER {
				if server != nil {
					t.Fatalf("two server spans in trace %s: %q and %q", traceID, server.Name, s.Name)
				}
				server = &spans[i]
			}
		}
		if server == nil {
			t.Fatalf("no server span in trace %s; spans received: %s", traceID, describeSpans(rcv))
		}
		if want := "POST " + executionsRoute; server.Name != want {
			t.Errorf("server span %q, want %q", server.Name, want)
		}
		if server.parentID() != caller {
			t.Errorf("server span's parent %s, want the caller's span %s", server.parentID(), caller)
		}
		if got := server.attr("http.route"); got != executionsRoute {
			t.Errorf("http.route %q", got)
		}
		if got := server.attr("http.response.status_code"); got != "200" {
			t.Errorf("http.response.status_code %q", got)
		}
		if server.resource["service.name"] != "executor" || server.resource["host.name"] != host || server.resource["service.version"] == "" {
			t.Errorf("resource %v: want service.name executor, host.name %s and a service.version", server.resource, host)
		}
		var forward *receivedSpan
		stages := map[string]int{}
		for i, s := range spans {
			if s.spanID() == server.spanID() {
				continue
			}
			if s.parentID() != server.spanID() {
				t.Errorf("span %q's parent is %s, not the request's span %s", s.Name, s.parentID(), server.spanID())
			}
			// The SDK ends a span at its start's wall time plus the
			// monotonic time since: spans that start at different
			// moments disagree by whatever the wall clock moved against
			// the monotonic one in between (a VM's clock is set from
			// its host now and then). Once a forward ended 0.66 ms
			// after its request by that reckoning.
			const slack = uint64(5 * time.Millisecond)
			if s.StartTimeUnixNano+slack < server.StartTimeUnixNano || s.EndTimeUnixNano > server.EndTimeUnixNano+slack {
				t.Errorf("span %q [%d, %d] is not within the request's [%d, %d]", s.Name,
					s.StartTimeUnixNano, s.EndTimeUnixNano, server.StartTimeUnixNano, server.EndTimeUnixNano)
			}
			switch {
			case s.Kind == tracepb.Span_SPAN_KIND_CLIENT:
				if forward != nil {
					t.Errorf("two client spans: %q and %q", forward.Name, s.Name)
				}
				forward = &spans[i]
			case s.attr("executor.stage") == s.Name:
				stages[s.Name]++
			default:
				t.Errorf("unexpected span %q (kind %v)", s.Name, s.Kind)
			}
		}
		if forward == nil {
			t.Fatalf("no forward span in trace %s: %s", traceID, describeSpans(rcv))
		}
		if forward.attr("http.request.method") != "GET" || forward.attr("url.path") != "/echo" || forward.attr("http.response.status_code") != "200" {
			t.Errorf("forward span %q: attributes %v", forward.Name, forward.Attributes)
		}
		for _, name := range coldStartStages {
			want := 0
			if wantStages {
				want = 1
			}
			if stages[name] != want {
				t.Errorf("%d spans of stage %q, want %d (stages: %v)", stages[name], name, want, stages)
			}
		}
		if !wantStages && len(stages) > 0 {
			t.Errorf("stage spans in a warm execution: %v", stages)
		}
		gotTrace, gotParent := parseTraceparent(t, seen["traceparent"])
		if gotTrace != traceID || gotParent != forward.spanID() {
			t.Errorf("runtime got traceparent %q: want trace %s, parent %s (the forward)", seen["traceparent"], traceID, forward.spanID())
		}
		if ts, ok := seen["tracestate"]; ok {
			t.Errorf("runtime got tracestate %q: the caller sent the API none", ts)
		}
	}
	t.Run("cold", func(t *testing.T) { check(t, coldTrace, callerSpan, coldSeen, true) })
	t.Run("warm", func(t *testing.T) { check(t, warmTrace, warmCaller, warmSeen, false) })
}

func describeSpans(rcv *otlpReceiver) string {
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	var b bytes.Buffer
	for _, s := range rcv.got {
		fmt.Fprintf(&b, "\n  %s %s parent=%s %q %v", s.traceID(), s.spanID(), s.parentID(), s.Name, s.Kind)
	}
	return b.String()
}

// TestTracingOff: without an endpoint the daemon adds no traceparent to what
// a runtime is sent, and the execution's own passes as the caller sent it.
func TestTracingOff(t *testing.T) {
	x := startExecutor(t)
	src := source(t, map[string]string{"index.js": "untraced"})
	apiTP, _, _ := newTraceparent(t)
	execTP, _, _ := newTraceparent(t)

	seen := tracedExecution(t, x, "untraced", src,
		map[string]string{"traceparent": apiTP},
		map[string]string{"traceparent": execTP, "tracestate": "caller=1"})
	if seen["traceparent"] != execTP || seen["tracestate"] != "caller=1" {
		t.Errorf("runtime got traceparent %q, tracestate %q: want the execution's own, %q and %q",
			seen["traceparent"], seen["tracestate"], execTP, "caller=1")
	}
	seen = tracedExecution(t, x, "untraced", src, map[string]string{"traceparent": apiTP}, nil)
	for _, h := range []string{"traceparent", "tracestate"} {
		if v, ok := seen[h]; ok {
			t.Errorf("runtime got %s %q, which the execution did not carry", h, v)
		}
	}
}

// TestTracingDeadCollector: a collector that refuses connections, or takes
// them and never answers, neither fails executions nor keeps the daemon from
// stopping cleanly (the harness's stop fails the test on an unclean or late
// exit). Batches go every 50 ms into a queue of 8 spans, so exports fail
// (or hang) and the queue is full while the executions run.
func TestTracingDeadCollector(t *testing.T) {
	tests := []struct {
		name string
		// collector returns the collector's address.
		collector func(t *testing.T) string
	}{
		{"refusing", func(t *testing.T) string {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ln.Close()
			return ln.Addr().String()
		}},
		{"hanging", func(t *testing.T) string {
			// Never accepted: the kernel completes the handshakes and
			// the exporter waits for an answer that never comes.
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			return ln.Addr().String()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := tt.collector(t)
			x := startExecutor(t, "OPR_EXECUTOR_TRACING_ENDPOINT=http://"+addr,
				"OTEL_BSP_SCHEDULE_DELAY=50", "OTEL_BSP_MAX_QUEUE_SIZE=8")
			src := source(t, map[string]string{"index.js": "dead-collector"})
			var runtimes []string
			for i := range 2 {
				id := fmt.Sprintf("dead-%d", i)
				runtimes = append(runtimes, id)
				for range 4 {
					tp, _, _ := newTraceparent(t)
					tracedExecution(t, x, id, src, map[string]string{"traceparent": tp}, nil)
				}
			}
			r := x.request(t, "GET", "/v1/runtimes", nil, nil)
			if r.status != 200 {
				t.Fatalf("list: %d %s", r.status, r.body)
			}
			for _, id := range runtimes {
				if !strings.Contains(string(r.body), id) {
					t.Errorf("runtime %s not listed: %s", id, r.body)
				}
			}
			for _, id := range slices.Backward(runtimes) {
				x.deleteRuntime(t, id)
			}
			x.stop()
		})
	}
}
