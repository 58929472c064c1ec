package sandbox

import (
	"errors"
	"fmt"
	"strings"
)

// Kind is what kind of failure an *Error is. The API maps each kind to the
// reference executor's error type, status and, where the reference has a
// fixed text, message; the sandbox knows nothing of HTTP.
type Kind int

const (
	// NotFound: no runtime has the id (or it left the table meanwhile).
	NotFound Kind = iota + 1
	// Exists: a ready runtime already has the id.
	Exists
	// Creating: a runtime with the id is being created.
	Creating
	// ShuttingDown: the executor is closing and creates nothing more.
	ShuttingDown
	// Timeout: the runtime was not created or listening in time.
	Timeout
	// RuntimeFailed: the runtime could not be made or did not come up for a
	// reason the request can fix: its image, source, user, or a build or
	// main process that failed or timed out.
	RuntimeFailed
	// HostFailed: this host could not do its part for the runtime: its
	// storage, a registry's transport, an artifact the build did not leave.
	HostFailed
	// OutOfMemory: the kernel killed the runtime at its memory limit.
	OutOfMemory
	// BuildFailed: the build command failed, or its artifact could not be
	// taken or stored where the request asked.
	BuildFailed
	// CommandTimeout and CommandFailed: a command run in a runtime timed
	// out, or could not run or exited non-zero.
	CommandTimeout
	CommandFailed
	// Capacity: the executor has reached a real limit (a network with no
	// free address...) and creates nothing more until a runtime goes; the
	// message names the limit and the setting that raises it.
	Capacity
)

var kindNames = [...]string{
	NotFound:       "not found",
	Exists:         "exists",
	Creating:       "being created",
	ShuttingDown:   "shutting down",
	Timeout:        "timeout",
	RuntimeFailed:  "runtime failed",
	HostFailed:     "host failed",
	OutOfMemory:    "out of memory",
	BuildFailed:    "build failed",
	CommandTimeout: "command timeout",
	CommandFailed:  "command failed",
	Capacity:       "at capacity",
}

func (k Kind) String() string {
	if k > 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Error is a failure a client is meant to see: its kind and, unless the
// kind's own text says it all, a message for the client. Any other error
// returned by this package is an internal failure.
type Error struct {
	Kind    Kind
	Message string
	Err     error
}

func (e *Error) Error() string {
	msg := e.Kind.String()
	if e.Message != "" {
		msg += ": " + e.Message
	}
	// Messages often quote their cause already ("...: " + err.Error()); it
	// is said once.
	if e.Err != nil && !strings.Contains(e.Message, e.Err.Error()) {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf returns the kind of the *Error in err's chain, 0 for an internal
// failure.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return 0
}

func newError(k Kind, msg string, err error) *Error {
	return &Error{Kind: k, Message: msg, Err: err}
}
