package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// invocation is one request as the "user function" sees it.
type invocation struct {
	req  *http.Request
	body []byte
	log  logSink
	srv  *server
}

// response is what a behaviour returns; the protocol layer adds log headers.
type response struct {
	status int
	header http.Header
	body   []byte
}

func textResponse(status int, body string) response {
	return response{status: status, body: []byte(body)}
}

func jsonResponse(v any) (response, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return response{}, fmt.Errorf("encode json: %w", err)
	}
	return response{
		status: http.StatusOK,
		header: http.Header{"Content-Type": {"application/json"}},
		body:   b,
	}, nil
}

// behaviour is a test "function" selected by request path.
type behaviour func(ctx context.Context, inv *invocation) (response, error)

// behaviours maps paths to test functions; anything else echoes the request.
var behaviours = map[string]behaviour{
	"/logs":    behaveLogs,
	"/sleep":   behaveSleep,
	"/binary":  behaveBinary,
	"/status":  behaveStatus,
	"/headers": behaveHeaders,
	"/cgroup":  behaveCgroup,
	"/fs":      behaveFS,
	"/exit":    behaveExit,
	"/write":   behaveWrite,
	"/attack":  behaveAttack,
	"/alloc":   behaveAlloc,
	"/spin":    behaveSpin,
	"/work":    behaveWork,
	"/shell":   behaveShell,
}

func (s *server) dispatch(ctx context.Context, inv *invocation) (response, error) {
	if b, ok := behaviours[inv.req.URL.Path]; ok {
		return b(ctx, inv)
	}
	return behaveEcho(ctx, inv)
}

// queryInt reads an integer query parameter, falling back to def when absent.
func queryInt(r *http.Request, name string, def int) (int, error) {
	raw := r.URL.Query().Get(name)
	if raw == "" {
		return def, nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil {
		return 0, fmt.Errorf("query parameter %q: %w", name, err)
	}
	return n, nil
}

// echoPayload is the body of the default behaviour; executor tests assert on
// what reached the runtime (headers, body, env, user code, url).
type echoPayload struct {
	Method   string            `json:"method"`
	Path     string            `json:"path"`
	URL      string            `json:"url"`
	Headers  map[string]string `json:"headers"`
	Body     string            `json:"body"`
	Env      map[string]string `json:"env"`
	Code     string            `json:"code"`
	Hostname string            `json:"hostname"`
}

// echoedEnvPrefixes selects the variables the executor injects (or lets users
// inject) so tests can see them without dumping the whole environment.
var echoedEnvPrefixes = []string{"OPEN_RUNTIMES_", "INTERNAL_", "INERNAL_", "CI", "TEST_", "USER_"}

func behaveEcho(_ context.Context, inv *invocation) (response, error) {
	r := inv.req
	headers := map[string]string{"host": r.Host}
	for k, vs := range r.Header {
		k = strings.ToLower(k)
		if strings.HasPrefix(k, hdrPrefix) {
			continue // hidden from user code by every runtime
		}
		headers[k] = strings.Join(vs, ", ")
	}

	env := map[string]string{}
	for _, kv := range inv.srv.cfg.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		for _, p := range echoedEnvPrefixes {
			if strings.HasPrefix(k, p) {
				env[k] = v
				break
			}
		}
	}

	code := ""
	if entry := inv.srv.env("OPEN_RUNTIMES_ENTRYPOINT"); entry != "" {
		if b, err := os.ReadFile(filepath.Join(inv.srv.cfg.FunctionDir, entry)); err == nil {
			code = string(b)
		}
	}

	hostname, _ := os.Hostname()
	return jsonResponse(echoPayload{
		Method:   r.Method,
		Path:     r.URL.EscapedPath(),
		URL:      requestURL(r),
		Headers:  headers,
		Body:     string(inv.body),
		Env:      env,
		Code:     code,
		Hostname: hostname,
	})
}

// requestURL rebuilds the URL the way the Open Runtimes servers do: scheme
// from x-forwarded-proto (default http), host and port from Host, the port
// omitted when it is the scheme's default, then the raw path and query.
func requestURL(r *http.Request) string {
	scheme := r.Header.Get("x-forwarded-proto")
	if scheme == "" {
		scheme = "http"
	}
	defaultPort := "80"
	if scheme == "https" {
		defaultPort = "443"
	}
	u := scheme + "://" + r.Host
	if host, port, err := net.SplitHostPort(r.Host); err == nil {
		u = scheme + "://" + host
		if strings.Contains(host, ":") {
			u = scheme + "://[" + host + "]" // IPv6 literal
		}
		if port != defaultPort {
			u += ":" + port
		}
	}
	u += r.URL.EscapedPath()
	if r.URL.RawQuery != "" {
		u += "?" + r.URL.RawQuery
	}
	return u
}

