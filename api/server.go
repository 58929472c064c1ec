// Package api is the HTTP layer of the executor: the Open Runtimes Executor /v1 API (routes, authentication,
// parameter parsing and validation, encoding of results and errors). Everything behind it is the Backend.
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"

	"executor/sandbox"
)

// Backend is what the HTTP layer needs from the runtime manager (*sandbox.Manager implements it). Errors a client
// is meant to see are *sandbox.Error or the protocol's errors (see clientError); any other error is an internal
// failure.
type Backend interface {
	Create(ctx context.Context, spec sandbox.Spec) (*sandbox.BuildResult, error)
	List() []sandbox.Info
	Get(id string) (sandbox.Info, error)
	Delete(ctx context.Context, id string) error
	Execute(ctx context.Context, req sandbox.ExecRequest) (*sandbox.ExecResult, error)
	// FollowLogs waits up to wait for runtime id to exist and returns its build output stream.
	FollowLogs(ctx context.Context, id string, wait time.Duration) (sandbox.LogStream, error)
	// Command runs command in runtime id and returns its stdout then its stderr.
	Command(ctx context.Context, id, command string, timeout time.Duration) (string, error)
}

// Stats is implemented by backends that can report CPU usage for GET /v1/health: the host's usage in percent and
// each runtime's, keyed by runtime id. It is optional.
type Stats interface {
	Usage() (host float64, perRuntime map[string]float64)
}

// Config configures a Server.
type Config struct {
	Backend         Backend
	Secret          string   // OPR_EXECUTOR_SECRET; empty never grants access
	Development     bool     // OPR_EXECUTOR_ENV=development: error details and runtime keys are shown
	Version         string   // OPR_EXECUTOR_VERSION reported in error bodies (DefaultExecutorVersion if empty)
	RuntimeVersions []string // accepted `version` values (OPR_EXECUTOR_RUNTIME_VERSIONS); DefaultRuntimeVersions if empty
	Hostname        string   // executor hostname for INERNAL_EXECUTOR_HOSTNAME; os.Hostname() if empty
	Logger          *slog.Logger

	// BodyTimeout bounds the reading of a request body, from the end of its headers (DefaultBodyTimeout if 0).
	// Only the reading is bounded: executions and log streams run as long as their own timeouts.
	BodyTimeout time.Duration
	// WriteStall bounds how long one write of a response may make no progress (DefaultWriteStall if 0): a
	// client that stops reading a large answer, or a log stream, would otherwise hold its request, and what
	// the request holds, for ever. A slow reader that keeps reading is never cut.
	WriteStall time.Duration
	// MaxCPUs and MaxMemoryMB bound the `cpus` and `memory` of a request; a request's 0 means the bound, so that
	// every runtime has a limit. 0 here means no bound, and then a request's 0 means no limit (the weaker,
	// opt-in setting).
	MaxCPUs     float64
	MaxMemoryMB int64
	// Images serves POST /v1/images (an extension of ours); nil leaves that route unknown.
	Images ImagePuller
	// Observer is told of every answered request (metrics, traces); nil: nothing.
	Observer Observer
}

// DefaultRuntimeVersions lists, comma-separated, every runtime protocol version the executor speaks: all are
// accepted unless Config.RuntimeVersions narrows them.
const DefaultRuntimeVersions = "v2,v3,v4,v5"

// DefaultExecutorVersion is the executor version error bodies report when none is configured.
const DefaultExecutorVersion = "unknown"

// DefaultBodyTimeout is the time a client has to send a request body: enough for the largest one (22 MiB) at
// about 3 Mbit/s.
const DefaultBodyTimeout = 60 * time.Second

// DefaultWriteStall is how long a response write may wait for a client that reads nothing.
const DefaultWriteStall = 60 * time.Second

