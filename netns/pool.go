package netns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// poolPrefix starts the namespace file names of pooled endpoints; Attach
// refuses ids with it so they can never clash.
const poolPrefix = ".pool-"

// startPool starts the filler once, if the network has a pool.
func (n *Network) startPool() {
	if n.cfg.PoolSize <= 0 {
		return
	}
	n.poolOnce.Do(func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.closed {
			return
		}
		n.pool = make(chan *Endpoint, n.cfg.PoolSize)
		n.poolStop = make(chan struct{})
		ctx, cancel := context.WithCancel(context.Background())
		n.poolCancel = cancel
		n.poolDone.Add(1)
		go n.fill(ctx, n.pool, n.poolStop)
	})
}

// Refill has the pooled endpoints taken so far made again, PoolGrace from
// now. Attach never refills by itself: an endpoint is taken by a cold
// start, which a refill (a namespace, a veth and their wiring: a few
// milliseconds of CPU) would slow on a small host; the caller says when
// that is over.
func (n *Network) Refill() {
	select {
	case n.poolWake <- struct{}{}:
	default:
	}
}

// fill fills pool, then fills it again PoolGrace after each Refill, until
// stop is closed. Failures back off, up to a second, and are retried
// without waiting for a Refill. It is handed the channels rather than
// reading n.pool, which stopPool clears.
func (n *Network) fill(ctx context.Context, pool chan *Endpoint, stop chan struct{}) {
	defer n.poolDone.Done()
	backoff := 10 * time.Millisecond
	for {
		// Only this goroutine adds to pool: a send below never blocks.
		for len(pool) < cap(pool) {
			select {
			case <-stop:
				return
			default:
			}
			// Random, not counted: the endpoints a restarted daemon adopted
			// keep the names an earlier process gave them.
			name := fmt.Sprintf("%s%016x", poolPrefix, rand.Uint64())
			ep, err := n.create(ctx, name, name)
			if err != nil {
				// At capacity the refill retries every second until an
				// endpoint goes; the requests it fails are logged already.
				lvl := slog.LevelWarn
				if errors.Is(err, ErrCapacity) {
					lvl = slog.LevelDebug
				}
				n.log.Log(ctx, lvl, "network pool refill", "network", n.cfg.Name, "err", err)
				if !sleepUnless(stop, backoff) {
					return
				}
				backoff = min(2*backoff, time.Second)
				continue
			}
			backoff = 10 * time.Millisecond
			pool <- ep
			n.log.Debug("network endpoint pooled", "network", n.cfg.Name, "ready", len(pool))
		}
		select {
		case <-stop:
			return
		case <-n.poolWake:
			if !sleepUnless(stop, n.cfg.PoolGrace) {
				return
			}
		}
	}
}

// sleepUnless waits d; it reports false when stop was closed meanwhile.
func sleepUnless(stop <-chan struct{}, d time.Duration) bool {
	if d <= 0 {
		select {
		case <-stop:
			return false
		default:
			return true
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-stop:
		return false
	case <-t.C:
		return true
	}
}

// stopPool stops the filler and tears down the ready endpoints. It may be
// called more than once (Release, then Close): the first call takes the
// pool away, later ones find none.
func (n *Network) stopPool() error {
	var errs []error
	n.poolOnce.Do(func() {}) // no pool may start after this
	n.mu.Lock()
	pool, stop, cancel := n.pool, n.poolStop, n.poolCancel
	n.pool, n.poolStop, n.poolCancel = nil, nil, nil
	n.mu.Unlock()
	if pool == nil {
		return nil
	}
	close(stop)
	cancel()
	n.poolDone.Wait()
	for {
		select {
		case ep := <-pool:
			errs = append(errs, n.teardown(ep))
		default:
			return errors.Join(errs...)
		}
	}
}
