package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// Protocol versions understood by the test runtime.
const (
	ProtocolV2 = "v2"
	ProtocolV3 = "v3"
	ProtocolV4 = "v4"
	ProtocolV5 = "v5"
)

// Texts the real Open Runtimes servers answer with; the executor and its tests
// match on them, so they must stay byte-for-byte identical.
const (
	msgBadTimeout   = `Header "x-open-runtimes-timeout" must be an integer greater than 0.`
	msgUnauthorized = `Unauthorized. Provide correct "x-open-runtimes-secret" header.`
	msgTimedOut     = "Execution timed out."
)

// Header names of the v3/v4/v5 contract.
const (
	hdrPrefix  = "x-open-runtimes-"
	hdrSecret  = "x-open-runtimes-secret"
	hdrTimeout = "x-open-runtimes-timeout"
	hdrLogging = "x-open-runtimes-logging"
	hdrLogID   = "x-open-runtimes-log-id"
	hdrLogs    = "x-open-runtimes-logs"
	hdrErrors  = "x-open-runtimes-errors"
)

// maxBodyBytes mirrors the 20 MB request body limit of the v4 runtimes.
const maxBodyBytes = 20 << 20

// Config configures the test runtime's HTTP handler. Zero values select the
// paths used inside the runtime images.
type Config struct {
	// Protocol is one of ProtocolV2..ProtocolV5 (default v5).
	Protocol string
	// LogsDir receives <id>_logs.log / <id>_errors.log in v4/v5 mode.
	LogsDir string
	// FunctionDir is where the user's code was extracted by helpers/start.sh.
	FunctionDir string
	// CgroupRoot and ProcSelfCgroup are read by /cgroup; tests point them at
	// a fake tree.
	CgroupRoot     string
	ProcSelfCgroup string
	// Environ returns the process environment; tests inject a fixed one so
	// they can run in parallel without t.Setenv.
	Environ func() []string
	// Exit terminates the process for /exit and the v2 "exit" payload.
	Exit func(code int)
	// Logger receives internal failures (not the function's logs).
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.Protocol == "" {
		c.Protocol = ProtocolV5
	}
	switch c.Protocol {
	case ProtocolV2, ProtocolV3, ProtocolV4, ProtocolV5:
	default:
		return fmt.Errorf("unsupported protocol %q (want v5, v4, v3 or v2)", c.Protocol)
	}
	if c.LogsDir == "" {
		c.LogsDir = "/mnt/logs"
	}
	if c.FunctionDir == "" {
		c.FunctionDir = "/usr/local/server/src/function"
	}
	if c.CgroupRoot == "" {
		c.CgroupRoot = "/sys/fs/cgroup"
	}
	if c.ProcSelfCgroup == "" {
		c.ProcSelfCgroup = "/proc/self/cgroup"
	}
	if c.Environ == nil {
		c.Environ = os.Environ
	}
	if c.Exit == nil {
		c.Exit = os.Exit
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// NewHandler returns the runtime's HTTP handler for cfg.Protocol.
func NewHandler(cfg Config) (http.Handler, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s := &server{cfg: cfg}
	if cfg.Protocol == ProtocolV2 {
		return http.HandlerFunc(s.serveV2), nil
	}
	return http.HandlerFunc(s.serveModern), nil
}

type server struct {
	cfg Config
}

// env looks a variable up in the configured environment.
func (s *server) env(key string) string {
	prefix := key + "="
	for _, kv := range s.cfg.Environ() {
		if v, ok := strings.CutPrefix(kv, prefix); ok {
			return v
		}
	}
	return ""
}

// exitError asks the handler goroutine to terminate the process. Behaviours
// run on their own goroutine (for the soft timeout), so they cannot exit or
// abort the connection themselves.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit requested with code %d", e.code) }

// exitNow ends the process before any response is written. When Exit returns
// (only in tests), the connection is aborted so the client still sees a dead
// server rather than an answer.
func (s *server) exitNow(code int) {
	s.cfg.Exit(code)
	panic(http.ErrAbortHandler)
}

// serveModern implements the v3/v4/v5 request flow, in the order the real
// runtimes check things.
func (s *server) serveModern(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/__opr/health" {
		writeText(w, http.StatusOK, "OK")
		return
	}

	timeout, err := parseTimeout(r.Header)
	if err != nil {
		writeText(w, http.StatusInternalServerError, msgBadTimeout)
		return
	}

	// v4/v5 create the log files before the secret check (so they exist, empty,
	// for rejected requests); v3 collects logs for response headers.
	var sink logSink
	if s.cfg.Protocol == ProtocolV3 {
		sink = &headerSink{}
	} else {
		fsink, err := openFileSink(s.cfg.LogsDir, s.logID(r.Header), r.Header.Get(hdrLogging) == "disabled")
		if err != nil {
			s.cfg.Logger.Error("open log files", "err", err)
			writeText(w, http.StatusInternalServerError, "")
			return
		}
		sink = fsink
	}
	defer func() {
		if err := sink.Close(); err != nil {
			s.cfg.Logger.Error("close log files", "err", err)
		}
	}()

	if secret := s.env("OPEN_RUNTIMES_SECRET"); secret != "" && r.Header.Get(hdrSecret) != secret {
		writeText(w, http.StatusInternalServerError, msgUnauthorized)
		return
	}

	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		sink.Error(fmt.Sprintf("read request body: %v", err))
		s.finish(w, sink, response{status: http.StatusInternalServerError})
		return
	}

	ctx := r.Context()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}

	inv := &invocation{req: r, body: body, log: sink, srv: s}
	type outcome struct {
		res response
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := s.dispatch(ctx, inv)
		done <- outcome{res, err}
	}()

	var res response
	select {
	case out := <-done:
		res = out.res
		var exit exitError
		switch {
		case errors.As(out.err, &exit):
			s.exitNow(exit.code)
		case out.err != nil:
			// Like a thrown exception in a real runtime: empty 500, reason in
			// the errors stream.
			sink.Error(out.err.Error())
			res = response{status: http.StatusInternalServerError}
		}
	case <-ctx.Done():
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return // client went away
		}
		sink.Error(msgTimedOut)
		res = response{status: http.StatusInternalServerError}
	}
	s.finish(w, sink, res)
}

