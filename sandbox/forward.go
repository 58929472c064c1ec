package sandbox

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"executor/storage/safefs"
)

const (
	maxLogFile        = 5 << 20 // 5 MiB per execution log file
	maxV2Logs         = 1_000_000
	maxResponseBody   = 64 << 20
	logTruncatedNote  = "\nLog file has been truncated to 5.00MB."
	errTruncatedNote  = "\nError file has been truncated to 5.00MB."
	forwardSlack      = 5 * time.Second
	connectTimeout    = 5 * time.Second
	openRuntimesPrefx = "x-open-runtimes-"
)

// newForwardClient returns the HTTP client for one runtime. Each runtime has
// its own so that idle keep-alive connections die with it and are never
// reused towards an address that a later runtime has taken over.
func newForwardClient() *http.Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second}).DialContext,
		DisableCompression:  true, // the body goes back to the client byte for byte
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     60 * time.Second,
		ForceAttemptHTTP2:   false,
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// forward sends a v3/v4/v5 execution.
func (m *Manager) forward(ctx context.Context, r *Runtime, req ExecRequest, remaining time.Duration) (*ExecResult, error) {
	softTimeout := int(remaining.Seconds())
	if softTimeout < 1 {
		softTimeout = 1
	}
	path := req.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	build := func(ctx context.Context) (*http.Request, error) {
		var body io.Reader
		if len(req.Body) > 0 {
			body = bytes.NewReader(req.Body)
		}
		hr, err := http.NewRequestWithContext(ctx, method, "http://"+r.Addr()+path, body)
		if err != nil {
			return nil, err
		}
		hr.Header["User-Agent"] = []string{""} // Go's default agent is not the caller's
		for k, v := range req.Headers {
			if strings.EqualFold(k, "host") {
				hr.Host = v
				continue
			}
			if strings.EqualFold(k, "content-length") || strings.EqualFold(k, "transfer-encoding") || strings.EqualFold(k, "connection") {
				continue
			}
			hr.Header.Set(k, v)
		}
		if r.Version != "v3" {
			logging := "enabled"
			if !req.Logging {
				logging = "disabled"
			}
			hr.Header.Set("x-open-runtimes-logging", logging)
			hr.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("opr:"+r.Secret)))
		}
		hr.Header.Set("x-open-runtimes-secret", r.Secret)
		hr.Header.Set("x-open-runtimes-timeout", strconv.Itoa(softTimeout))
		return hr, nil
	}
	resp, err := m.send(ctx, r, build, time.Duration(softTimeout)*time.Second+forwardSlack)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body []byte
	if method != http.MethodHead {
		body, err = io.ReadAll(io.LimitReader(resp.Body, maxResponseBody+1))
		if err != nil {
			return nil, transportError(err)
		}
		if len(body) > maxResponseBody {
			return nil, &Error{Type: ErrRuntimeFailed, Code: 500, Message: fmt.Sprintf("Runtime response is larger than %d bytes.", maxResponseBody)}
		}
	}
	res := &ExecResult{StatusCode: resp.StatusCode, Body: body}
	var logID string
	res.Headers, logID = responseHeaders(resp.Header)
	if r.Version == "v3" {
		res.Logs, _ = url.QueryUnescape(resp.Header.Get("x-open-runtimes-logs"))
		res.Errors, _ = url.QueryUnescape(resp.Header.Get("x-open-runtimes-errors"))
		return res, nil
	}
	if logID != "" && logID != "0" {
		res.Logs, res.Errors = r.readLogs(logID)
	}
	return res, nil
}

// send performs the request, re-sending it while the runtime refuses
// connections (it may be restarting), at least RetryAttempts times and for
// as long as the budget lasts.
func (m *Manager) send(ctx context.Context, r *Runtime, build func(context.Context) (*http.Request, error), timeout time.Duration) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	start := time.Now()
	oom := r.current().markOOM()
	for attempt := 1; ; attempt++ {
		hr, err := build(ctx)
		if err != nil {
			cancel()
			return nil, err
		}
		resp, err := r.client().Do(hr)
		if err == nil {
			// The runtime answered: it outlived the OOM kills counted
			// before the request, so they cannot explain a later death.
			oom.survived()
			resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
			return resp, nil
		}
		retry := errors.Is(err, syscall.ECONNREFUSED) && (attempt < m.cfg.RetryAttempts || time.Since(start) < timeout)
		if !retry {
			cancel()
			r.client().CloseIdleConnections()
			state, out := "no container", ""
			if ct := r.current(); ct != nil {
				state, out = "running", lastLines(ct.out.String(), 10)
				if ct.exited() {
					state = ct.exit.String()
				}
			}
			m.log.Warn("execution forwarding failed", "runtime", r.ID, "addr", r.Addr(), "err", err, "attempts", attempt,
				"elapsed", time.Since(start).Round(time.Millisecond), "main", state, "output", out)
			if oomErr := r.outOfMemory(); oomErr != nil {
				return nil, oomErr
			}
			return nil, transportError(err)
		}
		select {
		case <-ctx.Done():
			cancel()
			return nil, transportError(ctx.Err())
		case <-time.After(m.cfg.RetryDelay):
		}
	}
}

