package protocol

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// countingServer is a runtime that answers each request with its body
// echoed and counts the connections it accepted.
func countingServer(t *testing.T, idle time.Duration) (addr string, conns *atomic.Int32) {
	t.Helper()
	conns = new(atomic.Int32)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}))
	srv.Config.IdleTimeout = idle
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), conns
}

// Sequential exchanges share one kept-alive connection, and concurrent
// ones each get their own and leave them idle for later.
func TestTransportKeepsConnectionsAlive(t *testing.T) {
	addr, conns := countingServer(t, 0)
	c, _ := newClient(t)
	for i := 0; i < 50; i++ {
		body := strings.Repeat("x", i*100)
		res, err := c.Execute(context.Background(), Target{Addr: addr, Version: V5}, Request{Method: "POST", Body: []byte(body), Timeout: time.Second})
		if err != nil || string(res.Body) != body {
			t.Fatalf("exchange %d: %v, body of %d bytes", i, err, len(res.Body))
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("50 sequential exchanges opened %d connections, want 1", n)
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Execute(context.Background(), Target{Addr: addr, Version: V5}, Request{Method: "POST", Body: []byte("y"), Timeout: time.Second}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	before := conns.Load()
	if before > 9 {
		t.Errorf("8 concurrent exchanges made %d connections in all, want at most 9", before)
	}
	for i := 0; i < 8; i++ {
		if _, err := c.Execute(context.Background(), Target{Addr: addr, Version: V5}, Request{Timeout: time.Second}); err != nil {
			t.Fatal(err)
		}
	}
	if n := conns.Load(); n != before {
		t.Errorf("exchanges after the concurrent ones opened %d new connections, want none", n-before)
	}
}

// A runtime that closes its idle connections (Node closes them after 5 s)
// costs a new connection, never a failed execution, whatever the method.
func TestTransportRuntimeClosedIdleConnection(t *testing.T) {
	addr, conns := countingServer(t, 30*time.Millisecond)
	c, _ := newClient(t)
	for i, method := range []string{"POST", "GET", "PUT", "DELETE"} {
		res, err := c.Execute(context.Background(), Target{Addr: addr, Version: V5}, Request{Method: method, Body: []byte("b"), Timeout: time.Second})
		if err != nil {
			t.Fatalf("%s after an idle close: %v", method, err)
		}
		if method != "GET" && string(res.Body) != "b" {
			t.Errorf("%s: body %q", method, res.Body)
		}
		if n := conns.Load(); int(n) != i+1 {
			t.Errorf("%s: %d connections, want %d", method, n, i+1)
		}
		time.Sleep(150 * time.Millisecond) // the runtime closes the connection meanwhile
	}
}

// A connection is kept only when the answer ends cleanly: an answer asking
// to close, one read only in part, one followed by bytes nobody asked for,
// and one cut short each retire their connection, and the next exchange
// gets a new one that works.
func TestTransportRetiresSpentConnections(t *testing.T) {
	tests := []struct {
		name   string
		answer string
		limit  bool // a response too large, left unread
		fails  bool
	}{
		{"connection close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", false, false},
		{"http/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", false, false},
		{"unsolicited bytes", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nforge", false, false},
		{"too large", "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(MaxResponseBody+10) + "\r\n\r\n" + strings.Repeat("z", 64<<10), true, true},
		{"cut short", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var conns atomic.Int32
			first := true
			var mu sync.Mutex
			addr := rawServer(t, func(c net.Conn, r *http.Request) {
				conns.Add(1)
				mu.Lock()
				answer := "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood"
				if first {
					answer, first = tt.answer, false
				}
				mu.Unlock()
				io.WriteString(c, answer)
				if tt.limit || strings.Contains(tt.answer, "Content-Length: 10") {
					return // close: the answer stays cut short
				}
				// Keep the connection open for a second request.
				br := bufio.NewReader(c)
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				if _, err := http.ReadRequest(br); err == nil {
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreus")
				}
			})
			c, _ := newClient(t)
			res, err := c.Execute(context.Background(), Target{Addr: addr, Version: V5}, Request{Timeout: 2 * time.Second})
			if tt.fails != (err != nil) {
				t.Fatalf("first exchange: %v, want failure %v", err, tt.fails)
			}
			if err == nil && string(res.Body) != "ok" {
				t.Errorf("first body %q", res.Body)
			}
			time.Sleep(20 * time.Millisecond) // let unsolicited bytes arrive
			res, err = c.Execute(context.Background(), Target{Addr: addr, Version: V5}, Request{Timeout: 2 * time.Second})
			if err != nil || string(res.Body) != "good" {
				t.Fatalf("second exchange: %v, body %q: want a new connection's answer", err, bodyOf(res))
			}
			if n := conns.Load(); n != 2 {
				t.Errorf("%d connections, want 2", n)
			}
		})
	}
}

func bodyOf(r *Response) string {
	if r == nil {
		return ""
	}
	return string(r.Body)
}

// Informational answers before the real one are skipped; a HEAD answer
// has no body and keeps its connection.
func TestTransportInformationalAndHead(t *testing.T) {
	var conns atomic.Int32
	addr := rawServer(t, func(c net.Conn, r *http.Request) {
		conns.Add(1)
		br := bufio.NewReader(c)
		for r != nil {
			if r.Method == "HEAD" {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n")
			} else {
				io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\nmade")
			}
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			r, _ = http.ReadRequest(br)
		}
	})
	c, _ := newClient(t)
	res, err := c.Execute(context.Background(), Target{Addr: addr, Version: V5}, Request{Method: "POST", Body: []byte("x"), Timeout: time.Second})
	if err != nil || res.StatusCode != 201 || string(res.Body) != "made" {
		t.Fatalf("%v %+v", err, res)
	}
	res, err = c.Execute(context.Background(), Target{Addr: addr, Version: V5}, Request{Method: "HEAD", Timeout: time.Second})
	if err != nil || res.StatusCode != 200 || len(res.Body) != 0 {
		t.Fatalf("HEAD: %v %+v", err, res)
	}
	res, err = c.Execute(context.Background(), Target{Addr: addr, Version: V5}, Request{Method: "POST", Timeout: time.Second})
	if err != nil || res.StatusCode != 201 {
		t.Fatalf("after HEAD: %v %+v", err, res)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

// The request's context bounds the body's reading too: a runtime that
// sends its head and stalls is cut off at the deadline, as out of time,
// and a cancelled exchange says it was cancelled.
func TestTransportContextEndsBody(t *testing.T) {
	stall := make(chan struct{})
	addr := rawServer(t, func(c net.Conn, r *http.Request) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
		<-stall
	})
	t.Cleanup(func() { close(stall) })
	tr := &Transport{}
	defer tr.CloseIdleConnections()
	for _, tc := range []struct {
		name string
		want error
	}{{"deadline", context.DeadlineExceeded}, {"cancel", context.Canceled}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/", nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if tc.want == context.Canceled {
				time.AfterFunc(30*time.Millisecond, cancel)
			}
			start := time.Now()
			_, err = io.ReadAll(resp.Body)
			if !errors.Is(err, tc.want) {
				t.Errorf("body read ended with %v, want %v", err, tc.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("the read outlived its context by %v", d)
			}
		})
	}
}

// A Transport refuses what it cannot speak, and CloseIdleConnections
// closes what it keeps.
func TestTransportCloseIdle(t *testing.T) {
	addr, conns := countingServer(t, 0)
	tr := &Transport{}
	req, _ := http.NewRequest("GET", "https://"+addr+"/", nil)
	if _, err := tr.RoundTrip(req); err == nil {
		t.Error("https was attempted")
	}
	for i := 0; i < 2; i++ {
		req, _ = http.NewRequest("GET", "http://"+addr+"/", nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		if i == 0 {
			tr.CloseIdleConnections()
		}
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2: the idle one was closed in between", n)
	}
}

// A runtime that dies running an execution on a kept-alive connection
// (it read the request, then closed without answering) is sent that
// execution once, whatever the method: sending a GET again, as net/http
// would after nothing came back, runs it twice once the runtime is
// restarted.
func TestTransportSendsAWrittenRequestOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var got atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					if got.Add(1) == 2 {
						return // dies running the second request
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			}()
		}
	}()
	for _, method := range []string{"GET", "HEAD", "POST"} {
		got.Store(0)
		tr := &Transport{}
		t.Cleanup(tr.CloseIdleConnections)
		for i := 0; i < 2; i++ {
			req, _ := http.NewRequest(method, "http://"+ln.Addr().String()+"/", nil)
			resp, err := tr.RoundTrip(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if i == 0 && err != nil {
				t.Fatalf("%s: first exchange: %v", method, err)
			}
			if i == 1 && err == nil {
				t.Fatalf("%s: the exchange the runtime died in succeeded", method)
			}
		}
		// Give a wrong resend time to arrive.
		time.Sleep(50 * time.Millisecond)
		if n := got.Load(); n != 2 {
			t.Errorf("%s: the runtime got %d requests, want 2 (the second sent once)", method, n)
		}
	}
}

// A readiness probe's connection carries the next execution: the runtime
// accepts one connection, not a probe's to drop and then the request's.
// One the runtime closed meanwhile is retired and the execution dials
// anew; a client without this package's transport closes the probe's.
func TestClientProbe(t *testing.T) {
	tests := []struct {
		name      string
		own       bool          // the client's transport is this package's
		drop      time.Duration // the runtime drops a connection idle this long
		wantConns int32
	}{
		{"kept for the execution", true, 0, 1},
		{"dropped by the runtime before the execution", true, 30 * time.Millisecond, 2},
		{"another transport", false, 0, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var conns atomic.Int32
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				w.Write(b)
			}))
			srv.Config.ReadHeaderTimeout = tt.drop
			srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					conns.Add(1)
				}
			}
			srv.Start()
			t.Cleanup(srv.Close)
			addr := strings.TrimPrefix(srv.URL, "http://")
			c, _ := newClient(t)
			if !tt.own {
				tr := &http.Transport{}
				t.Cleanup(tr.CloseIdleConnections)
				c.HTTP = &http.Client{Transport: tr}
			}
			if err := c.Probe(context.Background(), addr); err != nil {
				t.Fatal(err)
			}
			if tt.drop > 0 {
				time.Sleep(tt.drop + 100*time.Millisecond)
			}
			res, err := c.Execute(context.Background(), Target{Addr: addr, Version: V5}, Request{Method: "POST", Body: []byte("after the probe"), Timeout: time.Second})
			if err != nil || string(res.Body) != "after the probe" {
				t.Fatalf("execution after the probe: %v, body %q", err, bodyOf(res))
			}
			if n := conns.Load(); n != tt.wantConns {
				t.Errorf("%d connections accepted, want %d", n, tt.wantConns)
			}
		})
	}
}

// A probe of a port nothing listens on fails as a refused connection,
// which the readiness wait polls on, and keeps nothing.
func TestClientProbeRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c, _ := newClient(t)
	if err := c.Probe(context.Background(), addr); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("probe of a closed port: %v, want ECONNREFUSED", err)
	}
	tr := c.HTTP.Transport.(*Transport)
	tr.mu.Lock()
	n := len(tr.idle[addr])
	tr.mu.Unlock()
	if n != 0 {
		t.Errorf("%d idle connections kept after a refused probe", n)
	}
}
