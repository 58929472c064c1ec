package main

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// chanWriter passes each line a slog handler writes to a channel, so that a test can wait for a log line.
type chanWriter chan string

func (c chanWriter) Write(p []byte) (int, error) {
	c <- string(p)
	return len(p), nil
}

// nextLog returns the next log line holding substr, failing after timeout.
func nextLog(t *testing.T, logs chan string, timeout time.Duration, substr string) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l := <-logs:
			if strings.Contains(l, substr) {
				return l
			}
		case <-deadline:
			t.Fatalf("no log line with %q within %v", substr, timeout)
		}
	}
}

// The watchdog's timing: a ping every half of WatchdogSec, so systemd gets one well within the limit, and an API
// that stops answering is noticed within a ping's interval and a quarter of WatchdogSec (the probe's time).
// The bounds below leave room for a loaded machine; the wrong timings are twice to four times past them.
func TestNotifierWatchdogTiming(t *testing.T) {
	sock := listenNotify(t)
	const watchdog = 2 * time.Second
	t.Setenv("WATCHDOG_USEC", strconv.Itoa(int(watchdog/time.Microsecond)))
	t.Setenv("WATCHDOG_PID", "")
	api := &wedgeableAPI{}
	addr := startAPI(t, api)
	t.Cleanup(func() { api.wedge(false) })
	logs := make(chanWriter, 64)
	n := newNotifier(slog.New(slog.NewTextHandler(logs, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n.ready(ctx, addr)
	sock.next(t, 10*time.Second, "READY=1")
	if l := nextLog(t, logs, 10*time.Second, "pinging the service manager's watchdog"); !strings.Contains(l, "every=1s watchdogSec=2s") {
		t.Errorf("log line %q does not give the ping interval and the watchdog's time", l)
	}
	sock.next(t, 10*time.Second, "WATCHDOG=1")
	first := time.Now()
	sock.next(t, 10*time.Second, "WATCHDOG=1")
	if d := time.Since(first); d >= watchdog {
		t.Errorf("pings %v apart, WatchdogSec is %v", d, watchdog)
	}
	api.wedge(true)
	wedged := time.Now()
	sock.next(t, 20*time.Second, "STATUS=The API does not answer")
	// At most 1s to the next probe, and 0.5s for it.
	if d := time.Since(wedged); d > 2*watchdog {
		t.Errorf("a wedged API noticed after %v", d)
	}
	n.stopping(time.Second)
}

// Without a watchdog (no WATCHDOG_USEC) READY=1 is all: no pinging.
func TestNotifierReadyWithoutWatchdog(t *testing.T) {
	sock := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "")
	logs := make(chanWriter, 64)
	n := newNotifier(slog.New(slog.NewTextHandler(logs, nil)))
	addr := startAPI(t, &wedgeableAPI{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n.ready(ctx, addr)
	sock.next(t, 10*time.Second, "READY=1")
	sock.none(t, 300*time.Millisecond, "WATCHDOG=1")
	n.stopping(time.Second)
	sock.next(t, 10*time.Second, "STOPPING=1")
	for {
		select {
		case l := <-logs:
			t.Errorf("logged %q", l)
		default:
			return
		}
	}
}

// The probe reaches a listener on every address through loopback, of the listener's family: the request it
// sends names 127.0.0.1 or [::1], never the unspecified address.
func TestHealthProbeLoopback(t *testing.T) {
	hosts := make(chan string, 8)
	ln, err := net.Listen("tcp", "[::]:0")
	v6 := err == nil
	if !v6 {
		if ln, err = net.Listen("tcp", "0.0.0.0:0"); err != nil {
			t.Fatal(err)
		}
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hosts <- r.Host })}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	tests := []struct {
		ip   net.IP
		want string
	}{
		{net.IPv4zero, "127.0.0.1"},
		{net.IPv4(127, 0, 0, 1), "127.0.0.1"},
		{net.IPv6unspecified, "::1"},
	}
	for _, tt := range tests {
		if tt.ip.To4() == nil && !v6 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := healthProbe(&net.TCPAddr{IP: tt.ip, Port: port})(ctx)
		cancel()
		if err != nil {
			t.Errorf("%s: %v", tt.ip, err)
			continue
		}
		if got, want := <-hosts, net.JoinHostPort(tt.want, strconv.Itoa(port)); got != want {
			t.Errorf("%s: probed %s, want %s", tt.ip, got, want)
		}
	}
}
