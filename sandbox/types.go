package sandbox

import (
	"fmt"
	"strings"
	"time"
)

// Spec describes a runtime to create: the body of POST /v1/runtimes, or the
// cold-start parameters of an execution. Values are already validated and
// defaulted by the API layer.
type Spec struct {
	RuntimeID         string
	Image             string
	Entrypoint        string
	Source            string
	Destination       string
	OutputDirectory   string
	Variables         map[string]string
	RuntimeEntrypoint string
	Command           string
	CacheKey          string
	Timeout           time.Duration // build command timeout
	Remove            bool
	CPUs              float64
	MemoryMB          int64
	Version           string // v2, v3, v4, v5
	RestartPolicy     string // no, always, on-failure, unless-stopped
}

// LogEntry is one chunk of build output, stamped with the time it was read.
type LogEntry struct {
	Timestamp time.Time
	Content   string
}

// BuildResult is the outcome of a successful creation.
type BuildResult struct {
	HasArtifact bool // Destination was set: Path and Size are meaningful
	Path        string
	Size        int64
	Output      []LogEntry
	StartTime   time.Time
	Duration    time.Duration
	Version     string
}

// Info is the public view of a runtime (the runtime object of the API).
type Info struct {
	Version     string
	Created     time.Time
	Updated     time.Time
	Name        string
	Hostname    string
	Status      string
	Key         string
	Listening   bool
	Image       string
	Initialised bool
}

// ExecRequest is one execution.
type ExecRequest struct {
	RuntimeID string
	// Cold is used to create the runtime when it does not exist. Nil when the
	// caller gave no image or no source.
	Cold      *Spec
	Method    string
	Path      string
	Headers   map[string]string
	Body      []byte
	Timeout   time.Duration
	Logging   bool
	Variables map[string]string // v2 request body
}

// Header is one response header with all its values, name lower-cased.
type Header struct {
	Name   string
	Values []string
}

// ExecResult is what the runtime answered.
type ExecResult struct {
	StatusCode int
	Headers    []Header // in order of first appearance; x-open-runtimes-* removed
	Body       []byte
	Logs       string
	Errors     string
	StartTime  time.Time
	Duration   time.Duration
}

// Error types of the executor's error catalogue (the `type` of an API error).
const (
	ErrGeneralUnknown      = "general_unknown"
	ErrUnauthorized        = "general_unauthorized"
	ErrRouteNotFound       = "general_route_not_found"
	ErrBuildFailed         = "build_failed"
	ErrRuntimeFailed       = "runtime_failed"
	ErrRuntimeTimeout      = "runtime_timeout"
	ErrRuntimeNotFound     = "runtime_not_found"
	ErrRuntimeConflict     = "runtime_conflict"
	ErrExecutionBadRequest = "execution_bad_request"
	ErrExecutionBadJSON    = "execution_bad_json"
	ErrExecutionTimeout    = "execution_timeout"
	ErrLogsTimeout         = "logs_timeout"
	ErrCommandTimeout      = "command_timeout"
	ErrCommandFailed       = "command_failed"
)

// Error is an executor exception: an error a client is meant to see, with its
// catalogue type. Code overrides the catalogue's HTTP status when non-zero.
// Any other error returned by this package is an internal failure.
type Error struct {
	Type    string
	Message string
	Code    int
	Err     error
}

func (e *Error) Error() string {
	// Messages often quote their cause already ("...: " + err.Error()); it
	// is said once.
	if e.Err != nil && !strings.Contains(e.Message, e.Err.Error()) {
		return fmt.Sprintf("%s: %s: %v", e.Type, e.Message, e.Err)
	}
	return e.Type + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }
