package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"executor/sandbox"
	"executor/sandbox/protocol"
)

func TestAuth(t *testing.T) {
	const unauthorized = `{"type":"general_unauthorized","message":"Missing executor key","code":401,"version":"test"}`
	tests := []struct {
		name   string
		secret string
		auth   string
		want   int
	}{
		{"missing header", testSecret, "", 401},
		{"scheme only", testSecret, "Bearer", 401},
		{"empty token", testSecret, "Bearer ", 401},
		{"double space", testSecret, "Bearer  " + testSecret, 401},
		{"wrong key", testSecret, "Bearer nope", 401},
		{"prefix of key", testSecret, "Bearer executor", 401},
		{"bearer", testSecret, "Bearer " + testSecret, 200},
		{"basic scheme passes", testSecret, "Basic " + testSecret, 200},
		{"any scheme passes", testSecret, "x " + testSecret, 200},
		{"trailing tokens ignored", testSecret, "Bearer " + testSecret + " extra", 200},
		{"zero key refused", "0", "Bearer 0", 401},
		{"empty secret, empty token", "", "Bearer ", 401},
		{"empty secret, any token", "", "Bearer x", 401},
		{"empty secret, no header", "", "", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, &fakeBackend{}, func(c *Config) { c.Secret = tt.secret })
			w := do(t, s, request{method: http.MethodGet, path: "/v1/runtimes", auth: str(tt.auth)})
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d (body %s)", w.Code, tt.want, w.Body)
			}
			if tt.want == 401 && w.Body.String() != unauthorized {
				t.Errorf("body %s, want %s", w.Body, unauthorized)
			}
		})
	}
}

func TestAuthCoversEveryRuntimeRoute(t *testing.T) {
	b := &fakeBackend{}
	s := newTestServer(t, b)
	for _, rq := range []request{
		{method: http.MethodPost, path: "/v1/runtimes"},
		{method: http.MethodGet, path: "/v1/runtimes"},
		{method: http.MethodGet, path: "/v1/runtimes/x"},
		{method: http.MethodDelete, path: "/v1/runtimes/x"},
		{method: http.MethodPost, path: "/v1/runtimes/x/executions"},
		{method: http.MethodPost, path: "/v1/runtimes/x/execution"},
	} {
		rq.auth = str("")
		if w := do(t, s, rq); w.Code != 401 {
			t.Errorf("%s %s: status %d, want 401", rq.method, rq.path, w.Code)
		}
	}
	if b.creates+b.executes+len(b.deleted) != 0 {
		t.Error("backend called without a key")
	}
}

