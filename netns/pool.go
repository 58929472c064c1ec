package netns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
		// The filler holds one ready endpoint while it waits to hand it
		// over, so the channel holds one less.
		n.pool = make(chan *Endpoint, n.cfg.PoolSize-1)
		n.poolStop = make(chan struct{})
		ctx, cancel := context.WithCancel(context.Background())
		n.poolCancel = cancel
		n.poolDone.Add(1)
		go n.fill(ctx, n.pool, n.poolStop)
	})
}

// fill keeps pool full until stop is closed. Failures back off, up to a
// second. It is handed the channels rather than reading n.pool, which
// stopPool clears.
func (n *Network) fill(ctx context.Context, pool chan *Endpoint, stop chan struct{}) {
	defer n.poolDone.Done()
	backoff := 10 * time.Millisecond
	for {
		select {
		case <-stop:
			return
		default:
		}
		name := fmt.Sprintf("%s%x", poolPrefix, n.poolSeq.Add(1))
		ep, err := n.create(ctx, name, name)
		if err != nil {
			// At capacity the refill retries every second until an
			// endpoint goes; the requests it fails are logged already.
			lvl := slog.LevelWarn
			if errors.Is(err, ErrCapacity) {
				lvl = slog.LevelDebug
			}
			n.log.Log(ctx, lvl, "network pool refill", "network", n.cfg.Name, "err", err)
			select {
			case <-stop:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 10 * time.Millisecond
		select {
		case pool <- ep:
		case <-stop:
			_ = n.teardown(ep)
			return
		}
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
