package protocol

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// idleTimeout is how long a kept-alive connection may wait for its next
// exchange. It stays under the keep-alive timeouts of the servers runtimes
// are built on (Node's 5 s), so that a runtime rarely closes a connection
// just as an exchange is sent on it.
const idleTimeout = 4 * time.Second

// maxIdle is how many idle connections a Transport keeps per address.
const maxIdle = 64

// Transport is the http.RoundTripper of one runtime's client. It sends a
// request and reads the answer on the calling goroutine, over a kept-alive
// connection when one is idle: net/http's Transport hands every exchange to
// a write goroutine and a read goroutine of the connection, and on the warm
// path those hand-offs cost more than the exchange itself. It speaks
// HTTP/1.1 only (runtimes serve nothing else) and never follows redirects
// or decompresses (the Client above it does neither).
//
// A connection goes back to the idle list only when its answer was read to
// the end, asked for no close and left nothing unread; before an idle
// connection is reused it is checked, without blocking, for a close or for
// bytes the runtime sent unasked, either of which retires it.
type Transport struct {
	// Dial opens connections; nil uses a net.Dialer with connectTimeout.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	mu     sync.Mutex
	idle   map[string][]*persistConn
	closed bool
}

// persistConn is one connection with its buffers.
type persistConn struct {
	t     *Transport
	addr  string
	conn  net.Conn
	br    *bufio.Reader
	bw    *bufio.Writer
	timer *time.Timer // retires the connection when idle too long
}

// RoundTrip sends req and reads the answer's status and headers. The body
// is read by the caller; the request's context bounds the whole exchange,
// body included.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	addr := req.URL.Host
	if req.URL.Scheme != "http" {
		closeBody(req)
		return nil, fmt.Errorf("protocol: unsupported scheme %q", req.URL.Scheme)
	}
	for {
		pc, reused, err := t.conn(ctx, addr)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		resp, err := pc.exchange(ctx, req)
		if err == nil {
			return resp, nil
		}
		// A kept-alive connection the runtime closed while it was idle
		// takes no request: one that may be sent twice (net/http's rule:
		// GET, HEAD, OPTIONS, TRACE without a body) goes again on a new
		// connection when writing it failed. Once written, it is not sent
		// again, whatever its method: net/http would, when nothing came
		// back, but a runtime that died running it (and is restarted by
		// its policy) would then run the execution twice. A close while
		// idle is what alive() looks for before reuse.
		var nothing *nothingReadError
		if reused && errors.As(err, &nothing) && !nothing.sent && ctx.Err() == nil && replayable(req) {
			continue
		}
		closeBody(req)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.As(err, &nothing) {
			return nil, nothing.err
		}
		return nil, err
	}
}

func replayable(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return req.Body == nil || req.Body == http.NoBody
	}
	return false
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// nothingReadError is a failure before the first byte of the answer;
// sent says the request had been written whole.
type nothingReadError struct {
	err  error
	sent bool
}

func (e *nothingReadError) Error() string { return e.err.Error() }
func (e *nothingReadError) Unwrap() error { return e.err }

// conn returns an idle connection to addr that is still open, or a new one.
func (t *Transport) conn(ctx context.Context, addr string) (*persistConn, bool, error) {
	for {
		pc := t.takeIdle(addr)
		if pc == nil {
			break
		}
		if pc.alive() {
			return pc, true, nil
		}
		pc.conn.Close()
	}
	pc, err := t.dial(ctx, addr)
	return pc, false, err
}

// dial opens a new connection to addr.
func (t *Transport) dial(ctx context.Context, addr string) (*persistConn, error) {
	dial := t.Dial
	if dial == nil {
		dial = (&net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second}).DialContext
	}
	c, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &persistConn{t: t, addr: addr, conn: c, br: bufio.NewReaderSize(c, 16<<10), bw: bufio.NewWriterSize(c, 16<<10)}, nil
}

// Probe connects to addr and keeps the connection on the idle list for
// the next exchange: a readiness check that connects and closes leaves
// the first exchange to dial again, and the runtime to accept and drop a
// connection it never gets a request on, on a cold start's path.
func (t *Transport) Probe(ctx context.Context, addr string) error {
	pc, err := t.dial(ctx, addr)
	if err != nil {
		return err
	}
	t.putIdle(pc)
	return nil
}

func (t *Transport) takeIdle(addr string) *persistConn {
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		l := t.idle[addr]
		if len(l) == 0 {
			return nil
		}
		pc := l[len(l)-1]
		l[len(l)-1] = nil
		t.idle[addr] = l[:len(l)-1]
		// A timer that already fired is retiring the connection.
		if pc.timer.Stop() {
			return pc
		}
	}
}

