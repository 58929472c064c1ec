package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"executor/sandbox"
)

// capture is a slog handler that keeps every record, attributes flattened, at every level.
type capture struct {
	mu      sync.Mutex
	attrs   []slog.Attr
	records *[]captured
}

type captured struct {
	level slog.Level
	msg   string
	attrs map[string]slog.Value
}

func newCapture() *capture { return &capture{records: &[]captured{}} }

func (c *capture) Enabled(context.Context, slog.Level) bool { return true }

func (c *capture) Handle(_ context.Context, r slog.Record) error {
	rec := captured{level: r.Level, msg: r.Message, attrs: map[string]slog.Value{}}
	for _, a := range c.attrs {
		rec.attrs[a.Key] = a.Value.Resolve()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.Resolve()
		return true
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	*c.records = append(*c.records, rec)
	return nil
}

func (c *capture) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &capture{attrs: append(append([]slog.Attr{}, c.attrs...), attrs...), records: c.records}
}

func (c *capture) WithGroup(string) slog.Handler { return c }

// take returns the records so far and forgets them.
func (c *capture) take() []captured {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := *c.records
	*c.records = nil
	return out
}

// TestAccessLog: each request leaves exactly one access line, with its route pattern, runtime id, status,
// duration and size, at a level that tells how it went; failed requests say why on that line and are never only
// at debug.
func TestAccessLog(t *testing.T) {
	execution := jsonBody(`{"image":"openruntimes/node:v5-18.0","path":"/"}`)
	execution.path = "/v1/runtimes/fn-1/executions"
	oldExecution := execution
	oldExecution.path = "/v1/runtimes/fn-1/execution"
	tests := []struct {
		name    string
		backend func(*fakeBackend)
		rq      request
		level   slog.Level
		want    map[string]any // attributes the line must have
		absent  []string       // attributes it must not have
	}{
		{
			name:   "list",
			rq:     request{method: http.MethodGet, path: "/v1/runtimes"},
			level:  slog.LevelInfo,
			want:   map[string]any{"method": "GET", "route": "/v1/runtimes", "status": int64(200), "bytes": int64(2)},
			absent: []string{"runtime", "type", "err", "path"},
		},
		{
			name:   "execution names the route pattern and the runtime apart",
			rq:     execution,
			level:  slog.LevelInfo,
			want:   map[string]any{"method": "POST", "route": "/v1/runtimes/:runtimeId/executions", "runtime": "fn-1", "status": int64(200)},
			absent: []string{"type", "err", "path"},
		},
		{
			name:  "the pre-0.5 alias is a route of its own",
			rq:    oldExecution,
			level: slog.LevelInfo,
			want:  map[string]any{"route": "/v1/runtimes/:runtimeId/execution", "runtime": "fn-1", "status": int64(200)},
		},
		{
			name:   "health at debug: balancers poll it",
			rq:     request{method: http.MethodGet, path: "/v1/health", auth: str("")},
			level:  slog.LevelDebug,
			want:   map[string]any{"method": "GET", "route": "/v1/health", "status": int64(200)},
			absent: []string{"type", "err"},
		},
		{
			name:   "HEAD health at debug too",
			rq:     request{method: http.MethodHead, path: "/v1/health", auth: str("")},
			level:  slog.LevelDebug,
			want:   map[string]any{"method": "HEAD", "route": "/v1/health", "status": int64(200)},
			absent: []string{"type"},
		},
		{
			name:   "unknown runtime at info with its type",
			rq:     request{method: http.MethodGet, path: "/v1/runtimes/nope"},
			level:  slog.LevelInfo,
			want:   map[string]any{"route": "/v1/runtimes/:runtimeId", "runtime": "nope", "status": int64(404), "type": "runtime_not_found", "message": "Runtime not found"},
			absent: []string{"err"}, // it would only say the message again
		},
		{
			name:  "missing key at info",
			rq:    request{method: http.MethodGet, path: "/v1/runtimes", auth: str("")},
			level: slog.LevelInfo,
			want:  map[string]any{"route": "/v1/runtimes", "status": int64(401), "type": "general_unauthorized", "message": "Missing executor key"},
		},
		{
			name:  "bad parameter at info",
			rq:    func() request { r := jsonBody(`{"image":""}`); r.path = "/v1/runtimes/fn-1/executions"; return r }(),
			level: slog.LevelInfo,
			want:  map[string]any{"route": "/v1/runtimes/:runtimeId/executions", "status": int64(400), "type": "general_unknown"},
		},
		{
			name:   "unknown route: no pattern, the path instead",
			rq:     request{method: http.MethodGet, path: "/v1/nothing/here"},
			level:  slog.LevelInfo,
			want:   map[string]any{"route": "", "path": "/v1/nothing/here", "status": int64(404), "message": "Not Found"},
			absent: []string{"runtime"},
		},
		{
			name:  "a client-side pull failure at info",
			rq:    execution,
			level: slog.LevelInfo,
			backend: func(b *fakeBackend) {
				b.execErr = &sandbox.Error{Kind: sandbox.RuntimeFailed, Message: `Missing image "x" and failed to pull it: image not found`}
			},
			want:   map[string]any{"status": int64(400), "type": "runtime_failed", "message": `Missing image "x" and failed to pull it: image not found`},
			absent: []string{"err"},
		},
		{
			name:  "a known host failure at warn, with its cause",
			rq:    execution,
			level: slog.LevelWarn,
			backend: func(b *fakeBackend) {
				b.execErr = &sandbox.Error{Kind: sandbox.HostFailed, Err: errors.New("no space left on device")}
			},
			want: map[string]any{"status": int64(500), "type": "runtime_failed", "err": "no space left on device"},
		},
		{
			name:    "an unexpected failure at error, its cause logged though production hides it",
			rq:      execution,
			level:   slog.LevelError,
			backend: func(b *fakeBackend) { b.execErr = errors.New("disk on fire") },
			want:    map[string]any{"status": int64(500), "type": "general_unknown", "message": "Internal server error.", "err": "disk on fire"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &fakeBackend{infos: []sandbox.Info{}}
			if tt.backend != nil {
				tt.backend(b)
			}
			c := newCapture()
			s := newTestServer(t, b, func(cfg *Config) { cfg.Logger = slog.New(c).With("component", "api") })
			c.take() // what New said
			start := time.Now()
			w := do(t, s, tt.rq)
			took := time.Since(start)
			records := c.take()
			var access []captured
			for _, r := range records {
				if r.msg == accessMessage {
					access = append(access, r)
				}
				if w.Code >= 400 && r.level < slog.LevelInfo {
					t.Errorf("a failed request logged at %v: %s %v", r.level, r.msg, r.attrs)
				}
			}
			if len(access) != 1 {
				t.Fatalf("%d access lines, want 1 (status %d): %+v", len(access), w.Code, records)
			}
			line := access[0]
			if line.level != tt.level {
				t.Errorf("level %v, want %v: %v", line.level, tt.level, line.attrs)
			}
			if got := line.attrs["status"].Int64(); got != int64(w.Code) {
				t.Errorf("status %d, the response's %d", got, w.Code)
			}
			if got := line.attrs["bytes"].Int64(); got != int64(w.Body.Len()) && tt.rq.method != http.MethodHead {
				t.Errorf("bytes %d, the body's %d", got, w.Body.Len())
			}
			if d := line.attrs["duration"]; d.Kind() != slog.KindDuration || d.Duration() <= 0 || d.Duration() > took {
				t.Errorf("duration %v, want within (0, %v]", d, took)
			}
			if line.attrs["component"].String() != "api" {
				t.Errorf("component %v", line.attrs["component"])
			}
			for k, want := range tt.want {
				v, ok := line.attrs[k]
				if !ok {
					t.Errorf("no %s: %v", k, line.attrs)
					continue
				}
				var got any
				switch want.(type) {
				case int64:
					got = v.Int64()
				default:
					got = v.String()
				}
				if k == "err" {
					// The cause, however the error around it is worded.
					if e := v.Any().(error).Error(); strings.Contains(e, want.(string)) {
						got = want
					}
				}
				if got != want {
					t.Errorf("%s = %#v, want %#v", k, got, want)
				}
			}
			for _, k := range tt.absent {
				if v, ok := line.attrs[k]; ok {
					t.Errorf("%s = %v, want none", k, v)
				}
			}
		})
	}
}