// Server serves the executor API. It implements http.Handler and is safe for concurrent use.
type Server struct {
	backend        Backend
	secretSum      [sha256.Size]byte
	hasSecret      bool
	dev            bool
	version        string
	versions       []string // canonical lower-case
	defaultVersion string   // the newest accepted version
	hostname       string
	log            *slog.Logger
	router         *httprouter.Router
	endpoints      endpoints // the routes' parameter declarations
	bodyTimeout    time.Duration
	writeStall     time.Duration
	drain          drainGate  // keyed requests in flight, turned away once Drain began
	ready          readyCache // the backend's last health check (health.go)

	maxCPUs, defaultCPUs         float64
	maxMemoryMB, defaultMemoryMB int64

	images   ImagePuller
	observer Observer
}

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Backend == nil {
		return nil, errors.New("api: Config.Backend is required")
	}
	s := &Server{
		backend:   cfg.Backend,
		secretSum: sha256.Sum256([]byte(cfg.Secret)),
		hasSecret: cfg.Secret != "",
		dev:       cfg.Development,
		version:   cfg.Version,
		hostname:  cfg.Hostname,
		log:       cfg.Logger,

		bodyTimeout:     cfg.BodyTimeout,
		writeStall:      cfg.WriteStall,
		maxCPUs:         cfg.MaxCPUs,
		maxMemoryMB:     cfg.MaxMemoryMB,
		defaultCPUs:     defaultCPUs,
		defaultMemoryMB: defaultMemoryMB,
		images:          cfg.Images,
		observer:        cfg.Observer,
	}
	if s.bodyTimeout <= 0 {
		s.bodyTimeout = DefaultBodyTimeout
	}
	if s.writeStall <= 0 {
		s.writeStall = DefaultWriteStall
	}
	if cfg.MaxCPUs < 0 || math.IsNaN(cfg.MaxCPUs) || math.IsInf(cfg.MaxCPUs, 0) || cfg.MaxMemoryMB < 0 {
		return nil, fmt.Errorf("api: MaxCPUs %v and MaxMemoryMB %d must be finite and not negative", cfg.MaxCPUs, cfg.MaxMemoryMB)
	}
	// A request that leaves them out must fit under the bounds: the default is capped by them.
	if s.maxCPUs > 0 {
		s.defaultCPUs = min(s.defaultCPUs, s.maxCPUs)
	}
	if s.maxMemoryMB > 0 {
		s.defaultMemoryMB = min(s.defaultMemoryMB, s.maxMemoryMB)
	}
	if s.version == "" {
		s.version = DefaultExecutorVersion
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("api: executor hostname: %w", err)
		}
		s.hostname = h
	}
	s.versions = normalizeVersions(cfg.RuntimeVersions)
	if len(s.versions) == 0 {
		s.versions = strings.Split(DefaultRuntimeVersions, ",")
	}
	s.defaultVersion = newestVersion(s.versions)
	if !s.hasSecret {
		s.log.Warn("executor secret is empty: every authenticated route will answer 401")
	}

	// The declarations depend on the versions and bounds above.
	var err error
	if s.endpoints, err = s.newEndpoints(); err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}

	s.router = httprouter.New()
	// The reference neither redirects nor distinguishes a wrong method from an unknown path: both are its
	// framework's `Not Found` 404.
	s.router.RedirectTrailingSlash = false
	s.router.RedirectFixedPath = false
	s.router.HandleMethodNotAllowed = false
	s.router.NotFound = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, newRequestError(http.StatusNotFound, "Not Found"))
	})
	s.routes()
	return s, nil
}

// routes registers the endpoints. Adding one (the logs stream, commands) is one line here plus its handler.
func (s *Server) routes() {
	s.get("/v1/health", public, s.health)

	s.handle(http.MethodPost, "/v1/runtimes", keyed, s.createRuntime)
	s.get("/v1/runtimes", keyed, s.listRuntimes)
	s.get("/v1/runtimes/:runtimeId", keyed, s.getRuntime)
	s.handle(http.MethodDelete, "/v1/runtimes/:runtimeId", keyed, s.deleteRuntime)
	s.handle(http.MethodPost, "/v1/runtimes/:runtimeId/executions", keyed, s.execute)
	s.handle(http.MethodPost, "/v1/runtimes/:runtimeId/execution", keyed, s.execute) // pre-0.5 alias
	s.get("/v1/runtimes/:runtimeId/logs", keyed, s.streamLogs)
	// Unlike the reference, commands need the key: they run arbitrary shell in a runtime (Part 0).
	s.handle(http.MethodPost, "/v1/runtimes/:runtimeId/commands", keyed, s.runCommand)
	s.handle(http.MethodPost, "/v1/images", keyed, s.pullImage) // ours, not the reference's: pull an image
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Server", "Executor")
	// Every request, unknown routes included: net/http reads what is left of a small unread body after the
	// handler, and that read must be bounded too.
	s.limitBodyTime(w, r)
	s.serveLogged(w, r, s.router) // one access line per request (accesslog.go)
}

// handler is an endpoint. It either writes its whole response and returns nil, or returns an error that is
// rendered as the JSON error document. A streaming handler that fails after it started writing can only end
// the response; its error is then logged.
type handler func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) error