type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// transportError maps a failed exchange to the reference's message, which
// names the curl error number clients have learnt to read.
func transportError(err error) error {
	code := 56 // failure receiving data
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		code = 28
	case errors.Is(err, syscall.ECONNREFUSED):
		code = 7
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		code = 52
	case errors.Is(err, syscall.ECONNRESET):
		code = 56
	}
	return &Error{Type: ErrGeneralUnknown, Code: 500, Message: fmt.Sprintf("Internal curl error has occurred within the executor! Error Number: %d", code), Err: err}
}

// responseHeaders lower-cases and trims the runtime's headers, drops the
// protocol's own x-open-runtimes-* headers and returns the log id among them.
func responseHeaders(h http.Header) ([]Header, string) {
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, k)
	}
	sort.Strings(names)
	merged := map[string]*Header{}
	var out []Header
	var order []string
	logID := ""
	for _, k := range names {
		name := strings.ToLower(strings.TrimSpace(k))
		if name == "x-open-runtimes-log-id" && len(h[k]) > 0 {
			logID, _ = url.QueryUnescape(strings.TrimSpace(h[k][0]))
		}
		if strings.HasPrefix(name, openRuntimesPrefx) {
			continue
		}
		hd := merged[name]
		if hd == nil {
			hd = &Header{Name: name}
			merged[name] = hd
			order = append(order, name)
		}
		for _, v := range h[k] {
			hd.Values = append(hd.Values, strings.TrimSpace(v))
		}
	}
	for _, n := range order {
		out = append(out, *merged[n])
	}
	return out, logID
}

// readLogs reads and removes the execution's log files. Ids are restricted to
// [A-Za-z0-9_-] so a runtime cannot name a file outside its logs dir, and the
// files are read through safefs: a link, FIFO or device planted there gives
// empty logs (and a warning), never what it points at.
func (r *Runtime) readLogs(id string) (logs, errs string) {
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			r.log.Warn("runtime sent an invalid log id", "runtime", r.ID)
			return "", ""
		}
	}
	d, err := r.openDir()
	if err != nil {
		r.log.Warn("cannot open runtime directory", "runtime", r.ID, "err", err)
		return "", ""
	}
	defer d.Close()
	logs = r.readCapped(d, "logs/"+id+"_logs.log", logTruncatedNote)
	errs = r.readCapped(d, "logs/"+id+"_errors.log", errTruncatedNote)
	return logs, errs
}

// readCapped reads at most maxLogFile bytes of name and removes it.
func (r *Runtime) readCapped(d *safefs.Dir, name, note string) string {
	data, size, err := d.ReadFile(name, maxLogFile)
	if rerr := d.Remove(name); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		r.log.Warn("cannot remove execution log file", "runtime", r.ID, "file", name, "err", rerr)
	}
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			r.log.Warn("execution log file refused", "runtime", r.ID, "file", name, "reason", refusal(err))
		}
		return ""
	}
	if size > maxLogFile {
		return string(data) + note
	}
	return string(data)
}

// forwardV2 sends a v2 execution: a JSON envelope to POST /.
func (m *Manager) forwardV2(ctx context.Context, r *Runtime, req ExecRequest, remaining time.Duration) (*ExecResult, error) {
	vars := req.Variables
	if vars == nil {
		vars = map[string]string{}
	}
	payload, err := json.Marshal(struct {
		Variables map[string]string `json:"variables"`
		Payload   string            `json:"payload"`
		Headers   map[string]string `json:"headers"`
	}{vars, string(req.Body), map[string]string{}})
	if err != nil {
		return nil, err
	}
	build := func(ctx context.Context) (*http.Request, error) {
		hr, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+r.Addr()+"/", bytes.NewReader(payload))
		if err != nil {
			return nil, err
		}
		hr.Header["User-Agent"] = []string{""}
		hr.Header.Set("Content-Type", "application/json")
		hr.Header.Set("x-internal-challenge", r.Secret)
		hr.Host = "null"
		return hr, nil
	}
	resp, err := m.send(ctx, r, build, remaining)
	if err != nil {
		var xe *Error
		if errors.As(err, &xe) && errors.Is(err, context.DeadlineExceeded) {
			return nil, &Error{Type: ErrExecutionTimeout, Message: "Operation timed out after " + strconv.FormatInt(remaining.Milliseconds(), 10) + " milliseconds", Err: err}
		}
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		return nil, transportError(err)
	}
	var v2 struct {
		Response json.RawMessage `json:"response"`
		Stdout   any             `json:"stdout"`
		Stderr   any             `json:"stderr"`
	}
	_ = json.Unmarshal(raw, &v2)
	res := &ExecResult{StatusCode: resp.StatusCode, Headers: []Header{}}
	res.Body = v2Body(v2.Response)
	res.Logs = capBytes(stringify(v2.Stdout), maxV2Logs)
	res.Errors = capBytes(stringify(v2.Stderr), maxV2Logs)
	return res, nil
}

// v2Body turns the v2 `response` into the body: strings as they are, arrays
// and objects JSON-encoded.
func v2Body(raw json.RawMessage) []byte {
	if len(raw) == 0 || string(raw) == "null" {
		return []byte{}
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []byte(s)
	}
	// Compacting keeps the runtime's key order, which decoding into a Go map
	// would lose.
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}

func stringify(v any) string {
	switch t := v.(type) {
	case nil:
		return ""
	case string:
		return t
	default:
		b, _ := json.Marshal(t)
		return string(b)
	}
}

func capBytes(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
