package sandbox

import (
	"time"

	"executor/sandbox/build"
	"executor/sandbox/protocol"
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
	Timeout           time.Duration // the build command's, required with Command
	Remove            bool
	CPUs              float64
	MemoryMB          int64
	Version           protocol.Version
	RestartPolicy     string // no, always, on-failure, unless-stopped
}

// LogEntry is one chunk of build output, stamped with the time it was read.
type LogEntry = build.Entry

// BuildResult is the outcome of a successful creation.
type BuildResult struct {
	HasArtifact bool // Destination was set: Path and Size are meaningful
	Path        string
	Size        int64
	Output      []LogEntry
	StartTime   time.Time
	Duration    time.Duration
	Version     protocol.Version
}

// Info is the public view of a runtime (the runtime object of the API).
type Info struct {
	Version     protocol.Version
	Created     time.Time
	Updated     time.Time
	Name        string
	Hostname    string
	Status      string
	Key         string
	Listening   bool
	Image       string
	Initialised bool
	// Usage is the runtime's cgroup figures from the latest background
	// sample (up to a second old; see Manager.UsageFigures); nil while it
	// is pending.
	Usage *RuntimeUsage
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
	Timeout   time.Duration // required
	Logging   bool
	Variables map[string]string // v2 request body
}

// ExecResult is what the runtime answered.
type ExecResult struct {
	StatusCode int
	Headers    []protocol.Header // sorted by name; x-open-runtimes-* removed
	Body       []byte
	Logs       string
	Errors     string
	StartTime  time.Time
	Duration   time.Duration
}
