package protocol

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// NewHTTPClient returns an HTTP client for one runtime. Each runtime needs
// its own, so that idle keep-alive connections die with it and are never
// reused towards an address a later runtime has taken over. Its Transport
// does each exchange on the caller's goroutine (see Transport).
func NewHTTPClient() *http.Client {
	return &http.Client{
		Transport: &Transport{},
		// A redirect is the function's answer, for the caller to follow.
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// defaultHTTPClient serves Clients whose HTTP is nil.
var defaultHTTPClient = sync.OnceValue(NewHTTPClient)

// Client sends executions to runtimes. Its zero value works, but a runtime
// should have its own Client, or at least its own HTTP (see NewHTTPClient).
type Client struct {
	// HTTP sends the requests; nil uses one client shared by every
	// Client with none. Its idle connections are closed after a failed
	// exchange: the runtime behind them may have died.
	HTTP *http.Client
	// A request whose connection is refused (the runtime restarting) is
	// sent again, RetryDelay apart, while it has been sent fewer than
	// RetryAttempts times or the execution's budget lasts; the end of the
	// budget's context stops it in any case. A zero RetryDelay re-sends
	// at once.
	RetryAttempts int
	RetryDelay    time.Duration
	// Log receives warnings about what a runtime answered (an invalid log
	// id, a refused log file); give it the runtime's attributes. Nil uses
	// slog.Default().
	Log *slog.Logger
}

// Probe reports whether something accepts connections at addr, by
// connecting. The connection is kept for the next execution when the
// client's transport is this package's (see Transport.Probe), else closed.
func (c *Client) Probe(ctx context.Context, addr string) error {
	hc := c.HTTP
	if hc == nil {
		hc = defaultHTTPClient()
	}
	if t, ok := hc.Transport.(*Transport); ok {
		return t.Probe(ctx, addr)
	}
	conn, err := (&net.Dialer{Timeout: connectTimeout}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return conn.Close()
}

// Target is the runtime an execution goes to.
type Target struct {
	Addr    string // host:port of the runtime's server
	Secret  string // the secret the runtime was created with
	Version Version
	// Logs is the runtime's log directory (LogsDir in the runtime); nil
	// for versions without log files, or to drop their logs.
	Logs LogFiles
	// LogID, when set, is the log id the runtime is asked to write the
	// execution's files under (x-open-runtimes-log-id; versions with log
	// files, logging on), which the runtime otherwise picks. The daemon
	// lends ids it can give again once their files are taken.
	LogID string
}

// Request is one execution.
type Request struct {
	Method  string            // "" is GET; v2 always POSTs
	Path    string            // with its query; a missing leading "/" is added
	Headers map[string]string // the caller's, passed through (v3+)
	Body    []byte            // the body (v3+) or the envelope's payload (v2)
	Logging bool              // whether the runtime should keep logs (v4+)
	// Variables go in the v2 envelope; later versions get them at
	// creation only.
	Variables map[string]string
	// Timeout is what is left of the execution's budget. The runtime is
	// told it in whole seconds (at least 1) and given timeoutSlack more
	// to answer; a v2 runtime, which knows no timeout, gets Timeout.
	Timeout time.Duration

	// Answered, when set, is called as soon as the runtime has answered
	// (status and headers read), before its body is: the runtime was
	// alive after the request was sent.
	Answered func()
	// Failed, when set, is called once when sending has failed for good
	// (not when ctx ended during a retry delay, nor when the body was cut
	// short), after the idle connections were closed. It may log, and may
	// explain the failure better (the runtime ran out of memory): a
	// non-nil error it returns is what Execute returns.
	Failed func(*TransportError) error
}

// Header is one response header with all its values, its name lower-cased.
type Header struct {
	Name   string
	Values []string
}

// Response is what the runtime answered.
type Response struct {
	StatusCode int
	// Headers are sorted by name, values trimmed, the protocol's own
	// x-open-runtimes-* headers left out. v2 runtimes answer none.
	Headers []Header
	Body    []byte // nil for HEAD
	Logs    string // what the function logged
	Errors  string // what it logged as errors, or its failure
}

// Execute sends req to the runtime t and returns its answer. A failed
// exchange is a *TransportError, a v2 execution out of time a
// *TimeoutError, a v3+ body over MaxResponseBody a *ResponseTooLargeError;
// any other error is the caller's (a request that cannot be sent) or the
// Failed hook's.
//
// When ctx carries a trace, the forward is a span of it, and the runtime is
// sent that span's traceparent (see injectTrace).
func (c *Client) Execute(ctx context.Context, t Target, req Request) (res *Response, err error) {
	if t.Version.rules().envelope {
		ctx, span := startForward(ctx, t, http.MethodPost, "/")
		defer func() { endForward(span, res, err) }()
		return c.executeEnvelope(ctx, t, req)
	}
	ctx, span := startForward(ctx, t, requestMethod(req), requestPath(req))
	defer func() { endForward(span, res, err) }()
	return c.executeHTTP(ctx, t, req)
}

func requestMethod(req Request) string {
	if req.Method == "" {
		return http.MethodGet
	}
	return req.Method
}

// requestPath is req's path without its query, which is the function's
// input and stays out of traces.
func requestPath(req Request) string {
	path, _, _ := strings.Cut(req.Path, "?")
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	return path
}

// executeHTTP passes req through to a v3+ runtime.
func (c *Client) executeHTTP(ctx context.Context, t Target, req Request) (*Response, error) {
	rules := t.Version.rules()
	softTimeout := max(int(req.Timeout.Seconds()), 1)
	path := req.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	method := requestMethod(req)
	build := func(ctx context.Context) (*http.Request, error) {
		var body io.Reader
		if len(req.Body) > 0 {
			body = bytes.NewReader(req.Body)
		}
		hr, err := http.NewRequestWithContext(ctx, method, "http://"+t.Addr+path, body)
		if err != nil {
			return nil, err
		}
		hr.Header["User-Agent"] = []string{""} // Go's default agent is not the caller's
		for k, v := range req.Headers {
			if strings.EqualFold(k, "host") {
				hr.Host = v
				continue
			}
			// The body is framed anew; the connection is ours.
			if strings.EqualFold(k, "content-length") || strings.EqualFold(k, "transfer-encoding") || strings.EqualFold(k, "connection") {
				continue
			}
			hr.Header.Set(k, v)
		}
		if rules.authHeaders {
			logging := "enabled"
			if !req.Logging {
				logging = "disabled"
			}
			hr.Header.Set("x-open-runtimes-logging", logging)
			if rules.logsDir != "" && req.Logging && t.LogID != "" {
				hr.Header.Set("x-open-runtimes-log-id", t.LogID)
			}
			hr.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("opr:"+t.Secret)))
		}
		hr.Header.Set("x-open-runtimes-secret", t.Secret)
		hr.Header.Set("x-open-runtimes-timeout", strconv.Itoa(softTimeout))
		injectTrace(ctx, hr)
		return hr, nil
	}
	resp, attempts, err := c.send(ctx, req, build, time.Duration(softTimeout)*time.Second+timeoutSlack)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body []byte
	if method != http.MethodHead {
		body, err = ReadAll(io.LimitReader(resp.Body, MaxResponseBody+1), resp.ContentLength)
		if err != nil {
			return nil, transportError(err, attempts)
		}
		if len(body) > MaxResponseBody {
			return nil, &ResponseTooLargeError{Limit: MaxResponseBody}
		}
	}
	res := &Response{StatusCode: resp.StatusCode, Body: body}
	var logID string
	res.Headers, logID = responseHeaders(resp.Header)
	switch {
	case rules.headerLogs:
		res.Logs, _ = url.QueryUnescape(resp.Header.Get("x-open-runtimes-logs"))
		res.Errors, _ = url.QueryUnescape(resp.Header.Get("x-open-runtimes-errors"))
	case rules.logsDir != "" && logID != "" && logID != "0":
		res.Logs, res.Errors = c.readLogs(t.Logs, logID)
	}
	return res, nil
}

// send performs the request that build makes, within timeout, re-sending
// it while the runtime refuses connections (it may be restarting). It
// returns the response and how many times the request was sent.
func (c *Client) send(ctx context.Context, req Request, build func(context.Context) (*http.Request, error), timeout time.Duration) (*http.Response, int, error) {
	hc := c.HTTP
	if hc == nil {
		hc = defaultHTTPClient()
	}
	// OPR_EXECUTOR_RETRY_ATTEMPTS is a minimum (spec 6.5): sends to a
	// runtime that refuses them go on while fewer were made or the
	// timeout lasts, so they may outlast a short timeout.
	ctx, cancel := context.WithTimeout(ctx, max(timeout, time.Duration(c.RetryAttempts)*c.RetryDelay))
	start := time.Now()
	for attempt := 1; ; attempt++ {
		hr, err := build(ctx)
		if err != nil {
			cancel()
			return nil, attempt, fmt.Errorf("protocol: make request: %w", err)
		}
		resp, err := hc.Do(hr)
		if err == nil {
			if req.Answered != nil {
				req.Answered()
			}
			resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
			return resp, attempt, nil
		}
		retry := errors.Is(err, syscall.ECONNREFUSED) && (attempt < c.RetryAttempts || time.Since(start) < timeout)
		if !retry {
			cancel()
			hc.CloseIdleConnections()
			te := transportError(err, attempt)
			if req.Failed != nil {
				if ferr := req.Failed(te); ferr != nil {
					return nil, attempt, ferr
				}
			}
			return nil, attempt, te
		}
		select {
		case <-ctx.Done():
			cancel()
			return nil, attempt, transportError(ctx.Err(), attempt)
		case <-time.After(c.RetryDelay):
		}
		noteResend(ctx, attempt+1)
	}
}

// cancelBody ends the exchange's context when the body is closed: it must
// outlive send, which made it.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// responseHeaders lower-cases and trims the runtime's headers, drops the
// protocol's own x-open-runtimes-* headers and returns the log id among them.
// Headers whose names differ only in case or surrounding space are merged,
// their values in the order of the names as sent, sorted.
func responseHeaders(h http.Header) ([]Header, string) {
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, k)
	}
	slices.Sort(names)
	out := make([]Header, 0, len(names))
	at := make(map[string]int, len(names))
	logID := ""
	for _, k := range names {
		name := lowerName(strings.TrimSpace(k))
		if name == "x-open-runtimes-log-id" && len(h[k]) > 0 {
			logID, _ = url.QueryUnescape(strings.TrimSpace(h[k][0]))
		}
		if strings.HasPrefix(name, headerPrefix) {
			continue
		}
		values := trimmed(h[k])
		if i, ok := at[name]; ok {
			out[i].Values = append(out[i].Values, values...)
			continue
		}
		at[name] = len(out)
		out = append(out, Header{Name: name, Values: values})
	}
	if len(out) == 0 {
		return nil, logID
	}
	return out, logID
}

