package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const testSecret = "s3cret"

// fixture is a handler wired to temporary directories and a fixed
// environment, so tests never touch /mnt/logs or the process environment.
type fixture struct {
	handler     http.Handler
	logsDir     string
	functionDir string
	exits       *exitRecorder
}

type exitRecorder struct {
	mu    sync.Mutex
	codes []int
}

func (e *exitRecorder) exit(code int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.codes = append(e.codes, code)
}

func (e *exitRecorder) get() []int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]int(nil), e.codes...)
}

func newFixture(t *testing.T, protocol string, env ...string) *fixture {
	t.Helper()
	f := &fixture{
		logsDir:     t.TempDir(),
		functionDir: t.TempDir(),
		exits:       &exitRecorder{},
	}
	h, err := NewHandler(Config{
		Protocol:    protocol,
		LogsDir:     f.logsDir,
		FunctionDir: f.functionDir,
		Environ:     func() []string { return env },
		Exit:        f.exits.exit,
	})
	if err != nil {
		t.Fatalf("NewHandler: %v", err)
	}
	f.handler = h
	return f
}

func (f *fixture) do(t *testing.T, method, target, body string, headers map[string]string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	for k, v := range headers {
		if strings.EqualFold(k, "host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	f.handler.ServeHTTP(rec, req)
	return rec.Result()
}

func readBody(t *testing.T, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return string(b)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return string(b)
}

func TestNewHandlerRejectsUnknownProtocol(t *testing.T) {
	if _, err := NewHandler(Config{Protocol: "v1"}); err == nil {
		t.Fatal("NewHandler(v1) succeeded, want error")
	}
}

func TestModernChecks(t *testing.T) {
	tests := []struct {
		name       string
		secretEnv  string
		headers    map[string]string
		wantStatus int
		wantBody   string
	}{
		{"timeout not a number", testSecret, map[string]string{hdrTimeout: "abc", hdrSecret: testSecret}, 500, msgBadTimeout},
		{"timeout zero", testSecret, map[string]string{hdrTimeout: "0", hdrSecret: testSecret}, 500, msgBadTimeout},
		{"timeout negative", testSecret, map[string]string{hdrTimeout: "-3", hdrSecret: testSecret}, 500, msgBadTimeout},
		// The timeout is checked before the secret, as in the real runtimes.
		{"bad timeout wins over bad secret", testSecret, map[string]string{hdrTimeout: "x"}, 500, msgBadTimeout},
		{"missing secret", testSecret, nil, 500, msgUnauthorized},
		{"wrong secret", testSecret, map[string]string{hdrSecret: "nope"}, 500, msgUnauthorized},
		{"right secret", testSecret, map[string]string{hdrSecret: testSecret, hdrTimeout: "5"}, 200, ""},
		{"no secret configured", "", nil, 200, ""},
	}
	for _, proto := range []string{ProtocolV5, ProtocolV4, ProtocolV3} {
		for _, tt := range tests {
			t.Run(proto+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				f := newFixture(t, proto, "OPEN_RUNTIMES_SECRET="+tt.secretEnv)
				res := f.do(t, http.MethodGet, "/status?code=200", "", tt.headers)
				body := readBody(t, res)
				if res.StatusCode != tt.wantStatus {
					t.Fatalf("status = %d, want %d (body %q)", res.StatusCode, tt.wantStatus, body)
				}
				if tt.wantBody != "" && body != tt.wantBody {
					t.Fatalf("body = %q, want %q", body, tt.wantBody)
				}
			})
		}
	}
}

func TestEcho(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ProtocolV5,
		"OPEN_RUNTIMES_SECRET="+testSecret,
		"OPEN_RUNTIMES_ENTRYPOINT=index.js",
		"TEST_VARIABLE=Variable secret",
		"CI=true",
		"INERNAL_EXECUTOR_HOSTNAME=exec",
		"HOME=/root", // not echoed
	)
	if err := os.WriteFile(filepath.Join(f.functionDir, "index.js"), []byte("module.exports = 1;"), 0o644); err != nil {
		t.Fatal(err)
	}
	res := f.do(t, http.MethodPost, "/my-awesome/path?param=paramValue", `{"id":"2"}`, map[string]string{
		"host":              "cloud.appwrite.io",
		"x-forwarded-proto": "https",
		"Content-Type":      "application/json",
		"X-Custom-Header":   "yes",
		hdrSecret:           testSecret,
		hdrLogging:          "disabled",
	})
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, want 200", res.StatusCode)
	}
	if ct := res.Header.Get("content-type"); ct != "application/json" {
		t.Fatalf("content-type = %q, want application/json", ct)
	}
	var got echoPayload
	if err := json.NewDecoder(res.Body).Decode(&got); err != nil {
		t.Fatalf("decode: %v", err)
	}
	checks := []struct{ name, got, want string }{
		{"method", got.Method, "POST"},
		{"path", got.Path, "/my-awesome/path"},
		{"url", got.URL, "https://cloud.appwrite.io/my-awesome/path?param=paramValue"},
		{"body", got.Body, `{"id":"2"}`},
		{"code", got.Code, "module.exports = 1;"},
		{"header content-type", got.Headers["content-type"], "application/json"},
		{"header x-custom-header", got.Headers["x-custom-header"], "yes"},
		{"header host", got.Headers["host"], "cloud.appwrite.io"},
		{"env TEST_VARIABLE", got.Env["TEST_VARIABLE"], "Variable secret"},
		{"env CI", got.Env["CI"], "true"},
		{"env INERNAL_EXECUTOR_HOSTNAME", got.Env["INERNAL_EXECUTOR_HOSTNAME"], "exec"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	for k := range got.Headers {
		if strings.HasPrefix(k, hdrPrefix) {
			t.Errorf("header %q leaked to the function", k)
		}
	}
	if _, ok := got.Env["HOME"]; ok {
		t.Errorf("env HOME echoed, want only executor prefixes")
	}
	if got.Hostname == "" {
		t.Errorf("hostname empty")
	}
}

func TestEchoMissingCode(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ProtocolV5, "OPEN_RUNTIMES_ENTRYPOINT=missing.js")
	var got echoPayload
	if err := json.NewDecoder(f.do(t, http.MethodGet, "/", "", nil).Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.Code != "" {
		t.Fatalf("code = %q, want empty", got.Code)
	}
}

func TestRequestURL(t *testing.T) {
	tests := []struct {
		host, proto, target, want string
	}{
		{"abc:3000", "", "/x?y=1", "http://abc:3000/x?y=1"},
		{"abc:80", "", "/", "http://abc/"},
		{"abc:443", "https", "/p", "https://abc/p"},
		{"abc", "https", "/p", "https://abc/p"},
		{"[::1]:3000", "", "/", "http://[::1]:3000/"},
		{"abc:3000", "", "/a%20b?q=%2F", "http://abc:3000/a%20b?q=%2F"},
	}
	for _, tt := range tests {
		t.Run(tt.host+tt.target, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, tt.target, nil)
			req.Host = tt.host
			if tt.proto != "" {
				req.Header.Set("x-forwarded-proto", tt.proto)
			}
			if got := requestURL(req); got != tt.want {
				t.Fatalf("requestURL = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestBehaviours(t *testing.T) {
	dataDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dataDir, "file.txt"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dataDir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeTarget := filepath.Join(t.TempDir(), "written.txt")

	tests := []struct {
		name        string
		method      string
		target      string
		body        string
		wantStatus  int
		wantBody    string
		wantHeaders map[string][]string
		check       func(t *testing.T, body string)
	}{
		{name: "binary", target: "/binary", wantStatus: 200, wantBody: "\x00\x0a\xff",
			wantHeaders: map[string][]string{"Content-Type": {"application/octet-stream"}}},
		{name: "status 404", target: "/status?code=404", wantStatus: 404, wantBody: "status 404"},
		{name: "status 201", target: "/status?code=201", wantStatus: 201, wantBody: "status 201"},
		{name: "status garbage is a function error", target: "/status?code=x", wantStatus: 500, wantBody: ""},
		{name: "sleep", target: "/sleep?ms=10", wantStatus: 200, wantBody: "OK"},
		{name: "work", target: "/work?us=2000", wantStatus: 200, wantBody: "worked"},
		{name: "headers", target: "/headers", wantStatus: 200, wantBody: "OK",
			wantHeaders: map[string][]string{
				"Set-Cookie":           {"a=1; HttpOnly", "b=2; HttpOnly"},
				"X-Custom":             {"value"},
				"X-Open-Runtimes-Leak": {"1"},
			}},
		{name: "fs file", target: "/fs?path=" + filepath.Join(dataDir, "file.txt"), wantStatus: 200,
			check: func(t *testing.T, body string) {
				assertFS(t, body, fsPayload{Exists: true, Entries: []string{}, Content: "hello"})
			}},
		{name: "fs dir", target: "/fs?path=" + dataDir, wantStatus: 200,
			check: func(t *testing.T, body string) {
				assertFS(t, body, fsPayload{Exists: true, IsDir: true, Entries: []string{"file.txt", "sub"}})
			}},
		{name: "fs missing", target: "/fs?path=" + filepath.Join(dataDir, "nope"), wantStatus: 200,
			check: func(t *testing.T, body string) {
				assertFS(t, body, fsPayload{Entries: []string{}})
			}},
		{name: "write", method: http.MethodPost, target: "/write?path=" + writeTarget, body: "payload",
			wantStatus: 200, wantBody: "OK",
			check: func(t *testing.T, _ string) {
				if got := readFile(t, writeTarget); got != "payload" {
					t.Fatalf("written file = %q, want payload", got)
				}
			}},
		{name: "write to missing dir fails", method: http.MethodPost, target: "/write?path=/nonexistent/dir/x",
			wantStatus: 500, wantBody: ""},
	}
	for _, proto := range []string{ProtocolV5, ProtocolV4, ProtocolV3} {
		f := newFixture(t, proto)
		for _, tt := range tests {
			t.Run(proto+"/"+tt.name, func(t *testing.T) {
				method := tt.method
				if method == "" {
					method = http.MethodGet
				}
				res := f.do(t, method, tt.target, tt.body, nil)
				body := readBody(t, res)
				if res.StatusCode != tt.wantStatus {
					t.Fatalf("status = %d, want %d (body %q)", res.StatusCode, tt.wantStatus, body)
				}
				if tt.check == nil && body != tt.wantBody {
					t.Fatalf("body = %q, want %q", body, tt.wantBody)
				}
				for k, want := range tt.wantHeaders {
					if got := res.Header.Values(k); !equalStrings(got, want) {
						t.Errorf("header %s = %q, want %q", k, got, want)
					}
				}
				if tt.check != nil {
					tt.check(t, body)
				}
			})
		}
	}
}

func assertFS(t *testing.T, body string, want fsPayload) {
	t.Helper()
	var got fsPayload
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("decode %q: %v", body, err)
	}
	if got.Exists != want.Exists || got.IsDir != want.IsDir || got.Content != want.Content || !equalStrings(got.Entries, want.Entries) {
		t.Fatalf("fs = %+v, want %+v", got, want)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestLogFiles(t *testing.T) {
	tests := []struct {
		name       string
		target     string
		headers    map[string]string
		env        []string
		wantID     string // "" means: any 20 hex chars
		wantLogs   string
		wantErrors string
	}{
		{name: "default lines", target: "/logs", headers: map[string]string{hdrLogID: "abc"}, wantID: "abc",
			wantLogs: "log line 1\nlog line 2\nlog line 3\n", wantErrors: "error line\n"},
		{name: "sized lines", target: "/logs?lines=2&size=4", headers: map[string]string{hdrLogID: "sized"}, wantID: "sized",
			wantLogs: "AAAA\nAAAA\n", wantErrors: "error line\n"},
		{name: "generated id", target: "/logs?lines=1",
			wantLogs: "log line 1\n", wantErrors: "error line\n"},
		{name: "development id", target: "/logs?lines=1", env: []string{"OPEN_RUNTIMES_ENV=development"}, wantID: "dev",
			wantLogs: "log line 1\n", wantErrors: "error line\n"},
		{name: "echo creates empty files", target: "/", headers: map[string]string{hdrLogID: "quiet"}, wantID: "quiet"},
		{name: "function error goes to errors file", target: "/status?code=nope", headers: map[string]string{hdrLogID: "err"}, wantID: "err",
			wantErrors: "query parameter \"code\": strconv.Atoi: parsing \"nope\": invalid syntax\n"},
	}
	for _, proto := range []string{ProtocolV5, ProtocolV4} {
		for _, tt := range tests {
			t.Run(proto+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				f := newFixture(t, proto, tt.env...)
				res := f.do(t, http.MethodGet, tt.target, "", tt.headers)
				_ = readBody(t, res)
				id := res.Header.Get(hdrLogID)
				if tt.wantID != "" && id != tt.wantID {
					t.Fatalf("log id = %q, want %q", id, tt.wantID)
				}
				if tt.wantID == "" && len(id) != 20 {
					t.Fatalf("log id = %q, want 20 hex chars", id)
				}
				if got := readFile(t, filepath.Join(f.logsDir, id+"_logs.log")); got != tt.wantLogs {
					t.Errorf("logs = %q, want %q", got, tt.wantLogs)
				}
				if got := readFile(t, filepath.Join(f.logsDir, id+"_errors.log")); got != tt.wantErrors {
					t.Errorf("errors = %q, want %q", got, tt.wantErrors)
				}
			})
		}
	}
}

func TestLogFilesAppend(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ProtocolV5)
	for range 2 {
		_ = readBody(t, f.do(t, http.MethodGet, "/logs?lines=1", "", map[string]string{hdrLogID: "same"}))
	}
	if got, want := readFile(t, filepath.Join(f.logsDir, "same_logs.log")), "log line 1\nlog line 1\n"; got != want {
		t.Fatalf("logs = %q, want %q", got, want)
	}
}

func TestLoggingDisabled(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ProtocolV5)
	res := f.do(t, http.MethodGet, "/logs", "", map[string]string{hdrLogging: "disabled", hdrLogID: "off"})
	if body := readBody(t, res); body != "OK" {
		t.Fatalf("body = %q, want OK", body)
	}
	vals, ok := res.Header[http.CanonicalHeaderKey(hdrLogID)]
	if !ok || len(vals) != 1 || vals[0] != "" {
		t.Fatalf("log id header = %q (present %v), want present and empty", vals, ok)
	}
	entries, err := os.ReadDir(f.logsDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Fatalf("logs dir has %d entries, want none", len(entries))
	}
}

func TestUnauthorizedCreatesEmptyLogFiles(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ProtocolV5, "OPEN_RUNTIMES_SECRET="+testSecret)
	res := f.do(t, http.MethodGet, "/logs", "", map[string]string{hdrLogID: "denied"})
	if body := readBody(t, res); body != msgUnauthorized {
		t.Fatalf("body = %q", body)
	}
	if got := res.Header.Get(hdrLogID); got != "" {
		t.Fatalf("log id header = %q on an unauthorized answer, want none", got)
	}
	for _, kind := range []string{"logs", "errors"} {
		if got := readFile(t, filepath.Join(f.logsDir, "denied_"+kind+".log")); got != "" {
			t.Errorf("%s file = %q, want empty", kind, got)
		}
	}
}

func TestSoftTimeout(t *testing.T) {
	t.Parallel()
	tests := []struct {
		proto string
		check func(t *testing.T, f *fixture, res *http.Response)
	}{
		{ProtocolV5, func(t *testing.T, f *fixture, res *http.Response) {
			if got := readFile(t, filepath.Join(f.logsDir, "slow_errors.log")); got != msgTimedOut+"\n" {
				t.Fatalf("errors = %q, want %q", got, msgTimedOut+"\n")
			}
		}},
		{ProtocolV3, func(t *testing.T, _ *fixture, res *http.Response) {
			if got, want := res.Header.Get(hdrErrors), encodeURIComponent(msgTimedOut); got != want {
				t.Fatalf("errors header = %q, want %q", got, want)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.proto, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tt.proto)
			start := time.Now()
			res := f.do(t, http.MethodGet, "/sleep?ms=5000", "", map[string]string{hdrTimeout: "1", hdrLogID: "slow"})
			body := readBody(t, res)
			if res.StatusCode != 500 || body != "" {
				t.Fatalf("got %d %q, want 500 with empty body", res.StatusCode, body)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("took %v, want about 1s", d)
			}
			tt.check(t, f, res)
		})
	}
}

func TestV3LogHeaders(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ProtocolV3)
	res := f.do(t, http.MethodGet, "/logs?lines=2", "", nil)
	if body := readBody(t, res); body != "OK" {
		t.Fatalf("body = %q", body)
	}
	if got, want := res.Header.Get(hdrLogs), "log%20line%201%0Alog%20line%202"; got != want {
		t.Errorf("logs header = %q, want %q", got, want)
	}
	if got, want := res.Header.Get(hdrErrors), "error%20line"; got != want {
		t.Errorf("errors header = %q, want %q", got, want)
	}
	if got := res.Header.Get(hdrLogID); got != "" {
		t.Errorf("v3 sent a log id header %q", got)
	}
	entries, _ := os.ReadDir(f.logsDir)
	if len(entries) != 0 {
		t.Errorf("v3 wrote %d log files, want none", len(entries))
	}
}

