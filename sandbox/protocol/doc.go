// Package protocol is the Open Runtimes runtime protocol: what a runtime
// image expects of the executor that runs it (mounts, working directory,
// environment, main process) and the HTTP exchange by which the executor
// hands it one execution and reads the answer. The runtime side is
// described in shared/spec/runtime-protocol.md; this package is the
// executor side, and the only place that knows how versions differ.
//
// # Versions
//
// The prefix of a runtime image's tag is its protocol version
// (openruntimes/node:v4-18.0 speaks v4). Four are spoken:
//
//	v2  Code in /usr/code, also the working directory. Without a build
//	    command the image's own entrypoint and cmd start the server. An
//	    execution is a JSON envelope ({"variables", "payload", "headers"})
//	    POSTed to / with Host "null" and the secret in x-internal-challenge;
//	    the runtime answers {"response", "stdout", "stderr"}, forwards no
//	    headers and knows no timeout. Variables are INTERNAL_RUNTIME_*.
//	    Build output is not streamed, and cache warnings follow it.
//	v3  Code in /mnt/code; the image's working directory. An execution is
//	    the caller's request passed through, with x-open-runtimes-secret and
//	    x-open-runtimes-timeout; the logs come back URL-encoded in the
//	    x-open-runtimes-logs and x-open-runtimes-errors headers. Variables
//	    are OPEN_RUNTIMES_*.
//	v4  v3, plus Authorization (Basic opr:<secret>) and
//	    x-open-runtimes-logging on requests, OPEN_RUNTIMES_CPUS and
//	    OPEN_RUNTIMES_MEMORY in the environment, and the logs written to
//	    /mnt/logs/<id>_logs.log and <id>_errors.log, where <id> is the
//	    x-open-runtimes-log-id the runtime answers with: the one the
//	    request names (Target.LogID), else its own.
//	v5  v4's exchange; clients get build output as timestamped entries.
//
// All versions listen on Port, find their source in /tmp and
// leave their artifact at ArtifactPath. Every rule that differs between
// versions is a method of Version answered from one table (version.go):
// a new version is one more entry there.
//
// # Executions
//
// Client.Execute sends one execution. The runtime is told the execution's
// remaining budget in whole seconds (at least one) and enforces it itself,
// answering 500 with "Execution timed out."; the executor waits five
// seconds longer before giving up. v2 runtimes enforce nothing, so for
// them the budget is the executor's own limit. A refused connection (the
// runtime restarting) is retried (Client.RetryAttempts, RetryDelay) while
// the budget lasts. Each runtime should have its own http.Client
// (NewHTTPClient), so that its idle connections go with it.
//
// What a runtime answers is bounded: bodies by MaxResponseBody, log files by
// MaxLogFile (with a note saying so), v2 logs by MaxV2Logs. Log files are
// named by the runtime, so their ids are restricted to [A-Za-z0-9_-], read
// through LogFiles (which refuses links and non-regular files), and removed
// once read.
//
// # Errors
//
// Execute's errors say what failed, not how clients see it; the API maps
// them to the reference executor's answers:
//
//   - *TransportError: no answer, or one cut short, with the curl error
//     number the reference reports ("Internal curl error has occurred
//     within the executor! Error Number: 28") and how many attempts were
//     made.
//   - *TimeoutError: a v2 execution out of budget, which the reference
//     reports as an execution timeout ("Operation timed out after 1500
//     milliseconds"). It wraps the TransportError.
//   - *ResponseTooLargeError: a v3+ body over MaxResponseBody.
//
// Request.Failed may replace a TransportError with the caller's own
// explanation (the runtime was killed for memory).
package protocol