// lowerName is a header name in lower case. The names runtimes commonly
// send come from a table, as a warm execution would otherwise allocate each.
func lowerName(name string) string {
	if lower, ok := commonLowerNames[name]; ok {
		return lower
	}
	return strings.ToLower(name)
}

// commonLowerNames maps the canonical form of the header names most replies
// carry to their lower case. It is never written.
var commonLowerNames = map[string]string{
	"Cache-Control":          "cache-control",
	"Connection":             "connection",
	"Content-Encoding":       "content-encoding",
	"Content-Length":         "content-length",
	"Content-Type":           "content-type",
	"Date":                   "date",
	"Etag":                   "etag",
	"Keep-Alive":             "keep-alive",
	"Last-Modified":          "last-modified",
	"Location":               "location",
	"Server":                 "server",
	"Set-Cookie":             "set-cookie",
	"Vary":                   "vary",
	"X-Open-Runtimes-Log-Id": "x-open-runtimes-log-id",
	"X-Powered-By":           "x-powered-by",
}

// trimmed is values with surrounding space trimmed from each: values
// itself, capped so that a merge appending to it copies, when none has any.
func trimmed(values []string) []string {
	for i, v := range values {
		if strings.TrimSpace(v) == v {
			continue
		}
		out := make([]string, len(values))
		copy(out, values[:i])
		for j := i; j < len(values); j++ {
			out[j] = strings.TrimSpace(values[j])
		}
		return out
	}
	return slices.Clip(values)
}

func (c *Client) log() *slog.Logger {
	if c.Log == nil {
		return slog.Default()
	}
	return c.Log
}
