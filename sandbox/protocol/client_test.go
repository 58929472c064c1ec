package protocol

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"reflect"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestExecuteRequest(t *testing.T) {
	const secret = "s3cret"
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("opr:"+secret))
	caller := map[string]string{
		"X-Custom":               "a",
		"x-lower":                "b",
		"host":                   "example.com:8080",
		"Content-Length":         "999",
		"transfer-encoding":      "chunked",
		"Connection":             "close",
		"x-open-runtimes-secret": "forged",
		"authorization":          "Bearer user",
	}
	tests := []struct {
		name    string
		v       Version
		method  string
		path    string
		logging bool
		timeout time.Duration
		// what the runtime must see
		wantMethod, wantURI, wantTimeout string
		wantAuth, wantLogging            string
	}{
		{"v3", V3, "POST", "/run?a=1&b", true, 2700 * time.Millisecond, "POST", "/run?a=1&b", "2", "Bearer user", ""},
		{"v4 logging", V4, "PUT", "/", true, 30 * time.Second, "PUT", "/", "30", basic, "enabled"},
		{"v4 no logging", V4, "DELETE", "x/y", false, 300 * time.Millisecond, "DELETE", "/x/y", "1", basic, "disabled"},
		{"v5 default method", V5, "", "", true, 0, "GET", "/", "1", basic, "enabled"},
		{"v5 past budget", V5, "PATCH", "/p", false, -time.Second, "PATCH", "/p", "1", basic, "disabled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, reqs := runtimeServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusCreated)
			})
			c, _ := newClient(t)
			var answered atomic.Int32
			res, err := c.Execute(context.Background(), Target{Addr: addr, Secret: secret, Version: tt.v}, Request{
				Method: tt.method, Path: tt.path, Headers: caller, Body: []byte("hello"),
				Logging: tt.logging, Timeout: tt.timeout,
				Answered: func() { answered.Add(1) },
				Failed:   func(*TransportError) error { t.Error("Failed called"); return nil },
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != http.StatusCreated || answered.Load() != 1 {
				t.Errorf("status %d, answered %d times", res.StatusCode, answered.Load())
			}
			r := <-reqs
			check := func(what, got, want string) {
				t.Helper()
				if got != want {
					t.Errorf("%s = %q, want %q", what, got, want)
				}
			}
			check("method", r.method, tt.wantMethod)
			check("request URI", r.uri, tt.wantURI)
			check("host", r.host, "example.com:8080")
			check("body", string(r.body), "hello")
			check("x-custom", r.header.Get("X-Custom"), "a")
			check("x-lower", r.header.Get("X-Lower"), "b")
			check("connection", r.header.Get("Connection"), "")
			check("secret", r.header.Get("X-Open-Runtimes-Secret"), secret)
			check("timeout", r.header.Get("X-Open-Runtimes-Timeout"), tt.wantTimeout)
			check("authorization", r.header.Get("Authorization"), tt.wantAuth)
			check("logging", r.header.Get("X-Open-Runtimes-Logging"), tt.wantLogging)
			if ua, ok := r.header["User-Agent"]; ok {
				t.Errorf("User-Agent sent: %q", ua)
			}
			if r.contentLength != 5 || r.transferEncoding != nil {
				t.Errorf("framing: content-length %d, transfer-encoding %q", r.contentLength, r.transferEncoding)
			}
			if len(r.header.Values("X-Open-Runtimes-Secret")) != 1 {
				t.Errorf("secret header sent %d times", len(r.header.Values("X-Open-Runtimes-Secret")))
			}
		})
	}
}