func TestEncodeURIComponent(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"abc-_.!~*'()", "abc-_.!~*'()"},
		{"a b\nc", "a%20b%0Ac"},
		{"50%/&=?#+", "50%25%2F%26%3D%3F%23%2B"},
		{"👋", "%F0%9F%91%8B"},
	}
	for _, tt := range tests {
		if got := encodeURIComponent(tt.in); got != tt.want {
			t.Errorf("encodeURIComponent(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestExit(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ProtocolV5)
	srv := httptest.NewServer(f.handler)
	t.Cleanup(srv.Close)

	res, err := http.Get(srv.URL + "/exit?code=7")
	if err == nil {
		res.Body.Close()
		t.Fatalf("got an answer (%d), want the connection to die", res.StatusCode)
	}
	if got := f.exits.get(); !equalInts(got, []int{7}) {
		t.Fatalf("exit codes = %v, want [7]", got)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestHealth(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ProtocolV5, "OPEN_RUNTIMES_SECRET="+testSecret)
	res := f.do(t, http.MethodGet, "/__opr/health", "", nil)
	if body := readBody(t, res); res.StatusCode != 200 || body != "OK" {
		t.Fatalf("got %d %q, want 200 OK", res.StatusCode, body)
	}
}

func TestV2(t *testing.T) {
	const key = "challenge-key"
	tests := []struct {
		name       string
		method     string
		target     string
		body       string
		challenge  string
		wantStatus int
		wantBody   string
		wantJSON   map[string]any
	}{
		{name: "unauthorized", method: "POST", target: "/", body: `{"payload":"x"}`, challenge: "bad",
			wantStatus: 500, wantBody: `{"stderr":"Unauthorized"}`},
		{name: "invalid json", method: "POST", target: "/", body: `nope`, challenge: key,
			wantStatus: 400, wantBody: "Invalid JSON"},
		{name: "wrong path", method: "POST", target: "/x", body: `{}`, challenge: key, wantStatus: 404},
		{name: "wrong method", method: "GET", target: "/", challenge: key, wantStatus: 405},
		{name: "echo", method: "POST", target: "/", challenge: key,
			body:       `{"variables":{"a":"b"},"payload":"hello","headers":{}}`,
			wantStatus: 200,
			wantJSON: map[string]any{
				"response": map[string]any{
					"payload":   "hello",
					"variables": map[string]any{"a": "b"},
					"env": map[string]any{
						"INTERNAL_RUNTIME_KEY":      key,
						"INERNAL_EXECUTOR_HOSTNAME": "exec",
					},
				},
				"stdout": "v2 log",
				"stderr": "",
			}},
		{name: "sleep", method: "POST", target: "/", challenge: key, body: `{"payload":"sleep:10"}`, wantStatus: 200},
	}
	f := newFixture(t, ProtocolV2, "INTERNAL_RUNTIME_KEY="+key, "INERNAL_EXECUTOR_HOSTNAME=exec", "OPEN_RUNTIMES_X=no")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := f.do(t, tt.method, tt.target, tt.body, map[string]string{"x-internal-challenge": tt.challenge})
			body := readBody(t, res)
			if res.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %q)", res.StatusCode, tt.wantStatus, body)
			}
			if tt.wantBody != "" && body != tt.wantBody {
				t.Fatalf("body = %q, want %q", body, tt.wantBody)
			}
			if tt.wantJSON != nil {
				var got map[string]any
				if err := json.Unmarshal([]byte(body), &got); err != nil {
					t.Fatalf("decode %q: %v", body, err)
				}
				gotJSON, _ := json.Marshal(got)
				wantJSON, _ := json.Marshal(tt.wantJSON)
				if string(gotJSON) != string(wantJSON) {
					t.Fatalf("body = %s, want %s", gotJSON, wantJSON)
				}
			}
		})
	}
}

