package sandbox

import "time"

// stages times the steps of a creation for the debug log.
type stages struct {
	last  time.Time
	names []string
	took  []time.Duration
}

func newStages() *stages { return &stages{last: time.Now()} }

func (s *stages) mark(name string) {
	now := time.Now()
	s.names = append(s.names, name)
	s.took = append(s.took, now.Sub(s.last))
	s.last = now
}

func (s *stages) attrs() []any {
	out := make([]any, 0, 2*len(s.names))
	for i, n := range s.names {
		out = append(out, n, s.took[i].Round(10*time.Microsecond))
	}
	return out
}
