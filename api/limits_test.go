package api

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"executor/sandbox"
	"executor/sandbox/protocol"
)

const runtimeIDMessage = "Invalid `runtimeId` param: Parameter must contain at most 64 chars. Valid chars are a-z, A-Z, 0-9, period, hyphen, and underscore. Can't start with a special char"

func TestRuntimeIDRule(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"fn", true},
		{"a", true},
		{"6634f1e2a7b3c9d0e1f2-6634f1e2a7b3c9d0e1f3-build", true}, // Appwrite's <project>-<deployment>-build
		{"A.b_c-D9", true},
		{"a..b", true}, // not a path segment: the id is never a path
		{strings.Repeat("a", 64), true},
		{strings.Repeat("a", 65), false},
		{"", false},
		{"a/b", false},
		{"..", false},
		{".", false},
		{".hidden", false},
		{"-flag", false},
		{"_x", false},
		{"a\x00b", false},
		{"a\nb", false},
		{"a\rb", false},
		{"a b", false},
		{"a\\b", false},
		{"a:b", false},
		{"é", false},
		{"a%2Fb", false},
	}
	for _, tt := range tests {
		if got := validRuntimeID(tt.id); got != tt.want {
			t.Errorf("validRuntimeID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}

// TestRuntimeIDEverywhere checks that every route taking a runtime id refuses a bad one before the backend sees
// it: in the body of POST /v1/runtimes, and in the path of every other route.
func TestRuntimeIDEverywhere(t *testing.T) {
	bad := []string{"a/b", "..", "a\x00b", "a\nb", "-x", strings.Repeat("a", 65)}
	for _, id := range bad {
		esc := url.PathEscape(id)
		routes := []request{
			{method: http.MethodPost, path: "/v1/runtimes", body: strings.NewReader(`{"runtimeId":` + string(jsonString(id)) + `,"image":"i"}`), ctype: "application/json"},
			{method: http.MethodGet, path: "/v1/runtimes/" + esc},
			{method: http.MethodDelete, path: "/v1/runtimes/" + esc},
			{method: http.MethodPost, path: "/v1/runtimes/" + esc + "/executions", body: strings.NewReader(`{"image":"i","source":"/s.tar.gz"}`), ctype: "application/json"},
			{method: http.MethodPost, path: "/v1/runtimes/" + esc + "/execution", body: strings.NewReader(`{}`), ctype: "application/json"},
			{method: http.MethodGet, path: "/v1/runtimes/" + esc + "/logs"},
			{method: http.MethodPost, path: "/v1/runtimes/" + esc + "/commands", body: strings.NewReader(`{"command":"true"}`), ctype: "application/json"},
		}
		for _, rq := range routes {
			t.Run(rq.method+" "+rq.path, func(t *testing.T) {
				b := &fakeBackend{}
				s := newTestServer(t, b)
				w := do(t, s, rq)
				if id == "a/b" && rq.path != "/v1/runtimes" {
					// %2F is decoded before routing, so `a/b` in a path is another, unknown route.
					if w.Code != 404 {
						t.Fatalf("status %d: %s", w.Code, w.Body)
					}
				} else {
					var got errorBody
					if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
						t.Fatal(err)
					}
					if w.Code != 400 || got.Message != runtimeIDMessage {
						t.Fatalf("status %d: %s", w.Code, w.Body)
					}
				}
				if b.creates != 0 || b.executes != 0 || len(b.deleted) != 0 || b.command != "" {
					t.Fatal("the backend was called with a bad runtime id")
				}
			})
		}
	}
}

func TestForwardedHeadersAndPath(t *testing.T) {
	tests := []struct {
		name, body string
		wantMsg    string // "" = accepted
	}{
		{"plain headers", `{"headers":{"x-a":"1","Content-Type":"text/plain","host":"example.com:8080"}}`, ""},
		{"tab and UTF-8 in a value", `{"headers":{"x-a":"a\tb é"}}`, ""},
		{"CRLF in a value", `{"headers":{"x-a":"1\r\nx-injected: 2"}}`,
			"Invalid `headers`: the value of \"x-a\" contains a control character (CR, LF, NUL, ...)."},
		{"LF in a value", `{"headers":{"x-a":"1\nb"}}`,
			"Invalid `headers`: the value of \"x-a\" contains a control character (CR, LF, NUL, ...)."},
		{"NUL in a value", `{"headers":{"x-a":"1\u0000"}}`,
			"Invalid `headers`: the value of \"x-a\" contains a control character (CR, LF, NUL, ...)."},
		{"DEL in a value", `{"headers":{"x-a":"\u007f"}}`,
			"Invalid `headers`: the value of \"x-a\" contains a control character (CR, LF, NUL, ...)."},
		{"CRLF in the host", `{"headers":{"host":"a\r\nb"}}`,
			"Invalid `headers`: the value of \"host\" contains a control character (CR, LF, NUL, ...)."},
		{"CRLF in headers given as a JSON string", `{"headers":"{\"x-a\":\"1\\r\\n\"}"}`,
			"Invalid `headers`: the value of \"x-a\" contains a control character (CR, LF, NUL, ...)."},
		{"CRLF in a name", `{"headers":{"x-a\r\nx-b":"1"}}`,
			"Invalid `headers`: \"x-a\\r\\nx-b\" is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)."},
		{"space in a name", `{"headers":{"x a":"1"}}`,
			"Invalid `headers`: \"x a\" is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)."},
		{"colon in a name", `{"headers":{"x:a":"1"}}`,
			"Invalid `headers`: \"x:a\" is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)."},
		{"empty name", `{"headers":{"":"1"}}`,
			"Invalid `headers`: \"\" is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)."},
		{"path with a query", `{"path":"/a b?x=1&y=%20"}`, ""},
		{"CRLF in the path", `{"path":"/a\r\nx-injected: 1"}`,
			"Invalid `path`: it must be a URL path with an optional query, without control characters or malformed %-escapes."},
		{"malformed escape in the path", `{"path":"/%zz"}`,
			"Invalid `path`: it must be a URL path with an optional query, without control characters or malformed %-escapes."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &fakeBackend{}
			s := newTestServer(t, b)
			rq := jsonBody(tt.body)
			rq.path = "/v1/runtimes/fn/executions"
			w := do(t, s, rq)
			if tt.wantMsg == "" {
				if w.Code != 200 || b.executes != 1 {
					t.Fatalf("status %d: %s", w.Code, w.Body)
				}
				return
			}
			var got errorBody
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if w.Code != 400 || got.Type != typeExecutionBadRequest || got.Message != tt.wantMsg {
				t.Errorf("status %d type %q message %q", w.Code, got.Type, got.Message)
			}
			if b.executes != 0 {
				t.Error("backend called")
			}
		})
	}
}

func TestResourceBounds(t *testing.T) {
	const cpusMax = "Invalid `cpus` param: Value must be at most 2.5, the executor's maximum (OPR_EXECUTOR_MAX_CPUS); 0 means that maximum"
	const memoryMax = "Invalid `memory` param: Value must be at most 2048 (MB), the executor's maximum (OPR_EXECUTOR_MAX_MEMORY); 0 means that maximum"
	bounded := func(c *Config) { c.MaxCPUs, c.MaxMemoryMB = 2.5, 2048 }
	small := func(c *Config) { c.MaxCPUs, c.MaxMemoryMB = 0.5, 256 }
	unbounded := func(c *Config) { c.MaxCPUs, c.MaxMemoryMB = 0, 0 }
	tests := []struct {
		name     string
		config   func(*Config)
		body     string
		wantCPUs float64
		wantMem  int64
		wantMsg  string // "" = accepted
	}{
		{"defaults", bounded, `{}`, 1, 512, ""},
		{"within the bounds", bounded, `{"cpus":2,"memory":1024}`, 2, 1024, ""},
		{"at the bounds", bounded, `{"cpus":"2.5","memory":2048}`, 2.5, 2048, ""},
		{"0 is the bound", bounded, `{"cpus":0,"memory":0}`, 2.5, 2048, ""},
		{"cpus above", bounded, `{"cpus":2.6}`, 0, 0, cpusMax},
		{"memory above", bounded, `{"memory":2049}`, 0, 0, memoryMax},
		{"negative cpus", bounded, `{"cpus":-1}`, 0, 0, "Invalid `cpus` param: Value must not be negative"},
		{"negative memory", bounded, `{"memory":-1}`, 0, 0, "Invalid `memory` param: Value must not be negative"},
		{"defaults capped by small bounds", small, `{}`, 0.5, 256, ""},
		{"unbounded: 0 is no limit", unbounded, `{"cpus":0,"memory":0}`, 0, 0, ""},
		{"unbounded: anything goes", unbounded, `{"cpus":512,"memory":2000000}`, 512, 2000000, ""},
		{"unbounded: defaults", unbounded, `{}`, 1, 512, ""},
		{"unbounded: still not negative", unbounded, `{"memory":-5}`, 0, 0, "Invalid `memory` param: Value must not be negative"},
		// The maximum is quoted as configured, every digit of it.
		{"cpus above a fine bound", func(c *Config) { c.MaxCPUs, c.MaxMemoryMB = 0.25, 256 }, `{"cpus":0.3}`, 0, 0,
			"Invalid `cpus` param: Value must be at most 0.25, the executor's maximum (OPR_EXECUTOR_MAX_CPUS); 0 means that maximum"},
	}
	for _, tt := range tests {
		for _, route := range []string{"create", "execution"} {
			t.Run(route+"/"+tt.name, func(t *testing.T) {
				b := &fakeBackend{}
				s := newTestServer(t, b, tt.config)
				body := tt.body[:len(tt.body)-1]
				if len(body) > 1 {
					body += ","
				}
				var rq request
				if route == "create" {
					rq = jsonBody(body + `"runtimeId":"r","image":"i"}`)
					rq.path = "/v1/runtimes"
				} else {
					rq = jsonBody(body + `"image":"i","source":"/s.tar.gz"}`)
					rq.path = "/v1/runtimes/r/executions"
				}
				w := do(t, s, rq)
				if tt.wantMsg != "" {
					var got errorBody
					_ = json.Unmarshal(w.Body.Bytes(), &got)
					if w.Code != 400 || got.Message != tt.wantMsg {
						t.Fatalf("status %d: %s", w.Code, w.Body)
					}
					if b.creates+b.executes != 0 {
						t.Fatal("backend called")
					}
					return
				}
				if w.Code/100 != 2 {
					t.Fatalf("status %d: %s", w.Code, w.Body)
				}
				spec := b.spec
				if route == "execution" {
					spec = b.exec.Cold
				}
				if spec.CPUs != tt.wantCPUs || spec.MemoryMB != tt.wantMem {
					t.Fatalf("cpus %v memory %d, want %v and %d", spec.CPUs, spec.MemoryMB, tt.wantCPUs, tt.wantMem)
				}
			})
		}
	}
}

func TestNewRefusesBadBounds(t *testing.T) {
	for _, c := range []Config{{MaxCPUs: -1}, {MaxMemoryMB: -1}} {
		c.Backend = &fakeBackend{}
		c.Hostname = "executor"
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}

// slowBackend's executions and log lines come after hold, to show that the body timeout leaves them alone.
type slowBackend struct {
	*fakeBackend
	hold time.Duration
}

func (b slowBackend) Execute(ctx context.Context, req sandbox.ExecRequest) (*sandbox.ExecResult, error) {
	select {
	case <-time.After(b.hold):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return b.fakeBackend.Execute(ctx, req)
}

func (b slowBackend) FollowLogs(context.Context, string, time.Duration) (sandbox.LogStream, error) {
	return &lateStream{hold: b.hold}, nil
}

// lateStream sends one entry after hold, unless its context ends first.
type lateStream struct{ hold time.Duration }

func (lateStream) Version() protocol.Version { return protocol.V5 }

func (s *lateStream) Next(ctx context.Context) ([]sandbox.LogEntry, error) {
	if s.hold == 0 {
		return nil, io.EOF
	}
	select {
	case <-time.After(s.hold):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	s.hold = 0
	return []sandbox.LogEntry{{Timestamp: time.Unix(1784800800, 0), Content: "late line"}}, nil
}

// TestBodyTimeout drives a real net/http server: a client that sends its body too slowly gets a 408 and the
// connection closed, while a request whose body arrives in time is served for longer than the body timeout.
func TestBodyTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	s := newTestServer(t, slowBackend{fakeBackend: &fakeBackend{}, hold: 4 * timeout}, func(c *Config) { c.BodyTimeout = timeout })
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)

	t.Run("slow body is cut", func(t *testing.T) {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// The client never finishes its body: it sends one byte at a time until the server hangs up.
		head := "POST /v1/runtimes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + testSecret +
			"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
		if _, err := io.WriteString(conn, head); err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			tick := time.NewTicker(timeout / 4)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					if _, err := conn.Write([]byte(" ")); err != nil {
						return
					}
				}
			}
		}()
		// A bound only so that a broken server fails the test instead of hanging it.
		_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), "Request body was not received in time.") {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		if !resp.Close {
			t.Error("the connection is kept open after the timeout")
		}
	})

	// Bodies nobody reads (an unknown route, a refused key) are bounded too: net/http reads what is left of
	// them after the handler, to reuse the connection.
	for _, target := range []string{"/v1/nowhere", "/v1/runtimes/fn/executions?no-key"} {
		t.Run("unread body of "+target, func(t *testing.T) {
			auth := "Bearer " + testSecret
			if strings.HasSuffix(target, "?no-key") {
				auth = "Bearer wrong"
			}
			conn, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			head := "POST " + target + " HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth +
				"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
			if _, err := io.WriteString(conn, head); err != nil {
				t.Fatal(err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			_, _ = io.ReadAll(resp.Body)
			// The answer comes at once; then the executor hangs up instead of waiting for the body forever.
			if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("connection still open: %d bytes, %v", n, err)
			}
		})
	}

	t.Run("long execution outlives the body timeout", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/runtimes/fn/executions", strings.NewReader(`{"body":"x"}`))
		req.Header.Set("Authorization", "Bearer "+testSecret)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
	})

	t.Run("multipart with an epilogue outlives it too", func(t *testing.T) {
		body, ctype := multipartBody(t, [][2]string{{"body", "file:payload"}})
		data, _ := io.ReadAll(body)
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/runtimes/fn/executions", strings.NewReader(string(data)+"epilogue"))
		req.Header.Set("Authorization", "Bearer "+testSecret)
		req.Header.Set("Content-Type", ctype)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
	})
	t.Run("log stream outlives it", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/runtimes/fn/logs?timeout=60", nil)
		req.Header.Set("Authorization", "Bearer "+testSecret)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.Contains(string(body), "late line") {
			t.Fatalf("status %d: %q", resp.StatusCode, body)
		}
	})
}
