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
)

// BenchmarkExecute is one warm execution through the client (v5, a small
// JSON body, a kept-alive connection) against a local server that echoes
// it: what the executor adds to a warm request on its side of the runtime,
// for -benchmem and the allocation profile.
func BenchmarkExecute(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("content-type", "application/json")
		w.Write(body)
	}))
	b.Cleanup(srv.Close)
	hc := NewHTTPClient()
	b.Cleanup(hc.CloseIdleConnections)
	c := &Client{HTTP: hc, RetryAttempts: 3, RetryDelay: 10 * time.Millisecond, Log: slog.New(slog.DiscardHandler)}
	target := Target{Addr: strings.TrimPrefix(srv.URL, "http://"), Version: V5}
	req := Request{Method: "POST", Path: "/", Body: []byte(`{"hello":"world"}`), Headers: map[string]string{"content-type": "application/json"}, Timeout: 10 * time.Second}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Execute(context.Background(), target, req); err != nil {
			b.Fatal(err)
		}
	}
}