// behaveLogs writes `lines` log lines (of `size` 'A's when size is given) and
// one error line; the executor's log size limits are tested with it.
func behaveLogs(_ context.Context, inv *invocation) (response, error) {
	lines, err := queryInt(inv.req, "lines", 3)
	if err != nil {
		return response{}, err
	}
	size, err := queryInt(inv.req, "size", -1)
	if err != nil {
		return response{}, err
	}
	var block string
	if size >= 0 {
		block = strings.Repeat("A", size)
	}
	for i := 1; i <= lines; i++ {
		if size >= 0 {
			inv.log.Log(block)
		} else {
			inv.log.Log(fmt.Sprintf("log line %d", i))
		}
	}
	inv.log.Error("error line")
	return textResponse(http.StatusOK, "OK"), nil
}

func behaveSleep(ctx context.Context, inv *invocation) (response, error) {
	ms, err := queryInt(inv.req, "ms", 0)
	if err != nil {
		return response{}, err
	}
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return textResponse(http.StatusOK, "OK"), nil
	case <-ctx.Done():
		return response{}, ctx.Err()
	}
}

func behaveBinary(context.Context, *invocation) (response, error) {
	return response{
		status: http.StatusOK,
		header: http.Header{"Content-Type": {"application/octet-stream"}},
		body:   []byte{0x00, 0x0A, 0xFF},
	}, nil
}

func behaveStatus(_ context.Context, inv *invocation) (response, error) {
	code, err := queryInt(inv.req, "code", http.StatusOK)
	if err != nil {
		return response{}, err
	}
	if code < 100 || code > 999 {
		return response{}, fmt.Errorf("status code %d out of range", code)
	}
	return textResponse(code, fmt.Sprintf("status %d", code)), nil
}

// behaveHeaders returns multi-value and reserved headers; the executor must
// keep both cookies and strip x-open-runtimes-* (which real runtimes never
// send, so the test runtime sends one on purpose).
func behaveHeaders(context.Context, *invocation) (response, error) {
	h := http.Header{}
	h.Add("set-cookie", "a=1; HttpOnly")
	h.Add("set-cookie", "b=2; HttpOnly")
	h.Set("x-custom", "value")
	h.Set("x-open-runtimes-leak", "1")
	return response{status: http.StatusOK, header: h, body: []byte("OK")}, nil
}

func behaveCgroup(_ context.Context, inv *invocation) (response, error) {
	return jsonResponse(readCgroupLimits(inv.srv.cfg.CgroupRoot, inv.srv.cfg.ProcSelfCgroup))
}

// fsPayload describes one path inside the container; tests use it to check
// layer whiteouts and mounts.
type fsPayload struct {
	Exists  bool     `json:"exists"`
	IsDir   bool     `json:"isDir"`
	Entries []string `json:"entries"`
	Content string   `json:"content"`
}

const maxFSContent = 64 << 10

func behaveFS(_ context.Context, inv *invocation) (response, error) {
	path := inv.req.URL.Query().Get("path")
	if path == "" {
		return response{}, errors.New("query parameter \"path\" is required")
	}
	out := fsPayload{Entries: []string{}}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return jsonResponse(out)
	case err != nil:
		return response{}, fmt.Errorf("stat %s: %w", path, err)
	}
	out.Exists = true
	out.IsDir = fi.IsDir()
	if out.IsDir {
		entries, err := os.ReadDir(path)
		if err != nil {
			return response{}, fmt.Errorf("read dir %s: %w", path, err)
		}
		for _, e := range entries {
			out.Entries = append(out.Entries, e.Name())
		}
		sort.Strings(out.Entries)
		return jsonResponse(out)
	}
	f, err := os.Open(path)
	if err != nil {
		return response{}, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFSContent))
	if err != nil {
		return response{}, fmt.Errorf("read %s: %w", path, err)
	}
	out.Content = string(b)
	return jsonResponse(out)
}

func behaveExit(_ context.Context, inv *invocation) (response, error) {
	code, err := queryInt(inv.req, "code", 1)
	if err != nil {
		return response{}, err
	}
	return response{}, exitError{code: code}
}

// behaveWrite proves the container root (or a mount) is writable.
func behaveWrite(_ context.Context, inv *invocation) (response, error) {
	path := inv.req.URL.Query().Get("path")
	if path == "" {
		return response{}, errors.New("query parameter \"path\" is required")
	}
	if err := os.WriteFile(path, inv.body, 0o644); err != nil {
		return response{}, fmt.Errorf("write %s: %w", path, err)
	}
	return textResponse(http.StatusOK, "OK"), nil
}