// TestAccessLogLevelFilter: below the logger's level the access line is not even built, and failures still are.
func TestAccessLogLevelFilter(t *testing.T) {
	c := newCapture()
	level := new(slog.LevelVar)
	level.Set(slog.LevelWarn)
	h := leveled{Handler: c, level: level}
	s := newTestServer(t, &fakeBackend{infos: []sandbox.Info{}, execErr: errors.New("boom")}, func(cfg *Config) { cfg.Logger = slog.New(h) })
	c.take()
	do(t, s, request{method: http.MethodGet, path: "/v1/runtimes"})
	if got := c.take(); len(got) != 0 {
		t.Fatalf("a 200 at warn level logged %+v", got)
	}
	rq := jsonBody(`{"image":"openruntimes/node:v5-18.0","path":"/"}`)
	rq.path = "/v1/runtimes/fn/executions"
	do(t, s, rq)
	if got := c.take(); len(got) != 1 || got[0].level != slog.LevelError || got[0].attrs["status"].Int64() != 500 {
		t.Fatalf("a 500 at warn level: %+v", got)
	}
}

type leveled struct {
	slog.Handler
	level slog.Leveler
}

func (l leveled) Enabled(_ context.Context, lv slog.Level) bool { return lv >= l.level.Level() }

// TestAccessLogLongPath: what a client puts on the line is bounded.
func TestAccessLogLongPath(t *testing.T) {
	c := newCapture()
	s := newTestServer(t, &fakeBackend{}, func(cfg *Config) { cfg.Logger = slog.New(c) })
	c.take()
	long := "/v1/" + strings.Repeat("a", 10000)
	do(t, s, request{method: http.MethodGet, path: long})
	got := c.take()
	if len(got) != 1 || len(got[0].attrs["path"].String()) > maxLoggedText+3 || !strings.HasPrefix(got[0].attrs["path"].String(), "/v1/aaa") {
		t.Fatalf("records %+v", got)
	}
}

