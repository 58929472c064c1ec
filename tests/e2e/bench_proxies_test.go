package e2e

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
)

// The warm benchmarks' reference proxies. On a host whose CPUs the clients,
// the proxy and the runtime share, a proxy's throughput against direct is
// bounded by what relaying costs the host at all, not only by the proxy's
// own work; these two measure that bound beside the executor, in the same
// run, with the same clients and the same requests.

// dialFunc opens a connection to the runtime (nil: a plain net.Dialer).
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// startRelay serves a bare TCP relay to target on a free loopback port:
// each connection it accepts is joined to one it dials to target, and the
// bytes are copied each way as they come, each read once and written once,
// nothing parsed, no deadline kept. A proxy that sees every request can do
// no less (a read and a write on each hop, each way), so the relay's
// throughput against direct is the most any proxy reaches on this host.
// Everything it holds is closed when t ends.
func startRelay(t testing.TB, target string, dial dialFunc) string {
	t.Helper()
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		conns  = map[net.Conn]struct{}{}
		closed bool
		wg     sync.WaitGroup
	)
	// hold keeps c to be closed at the end; false once that began.
	hold := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			return false
		}
		conns[c] = struct{}{}
		return true
	}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		closed = true
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !hold(c) {
				c.Close()
				return
			}
			wg.Go(func() {
				u, err := dial(context.Background(), "tcp", target)
				if err != nil || !hold(u) {
					if u != nil {
						u.Close()
					}
					c.Close()
					return
				}
				wg.Go(func() { pump(c, u) })
				pump(u, c)
			})
		}
	})
	return ln.Addr().String()
}

// pump copies src to dst until either fails, then closes both, which ends
// the copy the other way too.
func pump(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// startReverseProxy serves net/http/httputil's ReverseProxy to target on a
// free loopback port: a stock HTTP proxy, parsing each request and answer
// on both hops as the executor does, keeping a connection to target per
// client. Everything it holds is closed when t ends.
func startReverseProxy(t testing.TB, target string, dial dialFunc) string {
	t.Helper()
	p := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	tr := &http.Transport{DialContext: dial, MaxIdleConnsPerHost: warmClients, DisableCompression: true}
	p.Transport = tr
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: p}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		tr.CloseIdleConnections()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("reverse proxy: %v", err)
		}
	})
	return ln.Addr().String()
}
