package sandbox

import (
	"context"
	"time"
)

// stages times the steps of a creation, for the debug log and the
// Observer. The names are the Observer's stage names: "source" (directory,
// source and build cache), "pull", "root", "network" (the wait for the
// attachment made alongside), "config" and "container".
type stages struct {
	ctx   context.Context
	obs   Observer
	last  time.Time
	names []string
	took  []time.Duration
	notes []any // what the log says of the steps beside their times
}

// newStages starts timing at once; obs may be nil.
func newStages(ctx context.Context, obs Observer) *stages {
	return &stages{ctx: ctx, obs: obs, last: time.Now()}
}

func (s *stages) mark(name string) {
	now := time.Now()
	s.add(name, s.last, now.Sub(s.last))
	s.last = now
}

// add records a step that ran alongside the others, from start for took,
// without moving the mark the next step is timed from.
func (s *stages) add(name string, start time.Time, took time.Duration) {
	s.names = append(s.names, name)
	s.took = append(s.took, took)
	if s.obs != nil {
		s.obs.Stage(s.ctx, name, start, took)
	}
}

// note adds key=value to the log line of the creation.
func (s *stages) note(key string, value any) { s.notes = append(s.notes, key, value) }

func (s *stages) attrs() []any {
	out := make([]any, 0, 2*len(s.names)+len(s.notes))
	for i, n := range s.names {
		out = append(out, n, s.took[i].Round(10*time.Microsecond))
	}
	return append(out, s.notes...)
}