func TestErrorHeaders(t *testing.T) {
	s := newTestServer(t, &fakeBackend{})
	w := do(t, s, request{method: http.MethodGet, path: "/v1/runtimes", auth: str("")})
	for k, v := range map[string]string{
		"Server":        "Executor",
		"Content-Type":  "application/json; charset=UTF-8",
		"Cache-Control": "no-cache, no-store, must-revalidate",
		"Expires":       "0",
		"Pragma":        "no-cache",
	} {
		if got := w.Header().Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
}

func TestServerHeaderOnEveryResponse(t *testing.T) {
	s := newTestServer(t, &fakeBackend{})
	for _, rq := range []request{
		{method: http.MethodGet, path: "/v1/health"},
		{method: http.MethodGet, path: "/v1/runtimes"},
		{method: http.MethodDelete, path: "/v1/runtimes/x"},
		{method: http.MethodGet, path: "/nope"},
		{method: http.MethodPost, path: "/v1/runtimes/x/executions"},
	} {
		if got := do(t, s, rq).Header().Get("Server"); got != "Executor" {
			t.Errorf("%s %s: Server %q", rq.method, rq.path, got)
		}
	}
}

func TestUnknownRoute(t *testing.T) {
	const notFound = `{"type":"general_unknown","message":"Not Found","code":404,"version":"test"}`
	for _, dev := range []bool{false, true} {
		s := newTestServer(t, &fakeBackend{}, func(c *Config) { c.Development = dev })
		for _, rq := range []request{
			{method: http.MethodGet, path: "/v1/unknown"},
			{method: http.MethodGet, path: "/v1/unknown", auth: str("")},
			{method: http.MethodPut, path: "/v1/runtimes"}, // wrong method: 404 like the reference
			{method: http.MethodGet, path: "/v1/runtimes/x/executions"},
			{method: http.MethodGet, path: "/v1/runtimes/"}, // no trailing-slash redirect
		} {
			w := do(t, s, rq)
			if w.Code != 404 {
				t.Fatalf("dev=%v %s %s: status %d", dev, rq.method, rq.path, w.Code)
			}
			var got map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if got["message"] != "Not Found" || got["type"] != "general_unknown" || got["code"] != float64(404) {
				t.Errorf("dev=%v: body %s", dev, w.Body)
			}
			if !dev && w.Body.String() != notFound {
				t.Errorf("body %s, want %s", w.Body, notFound)
			}
		}
	}
}

func TestErrorRendering(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		dev      bool
		wantCode int
		wantType string
		wantMsg  string
	}{
		{"internal masked in production", errors.New("docker exploded"), false, 500, "general_unknown", "Internal server error."},
		{"internal shown in development", errors.New("docker exploded"), true, 500, "general_unknown", "docker exploded"},
		{"executor error shown in production",
			&sandbox.Error{Kind: sandbox.BuildFailed, Message: "npm ERR!"}, false, 400, "build_failed", "npm ERR!"},
		{"fixed text of a kind", &sandbox.Error{Kind: sandbox.Exists}, false, 409, "runtime_conflict", "Runtime already exists "},
		{"runtime being created", &sandbox.Error{Kind: sandbox.Creating}, false, 409, "runtime_conflict",
			"A runtime with the same ID is already being created. Attempt a execution soon."},
		{"shutting down", &sandbox.Error{Kind: sandbox.ShuttingDown}, false, 503, "runtime_failed", "Executor is shutting down."},
		{"not found with its message", &sandbox.Error{Kind: sandbox.NotFound, Message: "Runtime no longer exists."},
			false, 404, "runtime_not_found", "Runtime no longer exists."},
		{"not found without one", &sandbox.Error{Kind: sandbox.NotFound}, false, 404, "runtime_not_found", "Runtime not found"},
		{"wrapped executor error",
			fmt.Errorf("create: %w", &sandbox.Error{Kind: sandbox.Timeout, Err: context.DeadlineExceeded}), false, 400, "runtime_timeout", "Timed out waiting for runtime."},
		{"runtime timeout saying why", &sandbox.Error{Kind: sandbox.Timeout, Message: "Timed out waiting for runtime: its command: tail -f /dev/null"},
			false, 400, "runtime_timeout", "Timed out waiting for runtime: its command: tail -f /dev/null"},
		{"runtime's fault", &sandbox.Error{Kind: sandbox.RuntimeFailed, Message: "x"}, false, 400, "runtime_failed", "x"},
		{"host's fault", &sandbox.Error{Kind: sandbox.HostFailed, Message: "x"}, false, 500, "runtime_failed", "x"},
		{"out of memory", &sandbox.Error{Kind: sandbox.OutOfMemory, Message: "oom"}, false, 500, "runtime_failed", "oom"},
		{"command timeout", &sandbox.Error{Kind: sandbox.CommandTimeout, Err: context.DeadlineExceeded}, false, 500, "command_timeout", "Operation timed out."},
		{"command failed", &sandbox.Error{Kind: sandbox.CommandFailed}, false, 500, "command_failed", "Failed to execute command."},
		{"unknown kind", &sandbox.Error{Kind: 99, Message: "x"}, false, 500, "general_unknown", "x"},
		{"transport error", &protocol.TransportError{Curl: 7, Err: errors.New("refused")}, false, 500, "general_unknown",
			"Internal curl error has occurred within the executor! Error Number: 7"},
		{"v2 execution timeout", &protocol.TimeoutError{After: 1500 * time.Millisecond}, false, 400, "execution_timeout",
			"Operation timed out after 1500 milliseconds"},
		{"response too large", &protocol.ResponseTooLargeError{Limit: 10}, false, 500, "runtime_failed", "Runtime response is larger than 10 bytes."},
		{"logs timeout", executorError(typeLogsTimeout, ""), false, 504, "logs_timeout", "Timed out waiting for logs."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, &fakeBackend{createErr: tt.err}, func(c *Config) { c.Development = tt.dev })
			rq := jsonBody(`{"runtimeId":"r","image":"i"}`)
			rq.path = "/v1/runtimes"
			w := do(t, s, rq)
			if w.Code != tt.wantCode {
				t.Fatalf("status %d, want %d (%s)", w.Code, tt.wantCode, w.Body)
			}
			var got map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if got["type"] != tt.wantType || got["message"] != tt.wantMsg || got["code"] != float64(tt.wantCode) || got["version"] != "test" {
				t.Errorf("body %s", w.Body)
			}
			_, hasTrace := got["trace"]
			if hasTrace != tt.dev {
				t.Errorf("trace present=%v in dev=%v", hasTrace, tt.dev)
			}
			if !tt.dev && !strings.HasPrefix(w.Body.String(), `{"type":`) {
				t.Errorf("key order: %s", w.Body)
			}
		})
	}
}