func TestExecuteNoHostHeader(t *testing.T) {
	addr, reqs := runtimeServer(t, nil)
	c, _ := newClient(t)
	if _, err := c.Execute(context.Background(), Target{Addr: addr, Version: V4}, Request{Timeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	if r := <-reqs; r.host != addr {
		t.Errorf("host = %q, want the runtime's address %q", r.host, addr)
	}
}

func TestExecuteResponseHeaders(t *testing.T) {
	const answer = "HTTP/1.1 201 Created\r\n" +
		"Content-Length: 2\r\n" +
		"X-Foo: a\r\n" +
		"x-foo:   b  \r\n" +
		"Set-Cookie: c=1\r\n" +
		"Set-Cookie: d=2\r\n" +
		"Location: /elsewhere\r\n" +
		"X-Open-Runtimes-Log-Id: \r\n" +
		"x-open-runtimes-logs: hello%20world+%2B\r\n" +
		"x-open-runtimes-errors: oops%0Aline\r\n" +
		"X-Open-Runtimes-Custom: hidden\r\n" +
		"\r\nok"
	addr := rawServer(t, func(c net.Conn, _ *http.Request) { io.WriteString(c, answer) })
	want := []Header{
		{Name: "content-length", Values: []string{"2"}},
		{Name: "location", Values: []string{"/elsewhere"}},
		{Name: "set-cookie", Values: []string{"c=1", "d=2"}},
		{Name: "x-foo", Values: []string{"a", "b"}},
	}
	tests := []struct {
		v            Version
		logs, errors string
	}{
		// v3's logs travel in the headers, URL-encoded ("+" is a space).
		{V3, "hello world +", "oops\nline"},
		// v4's do not, and an empty log id means none were kept.
		{V4, "", ""},
		{V5, "", ""},
	}
	for _, tt := range tests {
		t.Run(string(tt.v), func(t *testing.T) {
			c, _ := newClient(t)
			files := &fakeLogs{}
			res, err := c.Execute(context.Background(), Target{Addr: addr, Version: tt.v, Logs: files}, Request{Method: "POST", Timeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != 201 || string(res.Body) != "ok" {
				t.Errorf("status %d body %q", res.StatusCode, res.Body)
			}
			if !reflect.DeepEqual(res.Headers, want) {
				t.Errorf("headers =\n%q\nwant\n%q", res.Headers, want)
			}
			if res.Logs != tt.logs || res.Errors != tt.errors {
				t.Errorf("logs %q errors %q, want %q %q", res.Logs, res.Errors, tt.logs, tt.errors)
			}
			if len(files.taken) != 0 {
				t.Errorf("log files taken: %q", files.taken)
			}
		})
	}
}

func TestResponseHeadersUnit(t *testing.T) {
	tests := []struct {
		name  string
		in    http.Header
		want  []Header
		logID string
	}{
		{"none", http.Header{}, nil, ""},
		{"merged by lower-cased trimmed name", http.Header{
			"X-A": {" 1 "}, "x-a": {"2"}, " X-a ": {"3"},
		}, []Header{{Name: "x-a", Values: []string{"3", "1", "2"}}}, ""},
		{"protocol headers dropped", http.Header{
			"X-Open-Runtimes-Log-Id": {" ab%2Dc "}, "X-Open-Runtimes-Logs": {"x"}, "B": {"b"},
		}, []Header{{Name: "b", Values: []string{"b"}}}, "ab-c"},
		{"first log id wins", http.Header{
			"X-Open-Runtimes-Log-Id": {"one", "two"},
		}, nil, "one"},
		{"common and other names", http.Header{
			"Content-Type": {"text/plain"}, "Date": {"d"}, "X-Custom-Name": {"c"}, "Set-Cookie": {"a=1", " b=2"},
		}, []Header{{Name: "content-type", Values: []string{"text/plain"}}, {Name: "date", Values: []string{"d"}},
			{Name: "set-cookie", Values: []string{"a=1", "b=2"}}, {Name: "x-custom-name", Values: []string{"c"}}}, ""},
		{"merge onto untrimmed values", http.Header{
			"A": {"1", "2"}, "a": {"3"},
		}, []Header{{Name: "a", Values: []string{"1", "2", "3"}}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.in.Clone()
			got, id := responseHeaders(tt.in)
			if !reflect.DeepEqual(got, tt.want) || id != tt.logID {
				t.Errorf("responseHeaders = %q, %q; want %q, %q", got, id, tt.want, tt.logID)
			}
			// The values may share the runtime's header's slices, never write to them.
			if !reflect.DeepEqual(tt.in, before) {
				t.Errorf("the runtime's headers were changed: %q, were %q", tt.in, before)
			}
		})
	}
}

func TestExecuteHead(t *testing.T) {
	addr, _ := runtimeServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		io.WriteString(w, "hello")
	})
	c, _ := newClient(t)
	res, err := c.Execute(context.Background(), Target{Addr: addr, Version: V5}, Request{Method: "HEAD", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Body != nil || res.StatusCode != 200 {
		t.Errorf("HEAD: status %d body %q", res.StatusCode, res.Body)
	}
}

func TestExecuteResponseTooLarge(t *testing.T) {
	addr, _ := runtimeServer(t, func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 1<<20)
		for range MaxResponseBody >> 20 {
			w.Write(chunk)
		}
		w.Write([]byte("x"))
	})
	c, _ := newClient(t)
	_, err := c.Execute(context.Background(), Target{Addr: addr, Version: V4}, Request{Timeout: 10 * time.Second})
	var tl *ResponseTooLargeError
	if !errors.As(err, &tl) || tl.Limit != MaxResponseBody {
		t.Fatalf("err = %v, want ResponseTooLargeError", err)
	}
	if want := "Runtime response is larger than 67108864 bytes."; err.Error() != want {
		t.Errorf("message %q, want %q", err.Error(), want)
	}
}

func TestExecuteTransportErrors(t *testing.T) {
	// The runtime reads the request and closes the connection.
	closing := rawServer(t, func(net.Conn, *http.Request) {})
	// It announces 100 bytes and sends 10.
	short := rawServer(t, func(c net.Conn, _ *http.Request) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
	})
	hang := make(chan struct{})
	hanging := rawServer(t, func(net.Conn, *http.Request) { <-hang })
	t.Cleanup(func() { close(hang) }) // before the server's cleanup waits for its handler

	tests := []struct {
		name     string
		v        Version
		addr     string
		ctxLimit time.Duration // 0: none
		timeout  time.Duration
		curl     int
		answered bool
		failed   bool
		v2Late   bool // a TimeoutError
	}{
		{"closed v4", V4, closing, 0, time.Second, CurlGotNothing, false, true, false},
		{"closed v2", V2, closing, 0, time.Second, CurlGotNothing, false, true, false},
		{"cut short v3", V3, short, 0, time.Second, CurlGotNothing, true, false, false},
		{"cut short v2", V2, short, 0, time.Second, CurlGotNothing, true, false, false},
		{"caller's deadline v5", V5, hanging, 150 * time.Millisecond, 30 * time.Second, CurlTimedOut, false, true, false},
		{"v2 budget", V2, hanging, 0, 150 * time.Millisecond, CurlTimedOut, false, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.ctxLimit > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.ctxLimit)
				defer cancel()
			}
			c, _ := newClient(t)
			var answered, failed atomic.Int32
			_, err := c.Execute(ctx, Target{Addr: tt.addr, Version: tt.v}, Request{
				Timeout:  tt.timeout,
				Answered: func() { answered.Add(1) },
				Failed:   func(*TransportError) error { failed.Add(1); return nil },
			})
			var te *TransportError
			if !errors.As(err, &te) || te.Curl != tt.curl {
				t.Fatalf("err = %v, want curl error %d", err, tt.curl)
			}
			if te.Attempts < 1 {
				t.Errorf("attempts = %d", te.Attempts)
			}
			if got := answered.Load() == 1; got != tt.answered {
				t.Errorf("answered = %v, want %v", got, tt.answered)
			}
			if got := failed.Load() == 1; got != tt.failed {
				t.Errorf("failed = %v, want %v", got, tt.failed)
			}
			var late *TimeoutError
			if got := errors.As(err, &late); got != tt.v2Late {
				t.Fatalf("TimeoutError = %v, want %v (%v)", got, tt.v2Late, err)
			}
			if tt.curl == CurlTimedOut && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%v does not match context.DeadlineExceeded", err)
			}
			if late != nil {
				if late.After != tt.timeout {
					t.Errorf("After = %v, want %v", late.After, tt.timeout)
				}
				if want := "Operation timed out after 150 milliseconds"; err.Error() != want {
					t.Errorf("message %q, want %q", err.Error(), want)
				}
			}
		})
	}
}

