package sandbox

import (
	"context"
	"time"

	"executor/sandbox/protocol"
)

// Observer is told what a Manager does, for the daemon's metrics and traces;
// the sandbox itself knows neither. Methods are called on the goroutine
// doing the work and must not block it.
type Observer interface {
	// Stage reports one step of making a runtime (see stages), begun at
	// start and lasting took. ctx is the request's, carrying its trace.
	// Besides the creation's stages, "readiness" is the wait of the
	// execution that started a runtime for it to accept connections.
	Stage(ctx context.Context, name string, start time.Time, took time.Duration)
	// ColdStart reports a runtime's assembly ended (its container started,
	// or err), took after its creation began; prewarmed when a prewarmed
	// sandbox stood for most of it.
	ColdStart(ctx context.Context, prewarmed bool, took time.Duration, err error)
	// Prewarm reports whether a cold start the prewarm pool could serve
	// found a prewarmed sandbox. Cold starts the pool cannot serve (no
	// pool, an image it does not keep) are not reported.
	Prewarm(ctx context.Context, hit bool)
	// Execution reports an execution of a runtime speaking version: its
	// runtime's answer's status, or err (status 0) when there was none;
	// took is the whole of it, the creation of its runtime included.
	Execution(ctx context.Context, version protocol.Version, status int, took time.Duration, err error)
	// Build reports a build command run and its artifact stored (err nil),
	// or failed, after took.
	Build(ctx context.Context, took time.Duration, err error)
	// RuntimeExited reports a runtime's main process ending on its own
	// (not stopped by the executor); oom when the kernel's OOM killer
	// killed it.
	RuntimeExited(oom bool)
	// RuntimeRestarted reports a main process restarted by its restart
	// policy.
	RuntimeRestarted()
	// RuntimeRemoved reports a runtime leaving the table: RemovedDeleted,
	// RemovedMaintenance, RemovedOOM or RemovedExited.
	RuntimeRemoved(reason string)
}

// Why a runtime left the table (Observer.RuntimeRemoved).
const (
	// RemovedDeleted: the API deleted it, or its build asked to be removed.
	RemovedDeleted = "deleted"
	// RemovedMaintenance: it was idle past the inactive threshold.
	RemovedMaintenance = "maintenance"
	// RemovedOOM: its main process was OOM-killed and not restarted.
	RemovedOOM = "oom"
	// RemovedExited: its main process ended otherwise and was not restarted.
	RemovedExited = "exited"
)

// NopObserver observes nothing. An Observer that wants only some events
// embeds it, so that events added later do not break it.
type NopObserver struct{}

func (NopObserver) Stage(context.Context, string, time.Time, time.Duration)                {}
func (NopObserver) ColdStart(context.Context, bool, time.Duration, error)                  {}
func (NopObserver) Prewarm(context.Context, bool)                                          {}
func (NopObserver) Execution(context.Context, protocol.Version, int, time.Duration, error) {}
func (NopObserver) Build(context.Context, time.Duration, error)                            {}
func (NopObserver) RuntimeExited(bool)                                                     {}
func (NopObserver) RuntimeRestarted()                                                      {}
func (NopObserver) RuntimeRemoved(string)                                                  {}

// Observers is an Observer telling each of obs in turn; nil ones are left out.
func Observers(obs ...Observer) Observer {
	var all multiObserver
	for _, o := range obs {
		if o != nil {
			all = append(all, o)
		}
	}
	return all
}

type multiObserver []Observer

func (m multiObserver) Stage(ctx context.Context, name string, start time.Time, took time.Duration) {
	for _, o := range m {
		o.Stage(ctx, name, start, took)
	}
}

func (m multiObserver) ColdStart(ctx context.Context, prewarmed bool, took time.Duration, err error) {
	for _, o := range m {
		o.ColdStart(ctx, prewarmed, took, err)
	}
}

func (m multiObserver) Prewarm(ctx context.Context, hit bool) {
	for _, o := range m {
		o.Prewarm(ctx, hit)
	}
}

func (m multiObserver) Execution(ctx context.Context, version protocol.Version, status int, took time.Duration, err error) {
	for _, o := range m {
		o.Execution(ctx, version, status, took, err)
	}
}

func (m multiObserver) Build(ctx context.Context, took time.Duration, err error) {
	for _, o := range m {
		o.Build(ctx, took, err)
	}
}

func (m multiObserver) RuntimeExited(oom bool) {
	for _, o := range m {
		o.RuntimeExited(oom)
	}
}

func (m multiObserver) RuntimeRestarted() {
	for _, o := range m {
		o.RuntimeRestarted()
	}
}

func (m multiObserver) RuntimeRemoved(reason string) {
	for _, o := range m {
		o.RuntimeRemoved(reason)
	}
}
