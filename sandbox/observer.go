package sandbox

import (
	"context"
	"time"
)

// Observer is told what a Manager does, for the daemon's metrics and traces;
// the sandbox itself knows neither. Methods are called on the goroutine
// doing the work and must not block it.
type Observer interface {
	// Stage reports one step of making a runtime (see stages), begun at
	// start and lasting took. ctx is the request's, carrying its trace.
	Stage(ctx context.Context, name string, start time.Time, took time.Duration)
}

// NopObserver observes nothing. An Observer that wants only some events
// embeds it, so that events added later do not break it.
type NopObserver struct{}

func (NopObserver) Stage(context.Context, string, time.Time, time.Duration) {}

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