// TestAccessLogHandlerStatus: a status a handler writes itself, not through writeError, sets the level too; a
// failing health check is at info, not a warning at every poll.
func TestAccessLogHandlerStatus(t *testing.T) {
	tests := []struct {
		route  string
		status int
		level  slog.Level
	}{
		{healthRoute, 200, slog.LevelDebug},
		{healthRoute, 503, slog.LevelInfo},
		{"/v1/runtimes/:runtimeId/logs", 200, slog.LevelInfo},
		{"/v1/runtimes/:runtimeId/logs", 503, slog.LevelWarn},
		{"/v1/runtimes/:runtimeId/logs", 0, slog.LevelInfo}, // nothing written: net/http's 200
	}
	for _, tt := range tests {
		c := newCapture()
		s := newTestServer(t, &fakeBackend{}, func(cfg *Config) { cfg.Logger = slog.New(c) })
		c.take()
		r, _ := http.NewRequest(http.MethodGet, "/x", nil)
		s.logAccess(r, &accessRecord{route: tt.route}, &accessWriter{status: tt.status}, time.Millisecond)
		got := c.take()
		want := int64(tt.status)
		if want == 0 {
			want = 200
		}
		if len(got) != 1 || got[0].level != tt.level || got[0].attrs["status"].Int64() != want {
			t.Errorf("%s %d: %+v, want one line at %v", tt.route, tt.status, got, tt.level)
		}
	}
}

// A client that sends a request and then reads nothing holds its request for
// at most the write stall: the handler's write fails and the request ends,
// while a client that reads slowly is served to the end.
func TestWriteStallEndsAStalledResponse(t *testing.T) {
	s := newTestServer(t, &fakeBackend{}, func(c *Config) { c.WriteStall = 200 * time.Millisecond })
	const size = 64 << 20 // far more than the socket buffers hold
	ended := make(chan error, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.serveLogged(w, r, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			chunk := make([]byte, 1<<20)
			var err error
			for i := 0; i < size/len(chunk) && err == nil; i++ {
				_, err = w.Write(chunk)
			}
			ended <- err
		}))
	}))
	t.Cleanup(srv.Close)

	stalled, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	if _, err := io.WriteString(stalled, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("the whole answer was written to a client that read nothing")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("a client that reads nothing still holds its request after 60 s (write stall 200 ms)")
	}

	// A slow reader, pausing less than the stall between reads, gets it all.
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got int64
	buf := make([]byte, 4<<20)
	for {
		n, err := resp.Body.Read(buf)
		got += int64(n)
		if err != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got != size {
		t.Errorf("a slow reader got %d bytes of %d", got, size)
	}
	if err := <-ended; err != nil {
		t.Errorf("writing to a slow reader: %v", err)
	}
}

// A stream may stay quiet for longer than the write stall (a build that
// prints nothing for a minute) and still end as a complete answer: what
// net/http writes once the handler returns (the chunked body's end) gets a
// stall budget of its own, not what is left of the last write's.
func TestWriteStallSparesAQuietStreamsEnd(t *testing.T) {
	ts := time.Date(2026, 7, 23, 10, 0, 1, 0, time.UTC)
	b := &fakeBackend{stream: &fakeStream{version: "v5", block: true,
		batches: [][]sandbox.LogEntry{{{Timestamp: ts, Content: "early"}}}}}
	s := newTestServer(t, b, func(c *Config) { c.WriteStall = 200 * time.Millisecond })
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	req, err := http.NewRequest("GET", srv.URL+"/v1/runtimes/rt/logs?timeout=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if want := "2026-07-23T10:00:01.000+00:00 early\n"; err != nil || string(body) != want {
		t.Fatalf("stream quiet for 1 s (write stall 200 ms): %q, %v; want %q and its end", body, err, want)
	}
}
