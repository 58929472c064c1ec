package images

import (
	"context"
	"sync"
)

// flightGroup runs one function per key at a time and hands its result to
// every caller that asked for that key meanwhile.
//
// Unlike x/sync/singleflight, the work runs under its own context that is
// cancelled only when every waiting caller has given up: one impatient caller
// must not fail the pull that others are still waiting for, and a pull nobody
// waits for any more should stop.
type flightGroup[T any] struct {
	mu    sync.Mutex
	calls map[string]*flight[T]
}

type flight[T any] struct {
	done    chan struct{}
	val     T
	err     error
	waiters int
	cancel  context.CancelFunc
}

// do returns fn's result for key, running fn unless a call for key is in
// flight. led reports whether this caller's fn was the one that ran.
func (g *flightGroup[T]) do(ctx context.Context, key string, fn func(context.Context) (T, error)) (val T, err error, led bool) {
	if err := ctx.Err(); err != nil {
		return val, err, false
	}
	g.mu.Lock()
	if g.calls == nil {
		g.calls = make(map[string]*flight[T])
	}
	f, ok := g.calls[key]
	if !ok {
		// WithoutCancel keeps the leader's values (logger, trace ids) but not its deadline.
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight[T]{done: make(chan struct{}), cancel: cancel}
		g.calls[key] = f
		led = true
		go func() {
			f.val, f.err = fn(fctx)
			g.mu.Lock()
			if g.calls[key] == f {
				delete(g.calls, key)
			}
			g.mu.Unlock()
			cancel()
			close(f.done)
		}()
	}
	f.waiters++
	g.mu.Unlock()

	select {
	case <-f.done:
		return f.val, f.err, led
	case <-ctx.Done():
		g.mu.Lock()
		f.waiters--
		last := f.waiters == 0
		if last {
			f.cancel()
			// Later callers must start afresh, not join a cancelled flight.
			if g.calls[key] == f {
				delete(g.calls, key)
			}
		}
		g.mu.Unlock()
		if last {
			// Let the cancelled work clean up before our caller goes on:
			// nothing it started should outlive it unseen.
			<-f.done
		}
		var zero T
		return zero, ctx.Err(), led
	}
}
