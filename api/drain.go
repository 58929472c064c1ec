package api

import (
	"context"
	"sync"
)

// drainGate counts the keyed requests in flight and, once Drain began, turns
// new ones away. The zero value is open.
type drainGate struct {
	mu       sync.Mutex
	draining bool
	inFlight int
	idle     chan struct{} // made by Drain, closed once draining with nothing in flight
}

// enter admits a keyed request, or reports false once the server drains.
func (g *drainGate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.draining {
		return false
	}
	g.inFlight++
	return true
}

// leave ends a request enter admitted.
func (g *drainGate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inFlight--
	g.signalIdleLocked()
}

func (g *drainGate) signalIdleLocked() {
	if g.draining && g.inFlight == 0 && g.idle != nil {
		close(g.idle)
		g.idle = nil
	}
}

func (g *drainGate) isDraining() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.draining
}

// Drain begins the shutdown of the API while its listener stays open:
// GET /v1/health answers 503 (draining) from now on, so that balancers take
// this executor out of rotation and can see why, and every new keyed request
// gets the 503 of an executor shutting down. Drain returns once the keyed
// requests already running (executions, builds, log streams, commands) have
// ended, or with ctx's error when ctx ends first. Call http.Server.Shutdown
// after it: that closes the listener and waits for the responses still being
// written. Draining cannot be undone; calling Drain again waits again.
func (s *Server) Drain(ctx context.Context) error {
	g := &s.drain
	g.mu.Lock()
	if !g.draining {
		g.draining = true
		g.idle = make(chan struct{})
		g.signalIdleLocked()
	}
	idle := g.idle
	g.mu.Unlock()
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
