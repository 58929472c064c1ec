package main

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestSentryDSN(t *testing.T) {
	tests := []struct {
		in, want string
		err      bool
	}{
		{"sentry://123:abc@sentry.example.com", "https://abc@sentry.example.com/123", false},
		{"abc;123", "https://abc@sentry.io/123", false},
		{"https://abc@o1.ingest.sentry.io/42", "https://abc@o1.ingest.sentry.io/42", false},
		{"sentry://123@host", "", true},
		{"nonsense", "", true},
		{"", "", true},
	}
	for _, tc := range tests {
		got, err := sentryDSN(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("sentryDSN(%q) = %q, %v", tc.in, got, err)
		}
	}
}

// TestReporterSendsErrors runs the real Sentry client against a local
// endpoint standing in for a Sentry server.
func TestReporterSendsErrors(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, r.URL.Path+" "+string(b))
		mu.Unlock()
		w.WriteHeader(200)
	}))
	defer srv.Close()
	dsn := "http://publickey@" + strings.TrimPrefix(srv.URL, "http://") + "/7"
	h, err := newReporter(slog.NewTextHandler(io.Discard, nil), dsn, "production", "test")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(h).With("component", "api")
	log.Info("not reported")
	log.Error("request failed", "error", "boom-123")
	h.flush(5 * time.Second)
	// Delivery is asynchronous and Flush may return before the transport
	// has picked the event up: wait for it to arrive.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(bodies)
		mu.Unlock()
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // a second, wrong report would show here
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 1 || !strings.Contains(bodies[0], "/api/7/") || !strings.Contains(bodies[0], "request failed") || !strings.Contains(bodies[0], "boom-123") {
		t.Fatalf("sentry got %q", bodies)
	}
}
