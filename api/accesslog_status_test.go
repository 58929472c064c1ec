package api

import (
	"context"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"executor/sandbox"
)

// TestAccessLogStatusIsWhatTheClientGot: the status on the access line is the one the client received, also
// when a streaming handler flushes before it writes anything (net/http then sends 200, and a later
// WriteHeader cannot change it) or after it set a status of its own.
func TestAccessLogStatusIsWhatTheClientGot(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    int
	}{
		{
			name: "flush, then a failure status",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				w.(http.Flusher).Flush()
				w.WriteHeader(http.StatusInternalServerError) // superfluous: the client has its 200
			},
			want: http.StatusOK,
		},
		{
			name: "own status, then flush",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(http.StatusAccepted)
				w.(http.Flusher).Flush()
				_, _ = io.WriteString(w, "more")
			},
			want: http.StatusAccepted,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newCapture()
			s := newTestServer(t, &fakeBackend{}, func(cfg *Config) { cfg.Logger = slog.New(c) })
			c.take()
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				s.serveLogged(w, r, tc.handler)
			}))
			srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the superfluous WriteHeader is the point
			srv.Start()
			defer srv.Close()
			resp, err := http.Get(srv.URL + "/v1/x")
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("client got %d, want %d", resp.StatusCode, tc.want)
			}
			srv.Close() // the access line is written when the handler returns, before the server closes
			got := c.take()
			if len(got) != 1 || got[0].attrs["status"].Int64() != int64(tc.want) {
				t.Fatalf("access lines %+v, want one with status %d", got, tc.want)
			}
		})
	}
}

// TestAccessLogAtErrorLevel: a daemon logging only errors still writes the line of a request that failed on an
// internal error, though a 500's line is otherwise a warning.
func TestAccessLogAtErrorLevel(t *testing.T) {
	c := newCapture()
	level := new(slog.LevelVar)
	level.Set(slog.LevelError)
	s := newTestServer(t, &fakeBackend{infos: []sandbox.Info{}, execErr: errors.New("boom")},
		func(cfg *Config) { cfg.Logger = slog.New(leveled{Handler: c, level: level}) })
	c.take()
	rq := jsonBody(`{"image":"openruntimes/node:v5-18.0","path":"/"}`)
	rq.path = "/v1/runtimes/fn/executions"
	do(t, s, rq)
	if got := c.take(); len(got) != 1 || got[0].level != slog.LevelError || got[0].attrs["status"].Int64() != 500 {
		t.Fatalf("an internal error at error level: %+v", got)
	}
}

// TestAccessLogKeepsAPathOfTheLimit: a path of exactly maxLoggedText bytes is logged whole, without the "..."
// that says something was cut.
func TestAccessLogKeepsAPathOfTheLimit(t *testing.T) {
	c := newCapture()
	s := newTestServer(t, &fakeBackend{}, func(cfg *Config) { cfg.Logger = slog.New(c) })
	c.take()
	path := "/v1/" + strings.Repeat("a", maxLoggedText-len("/v1/"))
	do(t, s, request{method: http.MethodGet, path: path})
	got := c.take()
	if len(got) != 1 || got[0].attrs["path"].String() != path {
		t.Fatalf("records %+v, want the path %d bytes long as it was", got, len(path))
	}
}

// gatedLog holds each access line until the gate opens.
type gatedLog struct {
	slog.Handler
	gate <-chan struct{}
}

func (g gatedLog) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == accessMessage {
		select {
		case <-g.gate:
		case <-time.After(20 * time.Second): // a failing test must not hang the suite
		}
	}
	return g.Handler.Handle(ctx, r)
}

func (g gatedLog) WithAttrs(attrs []slog.Attr) slog.Handler {
	return gatedLog{Handler: g.Handler.WithAttrs(attrs), gate: g.gate}
}

// TestAnswerBeforeItsAccessLine: a complete answer reaches the client before its access line is written, which
// it need not wait for; and the request is counted before. An answer without a declared length keeps the
// length net/http counts for it, not a chunked framing.
func TestAnswerBeforeItsAccessLine(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		length  int64
		held    bool // the access line is held until the client has its answer
	}{
		{name: "declared length", handler: func(w http.ResponseWriter, _ *http.Request) { writeBody(w, http.StatusOK, []byte("hello")) }, length: 5, held: true},
		// net/http counts an undeclared length once the handler returns, its line written.
		{name: "no declared length", handler: func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "hi") }, length: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gate := make(chan struct{})
			if !tc.held {
				close(gate)
			}
			c := newCapture()
			obs := &countingObserver{}
			s := newTestServer(t, &fakeBackend{}, func(cfg *Config) {
				cfg.Logger = slog.New(gatedLog{Handler: c, gate: gate})
				cfg.Observer = obs
			})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				s.serveLogged(w, r, tc.handler)
			}))
			defer srv.Close()
			if tc.held {
				defer close(gate)
			}
			client := &http.Client{Timeout: 5 * time.Second}
			resp, err := client.Get(srv.URL + "/v1/x")
			if err != nil {
				t.Fatalf("the answer waited for its access line: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.ContentLength != tc.length || len(resp.TransferEncoding) != 0 || int64(len(body)) != tc.length {
				t.Fatalf("length %d, transfer encoding %v, body %q; want %d bytes of declared length", resp.ContentLength, resp.TransferEncoding, body, tc.length)
			}
			if n := obs.count(); n != 1 {
				t.Fatalf("%d requests counted when the client had its answer, want 1", n)
			}
		})
	}
}

type countingObserver struct {
	mu sync.Mutex
	n  int
}

func (o *countingObserver) Request(*http.Request, string, int, time.Duration) {
	o.mu.Lock()
	o.n++
	o.mu.Unlock()
}

func (o *countingObserver) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n
}
