// Package sandbox keeps the table of runtimes and their lifecycle: it
// assembles each runtime from an image, a network endpoint, a disk and its
// directories, runs builds and commands in it, forwards executions to it, and
// removes it again.
//
// The pieces it assembles live elsewhere: images pulls and mounts roots,
// netns attaches endpoints, sandbox/disk makes the runtime's disk, oci turns
// the request and the image's configuration into a container configuration,
// sandbox/container runs it (the only user of libcontainer), and
// sandbox/protocol speaks the Open Runtimes protocol to it. The sandbox
// decides when each is used, and by whom.
//
// # Runtime states
//
// A runtime id has at most one row in the table (an entry):
//
//	(absent) --insert--> pending --settle(ok)--> ready --drop--> (absent)
//	                        \--settle(err)--> (absent)
//
// insert adds a pending row, or fails with Exists, Creating or ShuttingDown.
// The creation then runs (Create waits for it; an execution's cold start
// runs it in the background, and concurrent executions wait for that one
// creation: single flight). settle closes the row's ready channel; a failed
// creation leaves the table, and its waiters get its error. A ready row
// leaves the table by Delete, by maintenance (idle longer than
// InactiveThreshold), when its main process ended for good (restartPolicy),
// after a build with Remove, or at Close; whoever drops it then finishes it:
// cancels a creation still running, waits for it, and destroys the runtime.
// Nothing but the dropper finishes a row, so a runtime is destroyed once.
//
// Work in a runtime (an execution, a build, a command) is claimed under the
// table lock with begin and released with end. Maintenance picks its
// victims under the same lock and skips runtimes with work in flight, so a
// runtime is never reaped between being found and being used.
//
// # Ownership
//
// A Runtime owns everything it holds: its container (a proc), network
// endpoint, root, disk and directory are recorded on it as they are made,
// and Runtime.destroy releases them, in an order that never removes files
// through a mount. The table never reaches into a runtime's parts, and a
// runtime knows nothing of the table: it reports the end of its main process
// through its onExit callback. The Manager owns the storage devices, opened
// once in New, and the container runner.
//
// # Locks
//
// Manager.mu guards the table and closing; Runtime.mu guards a runtime's
// mutable state. Manager.mu may be held while taking Runtime.mu (claim,
// maintenance), never the reverse. No lock is held across I/O with a runtime
// or a device.
//
// # Errors
//
// Failures a client is meant to see are *Error values with a Kind; the API
// maps kinds to the reference's error types and statuses. The protocol's own
// errors (*protocol.TransportError, *protocol.TimeoutError,
// *protocol.ResponseTooLargeError) pass through unchanged. Any other error is
// an internal failure.
//
// # Hostile runtimes
//
// Everything beneath a runtime's directory is written by the runtime. The
// daemon reaches it only through storage/safefs (never a link followed, never
// a FIFO opened for blocking, regular files only, sizes capped), and every
// runtime lives on a disk of its own, sized by Config.DiskLimit.
package sandbox