// finish writes res with the protocol's log headers.
func (s *server) finish(w http.ResponseWriter, sink logSink, res response) {
	h := w.Header()
	for k, vs := range res.header {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	if h.Get("content-type") == "" && len(res.body) > 0 {
		h.Set("content-type", "text/plain; charset=utf-8")
	}
	sink.Decorate(h)
	if res.status == 0 {
		res.status = http.StatusOK
	}
	w.WriteHeader(res.status)
	// Statuses such as 204/304 carry no body; net/http refuses to write one.
	if _, err := w.Write(res.body); err != nil && !errors.Is(err, http.ErrBodyNotAllowed) {
		s.cfg.Logger.Warn("write response", "err", err)
	}
}

// logID picks the per-request log id the way the v4 runtimes do.
func (s *server) logID(h http.Header) string {
	if id := h.Get(hdrLogID); id != "" {
		return id
	}
	if s.env("OPEN_RUNTIMES_ENV") == "development" {
		return "dev"
	}
	return randomHex(10)
}

// parseTimeout validates x-open-runtimes-timeout. An absent or empty header
// means no soft timeout (the Node runtimes test the header for truthiness).
func parseTimeout(h http.Header) (time.Duration, error) {
	raw := strings.TrimSpace(h.Get(hdrTimeout))
	if raw == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("invalid timeout %q", raw)
	}
	return time.Duration(n) * time.Second, nil
}

func writeText(w http.ResponseWriter, status int, body string) {
	if body != "" {
		w.Header().Set("content-type", "text/plain; charset=utf-8")
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}
