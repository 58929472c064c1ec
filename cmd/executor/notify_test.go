package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// notifySocket is a NOTIFY_SOCKET the test reads, as systemd's manager does.
type notifySocket struct {
	conn *net.UnixConn
	msgs chan string
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	s := &notifySocket{conn: conn, msgs: make(chan string, 1024)}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(s.msgs)
				return
			}
			s.msgs <- string(buf[:n])
		}
	}()
	return s
}

// next returns the next message that starts with one of prefixes, failing
// after timeout; other messages are skipped.
func (s *notifySocket) next(t *testing.T, timeout time.Duration, prefixes ...string) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case m := <-s.msgs:
			for _, p := range prefixes {
				if strings.HasPrefix(m, p) {
					return m
				}
			}
		case <-deadline:
			t.Fatalf("no %q message within %v", prefixes, timeout)
		}
	}
}

// none fails if a message starting with prefix comes within d.
func (s *notifySocket) none(t *testing.T, d time.Duration, prefix string) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case m := <-s.msgs:
			if strings.HasPrefix(m, prefix) {
				t.Fatalf("got %q, want no %s message", m, prefix)
			}
		case <-deadline:
			return
		}
	}
}

// wedgeableAPI serves /v1/health until wedged: then every request hangs, as
// on a daemon whose handlers are stuck.
type wedgeableAPI struct {
	mu     sync.Mutex
	wedged chan struct{} // nil: answering
}

func (a *wedgeableAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	wedged := a.wedged
	a.mu.Unlock()
	if wedged != nil {
		select {
		case <-wedged:
		case <-r.Context().Done():
			return
		}
	}
	_, _ = io.WriteString(w, `{"status":"pass"}`)
}

func (a *wedgeableAPI) wedge(on bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case on && a.wedged == nil:
		a.wedged = make(chan struct{})
	case !on && a.wedged != nil:
		close(a.wedged)
		a.wedged = nil
	}
}

func startAPI(t *testing.T, h http.Handler) net.Addr {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr()
}

// TestNotifierLifecycle: READY=1 once the API answers, WATCHDOG=1 only while
// it answers, RELOADING=1 then READY=1 around a reload, STOPPING=1 and no
// ping after it.
func TestNotifierLifecycle(t *testing.T) {
	sock := listenNotify(t)
	const watchdog = time.Second
	// settle bounds a wait for a message that is due: generous, as this
	// machine may be loaded; the waits return as soon as it comes.
	const settle = 10 * watchdog
	t.Setenv("WATCHDOG_USEC", "1000000")
	api := &wedgeableAPI{}
	api.wedge(true) // not answering yet: no READY
	addr := startAPI(t, api)
	t.Cleanup(func() { api.wedge(false) })

	n := newNotifier(slog.New(slog.DiscardHandler))
	if n.watchdog != watchdog {
		t.Fatalf("watchdog %v, want %v from WATCHDOG_USEC", n.watchdog, watchdog)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n.ready(ctx, addr)
	sock.none(t, 300*time.Millisecond, "READY=1")
	api.wedge(false)
	if m := sock.next(t, 5*time.Second, "READY=1"); !strings.Contains(m, "STATUS=Serving the API on "+addr.String()) {
		t.Errorf("READY message %q has no serving status", m)
	}
	for range 3 {
		sock.next(t, settle, "WATCHDOG=1")
	}

	api.wedge(true)
	sock.next(t, settle, "STATUS=The API does not answer")
	sock.none(t, 2*watchdog, "WATCHDOG=1")
	api.wedge(false)
	sock.next(t, settle, "WATCHDOG=1")

	done := n.reloading()
	if m := sock.next(t, settle, "RELOADING=1"); !strings.Contains(m, "MONOTONIC_USEC=") {
		t.Errorf("RELOADING message %q has no MONOTONIC_USEC", m)
	}
	done()
	sock.next(t, settle, "READY=1")

	n.stopping(time.Minute)
	if m := sock.next(t, settle, "STOPPING=1"); !strings.Contains(m, "STATUS=Stopping: draining requests (at most 1m0s)") {
		t.Errorf("STOPPING message %q does not say what the shutdown does", m)
	}
	sock.none(t, 2*watchdog, "WATCHDOG=1")
	n.reloading()()
	sock.none(t, 100*time.Millisecond, "RELOADING=1")
}

// TestNotifierDisabled: without NOTIFY_SOCKET nothing is sent and nothing
// waits; a WATCHDOG_USEC alone turns nothing on.
func TestNotifierDisabled(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "1000000")
	n := newNotifier(slog.New(slog.DiscardHandler))
	if n.enabled || n.watchdog != 0 {
		t.Fatalf("enabled %v watchdog %v without NOTIFY_SOCKET", n.enabled, n.watchdog)
	}
	n.ready(context.Background(), &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1})
	n.stopping(time.Second)
	n.reloading()()
}

// TestHealthProbe: a listener on every address is probed through loopback,
// and any HTTP answer (503 included) counts as the API answering.
func TestHealthProbe(t *testing.T) {
	var status int
	var mu sync.Mutex
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path != "/v1/health" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.WriteHeader(status)
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	probe := healthProbe(ln.Addr())
	for _, code := range []int{http.StatusOK, http.StatusServiceUnavailable} {
		mu.Lock()
		status = code
		mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := probe(ctx); err != nil {
			t.Errorf("status %d: probe failed: %v", code, err)
		}
		cancel()
	}
	srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := probe(ctx); err == nil {
		t.Error("probe of a closed listener succeeded")
	}
}
