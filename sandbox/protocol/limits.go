package protocol

import "time"

// Port is the TCP port every runtime's server listens on. Runtimes cannot
// be told another, so each needs its own network namespace.
const Port = 3000

// ArtifactName is the file a build leaves in its code directory.
const ArtifactName = "code.tar.gz"

// Limits on what a runtime may hand back. A runtime runs tenant code: each
// cap bounds the daemon's memory per execution.
const (
	// MaxResponseBody caps a v3+ response body; a larger one is a
	// ResponseTooLargeError. A v2 envelope is cut at this size instead.
	MaxResponseBody = 64 << 20
	// MaxLogFile caps each v4+ log file; the rest is dropped and a
	// truncation note appended.
	MaxLogFile = 5 << 20
	// MaxV2Logs caps v2's stdout and stderr, in bytes, without a note, as
	// the reference does.
	MaxV2Logs = 1_000_000
)

// The notes appended to a log file cut at MaxLogFile, in the reference's
// words (its "5.00MB" is MaxLogFile).
const (
	LogsTruncatedNote   = "\nLog file has been truncated to 5.00MB."
	ErrorsTruncatedNote = "\nError file has been truncated to 5.00MB."
)

const (
	// timeoutSlack is how much longer than the runtime's own timeout a
	// v3+ exchange may last: the runtime reports its timeout itself, and
	// the executor gives up only when it does not.
	timeoutSlack = 5 * time.Second
	// connectTimeout bounds one connection attempt.
	connectTimeout = 5 * time.Second
	// headerPrefix starts the protocol's own headers, which the runtime's
	// caller never sees.
	headerPrefix = "x-open-runtimes-"
)