func TestDevelopmentDetails(t *testing.T) {
	s := newTestServer(t, &fakeBackend{}, development)
	w := do(t, s, request{method: http.MethodGet, path: "/v1/runtimes/" + strings.Repeat("a", 65)})
	if w.Code != 400 {
		t.Fatalf("status %d", w.Code)
	}
	var got struct {
		Type, Message, File string
		Code, Line          int
		Trace               []traceFrame
	}
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(got.File, ".go") || got.Line == 0 || len(got.Trace) == 0 {
		t.Errorf("missing caller details: %s", w.Body)
	}
	if !strings.HasPrefix(w.Body.String(), `{"type":"general_unknown","message":"Invalid `+"`runtimeId`"+` param: `) {
		t.Errorf("body %s", w.Body)
	}
	if strings.Contains(w.Body.String(), testSecret) {
		t.Error("secret leaked")
	}
}

func TestPanicBecomesInternalError(t *testing.T) {
	for _, dev := range []bool{false, true} {
		s := newTestServer(t, &fakeBackend{panicMsg: "boom"}, func(c *Config) { c.Development = dev })
		rq := jsonBody(`{"runtimeId":"r","image":"i"}`)
		rq.path = "/v1/runtimes"
		w := do(t, s, rq)
		if w.Code != 500 {
			t.Fatalf("status %d", w.Code)
		}
		if dev != strings.Contains(w.Body.String(), "panic: boom") {
			t.Errorf("dev=%v body %s", dev, w.Body)
		}
	}
}

func TestValidationShownInProduction(t *testing.T) {
	s := newTestServer(t, &fakeBackend{})
	rq := jsonBody(`{"image":"i"}`)
	rq.path = "/v1/runtimes"
	w := do(t, s, rq)
	const want = `{"type":"general_unknown","message":"Param \"runtimeId\" is not optional.","code":400,"version":"test"}`
	if w.Code != 400 || w.Body.String() != want {
		t.Errorf("status %d body %s, want %s", w.Code, w.Body, want)
	}
}

func TestNewConfig(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("New without backend succeeded")
	}
	tests := []struct {
		versions    []string
		wantDefault string
		wantList    []string
	}{
		{nil, "v5", []string{"v2", "v3", "v4", "v5"}},
		{[]string{"v4"}, "v4", []string{"v4"}},
		{[]string{"v2", " V4 ", "v2", ""}, "v4", []string{"v2", "v4"}},
		{[]string{"v5", "v2"}, "v5", []string{"v5", "v2"}},
		{[]string{"v10", "v9"}, "v10", []string{"v10", "v9"}},
		{[]string{"beta", "alpha"}, "alpha", []string{"beta", "alpha"}},
	}
	for _, tt := range tests {
		s := newTestServer(t, &fakeBackend{}, func(c *Config) { c.RuntimeVersions = tt.versions; c.Version = "" })
		if s.defaultVersion != tt.wantDefault || strings.Join(s.versions, ",") != strings.Join(tt.wantList, ",") {
			t.Errorf("%q: default %q list %q", tt.versions, s.defaultVersion, s.versions)
		}
		if s.version != "unknown" {
			t.Errorf("version %q", s.version)
		}
	}
}

func TestBodyTooLarge(t *testing.T) {
	big := `{"runtimeId":"r","image":"i","command":"` + strings.Repeat("a", maxRequestBody) + `"}`
	tests := []struct{ name, method, path string }{
		{"parameters read from the body", http.MethodPost, "/v1/runtimes"},
		// The route takes its parameters from the path alone; the body is
		// read to its end all the same, and its size refused before any work.
		{"parameters from the path only", http.MethodDelete, "/v1/runtimes/r"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &fakeBackend{}
			s := newTestServer(t, b)
			rq := jsonBody(big)
			rq.method, rq.path = tt.method, tt.path
			if w := do(t, s, rq); w.Code != http.StatusRequestEntityTooLarge {
				t.Errorf("status %d, want 413: %s", w.Code, w.Body)
			}
			if len(b.deleted) != 0 {
				t.Errorf("the backend deleted %v for a refused request", b.deleted)
			}
		})
	}
}

func TestHeadAndOptions(t *testing.T) {
	s := newTestServer(t, &fakeBackend{})
	w := do(t, s, request{method: http.MethodHead, path: "/v1/runtimes"})
	if w.Code != 200 {
		t.Errorf("HEAD status %d", w.Code)
	}
	w = do(t, s, request{method: http.MethodHead, path: "/v1/runtimes", auth: str("")})
	if w.Code != 401 {
		t.Errorf("HEAD without key: status %d", w.Code)
	}
	w = do(t, s, request{method: http.MethodOptions, path: "/v1/runtimes", auth: str("")})
	if w.Code != 200 || w.Body.Len() != 0 {
		t.Errorf("OPTIONS status %d body %q", w.Code, w.Body)
	}
}
