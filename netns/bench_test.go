package netns

import (
	"context"
	"fmt"
	"testing"
	"time"

	"executor/tests/cmd/benchtable/samples"
)

// BenchmarkAttachDetach measures one endpoint's life: Attach then Detach.
// attach is the time Attach took (what a cold start waits for), detach the
// time Detach took (with AsyncDetach only the hand-off to the background),
// each as n, p50, p90 and p99. back-to-back
// drains the pool faster than it refills (Attach then mostly builds inline,
// competing with the refill and the background teardowns); paced waits,
// untimed, for the pool to refill between iterations, as the gaps between
// cold starts allow.
func BenchmarkAttachDetach(b *testing.B) {
	pool := func(c *Config) { c.AsyncDetach = true; c.PoolSize = 8 }
	for _, bc := range []struct {
		name  string
		mod   func(*Config)
		paced bool // between iterations, untimed, wait for the pool to refill
	}{
		{"sync", nil, false},
		{"async-detach", func(c *Config) { c.AsyncDetach = true }, false},
		{"pool8+async-detach/back-to-back", pool, false},
		{"pool8+async-detach/paced", pool, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			n := testNetwork(b, 22, bc.mod)
			ctx := context.Background()
			if err := n.Reset(ctx); err != nil {
				b.Fatal(err)
			}
			if bc.mod != nil {
				// Let the pool fill, as it would between requests.
				time.Sleep(100 * time.Millisecond)
			}
			var attach, detach []time.Duration
			for i := 0; b.Loop(); i++ {
				t0 := time.Now()
				ep, err := n.Attach(ctx, fmt.Sprintf("b%d", i))
				t1 := time.Now()
				if err != nil {
					b.Fatal(err)
				}
				if err := n.Detach(ctx, ep); err != nil {
					b.Fatal(err)
				}
				// At once (PoolGrace 0), as a stream of cold starts,
				// each over before the next, asks.
				n.Refill()
				attach = append(attach, t1.Sub(t0))
				detach = append(detach, time.Since(t1))
				if bc.paced {
					b.StopTimer()
					for deadline := time.Now().Add(time.Second); len(n.pool) < cap(n.pool) && time.Now().Before(deadline); {
						time.Sleep(time.Millisecond)
					}
					b.StartTimer()
				}
			}
			samples.Report(b, "attach", attach)
			samples.Report(b, "detach", detach)
		})
	}
}