// putIdle keeps pc for a later exchange, or closes it.
func (t *Transport) putIdle(pc *persistConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || len(t.idle[pc.addr]) >= maxIdle {
		pc.conn.Close()
		return
	}
	if t.idle == nil {
		t.idle = make(map[string][]*persistConn)
	}
	if pc.timer == nil {
		pc.timer = time.AfterFunc(idleTimeout, pc.expire)
	} else {
		pc.timer.Reset(idleTimeout)
	}
	t.idle[pc.addr] = append(t.idle[pc.addr], pc)
}

// expire retires pc after idleTimeout on the idle list.
func (pc *persistConn) expire() {
	t := pc.t
	t.mu.Lock()
	l := t.idle[pc.addr]
	for i, c := range l {
		if c == pc {
			t.idle[pc.addr] = append(l[:i], l[i+1:]...)
			break
		}
	}
	t.mu.Unlock()
	pc.conn.Close()
}

// CloseIdleConnections closes every idle connection; http.Client's method
// of the same name calls it.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, l := range idle {
		for _, pc := range l {
			if pc.timer.Stop() {
				pc.conn.Close()
			}
		}
	}
}

// alive reports, without blocking, that an idle connection is neither
// closed by the runtime nor holding bytes it sent unasked.
func (pc *persistConn) alive() bool {
	if pc.br.Buffered() > 0 {
		return false
	}
	sc, ok := pc.conn.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, rerr := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// EAGAIN: open, nothing to read. 0 bytes read is the runtime's
		// close; bytes are an answer nobody asked for.
		_ = n
		alive = rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK
		return true // never wait: this is a check
	})
	return err == nil && alive
}

// exchange writes req and reads the answer's head on pc. The answer's body
// reader gives pc back to the Transport, or closes it, once done.
func (pc *persistConn) exchange(ctx context.Context, req *http.Request) (*http.Response, error) {
	// The context ends the exchange wherever it is, the body's reading
	// included: an expired deadline on the connection wakes any read or
	// write blocked on it.
	stop := context.AfterFunc(ctx, func() { pc.conn.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*http.Response, error) {
		stop()
		pc.conn.Close()
		return nil, err
	}
	if err := req.Write(pc.bw); err != nil {
		return fail(&nothingReadError{err: err})
	}
	if err := pc.bw.Flush(); err != nil {
		return fail(&nothingReadError{err: err})
	}
	var resp *http.Response
	for {
		if _, err := pc.br.Peek(1); err != nil {
			return fail(&nothingReadError{err: err, sent: true})
		}
		r, err := http.ReadResponse(pc.br, req)
		if err != nil {
			return fail(err)
		}
		// Informational answers (100 Continue, 103 Early Hints) precede
		// the real one; 101 would switch protocols, which an execution
		// never asks for.
		if r.StatusCode >= 100 && r.StatusCode < 200 && r.StatusCode != http.StatusSwitchingProtocols {
			continue
		}
		resp = r
		break
	}
	body := &bodyReader{ctx: ctx, rc: resp.Body, pc: pc, stop: stop, keep: !resp.Close && !req.Close}
	if resp.Body == http.NoBody {
		// HEAD, 204 and 304 answers end with their head.
		body.release(true)
		return resp, nil
	}
	resp.Body = body
	return resp, nil
}

// bodyReader is an answer's body. At its end the connection goes back to
// the idle list when it can carry another exchange; on an error, or a
// Close before the end, it is closed.
type bodyReader struct {
	ctx  context.Context
	rc   io.ReadCloser
	pc   *persistConn
	stop func() bool
	keep bool
	once sync.Once
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		b.release(true)
	case err != nil:
		b.release(false)
		// The context's end shows as the connection's deadline; say
		// which end it was, as net/http does.
		if cerr := b.ctx.Err(); cerr != nil {
			err = cerr
		}
	}
	return n, err
}

func (b *bodyReader) Close() error {
	b.release(false)
	return nil
}

func (b *bodyReader) release(atEOF bool) {
	b.once.Do(func() {
		// stop reports false when the context already ended and
		// poisoned the connection's deadline.
		if atEOF && b.stop() && b.keep && b.pc.br.Buffered() == 0 && b.pc.conn.SetDeadline(time.Time{}) == nil {
			b.pc.t.putIdle(b.pc)
			return
		}
		b.stop()
		b.pc.conn.Close()
	})
}

var _ http.RoundTripper = (*Transport)(nil)