func TestExecuteRetriesRefused(t *testing.T) {
	addr := refusedAddr(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "up") })}
	t.Cleanup(func() { srv.Close() })
	go func() {
		time.Sleep(100 * time.Millisecond)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("listen again on %s: %v", addr, err)
			return
		}
		srv.Serve(l)
	}()
	c, _ := newClient(t)
	c.RetryAttempts, c.RetryDelay = 2, 20*time.Millisecond
	res, err := c.Execute(context.Background(), Target{Addr: addr, Version: V4}, Request{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Body) != "up" {
		t.Errorf("body %q", res.Body)
	}
}

// TestExecuteRefusedPort: a runtime that never listens is asked again
// until the budget is spent. The last refusal and the deadline race: the
// exchange ends as refused or as out of time, as the reference's does.
func TestExecuteRefusedPort(t *testing.T) {
	addr := refusedAddr(t)
	for _, v := range []Version{V2, V4} {
		t.Run(string(v), func(t *testing.T) {
			c, _ := newClient(t)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond) // v4's own budget is 6s
			defer cancel()
			start := time.Now()
			_, err := c.Execute(ctx, Target{Addr: addr, Version: v}, Request{Timeout: 150 * time.Millisecond})
			if took := time.Since(start); took < 150*time.Millisecond {
				t.Errorf("gave up after %v", took)
			}
			var te *TransportError
			if !errors.As(err, &te) || (te.Curl != CurlCouldNotConnect && te.Curl != CurlTimedOut) {
				t.Fatalf("err = %v, want curl error 7 or 28", err)
			}
			if te.Attempts < c.RetryAttempts {
				t.Errorf("attempts = %d, want at least %d", te.Attempts, c.RetryAttempts)
			}
			var late *TimeoutError
			if isLate := errors.As(err, &late); isLate != (v == V2 && te.Curl == CurlTimedOut) {
				t.Errorf("TimeoutError = %v for %v", isLate, err)
			}
		})
	}
}

