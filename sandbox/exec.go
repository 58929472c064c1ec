package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// Execute forwards one execution to its runtime, creating the runtime first
// when it does not exist and the request says how. Concurrent executions of a
// runtime being created share that one creation.
func (m *Manager) Execute(ctx context.Context, req ExecRequest) (*ExecResult, error) {
	if req.Timeout <= 0 {
		req.Timeout = 15 * time.Second
	}
	deadline := time.Now().Add(req.Timeout)
	e, err := m.ensure(ctx, req, deadline)
	if err != nil {
		return nil, err
	}
	rt := e.rt // claimed by ensure
	defer rt.end()

	start := time.Now() // billable time starts before the readiness wait, as in the reference
	if err := rt.waitReady(ctx, deadline); err != nil {
		return nil, err
	}
	if wait := time.Since(start); wait > time.Millisecond {
		m.log.Debug("runtime ready", "runtime", rt.ID, "waited", wait.Round(10*time.Microsecond))
	}
	remaining := time.Until(deadline)
	var res *ExecResult
	switch rt.Version {
	case "v2":
		res, err = m.forwardV2(ctx, rt, req, remaining)
	default:
		res, err = m.forward(ctx, rt, req, remaining)
	}
	if err != nil {
		return nil, err
	}
	res.StartTime = start
	res.Duration = time.Since(start)
	return res, nil
}

// ensure returns the ready entry for the request's runtime, creating it when
// missing (single flight: the first caller creates, the others wait for it).
func (m *Manager) ensure(ctx context.Context, req ExecRequest, deadline time.Time) (*entry, error) {
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	for {
		m.mu.Lock()
		e := m.table[req.RuntimeID]
		if e == nil {
			if req.Cold == nil {
				m.mu.Unlock()
				return nil, &Error{Type: ErrRuntimeNotFound, Message: "Runtime not found. Please start it first or provide runtime-related parameters."}
			}
			m.mu.Unlock()
			spec := *req.Cold
			spec.RuntimeID = req.RuntimeID
			if err := m.checkStorage(spec); err != nil {
				return nil, err
			}
			// The creation belongs to the runtime, not to this request: a
			// client that hangs up does not abort it for the others waiting.
			cctx, ccancel := context.WithDeadline(context.Background(), deadline)
			ne, err := m.insert(spec, ccancel)
			if err != nil {
				ccancel()
				var xe *Error
				if errors.As(err, &xe) && xe.Type == ErrRuntimeConflict {
					continue // someone else started it between our look and our insert
				}
				return nil, err
			}
			go func() {
				defer ccancel()
				_, err := m.create(cctx, ne, spec)
				m.settle(ne, err)
			}()
			e = ne
		} else {
			m.mu.Unlock()
		}
		select {
		case <-e.ready:
		case <-wctx.Done():
			return nil, &Error{Type: ErrRuntimeTimeout, Message: "Timed out waiting for runtime.", Err: wctx.Err()}
		}
		if e.err != nil {
			if errors.Is(e.err, context.DeadlineExceeded) {
				return nil, &Error{Type: ErrRuntimeTimeout, Message: "Timed out waiting for runtime.", Err: e.err}
			}
			return nil, e.err
		}
		if !m.claim(e) {
			return nil, &Error{Type: ErrRuntimeNotFound, Message: "Runtime no longer exists."}
		}
		return e, nil
	}
}

// claim marks work in flight in e's runtime if e is still in the table. It
// takes the table lock that maintenance holds while it picks idle runtimes,
// so a runtime is never reaped between being found and being used. The
// caller must end() the runtime.
func (m *Manager) claim(e *entry) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.table[e.id] != e || e.rt == nil {
		return false
	}
	e.rt.begin()
	return true
}

// waitReady waits until the runtime accepts connections on port 3000. The
// backoff starts at 1 ms: runtimes answer within milliseconds to seconds and
// fixed half-second polls would dominate a fast cold start.
func (r *Runtime) waitReady(ctx context.Context, deadline time.Time) error {
	r.mu.Lock()
	listening := r.listening
	r.mu.Unlock()
	if listening {
		return nil
	}
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	delay := time.Millisecond
	var d net.Dialer
	for {
		c, err := d.DialContext(wctx, "tcp", r.Addr())
		if err == nil {
			c.Close()
			r.mu.Lock()
			r.listening = true
			r.mu.Unlock()
			return nil
		}
		if ct := r.current(); ct != nil && ct.exited() && !shouldRestart(r.spec.RestartPolicy, ct.exit.code) {
			return &Error{Type: ErrRuntimeFailed, Message: fmt.Sprintf("Runtime exited before it started listening (%s). Last output:\n%s", ct.exit, lastLines(ct.out.String(), 20))}
		}
		select {
		case <-wctx.Done():
			return &Error{Type: ErrRuntimeTimeout, Message: "Timed out waiting for runtime.", Err: wctx.Err()}
		case <-time.After(delay):
		}
		// A refused connect on the bridge costs microseconds: keep polling
		// often, or a runtime ready at 34 ms is only noticed at 63 ms.
		if delay < 4*time.Millisecond {
			delay *= 2
		}
	}
}
