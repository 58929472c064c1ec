package api

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"executor/sandbox"
)

func TestStreamLogs(t *testing.T) {
	ts := time.Date(2026, 7, 23, 10, 0, 1, 123_000_000, time.UTC)
	tests := []struct {
		name    string
		stream  *fakeStream
		query   string
		want    string
		maxTime time.Duration
	}{
		{"v5 lines with escaped newlines", &fakeStream{version: "v5", batches: [][]sandbox.LogEntry{
			{{Timestamp: ts, Content: "Step: 1\nStep: 2\n"}}, {{Timestamp: ts, Content: "\x1b[33mOrange"}},
		}}, "", "2026-07-23T10:00:01.123+00:00 Step: 1\\nStep: 2\\n\n2026-07-23T10:00:01.123+00:00 \x1b[33mOrange\n", time.Second},
		{"v4 raw text", &fakeStream{version: "v4", batches: [][]sandbox.LogEntry{{{Timestamp: ts, Content: "a\n"}, {Timestamp: ts, Content: "b"}}}}, "", "a\nb", time.Second},
		{"v2 ends at once", &fakeStream{version: "v2", batches: [][]sandbox.LogEntry{{{Timestamp: ts, Content: "x"}}}}, "", "", time.Second},
		{"timeout ends a quiet stream", &fakeStream{version: "v5", block: true}, "?timeout=1", "", 3 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := &fakeBackend{stream: tc.stream}
			s := newTestServer(t, b)
			req := httptest.NewRequest("GET", "/v1/runtimes/rt/logs"+tc.query, nil)
			req.Header.Set("Authorization", "Bearer "+testSecret)
			rec := httptest.NewRecorder()
			start := time.Now()
			s.ServeHTTP(rec, req)
			if time.Since(start) > tc.maxTime {
				t.Fatalf("stream took %v", time.Since(start))
			}
			if rec.Code != 200 || rec.Body.String() != tc.want {
				t.Fatalf("got %d %q, want %q", rec.Code, rec.Body.String(), tc.want)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "text/event-stream" {
				t.Errorf("content type %q", ct)
			}
		})
	}
	t.Run("needs the key", func(t *testing.T) {
		s := newTestServer(t, &fakeBackend{stream: &fakeStream{version: "v5"}})
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/runtimes/rt/logs", nil))
		if rec.Code != 401 {
			t.Fatalf("%d", rec.Code)
		}
	})
	t.Run("runtime never appears", func(t *testing.T) {
		s := newTestServer(t, &fakeBackend{streamErr: &sandbox.Error{Type: sandbox.ErrRuntimeTimeout, Message: "Timed out waiting for runtime."}})
		req := httptest.NewRequest("GET", "/v1/runtimes/rt/logs", nil)
		req.Header.Set("Authorization", "Bearer "+testSecret)
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code != 400 || !strings.Contains(rec.Body.String(), "runtime_timeout") {
			t.Fatalf("%d %s", rec.Code, rec.Body.String())
		}
	})
}

func TestCommands(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		auth   bool
		out    string
		err    error
		status int
		want   string
	}{
		{"runs", `{"command":"echo hi","timeout":5}`, true, "hi\n", nil, 200, `{"output":"hi\n"}`},
		{"needs the key", `{"command":"echo hi"}`, false, "", nil, 401, "Missing executor key"},
		{"command required", `{}`, true, "", nil, 400, `Param \"command\" is not optional.`},
		{"timeout is strict", `{"command":"x","timeout":"5"}`, true, "", nil, 400, "Invalid `timeout` param"},
		{"timeout error", `{"command":"sleep 9"}`, true, "", &sandbox.Error{Type: sandbox.ErrCommandTimeout, Code: 500, Message: "Operation timed out."}, 500, "Operation timed out."},
		{"failure", `{"command":"exit 1"}`, true, "", &sandbox.Error{Type: sandbox.ErrCommandFailed, Code: 500, Message: "Failed to execute command."}, 500, "command_failed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := &fakeBackend{cmdOut: tc.out, cmdErr: tc.err}
			s := newTestServer(t, b)
			req := httptest.NewRequest("POST", "/v1/runtimes/rt/commands", strings.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/json")
			if tc.auth {
				req.Header.Set("Authorization", "Bearer "+testSecret)
			}
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.want) {
				t.Fatalf("got %d %s, want %d with %s", rec.Code, rec.Body.String(), tc.status, tc.want)
			}
			if !tc.auth && b.command != "" {
				t.Fatal("command ran without the key")
			}
		})
	}
	_ = http.MethodPost
}