func TestV2Exit(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ProtocolV2, "INTERNAL_RUNTIME_KEY=k")
	srv := httptest.NewServer(f.handler)
	t.Cleanup(srv.Close)
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/", strings.NewReader(`{"payload":"exit"}`))
	req.Header.Set("x-internal-challenge", "k")
	if res, err := http.DefaultClient.Do(req); err == nil {
		res.Body.Close()
		t.Fatalf("got an answer (%d), want the connection to die", res.StatusCode)
	}
	if got := f.exits.get(); !equalInts(got, []int{1}) {
		t.Fatalf("exit codes = %v, want [1]", got)
	}
}

// TestBinary runs the real static binary: readiness line, an answer over TCP,
// and exit status 0 on SIGTERM.
func TestBinary(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "runtime-server")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	port := freePort(t)
	cmd := exec.Command(bin, "-listen", "127.0.0.1:"+port, "-logs-dir", t.TempDir())
	cmd.Env = []string{"OPEN_RUNTIMES_SECRET="}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	// Whatever happens below, never leave the server running.
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-waitErr
	})

	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != readyMessage {
		t.Fatalf("first stdout line = %q (%v), want %q", line, err, readyMessage)
	}
	res, err := http.Get("http://127.0.0.1:" + port + "/status?code=202")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != 202 {
		t.Fatalf("status = %d, want 202", res.StatusCode)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waitErr:
		waitErr <- err // for the cleanup
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			t.Fatalf("exit status %d after SIGTERM, want 0", exitErr.ExitCode())
		} else if err != nil {
			t.Fatalf("wait: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server did not exit within 5s of SIGTERM")
	}
}

// freePort asks the kernel for an unused TCP port.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// TestWork: /work spends the CPU it is asked for, on the process's own
// counters (user and system time), not merely the wall time.
func TestWork(t *testing.T) {
	f := newFixture(t, ProtocolV5)
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	for _, us := range []int{20000, 60000} {
		before := cpu()
		res := f.do(t, http.MethodGet, "/work?us="+strconv.Itoa(us), "", nil)
		if body := readBody(t, res); res.StatusCode != 200 || body != "worked" {
			t.Fatalf("/work?us=%d: %d %q", us, res.StatusCode, body)
		}
		if spent, want := cpu()-before, time.Duration(us)*time.Microsecond; spent < want {
			t.Errorf("/work?us=%d spent %v of CPU, want at least %v", us, spent, want)
		}
	}
}
