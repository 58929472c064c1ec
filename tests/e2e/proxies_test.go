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

// Proxies the tests put in front of a server: a TCP relay (the fault
// tests' storage service that goes away, and the warm benchmarks' bare
// relay) and a stock HTTP reverse proxy. On a host whose CPUs the clients,
// the proxy and the runtime share, a proxy's throughput against direct is
// bounded by what relaying costs the host at all, not only by the proxy's
// own work; the warm benchmarks measure that bound with these two beside
// the executor, in the same run, with the same clients and requests.

// dialFunc opens a connection to a proxy's target (nil: a plain net.Dialer).
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// switchProxy relays TCP to a server: each connection it accepts is
// joined to one it dials to the target, and the bytes are copied each way
// as they come, each read once and written once, nothing parsed, no
// deadline kept. It can be taken down (its port closed, its connections
// cut) and brought back on the same port: a storage service that goes away
// and returns, at the address the daemon was given. The warm benchmarks
// use it as their bare relay: a proxy that sees every request can do no
// less (a read and a write on each hop, each way), so its throughput
// against direct is the most any proxy reaches on the host. Everything it
// holds is closed when t ends.
type switchProxy struct {
	t      testing.TB
	addr   string
	target string
	dial   dialFunc

	mu    sync.Mutex
	ln    net.Listener
	conns []net.Conn
	wg    sync.WaitGroup
}

// startSwitchProxy starts a switchProxy to target on a free loopback port;
// dial opens its connections to target (nil: a plain net.Dialer).
func startSwitchProxy(t testing.TB, target string, dial dialFunc) *switchProxy {
	t.Helper()
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	p := &switchProxy{t: t, target: target, dial: dial}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(func() { p.down(); p.wg.Wait() })
	return p
}

func (p *switchProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := p.dial(context.Background(), "tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			p.wg.Add(2)
			go func() { defer p.wg.Done(); pump(up, c) }()
			go func() { defer p.wg.Done(); pump(c, up) }()
		}
	}()
}

// down closes the port and every connection through it.
func (p *switchProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// up listens on the same port again.
func (p *switchProxy) up() {
	p.t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.serve(ln)
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