// slowRefusal refuses every request after delay, whatever the request's
// context says, as a refusal that raced the deadline would.
type slowRefusal struct {
	delay time.Duration
	calls atomic.Int32
}

func (s *slowRefusal) RoundTrip(*http.Request) (*http.Response, error) {
	s.calls.Add(1)
	time.Sleep(s.delay)
	return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
}

func TestExecuteRefusedAfterBudget(t *testing.T) {
	rt := &slowRefusal{delay: 120 * time.Millisecond}
	c := &Client{HTTP: &http.Client{Transport: rt}, RetryAttempts: 1, RetryDelay: time.Millisecond}
	var failed *TransportError
	_, err := c.Execute(context.Background(), Target{Addr: "runtime:3000", Version: V2}, Request{
		Timeout: 200 * time.Millisecond,
		Failed:  func(te *TransportError) error { failed = te; return nil },
	})
	var te *TransportError
	if !errors.As(err, &te) || te.Curl != CurlCouldNotConnect {
		t.Fatalf("err = %v, want curl error 7", err)
	}
	// Refused within the budget: sent again; refused after it: given up.
	if te.Attempts != 2 || rt.calls.Load() != 2 {
		t.Errorf("attempts %d, calls %d; want 2", te.Attempts, rt.calls.Load())
	}
	if failed != te {
		t.Errorf("Failed got %v", failed)
	}
	var late *TimeoutError
	if errors.As(err, &late) {
		t.Errorf("a refusal is not a timeout: %v", err)
	}
}

// resetting fails every request with a reset connection.
type resetting struct{}

func (resetting) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
}

func TestExecuteFailedReplaces(t *testing.T) {
	errOOM := errors.New("runtime ran out of memory")
	for _, v := range Versions() {
		t.Run(string(v), func(t *testing.T) {
			c := &Client{HTTP: &http.Client{Transport: resetting{}}, RetryAttempts: 5}
			var got *TransportError
			_, err := c.Execute(context.Background(), Target{Addr: "runtime:3000", Version: v}, Request{
				Timeout: time.Second,
				Failed:  func(te *TransportError) error { got = te; return errOOM },
			})
			if err != errOOM {
				t.Errorf("err = %v, want the hook's", err)
			}
			if got == nil || got.Curl != CurlRecvError || got.Attempts != 1 || !errors.Is(got, syscall.ECONNRESET) {
				t.Errorf("hook got %+v", got)
			}
		})
	}
}

func TestExecuteBadRequest(t *testing.T) {
	c := &Client{}
	_, err := c.Execute(context.Background(), Target{Addr: "runtime:3000", Version: V4}, Request{Method: "BAD METHOD", Timeout: time.Second})
	var te *TransportError
	if err == nil || errors.As(err, &te) {
		t.Fatalf("err = %v, want the request's own error", err)
	}
}

func TestTransportError(t *testing.T) {
	timeout := &net.OpError{Op: "dial", Err: os.ErrDeadlineExceeded}
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"deadline", context.DeadlineExceeded, 28},
		{"wrapped deadline", fmt.Errorf("post: %w", context.DeadlineExceeded), 28},
		{"net timeout", timeout, 28},
		{"refused", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, 7},
		{"EOF", fmt.Errorf("read: %w", io.EOF), 52},
		{"unexpected EOF", io.ErrUnexpectedEOF, 52},
		{"reset", &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, 56},
		{"canceled", context.Canceled, 56},
		{"other", errors.New("something"), 56},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			te := transportError(tt.err, 3)
			if te.Curl != tt.want || te.Attempts != 3 || !errors.Is(te, tt.err) {
				t.Errorf("transportError(%v) = %+v, want curl %d", tt.err, te, tt.want)
			}
		})
	}
}

// OPR_EXECUTOR_RETRY_ATTEMPTS is a minimum (spec 6.5): a refusing runtime
// is sent that many attempts even when the execution's timeout is spent
// before them.
func TestExecuteRetryAttemptsOutlastATimeout(t *testing.T) {
	addr := refusedAddr(t)
	c, _ := newClient(t)
	c.RetryAttempts, c.RetryDelay = 6, 40*time.Millisecond
	_, err := c.Execute(context.Background(), Target{Addr: addr, Version: V5}, Request{Timeout: 50 * time.Millisecond})
	var te *TransportError
	if !errors.As(err, &te) {
		t.Fatalf("err = %v, want a transport error", err)
	}
	if te.Attempts < c.RetryAttempts {
		t.Errorf("%d attempts within a 50 ms timeout, want at least RetryAttempts=%d", te.Attempts, c.RetryAttempts)
	}
}
