package protocol

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// seen is a request as the runtime received it.
type seen struct {
	method, uri, host string
	header            http.Header
	body              []byte
	contentLength     int64
	transferEncoding  []string
}

// runtimeServer is a fake runtime: it records each request on the returned
// channel and answers with h.
func runtimeServer(t *testing.T, h http.HandlerFunc) (addr string, reqs <-chan seen) {
	t.Helper()
	ch := make(chan seen, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ch <- seen{
			method: r.Method, uri: r.RequestURI, host: r.Host, header: r.Header.Clone(),
			body: body, contentLength: r.ContentLength, transferEncoding: r.TransferEncoding,
		}
		if h != nil {
			h(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), ch
}

// rawServer is a fake runtime that answers each connection with serve, for
// answers net/http would not write (cut short, closed, odd headers).
func rawServer(t *testing.T, serve func(c net.Conn, r *http.Request)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				r, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				serve(c, r)
			}()
		}
	}()
	return l.Addr().String()
}

// refusedAddr is an address nothing listens on.
func refusedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// logBuffer collects a Client's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newClient(t *testing.T) (*Client, *logBuffer) {
	t.Helper()
	lb := &logBuffer{}
	hc := NewHTTPClient()
	t.Cleanup(hc.CloseIdleConnections)
	return &Client{HTTP: hc, RetryAttempts: 3, RetryDelay: 10 * time.Millisecond, Log: slog.New(slog.NewTextHandler(lb, nil))}, lb
}
