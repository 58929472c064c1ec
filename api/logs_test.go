package api

import (
	"bytes"
	"errors"
	"log/slog"
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
	// A stream that breaks (not its end, not the client's leaving) is an error the operator sees: the response
	// has started, so the client gets what was sent and the daemon logs why it stopped.
	t.Run("a broken stream is logged", func(t *testing.T) {
		var logs bytes.Buffer
		stream := &fakeStream{version: "v5", err: errors.New("log file vanished"), batches: [][]sandbox.LogEntry{
			{{Timestamp: ts, Content: "one"}},
		}}
		s := newTestServer(t, &fakeBackend{stream: stream}, func(c *Config) {
			c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		})
		req := httptest.NewRequest("GET", "/v1/runtimes/rt/logs", nil)
		req.Header.Set("Authorization", "Bearer "+testSecret)
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if want := "2026-07-23T10:00:01.123+00:00 one\n"; rec.Code != 200 || rec.Body.String() != want {
			t.Fatalf("got %d %q, want %q", rec.Code, rec.Body.String(), want)
		}
		if !strings.Contains(logs.String(), "request failed after the response started") ||
			!strings.Contains(logs.String(), "log file vanished") {
			t.Fatalf("the broken stream is not logged: %s", logs.String())
		}
	})
	t.Run("runtime never appears", func(t *testing.T) {
		s := newTestServer(t, &fakeBackend{streamErr: &sandbox.Error{Kind: sandbox.Timeout}})
		req := httptest.NewRequest("GET", "/v1/runtimes/rt/logs", nil)
		req.Header.Set("Authorization", "Bearer "+testSecret)
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code != 400 || !strings.Contains(rec.Body.String(), "runtime_timeout") {
			t.Fatalf("%d %s", rec.Code, rec.Body.String())
		}
	})
}
