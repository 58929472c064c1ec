package sandbox

import (
	"context"
	"io"
	"time"

	"executor/sandbox/protocol"
)

// LogStream is a runtime's build output, read as it is written.
type LogStream interface {
	// Version is the runtime's protocol version.
	Version() protocol.Version
	// Next blocks until there is new output and returns it. It returns
	// io.EOF once the build has ended and everything was returned, or when
	// the runtime has left the table; ctx ending returns ctx.Err().
	Next(ctx context.Context) ([]LogEntry, error)
}

// LogFollower is the LogStream of one table entry.
type LogFollower struct {
	m       *Manager
	e       *entry
	next    int
	version protocol.Version
}

// FollowLogs returns a follower of the build output of runtime id. A client
// may ask before the runtime exists (it often starts streaming while its
// create request is on the way), so it waits up to wait for it to appear.
func (m *Manager) FollowLogs(ctx context.Context, id string, wait time.Duration) (LogStream, error) {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		m.mu.Lock()
		e := m.table[id]
		m.mu.Unlock()
		if e != nil {
			return &LogFollower{m: m, e: e, version: e.version}, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline.C:
			return nil, newError(Timeout, "", nil)
		case <-tick.C:
		}
	}
}

// Version is the runtime's protocol version.
func (f *LogFollower) Version() protocol.Version { return f.version }

// Next implements LogStream.
func (f *LogFollower) Next(ctx context.Context) ([]LogEntry, error) {
	for {
		entries, finished, changed := f.e.log.Since(f.next)
		if len(entries) > 0 {
			f.next += len(entries)
			return entries, nil
		}
		if finished || !f.m.present(f.e) {
			return nil, io.EOF
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		case <-f.e.gone:
		}
	}
}