// access says whether a route needs the executor key.
type access bool

const (
	public access = false
	keyed  access = true
)

// get registers a GET route and its HEAD twin: the reference answers HEAD as GET without a body, which
// net/http does for us by discarding the body of HEAD responses.
func (s *Server) get(path string, a access, h handler) {
	s.handle(http.MethodGet, path, a, h)
	s.handle(http.MethodHead, path, a, h)
}

func (s *Server) handle(method, path string, a access, h handler) {
	s.router.Handle(method, path, func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
		setRoute(r, path, ps.ByName("runtimeId"))
		// The raw writer goes to MaxBytesReader so that net/http can close the connection on overflow.
		r.Body = http.MaxBytesReader(connWriter(w), r.Body, maxRequestBody)
		tw := &trackingWriter{ResponseWriter: w}
		err := s.run(tw, r, ps, a, h)
		if err == nil {
			return
		}
		if tw.started {
			s.log.WarnContext(r.Context(), "request failed after the response started",
				"method", r.Method, "path", r.URL.Path, "err", err)
			return
		}
		s.writeError(tw, r, err)
	})
}

// limitBodyTime gives the client bodyTimeout to send the request body, as a read deadline on the connection.
// net/http lifts it itself when the body has been read to its end (bind reads every body whole): it then starts
// the background read that watches for the client leaving, with no deadline. So only the reading of the request
// is bounded, never a long execution or a log stream. Requests without a body get no deadline: for them that
// background read has started before the handler, and a deadline would end it and cancel the request.
func (s *Server) limitBodyTime(w http.ResponseWriter, r *http.Request) {
	if r.Body == nil || r.Body == http.NoBody {
		return
	}
	// Only writers that are not a server connection (tests' recorders) cannot: there is nothing to bound then.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.bodyTimeout))
}

// run authenticates and calls h, turning a panic into an internal error so that one bad request cannot take the
// daemon down and still gets a well-formed answer.
func (s *Server) run(w http.ResponseWriter, r *http.Request, ps httprouter.Params, a access, h handler) (err error) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.ErrorContext(r.Context(), "handler panic", "method", r.Method, "path", r.URL.Path,
				"panic", v, "stack", string(debug.Stack()))
			err = fmt.Errorf("panic: %v", v)
		}
	}()
	if a == keyed && !s.authorized(r) {
		return &apiError{typ: typeUnauthorized, message: "Missing executor key", code: http.StatusUnauthorized}
	}
	if a == keyed {
		if !s.drain.enter() {
			return kindError(&sandbox.Error{Kind: sandbox.ShuttingDown})
		}
		defer s.drain.leave()
	}
	return h(w, r, ps)
}

// authorized applies the reference's key rule (§2.3): split `Authorization` on single spaces, take the second
// token whatever the scheme, refuse a missing, empty or "0" token. The comparison is constant-time (of equal-
// length digests, so the secret's length does not leak either), and an empty configured secret matches nothing.
func (s *Server) authorized(r *http.Request) bool {
	parts := strings.Split(r.Header.Get("Authorization"), " ")
	if len(parts) < 2 {
		return false
	}
	token := parts[1]
	if token == "" || token == "0" || !s.hasSecret {
		return false
	}
	sum := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(sum[:], s.secretSum[:]) == 1
}

// trackingWriter records whether the response has started, so that a late error is not written into the middle
// of a body. It keeps Flush reachable for streaming handlers.
type trackingWriter struct {
	http.ResponseWriter
	started bool
}

func (w *trackingWriter) WriteHeader(code int) {
	w.started = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *trackingWriter) Write(b []byte) (int, error) {
	w.started = true
	return w.ResponseWriter.Write(b)
}

func (w *trackingWriter) Flush() {
	w.started = true
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *trackingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// normalizeVersions trims, lower-cases and de-duplicates the accepted protocol versions.
func normalizeVersions(in []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, v := range in {
		v = strings.ToLower(strings.TrimSpace(v))
		if v == "" || seen[v] {
			continue
		}
		seen[v] = true
		out = append(out, v)
	}
	return out
}

// newestVersion is the default `version`: the accepted one with the highest number (`v4` when only v2,v4 are
// accepted), or the last listed when none is numbered.
func newestVersion(versions []string) string {
	best, bestN := versions[len(versions)-1], -1
	for _, v := range versions {
		n, err := strconv.Atoi(strings.TrimPrefix(v, "v"))
		if err == nil && n > bestN {
			best, bestN = v, n
		}
	}
	return best
}
